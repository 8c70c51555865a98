//! `mft-upload-http` is mftd's HTTP side. It owns:
//!
//! - [`token`]: stateless, HMAC-signed slot tokens shared with the component;
//! - [`urls`]: the URL scheme (`<public url>/<resource>/<file name>`), file-name
//!   sanitising and percent-encoding;
//! - [`server`]: PUT/GET/HEAD/OPTIONS on hyper 1 (HTTP/1.1 and HTTP/2, TLS via
//!   rustls), streaming into and out of a [`mft_storage::Store`];
//! - [`media_type`]: the one canonical media type per file and the inline list;
//! - [`conn`]: per-connection deadlines and the transfer rate floor;
//! - [`proxy`]: the client's real address from trusted proxies (PROXY
//!   protocol, `Forwarded`, `X-Forwarded-For`);
//! - [`claim`]: per-recipient download claims signed with the router module's key;
//! - [`scan`] and [`clamd`]: the malware scan of every upload through ClamAV's
//!   clamd (streamed while received, decided before publishing);
//! - [`type_policy`]: which media types may be uploaded;
//! - [`error`]: the single mapping from failures to HTTP statuses.
//!
//! It knows nothing of XMPP.
#![deny(missing_docs)]

pub mod accept;
mod app;
mod audit;
mod body;
pub mod claim;
pub mod clamd;
pub mod conn;
pub mod error;
mod get;
mod headers;
pub mod media_type;
pub mod proxy;
mod put;
mod range;
mod refused;
pub mod scan;
pub mod server;
mod slot_claim;
pub mod tls;
pub mod token;
pub mod type_policy;
pub mod urls;

pub use server::{serve, App, HttpSettings};
pub use token::{SlotClaims, SlotSigner, TokenError};
