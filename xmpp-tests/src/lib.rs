//! Test harness for mftd's integration tests. It starts real servers as
//! processes on 127.0.0.1 (Prosody as the router, the `mftd` binary) and
//! drives a real XMPP client (slixmpp), each with its own ports and
//! directories so tests run in parallel; everything started is stopped on
//! `Drop`. Nothing here is needed by the product.
#![deny(missing_docs)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod certs;
pub mod clamd;
pub mod client;
pub mod delay_link;
pub mod ejabberd;
pub mod garage;
pub mod http;
pub mod mftd;
pub mod pg_replica;
pub mod postgres;
pub mod process;
pub mod prosody;
pub mod sshd;
pub mod tmpfs;
