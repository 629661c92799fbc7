//! Talking to session servers over their control channel (troop-server's CONTROL.md): arming
//! a new server with its password md5, checking an owner's password against an adopted server
//! (the hub keeps no md5 across a restart), and telling performers why a session ends. Every
//! call is bounded; a server that does not answer is treated as gone.

use crate::registry::ControlAccess;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use tracing::warn;
use troop_server::control::{ControlClient, ControlError};

/// How long one control call (connect and request) may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// A new random per-session control secret: 256 bits from the OS, hex. `None` when the OS
/// gives no randomness (then no session can be secured, and the start fails).
pub fn new_secret() -> Option<SecretString> {
    crate::random::hex(32).map(SecretString::from)
}

pub(super) async fn connect(access: &ControlAccess) -> Result<ControlClient, ControlError> {
    ControlClient::connect(access.addr, access.secret.expose_secret(), CONTROL_TIMEOUT).await
}

/// Gives a locked server its password md5, display name and idle exit (an error if it did not
/// take them), then subscribes to its events on the same connection. `None` if only that
/// subscription failed: the session is armed and usable, and is followed anew later.
pub async fn arm(
    access: &ControlAccess,
    md5: &SecretString,
    name: &str,
    idle_exit: Option<Duration>,
) -> Result<Option<Subscription>, ControlError> {
    let mut client = connect(access).await?;
    client.arm_once(md5.expose_secret(), Some(name), idle_exit).await?;
    // The same connection then follows the session: nothing a performer does after arming
    // can come before the hub listens, and no second connection is paid for.
    match client.subscribe().await {
        Ok(subscription) => Ok(Some(subscription)),
        Err(e) => {
            warn!(error = %e, "armed, but the subscription after it failed; following it anew");
            Ok(None)
        }
    }
}

/// A subscription's first snapshot and its event stream.
pub type Subscription = (troop_server::control::Snapshot, troop_server::control::EventStream);

/// The server's snapshot (name and whether it is armed), `None` when it does not answer.
pub async fn snapshot(access: &ControlAccess) -> Option<troop_server::control::Snapshot> {
    let mut client = connect(access).await.ok()?;
    client.snapshot().await.ok()
}

/// Whether `md5` is the session's password, as its server judges it.
pub async fn verify(access: &ControlAccess, md5: &str) -> bool {
    match connect(access).await {
        Ok(mut client) => client.verify(md5).await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Every performer gets MSG_KILL with `sentence` and the server exits. False if it could not
/// be told (already gone, or no answer).
pub async fn end(access: &ControlAccess, sentence: &str) -> bool {
    let told = async {
        let mut client = connect(access).await?;
        client.end(sentence).await
    };
    tokio::time::timeout(CONTROL_TIMEOUT * 2, told).await.is_ok_and(|r| r.is_ok())
}
