//! A Troop 0.10.3 compatible session server, and a Troop protocol client.
//!
//! - [`frame`]: the `<field>` framing, incremental decoding with size caps.
//! - [`message`]: message types, parsing and upstream-exact encoding.
//! - [`json`]: Python `json.dumps` / `int()` / `str()` behaviour.
//! - [`ot`]: operations, apply, transform, compose.
//! - [`session`]: the session state machine (logins, joins, barrier, relays), no I/O.
//! - [`server`]: the tokio network loop around a session (and the server side of the control
//!   channel).
//! - [`control`]: the hub's control channel on the Troop port (`CONTROL.md`): its protocol
//!   types and the hub's client.
//! - [`client`]: a Troop client (login, join, client-side OT) for tests, benchmarks and the hub.

pub mod client;
pub mod control;
pub mod frame;
pub mod json;
pub mod message;
pub mod ot;
pub mod server;
pub mod session;

/// Resolves on SIGINT or SIGTERM (both binaries shut down gracefully on either).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Lowercase hex md5 of `password`'s UTF-8, what Troop clients send and compare.
pub fn md5_hex(password: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(password.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// True for a 32-character lowercase hex string (an md5 digest as Troop writes it).
pub fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_matches_upstream() {
        assert_eq!(super::md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(super::md5_hex("troop-pw"), "2e50a1e45ce0e092669ae02336db5e7d");
    }
}
