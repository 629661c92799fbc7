//! Where a request comes from: [`ClientIp`] is the connection's peer address (the accept loop
//! puts it on every request), or, when that peer is one of `trusted_proxies`, the nearest
//! address in `X-Forwarded-For` that is not a trusted proxy. Used for per-address limits.

use crate::hub::Hub;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The client's address, as far as the hub can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<Hub>> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let config = hub.config();
        let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return Ok(ClientIp(peer));
        }
        // Right to left: each trusted proxy appended the address it heard from.
        let forwarded = parts.headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("?"));
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).map(str::trim).collect();
        // The nearest hop that is not a trusted proxy; an entry that is no address (a port
        // appended, "unknown") ends the walk at the last hop known good, so a client cannot
        // slip a forged address past it.
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match parse_hop(hop) {
                Some(ip) if trusted(&ip) => client = ip,
                Some(ip) => return Ok(ClientIp(ip)),
                None => break,
            }
        }
        Ok(ClientIp(client))
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::parse_hop;

    #[test]
    fn hops_are_addresses_with_or_without_a_port() {
        assert_eq!(parse_hop("203.0.113.7"), "203.0.113.7".parse().ok());
        assert_eq!(parse_hop("203.0.113.7:51234"), "203.0.113.7".parse().ok());
        assert_eq!(parse_hop("[2001:db8::1]:443"), "2001:db8::1".parse().ok());
        assert_eq!(parse_hop("unknown"), None);
    }
}
