//! Browser seats over HTTP: the WebSocket `GET /api/v1/sessions/{name}/seat` that makes a web
//! page a Troop 0.10.3 peer (SEAT.md), and the owner's switch
//! `POST /api/v1/sessions/{name}/seats`. Each seat is one Troop connection from the hub to the
//! session's server: the page's messages go out as Troop messages with the seat's client id,
//! the server's come back as JSON. The page runs the OT; the hub checks the password through
//! the gate, answers keep-alives, and drops a page that stops reading without slowing anyone.

use super::audience::{close, protocol_close};
use super::auth::{check_password, owner_or_admin, AdminToken};
use super::client::ClientIp;
use super::error::{no_session, no_session_sentence, valid_name, ApiError, ErrorBody};
use super::json::JsonBody;
use super::serve::{ConnectionSlot, Place, SocketFd};
use super::types::{SeatState, SeatSwitch};
use crate::hub::{Hub, SeatPlace, SeatRefusal, Seats};
use crate::seat::{check_name, FromPage, Join, ToPage};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tracing::{debug, info, Instrument};
use troop_server::client::{login, ClientError};
use troop_server::frame::Decoder;
use troop_server::message::{Body, Message};

/// A page must send its `join` within this.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The session's server must take the seat's login within this.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A page whose socket takes longer than this to take one write is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a page may fall behind by before it is dropped (the hub keeps reading its Troop
/// connection all the time, so the session never waits for a page).
pub const SEAT_BACKLOG: usize = 2048;
/// ... and bytes (a Troop message can be 1 MiB; a reset holds the whole document).
pub const SEAT_BYTES: usize = 16 << 20;
/// How often a page is pinged; one silent for three of these is gone.
const PING_EVERY: Duration = Duration::from_secs(20);
/// The largest message a page may send (a paste of 1 MiB of code).
const MAX_INCOMING: usize = 1 << 20;
/// The largest Troop message the hub takes from a session's server for a seat.
const MAX_FROM_SERVER: usize = 64 << 20;

/// Close codes only seats use (the others are the audience view's, [`close`]).
pub mod seat_close {
    pub const NOT_ALLOWED: u16 = 4400;
    pub const NAME_TAKEN: u16 = 4409;
    /// The session's server closed the seat's connection while the session goes on (it
    /// dropped the seat, or it is restarting): the page may join again.
    pub const SERVER_GONE: u16 = 4502;
    pub const ENDED: u16 = 1000;
}

const SEATS_OFF_HUB: &str = "Browser seats are off on this hub";

/// Play in a session from a browser (WebSocket)
///
/// Upgrades to a WebSocket that makes the page a Troop 0.10.3 peer of the session. The page's
/// first message is `{"type": "join", "name": "...", "password": "..."}` (within 10 s); then it
/// sends and gets the JSON forms of Troop's messages, as SEAT.md describes. Close codes: 4400
/// a message a seat may not send, 4403 wrong password, 4404 no such session or seats off, 4408
/// no join in time, 4409 the name is taken in the session, 4413 the page fell behind, 4429 too
/// many wrong passwords, 4502 the server closed the seat (join again), 4503 the session or
/// the hub is full, 1000 the session ended.
#[utoipa::path(get, path = "/api/v1/sessions/{name}/seat", tag = "seats",
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 101, description = "Upgraded; the seat's messages follow"),
        (status = 400, description = "Not a valid session name, or not a WebSocket request", body = ErrorBody),
        (status = 404, description = "No such session, or browser seats are off", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address", body = ErrorBody),
    ))]
pub async fn seat(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    slot: Option<Extension<ConnectionSlot>>,
    fd: Option<Extension<SocketFd>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    valid_name(&name)?;
    if !hub.config().browser_seats {
        return Err(ApiError::not_found(SEATS_OFF_HUB));
    }
    let (id, _) = hub.troop_target(&name).ok_or_else(|| no_session(&name))?;
    if !hub.seats.enabled(&id) {
        return Err(ApiError::not_found(SeatRefusal::Off.to_string()));
    }
    hub.gate.check(ip, &name)?;
    // Until it has joined, the socket keeps its connection's place in the caps.
    let place = slot.and_then(|Extension(s)| s.take());
    let span = tracing::info_span!("seat", session = %name);
    Ok(ws.max_message_size(MAX_INCOMING).max_frame_size(MAX_INCOMING).on_upgrade(move |socket| {
        // A page that stops reading shows in the seat's queue, not in a kernel buffer.
        if let Some(Extension(fd)) = fd {
            fd.bound_send_buffer();
        }
        Seat { hub, name, ip }.run(socket, place).instrument(span)
    }))
}

/// Turn a session's browser seats on or off (the session's password or the admin token)
#[utoipa::path(post, path = "/api/v1/sessions/{name}/seats", tag = "seats", security(("bearer" = []), ()),
    params(("name" = String, Path, description = "The session's name", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = SeatSwitch,
    responses(
        (status = 200, description = "Whether seats are on now, and how many are open", body = SeatState),
        (status = 400, description = "Not a valid name or body, or neither password nor admin token", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address (10, then one every 6 s)", body = ErrorBody),
    ))]
pub async fn set_seats(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    admin: Option<AdminToken>,
    JsonBody(switch): JsonBody<SeatSwitch>,
) -> Result<Json<SeatState>, ApiError> {
    valid_name(&name)?;
    let (id, _) = hub.troop_target(&name).ok_or_else(|| no_session(&name))?;
    owner_or_admin(&hub, &name, ip, admin.is_some(), switch.password.as_ref()).await?;
    hub.seats.set_enabled(&id, switch.on);
    info!(session = %name, on = switch.on, "browser seats switched");
    Ok(Json(SeatState { name, on: switch.on, seats: hub.seats.count(&id) }))
}

/// Why a seat ends: the close code and the page's sentence (`retry`: it may try again).
struct Refusal {
    code: u16,
    message: String,
    retry: bool,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into(), retry: false }
    }
}

/// A page that joined: who it plays as, where, and its Troop connection.
struct Joined {
    performer: String,
    /// Its Troop client id in the session.
    id: i64,
    session_id: String,
    stream: tokio::net::TcpStream,
    place: SeatPlace,
}

/// One page's seat.
struct Seat {
    hub: Arc<Hub>,
    name: String,
    ip: IpAddr,
}

type Out = SplitSink<WebSocket, WsMessage>;

/// Sends the page one message and closes with `code`.
async fn goodbye(out: &mut Out, last: Option<ToPage>, code: u16) {
    let bye = async {
        if let Some(last) = last {
            out.feed(WsMessage::Text(last.to_text().into())).await?;
        }
        out.send(WsMessage::Close(Some(CloseFrame { code, reason: "".into() }))).await
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, bye).await;
}

impl Seat {
    async fn run(self, socket: WebSocket, waiting: Option<Place>) {
        let (mut out, mut incoming) = socket.split();
        // Subscribed before anything is checked: a switch turned off meanwhile is seen.
        let epoch = self.hub.seats.subscribe();
        let joined = self.join(&mut incoming).await;
        let Joined { performer, id, session_id, stream, place } = match joined {
            Ok(j) => j,
            Err(r) => {
                let error = ToPage::Error { message: r.message, retry: r.retry };
                return goodbye(&mut out, Some(error), r.code).await;
            }
        };
        info!(performer = %performer, client = id, "a browser seat joined");
        let welcome = ToPage::Welcome { id, name: performer.clone(), session: self.name.clone() };
        if out.send(WsMessage::Text(welcome.to_text().into())).await.is_err() {
            return;
        }
        let end = self.play(out, incoming, stream, (id, &session_id, &performer), epoch).await;
        debug!(performer = %performer, why = end, "a browser seat left");
        drop(place);
        // A seat holds its connection's place in the per-address cap for its whole life.
        drop(waiting);
    }

    /// Reads the page's `join`, checks it and logs in to the session's server.
    async fn join(&self, incoming: &mut SplitStream<WebSocket>) -> Result<Joined, Refusal> {
        let first = tokio::time::timeout(JOIN_TIMEOUT, async {
            loop {
                match incoming.next().await {
                    Some(Ok(WsMessage::Text(text))) => return Some(text),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    _ => return None,
                }
            }
        });
        let no_join = || Refusal::new(close::NO_PASSWORD, "Send {\"type\": \"join\", \"name\", \"password\"} first");
        let Ok(Some(text)) = first.await else {
            // Silence counts like a wrong password.
            self.hub.gate.failed(self.ip, &self.name);
            return Err(no_join());
        };
        let Ok(Join::Join { name: performer, password }) = serde_json::from_str(text.as_str()) else {
            return Err(no_join());
        };
        check_name(&performer).map_err(|why| Refusal::new(seat_close::NOT_ALLOWED, why))?;
        check_password(&self.hub, &self.name, self.ip, &password).await.map_err(|e| match e.status() {
            StatusCode::FORBIDDEN => Refusal::new(close::WRONG_PASSWORD, "Wrong password"),
            StatusCode::TOO_MANY_REQUESTS => Refusal::new(close::TOO_MANY, e.message()),
            _ => Refusal::new(close::NO_SESSION, e.message()),
        })?;
        let (session_id, addr) = self
            .hub
            .troop_target(&self.name)
            .ok_or_else(|| Refusal::new(close::NO_SESSION, no_session_sentence(&self.name)))?;
        if !self.hub.config().browser_seats {
            return Err(Refusal::new(close::NO_SESSION, SEATS_OFF_HUB));
        }
        // Troop tells performers apart by name and address, and every seat comes from the
        // hub's: a name a performer already plays under is refused here, in one sentence.
        let taken = SeatRefusal::NameTaken(performer.clone());
        if self.hub.performer_names(&session_id).contains(&performer) {
            return Err(Refusal::new(seat_close::NAME_TAKEN, taken.to_string()));
        }
        let place =
            self.hub.seats.take(&session_id, &performer, self.hub.config().browser_seats_total).map_err(|refused| {
                match refused {
                    SeatRefusal::Off => Refusal::new(close::NO_SESSION, refused.to_string()),
                    SeatRefusal::HubFull(_) | SeatRefusal::SessionFull(_) => {
                        Refusal { code: close::FULL, message: refused.to_string(), retry: true }
                    }
                    SeatRefusal::NameTaken(_) => Refusal::new(seat_close::NAME_TAKEN, refused.to_string()),
                }
            })?;
        let (stream, id) = self.login(addr, &performer, password.expose_secret()).await.map_err(|e| match e {
            ClientError::Refused(-1) => Refusal::new(close::WRONG_PASSWORD, "Wrong password"),
            ClientError::Refused(-2) if self.hub.session_locked(&self.name) => {
                Refusal::new(close::FULL, "The session's owner has locked it to new performers")
            }
            ClientError::Refused(-2) => {
                Refusal::new(close::FULL, "The session is full: Troop gives out 62 client ids over a session's life")
            }
            ClientError::Refused(-3) => Refusal::new(seat_close::NAME_TAKEN, taken.to_string()),
            other => {
                info!(error = %other, "a browser seat could not log in to the session's server");
                Refusal { code: close::NO_SESSION, message: "The session's server did not answer".into(), retry: true }
            }
        })?;
        Ok(Joined { performer, id, session_id, stream, place })
    }

    async fn login(
        &self,
        addr: SocketAddr,
        name: &str,
        password: &str,
    ) -> Result<(tokio::net::TcpStream, i64), ClientError> {
        tokio::time::timeout(LOGIN_TIMEOUT, login(addr, name, password))
            .await
            .map_err(|_| ClientError::Timeout("the login"))?
    }

    /// Carries messages both ways until one side ends; returns why, for the log.
    async fn play(
        &self,
        out: Out,
        mut incoming: SplitStream<WebSocket>,
        stream: tokio::net::TcpStream,
        (id, session_id, performer): (i64, &str, &str),
        mut epoch: tokio::sync::watch::Receiver<u64>,
    ) -> &'static str {
        let addr = stream.peer_addr().ok();
        let (mut read, write) = stream.into_split();
        let mut to_server = ToServer { half: write, id, next_msg_id: 0 };
        let connect = Body::Connect {
            name: performer.to_string(),
            hostname: addr.map(|a| a.ip().to_string()).unwrap_or_default(),
            port: addr.map_or(0, |a| i64::from(a.port())),
            // Troop's "no interpreter" flag: a browser runs no code, so it is never the master.
            dummy: 1,
        };
        if to_server.send(connect).await.is_err() {
            return "the server closed before the join";
        }
        // The page's writer runs apart, so a slow page never stops the hub reading the server.
        let (page, writer) = PageWriter::start(out, self.hub.seats.clone());
        let mut decoder = Decoder::new(MAX_FROM_SERVER);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut heard = tokio::time::Instant::now();
        let why = loop {
            tokio::select! {
                got = read.read_buf(decoder.buffer()) => {
                    match got {
                        Ok(0) | Err(_) => break self.server_gone(&page, session_id),
                        Ok(_) => {}
                    }
                    match self.take_from_server(&mut decoder, &mut to_server, &page, (session_id, performer)).await {
                        Ok(true) => {}
                        Ok(false) => break "the session ended",
                        Err(why) => break why,
                    }
                }
                m = incoming.next() => {
                    heard = tokio::time::Instant::now();
                    match m {
                        Some(Ok(WsMessage::Text(text))) => {
                            let body = serde_json::from_str::<FromPage>(text.as_str())
                                .map_err(|_| "That is not a message a seat may send")
                                .and_then(FromPage::into_body);
                            match body {
                                Ok(body) => if to_server.send(body).await.is_err() {
                                    break self.server_gone(&page, session_id);
                                },
                                Err(why) => {
                                    page.close(seat_close::NOT_ALLOWED, Some(why.into()), true);
                                    break "the page sent what a seat may not";
                                }
                            }
                        }
                        Some(Ok(WsMessage::Close(_))) | None => {
                            page.close(seat_close::ENDED, None, true);
                            break "the page left";
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            page.close(protocol_close(&e), None, true);
                            break "the page broke the WebSocket protocol";
                        }
                    }
                }
                Ok(()) = epoch.changed() => {
                    if !self.hub.config().browser_seats || !self.hub.seats.enabled(session_id) {
                        page.close(close::NO_SESSION, Some(SeatRefusal::Off.to_string()), true);
                        break "seats were turned off";
                    }
                }
                _ = ping.tick() => {
                    // A page that went away without a word (a laptop asleep, a network gone)
                    // answers no ping: its seat, name and Troop id are given back.
                    if heard.elapsed() > PING_EVERY * 3 {
                        page.close(close::TOO_SLOW, None, true);
                        break "the page stopped answering";
                    }
                    page.ping();
                }
                // The page stopped reading: its writer gave up.
                () = page.closed() => break "the page fell behind or its socket broke",
            }
        };
        // Leaving like a Troop client: the connection closes and the server tells the others.
        let _ = to_server.half.shutdown().await;
        drop(page);
        let _ = writer.await;
        why
    }

    /// Takes what the server sent: keep-alives answered, the rest queued for the page.
    /// `Ok(false)` once the hub is ending the session and the page has its sentence.
    async fn take_from_server(
        &self,
        decoder: &mut Decoder,
        to_server: &mut ToServer,
        page: &PageWriter,
        (session_id, performer): (&str, &str),
    ) -> Result<bool, &'static str> {
        loop {
            let msg = match decoder.next_message() {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(true),
                Err(_) => {
                    let why = "The session's server sent something the hub cannot read";
                    page.close(seat_close::SERVER_GONE, Some(why.into()), false);
                    return Err("bad data from the server");
                }
            };
            if matches!(msg.body, Body::KeepAlive) {
                if to_server.send(Body::KeepAlive).await.is_err() {
                    return Err("the server closed");
                }
                continue;
            }
            let out = match msg.body {
                // The session ends only when the hub ends it (its sentence) or the server
                // closes: a MSG_KILL any performer can send is shown as what it says.
                Body::Kill { string } => match self.hub.seats.ending_sentence(session_id) {
                    Some(sentence) => {
                        page.send(ToPage::Kill { string: sentence }.to_text());
                        page.close(seat_close::ENDED, None, false);
                        return Ok(false);
                    }
                    // The owner removed this seat's performer: the server's own sentence, and the
                    // page does not join again by itself.
                    None if msg.src_id == -1 && self.hub.seats.take_removed(session_id, performer) => {
                        page.send(ToPage::Kill { string }.to_text());
                        page.close(seat_close::ENDED, None, false);
                        return Ok(false);
                    }
                    None => Some(ToPage::Console { string }),
                },
                body => ToPage::from_troop(msg.src_id, body),
            };
            let Some(out) = out else { continue };
            if !page.send(out.to_text()) {
                page.close(close::TOO_SLOW, None, true);
                return Err("the page fell behind");
            }
        }
    }

    /// The server's connection closed: the hub's sentence if the session is ending (then the
    /// page may not come back), else a sentence saying the page may join again.
    fn server_gone(&self, page: &PageWriter, session_id: &str) -> &'static str {
        match self.hub.seats.ending_sentence(session_id) {
            Some(sentence) => {
                page.send(ToPage::Kill { string: sentence }.to_text());
                page.close(seat_close::ENDED, None, false);
            }
            None => {
                let why = "The session's server closed this seat's connection; join again".to_string();
                page.close(seat_close::SERVER_GONE, Some(why), false);
            }
        }
        "the server closed"
    }
}

/// The seat's side of its Troop connection.
struct ToServer {
    half: OwnedWriteHalf,
    id: i64,
    next_msg_id: i64,
}

impl ToServer {
    async fn send(&mut self, body: Body) -> std::io::Result<()> {
        self.next_msg_id += 1;
        let msg = Message { msg_id: self.next_msg_id, src_id: self.id, body };
        self.half.write_all(msg.encode().as_bytes()).await
    }
}

/// What the page's writer is asked to do, besides sending text.
struct Closing {
    code: u16,
    why: Option<String>,
    /// Now, before what is queued (the page broke a rule or fell behind); otherwise after it.
    at_once: bool,
}

/// The seat's side of its page: a queue bounded in messages and in bytes (its own and all
/// seats' together, [`Seats::reserve`]), a close that never waits behind a full queue, pings.
struct PageWriter {
    queue: mpsc::Sender<String>,
    closing: mpsc::Sender<Closing>,
    pings: mpsc::Sender<()>,
    /// Bytes queued for this page and not yet written.
    queued: Arc<AtomicUsize>,
    seats: Arc<Seats>,
}

impl PageWriter {
    fn start(out: Out, seats: Arc<Seats>) -> (PageWriter, tokio::task::JoinHandle<()>) {
        let (queue, texts) = mpsc::channel(SEAT_BACKLOG);
        let (closing, close_rx) = mpsc::channel(1);
        let (pings, ping_rx) = mpsc::channel(1);
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(write_page(out, texts, close_rx, ping_rx, queued.clone(), seats.clone()));
        (PageWriter { queue, closing, pings, queued, seats }, task)
    }

    /// Queues a text; false if the page is too far behind (in messages or bytes).
    fn send(&self, text: String) -> bool {
        let len = text.len();
        // Counted before it is queued: the writer may take it (and give it back) at once.
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > SEAT_BYTES || !self.seats.reserve(len) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        if self.queue.try_send(text).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.seats.release(len);
            return false;
        }
        true
    }

    fn close(&self, code: u16, why: Option<String>, at_once: bool) {
        let _ = self.closing.try_send(Closing { code, why, at_once });
    }

    fn ping(&self) {
        let _ = self.pings.try_send(());
    }

    async fn closed(&self) {
        self.queue.closed().await
    }
}

/// Writes to the page in batches until told to close or the page stops taking writes (then
/// it returns, which the seat sees as its queue closing). Bytes written, or dropped at the end,
/// are given back.
async fn write_page(
    mut out: Out,
    mut texts: mpsc::Receiver<String>,
    mut closing: mpsc::Receiver<Closing>,
    mut pings: mpsc::Receiver<()>,
    queued: Arc<AtomicUsize>,
    seats: Arc<Seats>,
) {
    let written = |len: usize| {
        queued.fetch_sub(len, Ordering::Relaxed);
        seats.release(len);
    };
    // A close asked for after what is queued.
    let mut after: Option<Closing> = None;
    loop {
        tokio::select! {
            biased;
            Some(c) = closing.recv(), if after.is_none() => {
                if c.at_once {
                    bye(&mut out, c).await;
                    break;
                }
                after = Some(c);
            }
            Some(()) = pings.recv() => {
                let ping = out.send(WsMessage::Ping(Default::default()));
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(()))) {
                    break;
                }
            }
            first = texts.recv() => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match texts.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let lens: usize = batch.iter().map(String::len).sum();
                let write = async {
                    for text in batch {
                        out.feed(WsMessage::Text(text.into())).await?;
                    }
                    out.flush().await
                };
                let sent = tokio::time::timeout(SEND_TIMEOUT, write).await;
                written(lens);
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        }
        if after.is_some() && texts.is_empty() {
            if let Some(c) = after.take() {
                bye(&mut out, c).await;
            }
            break;
        }
    }
    texts.close();
    while let Ok(t) = texts.try_recv() {
        written(t.len());
    }
}

/// The error sentence (if any) and the close frame.
async fn bye(out: &mut Out, c: Closing) {
    goodbye(out, c.why.map(|message| ToPage::Error { message, retry: false }), c.code).await;
}
