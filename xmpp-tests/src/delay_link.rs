//! A TCP forwarder on 127.0.0.1 that delays every byte by a fixed time in
//! each direction: a WAN link's round trip, for benchmarks of how a protocol
//! copes with latency (this machine has no `netem`). Order is kept.
//!
//! It also plays a flaky link for fault tests: [`DelayLink::stall`] stops
//! forwarding (connections stay open, bytes wait), [`DelayLink::reset`]
//! closes every open connection at once (RST, as a middlebox would),
//! [`DelayLink::slow`] limits each direction of each connection to a rate,
//! and [`DelayLink::heal`] goes back to plain forwarding.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the link does to traffic, shared by every forwarding thread.
#[derive(Default)]
struct Faults {
    stalled: AtomicBool,
    /// Bytes per second per direction and connection; 0 = unlimited.
    rate: AtomicU64,
    /// Every connection opened so far (both sockets), for `reset`.
    open: Mutex<Vec<TcpStream>>,
}

/// A running forwarder; it stops taking connections when dropped (open ones
/// end when either side closes).
pub struct DelayLink {
    /// The port to connect to instead of the target's.
    pub port: u16,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
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
        let faults = Arc::new(Faults::default());
        let (stopped, shared) = (stop.clone(), faults.clone());
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
                {
                    let mut open = shared.open.lock().unwrap();
                    open.retain(|s| s.peer_addr().is_ok());
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                forward(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    one_way,
                    shared.clone(),
                );
                forward(server, client, one_way, shared.clone());
            }
        });
        DelayLink { port, stop, faults }
    }

    /// Stops forwarding: connections stay open, nothing gets through.
    pub fn stall(&self) {
        self.faults.stalled.store(true, Ordering::Relaxed);
    }

    /// Closes every connection open now, both ways; new ones are forwarded.
    pub fn reset(&self) {
        for s in self.faults.open.lock().unwrap().drain(..) {
            // SO_LINGER 0 would send an RST; closing both halves is what
            // std offers and ends the SSH session the same way.
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Limits every direction of every connection to `bytes_per_sec`.
    pub fn slow(&self, bytes_per_sec: u64) {
        self.faults.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Back to plain forwarding (with the fixed delay).
    pub fn heal(&self) {
        self.faults.stalled.store(false, Ordering::Relaxed);
        self.faults.rate.store(0, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each read held back until `delay` after it arrived,
/// and while the link is stalled; paced when it is slow.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration, faults: Arc<Faults>) {
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
            while faults.stalled.load(Ordering::Relaxed) {
                if to.peer_addr().is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if data.is_empty() || write_paced(&mut to, &data, &faults).is_err() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    });
}

/// Writes `data`, in tenth-of-a-second slices while a rate is set.
fn write_paced(to: &mut TcpStream, data: &[u8], faults: &Faults) -> std::io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let rate = faults.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return to.write_all(rest);
        }
        let slice = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
        let (now, later) = rest.split_at(slice.min(rest.len()));
        to.write_all(now)?;
        rest = later;
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
