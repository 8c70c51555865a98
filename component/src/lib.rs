//! `mft-component` is mftd's XMPP side and its binary. It owns:
//!
//! - [`link`]: the XEP-0114 connection to the router (handshake, stanza
//!   reading, liveness) over a small [`xml`] element tree;
//! - [`component`]: staying connected (backoff, keepalive, clean close);
//! - [`service`] and [`slot`]: disco, pings, XEP-0363 slot requests and their
//!   errors ([`stanza`]);
//! - [`rate`]: the per-user slot request limit;
//! - [`config`]: the TOML configuration with human [`units`];
//! - [`keys`], [`fileserver`], [`space`]: the node's SSH key pair, file server
//!   checks, and the free-space guard;
//! - [`verify`]: `mftd verify`, the store checked against the transfer log;
//! - [`app`]: wiring the component, the HTTP endpoint and the store together
//!   for `mftd run`, with signal handling.
//!
//! It does not speak HTTP itself: that is `mft-upload-http`.
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod component;
pub mod config;
pub mod fileserver;
pub mod keys;
pub mod link;
pub mod policy;
pub mod rate;
pub mod service;
pub mod slot;
pub mod space;
pub mod stanza;
pub mod units;
pub mod verify;
pub mod xml;
