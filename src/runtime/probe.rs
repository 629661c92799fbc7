//! Looking at a session's port from the hub: does a Troop server accept there, and is the
//! published port served by Docker's userland proxy (which hides performers' addresses)?

use std::net::SocketAddr;
use std::time::Duration;

/// True if a Troop server accepts at `addr`. Through a published port Docker's userland
/// proxy accepts before the server listens and then closes the connection: with
/// `through_proxy` the connection must also stay open (no EOF, no reset) for a moment.
pub async fn accepts(addr: SocketAddr, through_proxy: bool) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if !through_proxy {
        return true;
    }
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await, Err(_) | Ok(Ok(1..)))
}

pub const USERLAND_PROXY_WARNING: &str = "Docker's userland proxy serves the session ports, so sessions see every \
performer as the bridge gateway address: set \"userland-proxy\": false in /etc/docker/daemon.json and restart the engine";

/// True if a socket in this network namespace listens on `port` (from /proc/net/tcp{,6}).
pub fn host_port_listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&wanted) && cols[3] == "0A"
            })
        })
    })
}
