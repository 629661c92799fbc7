//! The audience view over HTTP: the page `/s/{name}` and its assets (plain HTML, CSS and JS
//! compiled into the hub, relative URLs, a strict CSP), the live feed
//! `GET /api/v1/sessions/{name}/live` (a WebSocket: the password first when the view needs
//! one, then a snapshot and the session's events), and the owner's public switch
//! `POST /api/v1/sessions/{name}/audience`. Wrong passwords are limited per address.

use super::auth::{check_password, owner_or_admin, AdminToken};
use super::client::ClientIp;
use super::error::{no_session, valid_name, ApiError, ErrorBody};
use super::json::JsonBody;
use super::serve::{ConnectionSlot, Place, SocketFd};
use super::types::{AudienceState, AudienceSwitch};
use crate::audience::{Access, LiveMessage};
use crate::hub::{Hub, Watch, WatchError, FEED_BACKLOG};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

use super::pages::AUDIENCE_OFF as OFF;
use secrecy::ExposeSecret;
/// What a viewer let in by a share link hears when the link stops holding.
const LINK_GONE: &str = "This share link has expired or was revoked";
/// A viewer must send its password within this.
pub const PASSWORD_TIMEOUT: Duration = Duration::from_secs(10);
/// A viewer whose socket takes longer than this to take one message is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a viewer whose socket is full is checked for falling behind.
const LAG_CHECK: Duration = Duration::from_millis(100);
/// A viewer dropped while its socket is full gets this long for the goodbye.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest message a viewer may send (its password).
const MAX_INCOMING: usize = 4096;
/// Messages sent in one write at most.
const MAX_BATCH: usize = 256;

/// Close codes viewers get (4000-4999 are the application's).
pub mod close {
    pub const WRONG_PASSWORD: u16 = 4403;
    pub const NO_SESSION: u16 = 4404;
    pub const NO_PASSWORD: u16 = 4408;
    pub const TOO_MANY: u16 = 4429;
    pub const TOO_SLOW: u16 = 4413;
    pub const FULL: u16 = 4503;
    /// A message over the size limit (RFC 6455).
    pub const TOO_BIG: u16 = 1009;
    /// Not the WebSocket protocol (RFC 6455).
    pub const PROTOCOL: u16 = 1002;
}

/// Watch a session live (WebSocket)
///
/// Upgrades to a WebSocket. When the session's view needs its password, the client's first
/// message is `{"password": "..."}` or a share link's token, `{"share": "..."}` (within 10 s);
/// a viewer let in by a link is let go when the link expires or is revoked (4403). The hub then sends JSON text messages
/// ([`LiveMessage`]): a `snapshot`, then `join`, `leave`, `operation`, `evaluate`, `mark`,
/// `select` in the session's order, and `ended` with the reason when it ends. A later
/// `snapshot` replaces everything (the hub resynchronised). Applying each operation to the
/// snapshot's document in order gives the server's document. Close codes: 4403 wrong
/// password (or the view stopped being public), 4404 no such session (or the view was turned
/// off), 4408 no password in time, 4413 the viewer fell behind (it may reconnect), 4429 too
/// many wrong passwords, 4503 the view filled up meanwhile (it may retry).
#[utoipa::path(get, path = "/api/v1/sessions/{name}/live", tag = "audience",
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 101, description = "Upgraded; the messages follow", body = LiveMessage),
        (status = 400, description = "Not a valid session name, or not a WebSocket request", body = ErrorBody),
        (status = 404, description = "No such session, it cannot be watched, or the audience view is off", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
        (status = 503, description = "The session or the hub has as many viewers as allowed", body = ErrorBody),
    ))]
pub async fn live(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    slot: Option<Extension<ConnectionSlot>>,
    fd: Option<Extension<SocketFd>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    valid_name(&name)?;
    // Subscribed before access is read: a change after the read is seen by the viewer.
    let epoch = hub.audience_epoch();
    let access = hub.audience_access(&name).ok_or_else(|| no_session(&name))?;
    if access == Access::Off {
        return Err(ApiError::not_found(OFF));
    }
    if access == Access::Password {
        hub.gate.check(ip, &name)?;
    }
    // Full now: refused before the upgrade. A place is taken only once the password (if any)
    // is proved, so silent sockets cannot hold a session's places.
    hub.can_watch(&name).map_err(|e| match e {
        WatchError::NoSession(_) | WatchError::NotFollowed(_) => ApiError::not_found(e.to_string()),
        WatchError::SessionFull { .. } | WatchError::HubFull(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    })?;
    let viewer = Viewer { hub, name, ip, proved: false, link: None };
    let needs_password = access == Access::Password;
    // Until it has given the password, the socket keeps its connection's place in the caps.
    let place = slot.and_then(|Extension(s)| s.take()).filter(|_| needs_password);
    Ok(ws
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        // Viewers only ever send a password: a small read buffer (the default is 128 KiB).
        .read_buffer_size(MAX_INCOMING)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| {
            // The upgraded stream owns the socket now: it is open.
            if let Some(Extension(fd)) = fd {
                fd.bound_send_buffer();
            }
            viewer.run(socket, needs_password, place, epoch)
        }))
}

/// Open a session's view to everyone, or close it (the session's password or the admin token)
#[utoipa::path(post, path = "/api/v1/sessions/{name}/audience", tag = "audience", security(("bearer" = []), ()),
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = AudienceSwitch,
    responses(
        (status = 200, description = "Who may watch it now", body = AudienceState),
        (status = 400, description = "Not a valid name or body, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session, it cannot be watched, or the audience view is off", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address (10, then one every 6 s)", body = ErrorBody),
    ))]
pub async fn set_audience(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    JsonBody(switch): JsonBody<AudienceSwitch>,
) -> Result<Json<AudienceState>, ApiError> {
    valid_name(&name)?;
    let access = hub.audience_access(&name).ok_or_else(|| no_session(&name))?;
    if access == Access::Off {
        return Err(ApiError::not_found(OFF));
    }
    owner_or_admin(&hub, &name, ip, admin.is_some(), switch.password.as_ref()).await?;
    if !hub.set_audience_public(&name, switch.public) {
        return Err(ApiError::not_found(WatchError::NotFollowed(name).to_string()));
    }
    let audience = hub.audience_access(&name).ok_or_else(|| no_session(&name))?;
    tracing::info!(session = %name, public = switch.public, "audience view switched");
    Ok(Json(AudienceState { name, audience }))
}

/// The message a viewer sends first: the session's password, or a share link's token.
#[derive(serde::Deserialize)]
struct Hello {
    password: Option<SecretString>,
    share: Option<SecretString>,
}

/// How often a viewer let in by a share link checks that the link still holds (it expires
/// by itself; a revoke is seen at once).
const LINK_CHECK: Duration = Duration::from_secs(15);

/// One viewer's connection.
struct Viewer {
    hub: Arc<Hub>,
    name: String,
    ip: IpAddr,
    /// It gave the session's password (it may stay when the view stops being public).
    proved: bool,
    /// The share link that let it in, which must go on holding.
    link: Option<SecretString>,
}

/// Sends an error and closes.
async fn refuse(out: &mut futures_util::stream::SplitSink<WebSocket, Message>, code: u16, message: &str, retry: bool) {
    let _ = send(out, vec![error_text(message, retry)]).await;
    let frame = CloseFrame { code, reason: "".into() };
    let _ = tokio::time::timeout(SEND_TIMEOUT, out.send(Message::Close(Some(frame)))).await;
}

impl Viewer {
    /// Serves the viewer; `waiting` is its connection's place, held while it must give the
    /// password.
    async fn run(
        mut self,
        socket: WebSocket,
        needs_password: bool,
        waiting: Option<Place>,
        mut epoch: tokio::sync::watch::Receiver<u64>,
    ) {
        let (mut out, mut incoming) = socket.split();
        if needs_password {
            match self.password(&mut incoming).await {
                Ok(link) => self.link = link,
                Err((code, message, retry)) => return refuse(&mut out, code, &message, retry).await,
            }
            drop(waiting);
            self.proved = self.link.is_none();
        }
        let mut watch: Watch = match self.hub.watch(&self.name) {
            Ok(w) => w,
            Err(e @ (WatchError::NoSession(_) | WatchError::NotFollowed(_))) => {
                return refuse(&mut out, close::NO_SESSION, &e.to_string(), false).await;
            }
            Err(e) => return refuse(&mut out, close::FULL, &e.to_string(), true).await,
        };
        if let Some(snapshot) = watch.snapshot.take() {
            if send(&mut out, snapshot.to_vec()).await.is_err() {
                return;
            }
        }
        let mut link_check = tokio::time::interval(LINK_CHECK);
        link_check.reset();
        loop {
            tokio::select! {
                _ = link_check.tick(), if self.link.is_some() => if !self.link_holds() {
                    return refuse(&mut out, close::WRONG_PASSWORD, LINK_GONE, false).await;
                },
                m = watch.feed.recv() => match m {
                    Ok(first) => {
                        // Everything already waiting goes out in one write.
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match watch.feed.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        // While its socket is full, how far behind the viewer is shows in the
                        // hub's feed: past the backlog it is let go at once.
                        let behind = async {
                            loop {
                                tokio::time::sleep(LAG_CHECK).await;
                                if watch.feed.len() >= FEED_BACKLOG {
                                    return;
                                }
                            }
                        };
                        tokio::select! {
                            sent = send(&mut out, batch) => if sent.is_err() { return },
                            _ = behind => return fell_behind(&mut out, &self.name, GOODBYE_TIMEOUT).await,
                        }
                    }
                    Err(RecvError::Lagged(_)) => return fell_behind(&mut out, &self.name, SEND_TIMEOUT).await,
                    // The session ended (its `ended` message went first).
                    Err(RecvError::Closed) => {
                        let _ = tokio::time::timeout(SEND_TIMEOUT, out.send(Message::Close(None))).await;
                        return;
                    }
                },
                // Viewers have nothing to say; reading lets pings and the close through.
                m = incoming.next() => match m {
                    Some(Ok(Message::Close(_))) | None => return,
                    // A frame too large or not WebSocket: closed with the code saying which.
                    Some(Err(e)) => {
                        let frame = CloseFrame { code: protocol_close(&e), reason: "".into() };
                        let _ = tokio::time::timeout(SEND_TIMEOUT, out.send(Message::Close(Some(frame)))).await;
                        return;
                    }
                    Some(Ok(_)) => {}
                },
                // The owner closed the view, or hub.yaml changed: is this viewer still let in?
                Ok(()) = epoch.changed() => match self.hub.audience_access(&self.name) {
                    Some(Access::Off) | None => {
                        return refuse(&mut out, close::NO_SESSION, OFF, false).await;
                    }
                    Some(Access::Password) if self.link.is_some() && !self.link_holds() => {
                        return refuse(&mut out, close::WRONG_PASSWORD, LINK_GONE, false).await;
                    }
                    Some(Access::Password) if !self.proved && self.link.is_none() => {
                        let why = "This view now needs the session's password";
                        return refuse(&mut out, close::WRONG_PASSWORD, why, false).await;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// Whether the share link that let this viewer in still opens the view.
    fn link_holds(&self) -> bool {
        self.link.as_ref().is_some_and(|l| self.hub.link_opens_session(&self.name, l.expose_secret()))
    }

    /// Reads and checks the viewer's password or share link (`Ok(Some(link))` for a link):
    /// `Err((close code, sentence, may retry))`.
    async fn password(
        &self,
        incoming: &mut futures_util::stream::SplitStream<WebSocket>,
    ) -> Result<Option<SecretString>, (u16, String, bool)> {
        let first = tokio::time::timeout(PASSWORD_TIMEOUT, async {
            loop {
                match incoming.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(Some(text)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Err(e)) => return Err(protocol_close(&e)),
                    _ => return Ok(None),
                }
            }
        });
        let no_password = (close::NO_PASSWORD, "Send {\"password\": \"...\"} first".to_string(), false);
        let text = match first.await {
            Ok(Ok(Some(text))) => text,
            Ok(Err(code)) => {
                self.hub.gate.failed(self.ip, &self.name);
                return Err((code, "That was not a WebSocket message the hub takes".into(), false));
            }
            // Silence counts like a wrong password.
            _ => {
                self.hub.gate.failed(self.ip, &self.name);
                return Err(no_password);
            }
        };
        let hello: Hello = serde_json::from_str(text.as_str()).map_err(|_| no_password.clone())?;
        if let Some(share) = hello.share {
            return match super::links::check_session_share(&self.hub, &self.name, &share) {
                Ok(()) => Ok(Some(share)),
                Err(e) if e.status() == StatusCode::TOO_MANY_REQUESTS => {
                    Err((close::TOO_MANY, e.message().to_string(), false))
                }
                Err(e) => Err((close::WRONG_PASSWORD, e.message().to_string(), false)),
            };
        }
        let password = hello.password.ok_or(no_password)?;
        match check_password(&self.hub, &self.name, self.ip, &password).await {
            Ok(()) => Ok(None),
            Err(e) if e.status() == StatusCode::FORBIDDEN => {
                Err((close::WRONG_PASSWORD, "Wrong password".into(), false))
            }
            Err(e) if e.status() == StatusCode::TOO_MANY_REQUESTS => {
                Err((close::TOO_MANY, e.message().to_string(), false))
            }
            Err(e) => Err((close::NO_SESSION, e.message().to_string(), false)),
        }
    }
}

/// Tells a viewer it fell behind (close 4413; it may reconnect), giving the goodbye `within`.
async fn fell_behind(out: &mut futures_util::stream::SplitSink<WebSocket, Message>, session: &str, within: Duration) {
    tracing::debug!(session = %session, "a viewer fell behind; dropped");
    let why = "This view fell behind the session; reconnect to catch up";
    let goodbye = async {
        let _ = out.feed(Message::Text(error_text(why, true))).await;
        let frame = CloseFrame { code: close::TOO_SLOW, reason: "".into() };
        let _ = out.send(Message::Close(Some(frame))).await;
    };
    let _ = tokio::time::timeout(within, goodbye).await;
}

/// The close code for a socket that broke the protocol: 1009 for a message over the size
/// limit, 1002 for the rest.
pub(super) fn protocol_close(e: &axum::Error) -> u16 {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("too long") || text.contains("too big") || text.contains("space limit") {
        close::TOO_BIG
    } else {
        close::PROTOCOL
    }
}

/// An `error` message's text.
fn error_text(message: &str, retry: bool) -> Utf8Bytes {
    Utf8Bytes::from(LiveMessage::Error { message: message.to_string(), retry }.to_text())
}

/// Sends text messages in one write (one flush), or fails if the viewer does not take them
/// within [`SEND_TIMEOUT`].
async fn send(out: &mut futures_util::stream::SplitSink<WebSocket, Message>, batch: Vec<Utf8Bytes>) -> Result<(), ()> {
    let write = async {
        for text in batch {
            out.feed(Message::Text(text)).await?;
        }
        out.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
