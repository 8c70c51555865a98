//! The one accept loop of mftd's listeners — the upload endpoint and the
//! admin listener: at most `limit` connections open at once (past it new
//! ones wait in the kernel's backlog, said once in the log), an `accept`
//! error (out of descriptors and the like) backs off briefly instead of
//! ending the listener, and the loop ends when `shutdown` completes. What a
//! connection is served with is the caller's: it gets the stream, the peer
//! and the permit that frees its place when dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mft_common::error::Chain;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long to wait after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listener's limit on open connections and how the log names it.
pub struct ConnectionLimit {
    /// Places; a connection holds one until it closes.
    pub places: Arc<Semaphore>,
    /// Names the listener and the setting in the log, e.g.
    /// `"HTTP: connection limit reached (http.max_connections)"`.
    pub when_full: &'static str,
}

/// Accepts connections on `listener` until `shutdown` completes, handing
/// each to `serve` with its place in `limit`.
pub async fn accept_until(
    listener: &TcpListener,
    limit: &ConnectionLimit,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    tokio::pin!(shutdown);
    let mut full_logged = false;
    loop {
        let place = match limit.places.clone().try_acquire_owned() {
            Ok(p) => {
                full_logged = false;
                p
            }
            Err(_) => {
                if !full_logged {
                    tracing::warn!("{}; new connections wait until one closes", limit.when_full);
                    full_logged = true;
                }
                tokio::select! {
                    p = limit.places.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    () = &mut shutdown => return,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        serve(tcp, peer, place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_listener_waits_for_a_place_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = ConnectionLimit {
            places: Arc::new(Semaphore::new(1)),
            when_full: "test: full",
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let looping = tokio::spawn(async move {
            let mut held = Vec::new();
            accept_until(
                &listener,
                &limit,
                async {
                    let _ = stopped.await;
                },
                |tcp, _, place| {
                    held.push((tcp, place));
                    let _ = seen_tx.send(());
                },
            )
            .await;
            held.len()
        });
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        // The second waits in the backlog: its place is never freed here.
        let second = tokio::time::timeout(Duration::from_millis(200), seen.recv()).await;
        assert!(
            second.is_err(),
            "a second connection was served past the limit"
        );
        stop.send(()).unwrap();
        assert_eq!(looping.await.unwrap(), 1);
    }
}
