//! The PROXY protocol v2 header that a front door (the hub relaying performers' bytes, issue
//! 27) puts before a connection's own bytes, so the server sees the performer's real address
//! for its per-address caps and password budget. Read only with `--proxy-protocol`, and only
//! when present: the hub's control channel, its readiness probe and its browser seats connect
//! without one and are taken at their socket's address. A Troop login or a control line never
//! starts with the header's first byte (CR), so the two cannot be confused. The parsing is
//! the `ppp` crate's.

use ppp::v2::{Addresses, Command, Header};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The fixed part: 12 bytes of signature, version and command, family, length.
const FIXED: usize = 16;
/// Longest address block and TLVs accepted (the spec's largest address block, the Unix
/// one, is 216 bytes); a longer length is an error, never a large read.
const MAX_BODY: usize = 512;

/// Why a connection was closed before it reached the server.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("closed before sending anything")]
    Closed,
    #[error("no PROXY header or first bytes within {0:?}")]
    Timeout(Duration),
    #[error("a malformed PROXY v2 header: {0}")]
    Malformed(String),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The connection's real source: the header's, when one comes first; else `socket`.
pub async fn real_source(
    stream: &mut TcpStream,
    socket: SocketAddr,
    within: Duration,
) -> Result<SocketAddr, ProxyError> {
    tokio::time::timeout(within, read(stream, socket)).await.map_err(|_| ProxyError::Timeout(within))?
}

async fn read(stream: &mut TcpStream, socket: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(ProxyError::Closed);
    }
    if first[0] != b'\r' {
        return Ok(socket);
    }
    let mut bytes = vec![0u8; FIXED];
    stream.read_exact(&mut bytes).await?;
    let body = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if body > MAX_BODY {
        return Err(ProxyError::Malformed(format!("its length {body} is over {MAX_BODY}")));
    }
    bytes.resize(FIXED + body, 0);
    stream.read_exact(&mut bytes[FIXED..]).await?;
    source(&bytes, socket)
}

/// The source a whole header names (`socket` for LOCAL or an address family without one).
pub fn source(bytes: &[u8], socket: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let header = Header::try_from(bytes).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(socket);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};

    fn header(src: &str, dst: &str) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (s, d)).build().unwrap()
    }

    #[test]
    fn the_source_is_the_headers_for_both_families_and_the_socket_for_local() {
        let socket: SocketAddr = "172.18.0.1:40000".parse().unwrap();
        assert_eq!(
            source(&header("203.0.113.7:5555", "10.0.0.2:30001"), socket).unwrap().to_string(),
            "203.0.113.7:5555"
        );
        assert_eq!(
            source(&header("[2001:db8::7]:5555", "[::1]:30001"), socket).unwrap().to_string(),
            "[2001:db8::7]:5555"
        );
        let local = Builder::new(Version::Two | Command::Local, Protocol::Unspecified as u8).build().unwrap();
        assert_eq!(source(&local, socket).unwrap(), socket);
    }

    #[test]
    fn a_malformed_header_is_an_error_not_a_panic() {
        let socket: SocketAddr = "172.18.0.1:40000".parse().unwrap();
        let good = header("203.0.113.7:5555", "10.0.0.2:30001");
        for cut in 0..good.len() {
            assert!(source(&good[..cut], socket).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[3] = b'X';
        assert!(source(&bad, socket).is_err());
    }
}
