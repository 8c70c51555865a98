//! Keeps the component connected: connect, serve stanzas, and on any loss
//! reconnect with capped, jittered exponential backoff, logging each state
//! change. Stops cleanly (closing the stream) when shutdown is signalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mft_common::error::Chain;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use mft_common::backoff::Backoff;
use mft_metrics::metrics;

use crate::link::{self, Inbound, LinkError, NS_COMPONENT};
use crate::service::UploadService;
use crate::xml::Element;

/// How to reach and authenticate with the router.
#[derive(Clone)]
pub struct LinkSettings {
    /// `host:port` of the router's component port.
    pub router: String,
    /// The component's JID.
    pub jid: String,
    /// The shared secret.
    pub secret: String,
    /// Ping interval; the link is declared dead after two silent intervals.
    pub keepalive: Duration,
}

/// The secret is never printed.
impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("router", &self.router)
            .field("jid", &self.jid)
            .field("secret", &"<redacted>")
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs the component until `shutdown` turns true.
pub async fn run(
    settings: LinkSettings,
    service: Arc<UploadService>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut attempts: u64 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        tracing::info!(router = %settings.router, jid = %settings.jid, "XMPP: connecting");
        let started = Instant::now();
        if attempts > 0 {
            metrics().link_reconnects.inc();
        }
        attempts += 1;
        let served = serve_once(&settings, &service, &mut shutdown).await;
        metrics().link_up.set(0);
        match served {
            Ok(()) => {
                tracing::info!("XMPP: stream closed for shutdown");
                return;
            }
            Err(e) => {
                metrics().link_failures.inc();
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.succeeded();
                }
                let wait = backoff.failed();
                match &e {
                    LinkError::Refused(_) => {
                        tracing::error!(error = %Chain(&e), retry_in_ms = wait.as_millis() as u64, "XMPP: link down")
                    }
                    _ => {
                        tracing::warn!(error = %Chain(&e), retry_in_ms = wait.as_millis() as u64, "XMPP: link down")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

fn parent_domain(jid: &str) -> String {
    mft_common::jid::Jid::parse(jid)
        .map_or_else(|| jid.to_owned(), |j| j.parent_domain().to_owned())
}

async fn serve_once(
    settings: &LinkSettings,
    service: &Arc<UploadService>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let link = link::connect(&settings.router, &settings.jid, &settings.secret).await?;
    tracing::info!(jid = %settings.jid, "XMPP: connected and authenticated");
    metrics().link_up.set(1);
    let (tx, rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(link::write_loop(link.writer, rx));
    let mut reader = link.reader;
    let mut ticker = tokio::time::interval(settings.keepalive);
    ticker.tick().await;
    let mut last_heard = Instant::now();
    let mut ping_id: u64 = 0;
    let silent_limit = settings.keepalive * 2 + Duration::from_secs(5);
    let result = loop {
        tokio::select! {
            inbound = reader.next() => match inbound {
                Ok(Inbound::Stanza(stanza)) => {
                    last_heard = Instant::now();
                    if stanza.name == "error" {
                        // The router's own words: what it objected to.
                        break Err(LinkError::StreamError(link::stream_error_text(&stanza)));
                    }
                    let service = service.clone();
                    let tx = tx.clone();
                    let span = tracing::info_span!(
                        "stanza",
                        from = stanza.get_attr("from").unwrap_or(""),
                        id = stanza.get_attr("id").unwrap_or("")
                    );
                    tokio::spawn(
                        async move {
                            if let Some(reply) = service.handle(&stanza).await {
                                let _ = tx.send(reply.to_xml(NS_COMPONENT)).await;
                            }
                        }
                        .instrument(span),
                    );
                }
                Ok(Inbound::Header(_)) => break Err(LinkError::stream("unexpected stream header")),
                Err(e) => break Err(e),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > silent_limit {
                    break Err(LinkError::Silent(last_heard.elapsed()));
                }
                ping_id += 1;
                let ping = Element::new("iq", NS_COMPONENT)
                    .attr("type", "get")
                    .attr("id", format!("mftd-ping-{ping_id}"))
                    .attr("from", settings.jid.as_str())
                    .attr("to", parent_domain(&settings.jid))
                    .child(Element::new("ping", "urn:xmpp:ping"));
                if tx.send(ping.to_xml(NS_COMPONENT)).await.is_err() {
                    break Err(LinkError::Closed);
                }
            },
            _ = shutdown.changed() => break Ok(()),
        }
    };
    drop(tx);
    // Let queued replies go out and the stream close; do not hang on a dead peer.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    result
}
