//! `mft-component` is mftd's XMPP side, as a library with no CLI, config
//! file, database driver or logging set-up of its own. It owns:
//!
//! - [`link`]: the XEP-0114 connection to the router (handshake, stanza
//!   reading, liveness) over a small [`xml`] element tree;
//! - [`component`]: staying connected (backoff, keepalive, clean close);
//! - [`service`] and [`slot`]: disco, pings, XEP-0363 slot requests and their
//!   errors ([`stanza`]);
//! - [`policy`], [`rate`], [`space`]: chat types of destinations, the
//!   per-user slot request limit, and the free-space guard;
//! - [`groups`]: limits per group of users (`[[limits.group]]`);
//! - [`adhoc`]: XEP-0050 ad-hoc commands: users' own files, administrators'
//!   holds and usage (`[adhoc]`).
//!
//! It does not speak HTTP itself (that is `mft-upload-http`), and the
//! operator program — configuration, wiring, operator commands — is the
//! `mftd` binary in `component/mftd/`.
#![deny(missing_docs)]

pub mod adhoc;
pub mod component;
pub mod groups;
mod inbound;
pub mod link;
pub mod policy;
pub mod rate;
pub mod service;
pub mod slot;
pub mod space;
pub mod stanza;
pub mod xml;
