//! `mft-common` holds the primitives every other crate of mftd shares and
//! none of them owns: the one normalised JID type ([`jid`]), UTC time and the
//! XEP-0082 formats ([`utc`]), the one retry schedule ([`backoff`]), the
//! units configuration values are written in ([`units`]: sizes, durations,
//! "forever") and the chain of an error's causes for logs ([`error`]). It
//! depends on nothing of mftd and does no I/O.
#![deny(missing_docs)]

pub mod backoff;
pub mod error;
pub mod jid;
pub mod units;
pub mod utc;
