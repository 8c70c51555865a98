//! A TCP forwarder on 127.0.0.1 that delays every byte by a fixed time in
//! each direction: a WAN link's round trip, for benchmarks of how a protocol
//! copes with latency (this machine has no `netem`). Bandwidth is not
//! limited; order is kept.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// A running forwarder; it stops taking connections when dropped (open ones
/// end when either side closes).
pub struct DelayLink {
    /// The port to connect to instead of the target's.
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl DelayLink {
    /// Forwards `127.0.0.1:port` to `127.0.0.1:target`, each direction
    /// delayed by `one_way` (the round trip is twice that).
    pub fn start(target: u16, one_way: Duration) -> DelayLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                forward(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    one_way,
                );
                forward(server, client, one_way);
            }
        });
        DelayLink { port, stop }
    }
}

/// Copies `from` to `to`, each read held back until `delay` after it arrived.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            if tx.send((Instant::now(), buf[..n].to_vec())).is_err() || n == 0 {
                return;
            }
        }
    });
    thread::spawn(move || {
        for (arrived, data) in rx {
            let due = arrived + delay;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            if data.is_empty() || to.write_all(&data).is_err() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    });
}
