//! systemd integration without a library: the `sd_notify` protocol is one
//! datagram of `KEY=value` lines to the socket in `$NOTIFY_SOCKET` (a path,
//! or an abstract name after `@`). mftd says `READY=1` once it can serve
//! (link up, file server reachable, transfer log committing — the same
//! test as `/readyz`), keeps `STATUS=` current, and says `RELOADING=1` /
//! `STOPPING=1` around a reload and a stop. Outside systemd nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio::sync::watch;

/// Sends `state` to the service manager; false when not run by one.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sender) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket.as_os_str());
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| sender.send_to_addr(state.as_bytes(), &addr))
        }
        None => sender.send_to(state.as_bytes(), &socket),
    };
    sent.is_ok()
}

/// Tells the service manager when mftd becomes ready and, afterwards, what
/// it is waiting for whenever that changes; `STOPPING=1` at shutdown.
pub async fn report_readiness(mut stop: watch::Receiver<bool>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut last: Option<String> = None;
    let mut ready_sent = false;
    loop {
        let status = match crate::monitor::not_ready() {
            None => "serving".to_owned(),
            Some(why) => format!("waiting: {}", why.join("; ")),
        };
        if last.as_deref() != Some(status.as_str()) {
            let ready = if status == "serving" && !ready_sent {
                ready_sent = true;
                "READY=1\n"
            } else {
                ""
            };
            notify(&format!("{ready}STATUS={status}"));
            last = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => {
                notify("STOPPING=1\nSTATUS=stopping: finishing transfers in flight");
                return;
            }
        }
    }
}
