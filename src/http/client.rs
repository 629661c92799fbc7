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
        let proxies = hub.config().trusted_proxies;
        let trusted = |ip: &IpAddr| proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return Ok(ClientIp(peer));
        }
        // Right to left: each trusted proxy appended the address it heard from.
        let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<IpAddr> = forwarded
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
            .collect();
        Ok(ClientIp(hops.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer)))
    }
}
