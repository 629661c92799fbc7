//! Browser seats against a real session server run in this process
//! ([`FakeRuntime::with_servers`]) and the hub's real HTTP front door on loopback, no engine:
//! a seat and a native Troop client see each other join, type, evaluate and leave; wrong
//! passwords, taken names, switched-off seats and a page that stops reading are refused or
//! dropped; the hub's ending sentence reaches the seat.

use crate::config::Config;
use crate::hub::{EndReason, Hub, StartRequest};
use crate::runtime::fake::FakeRuntime;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use troop_server::client::TroopClient;
use troop_server::message::Body;

const PW: &str = "pw";
const T: Duration = Duration::from_secs(5);

type Socket = Ws<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Ws<S> = tokio_tungstenite::WebSocketStream<S>;
/// What a test's WebSocket runs over.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Io for T {}

/// A hub on real in-process servers with its HTTP front door on a loopback port.
struct Bench {
    hub: Arc<Hub>,
    fake: Arc<FakeRuntime>,
    http: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn bench(yaml: &str) -> Bench {
    let fake = Arc::new(FakeRuntime::with_servers());
    let config = Config::from_yaml(&format!("ports: 100-103\npublic_host: hub.example\n{yaml}")).unwrap();
    let hub = Hub::new(config, fake.clone());
    hub.refresh_nodes().await;
    hub.recover().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(super::serve(listener, hub.clone(), stop.clone()));
    Bench { hub, fake, http, stop }
}

impl Bench {
    async fn session(&self, name: &str) -> (String, SocketAddr) {
        let req = StartRequest {
            name: name.into(),
            password: PW.to_string().into(),
            daemon: true,
            peer: Some("127.0.0.1".parse().unwrap()),
            ttl: None,
        };
        let owned = self.hub.start_session(req).await.unwrap();
        let listed = self.hub.list();
        let handle = listed.iter().find(|s| s.name == name).and_then(|s| s.container.clone());
        let handle = handle.unwrap_or_else(|| {
            panic!("{name} is not listed with a container: {:?}", listed.iter().map(|s| &s.name).collect::<Vec<_>>())
        });
        let handle = self.fake.servers().into_keys().find(|h| h.starts_with(&handle)).unwrap();
        (owned.id, self.fake.server_addr(&handle).expect("a real server"))
    }

    async fn open(&self, session: &str) -> Socket {
        let url = format!("ws://{}/api/v1/sessions/{session}/seat", self.http);
        tokio_tungstenite::connect_async(url).await.expect("upgraded").0
    }

    /// A seat that joined: its socket and client id.
    async fn seat(&self, session: &str, name: &str) -> (Socket, i64) {
        let mut ws = self.open(session).await;
        send(&mut ws, json!({"type": "join", "name": name, "password": PW})).await;
        let welcome = next_of(&mut ws, "welcome").await;
        (ws, welcome["id"].as_i64().unwrap())
    }
}

async fn send<S: Io>(ws: &mut Ws<S>, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON message, or the close frame's code as `{"closed": code}`.
async fn next<S: Io>(ws: &mut Ws<S>) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(frame))) => return json!({"closed": frame.map(|f| u16::from(f.code))}),
            Some(Ok(_)) => continue,
            other => return json!({"closed": null, "other": format!("{other:?}")}),
        }
    }
}

/// Messages until one of type `kind` (answering join barriers as a page does).
async fn next_of<S: Io>(ws: &mut Ws<S>, kind: &str) -> Value {
    loop {
        let m = next(ws).await;
        if m["type"] == "request_ack" && m["flag"] == 1 {
            send(ws, json!({"type": "ack"})).await;
        }
        if m["type"] == kind || m.get("closed").is_some() {
            return m;
        }
    }
}

/// The close code after any messages.
async fn closed<S: Io>(ws: &mut Ws<S>) -> (Option<u64>, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let m = next(ws).await;
        if let Some(code) = m.get("closed") {
            return (code.as_u64(), seen);
        }
        seen.push(m);
    }
}

#[tokio::test]
async fn a_seat_and_a_troop_client_play_together() {
    let b = bench("").await;
    let (_, addr) = b.session("jam").await;
    let mut alice = TroopClient::join(addr, "alice", PW, T).await.unwrap();
    alice.insert(0, "ü🎵\n").await.unwrap();
    while !alice.is_synchronized() {
        alice.recv(T).await.unwrap();
    }
    let (mut seat, id) = b.seat("jam", "bea").await;
    // The seat gets the whole document, and alice sees bea join like any Troop client.
    let reset = next_of(&mut seat, "reset").await;
    assert_eq!(reset["document"], "ü🎵\n");
    let joined = alice.recv_until_match(T, |_, m| matches!(&m.body, Body::Connect { name, .. } if name == "bea")).await;
    assert_eq!(joined.unwrap().src_id, id);
    while !alice.is_synchronized() || alice.document() != "ü🎵\n" {
        alice.recv(T).await.unwrap();
    }
    // bea types after the astral character (code points), alice sees it.
    send(&mut seat, json!({"type": "operation", "ops": [2, "x", 1], "revision": 0})).await;
    let echo = next_of(&mut seat, "operation").await;
    assert_eq!((echo["src"].as_i64(), echo["ops"].clone()), (Some(id), json!([2, "x", 1])));
    alice.recv_until_match(T, |a, _| a.document() == "ü🎵x\n").await.unwrap();
    // alice types, bea gets it; bea evaluates, alice is asked to run it.
    alice.insert(0, "a").await.unwrap();
    let op = next_of(&mut seat, "operation").await;
    assert_eq!(op["ops"], json!(["a", 4]));
    send(&mut seat, json!({"type": "evaluate", "start": 1, "end": 2})).await;
    let eval = alice.recv_until_match(T, |_, m| matches!(m.body, Body::EvaluateBlock { .. })).await.unwrap();
    assert_eq!((eval.src_id, eval.body), (id, Body::EvaluateBlock { start: 1, end: 2, reply: 1 }));
    let echo = next_of(&mut seat, "evaluate").await;
    assert_eq!((echo["src"].as_i64(), echo["start"].as_i64()), (Some(id), Some(1)), "bea's own evaluation comes back");
    assert_eq!(b.hub.seats.total(), 1);
    // The hub's live view (the audience view, the archive, the API) counts bea as a performer.
    let (session_id, _) = b.hub.troop_target("jam").unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while !b.hub.performer_names(&session_id).contains(&"bea".to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "the live view sees bea");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listed = b.hub.list().into_iter().find(|s| s.name == "jam").unwrap();
    assert_eq!((listed.seats, listed.seats_on), (1, true));
    // bea closes her tab: alice hears she left, and her place is given back.
    seat.close(None).await.unwrap();
    alice.recv_until_match(T, |_, m| m.src_id == id && m.body == Body::Remove).await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while b.hub.seats.total() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the seat's place is given back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_performers_kill_message_is_shown_not_obeyed() {
    let b = bench("").await;
    let (_, addr) = b.session("jam").await;
    let mut mallory = TroopClient::join(addr, "mallory", PW, T).await.unwrap();
    let (mut seat, id) = b.seat("jam", "bea").await;
    next_of(&mut seat, "reset").await;
    while !mallory.is_synchronized() {
        mallory.recv(T).await.unwrap();
    }
    // Any Troop client can send MSG_KILL; only the hub (or the server closing) ends a seat.
    mallory.send(Body::Kill { string: "Server shutting down, go home".into() }).await.unwrap();
    let said = next_of(&mut seat, "console").await;
    assert_eq!(said["string"], "Server shutting down, go home");
    send(&mut seat, json!({"type": "mark", "index": 0})).await;
    let mark = mallory.recv_until_match(T, |_, m| matches!(m.body, Body::SetMark { .. })).await.unwrap();
    assert_eq!(mark.src_id, id, "the seat plays on");
}

#[tokio::test]
async fn wrong_passwords_taken_names_and_bad_messages_are_refused_in_one_sentence() {
    let b = bench("").await;
    b.session("jam").await;
    let mut ws = b.open("jam").await;
    send(&mut ws, json!({"type": "join", "name": "bea", "password": "nope"})).await;
    let (code, seen) = closed(&mut ws).await;
    assert_eq!((code, seen[0]["message"].as_str()), (Some(4403), Some("Wrong password")));

    let (_bea, _) = b.seat("jam", "bea").await;
    let mut again = b.open("jam").await;
    send(&mut again, json!({"type": "join", "name": "bea", "password": PW})).await;
    let (code, seen) = closed(&mut again).await;
    assert_eq!(code, Some(4409));
    assert_eq!(seen[0]["message"], "The name 'bea' is taken in this session: choose another");

    let (mut rude, _) = b.seat("jam", "carl").await;
    send(&mut rude, json!({"type": "kill", "string": "bye everyone"})).await;
    let (code, _) = closed(&mut rude).await;
    assert_eq!(code, Some(4400));

    let url = format!("ws://{}/api/v1/sessions/nosuch/seat", b.http);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("a seat in no session: {other:?}"),
    }
}

#[tokio::test]
async fn a_native_performers_name_is_refused_for_a_seat() {
    let b = bench("").await;
    let (id, addr) = b.session("jam").await;
    let _alice = TroopClient::join(addr, "alice", PW, T).await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while b.hub.performer_names(&id).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the hub sees alice");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut ws = b.open("jam").await;
    send(&mut ws, json!({"type": "join", "name": "alice", "password": PW})).await;
    assert_eq!(closed(&mut ws).await.0, Some(4409));
}

#[tokio::test]
async fn the_owner_turns_seats_off_and_open_seats_close() {
    let b = bench("").await;
    b.session("jam").await;
    let (mut seat, _) = b.seat("jam", "bea").await;
    let body = json!({"password": PW, "on": false}).to_string();
    let mut s = tokio::net::TcpStream::connect(b.http).await.unwrap();
    let req = format!(
        "POST /api/v1/sessions/jam/seats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""on":false"#), "{answer}");
    let (code, seen) = closed(&mut seat).await;
    assert_eq!(code, Some(4404));
    assert!(seen.iter().any(|m| m["message"] == "Browser seats are off for this session"), "{seen:?}");
    let url = format!("ws://{}/api/v1/sessions/jam/seat", b.http);
    let refused = tokio_tungstenite::connect_async(url).await;
    assert!(refused.is_err(), "a new seat is refused before the upgrade");
}

#[tokio::test]
async fn hub_yaml_turns_seats_off_everywhere() {
    let b = bench("").await;
    b.session("jam").await;
    let (mut seat, _) = b.seat("jam", "bea").await;
    let mut config = (*b.hub.config()).clone();
    config.browser_seats = false;
    b.hub.apply_config(config);
    assert_eq!(closed(&mut seat).await.0, Some(4404));
}

#[tokio::test]
async fn the_hubs_ending_sentence_reaches_the_seat() {
    let b = bench("").await;
    let (id, _) = b.session("jam").await;
    let (mut seat, _) = b.seat("jam", "bea").await;
    next_of(&mut seat, "reset").await;
    b.hub.end_session(&id, EndReason::AdminKilled).await;
    let kill = next_of(&mut seat, "kill").await;
    let expected = EndReason::AdminKilled.performer_message().unwrap();
    assert_eq!(kill["string"].as_str(), Some(expected.as_str()));
    assert_eq!(closed(&mut seat).await.0, Some(1000));
}

#[tokio::test]
async fn a_seat_that_stops_reading_is_dropped_and_the_session_plays_on() {
    let b = bench("").await;
    let (id, addr) = b.session("jam").await;
    let mut alice = TroopClient::join(addr, "alice", PW, T).await.unwrap();
    // A page that joins, answers the barrier, then never reads again (a small receive
    // buffer fills fast).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(b.http).await.unwrap();
    let url = format!("ws://{}/api/v1/sessions/jam/seat", b.http);
    let (mut stuck, _) = tokio_tungstenite::client_async(url, stream).await.expect("upgraded");
    send(&mut stuck, json!({"type": "join", "name": "stuck", "password": PW})).await;
    next_of(&mut stuck, "reset").await;
    // The seat's join resets alice's document too: she types from there.
    alice.recv_until_match(T, |_, m| matches!(m.body, Body::Reset { .. })).await.expect("the seat's join");
    // alice types (a line in, the line out, so the document stays small) until the seat is
    // dropped: past what the page's socket, the kernel's buffers and the seat's queue hold, or
    // past the writer's timeout, whichever comes first on this machine.
    let line = "x".repeat(100) + "\n";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while b.hub.seats.total() > 0 && tokio::time::Instant::now() < deadline {
        let len = alice.document().chars().count() as u64;
        alice.insert(len, &line).await.unwrap();
        while !alice.is_synchronized() {
            alice.recv(T).await.unwrap();
        }
        alice.delete(len, line.len() as u64).await.unwrap();
        while !alice.is_synchronized() {
            alice.recv(T).await.unwrap();
        }
    }
    assert_eq!(b.hub.seats.total(), 0, "the seat that stopped reading was dropped");
    // Its Troop connection went with it, and alice plays on.
    let deadline = tokio::time::Instant::now() + T;
    while b.hub.performer_names(&id).iter().any(|n| n == "stuck") {
        assert!(tokio::time::Instant::now() < deadline, "the session sees the stuck seat leave");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    alice.insert(0, "still here\n").await.unwrap();
    while !alice.is_synchronized() {
        alice.recv(T).await.unwrap();
    }
}

#[tokio::test]
async fn a_removed_seat_reads_the_owners_sentence_and_a_locked_session_refuses_new_seats() {
    let b = bench("").await;
    b.session("jam").await;
    let (mut seat, _) = b.seat("jam", "bea").await;
    next_of(&mut seat, "reset").await;
    assert!(b.hub.lock_session("jam", true).await.expect("locked"));
    assert!(b.hub.session_locked("jam"), "said at once");
    let ids = b.hub.remove_performer("jam", "bea", Some("time's up")).await.expect("removed");
    assert_eq!(ids.len(), 1);
    let kill = next_of(&mut seat, "kill").await;
    assert_eq!(kill["string"].as_str(), Some(crate::hub::removal_sentence(Some("time's up")).as_str()));
    assert_eq!(closed(&mut seat).await.0, Some(1000), "ended: the page does not join again");

    let mut newcomer = b.open("jam").await;
    send(&mut newcomer, json!({"type": "join", "name": "cleo", "password": PW})).await;
    let (_, seen) = closed(&mut newcomer).await;
    assert_eq!(seen[0]["message"], "The session's owner has locked it to new performers");
    let nobody = b.hub.remove_performer("jam", "nobody", None).await;
    assert!(matches!(nobody, Err(crate::hub::ModerationError::NoPerformer { .. })), "{nobody:?}");
    assert!(!b.hub.lock_session("jam", false).await.expect("unlocked"));
    // Once her seat has given its place back, bea may come back.
    let deadline = tokio::time::Instant::now() + T;
    while b.hub.seats.total() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the removed seat gives its place back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_bea, _) = b.seat("jam", "bea").await;
}
