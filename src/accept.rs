//! Accepting connections, for both front doors (TCP and HTTP): [`listen`] opens a listener
//! with a deep accept queue, and [`AcceptBackoff`] pauses after a failed accept (the error is
//! logged and the loop waits 10 ms, doubling up to 1 s while accepts keep failing, out of file
//! descriptors most often) instead of spinning; a successful accept starts over at 10 ms.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};

/// The accept queue asked of the kernel (it caps it at `net.core.somaxconn`, 4096 by default).
/// tokio's `TcpListener::bind` asks for 128 (as the standard library): 256 clients querying at
/// once then overflow it, the kernel drops their handshakes, and each waits a second for its
/// SYN to be sent again.
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` (address reuse on, as `TcpListener::bind`) with a [`BACKLOG`]-deep
/// accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The first pause after a failed accept.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two failed accepts.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// The pause before the next accept, growing while accepts fail.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: FIRST_PAUSE }
    }
}

impl AcceptBackoff {
    /// An accept succeeded: the next failure pauses [`FIRST_PAUSE`] again.
    pub fn reset(&mut self) {
        self.next = FIRST_PAUSE;
    }

    /// An accept failed: logs it (`front_door` names which) and returns how long to pause.
    pub fn failed(&mut self, front_door: &'static str, error: &std::io::Error) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        tracing::warn!(front_door, error = %error, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_gets_the_deep_accept_queue() {
        let l = listen("127.0.0.1:0".parse().unwrap()).expect("listen");
        let port = l.local_addr().unwrap().port();
        // /proc/net/tcp has no backlog; ss shows it as the listener's Send-Q.
        let out = std::process::Command::new("ss").args(["-ltnH", &format!("sport = :{port}")]).output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            let send_q: Option<u32> = text.split_whitespace().nth(2).and_then(|v| v.parse().ok());
            let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(BACKLOG);
            assert_eq!(send_q, Some(BACKLOG.min(somaxconn)), "{text}");
        } else {
            panic!("this test needs `ss` (iproute2, installed by scripts/test)");
        }
    }

    #[test]
    fn pauses_double_up_to_a_second_and_start_over_after_a_success() {
        let e = std::io::Error::other("too many open files");
        let mut b = AcceptBackoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.failed("test", &e).as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed("test", &e), FIRST_PAUSE);
    }
}
