//! The hub's control channel over real sockets (CONTROL.md): locking and arming, secrets,
//! hostile input and floods, snapshots, the event stream reproducing the document, slow
//! subscribers, and `end`. Troop clients keep relaying through all of it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use troop_server::client::{login, login_from, ClientError, TroopClient};
use troop_server::control::{ControlClient, ControlError, ControlSecret, EvalKind, EventKind, EventStream};
use troop_server::message::Body;
use troop_server::server::{self, Config, Exit};

const PW: &str = "s3cret";
const SECRET: &str = "0123456789abcdef0123456789ABCDEF";
const T: Duration = Duration::from_secs(5);
const SENTENCE: &str = "Troop Hub: the session has ended: its owner left.";

fn md5(pw: &str) -> String {
    troop_server::md5_hex(pw)
}

/// A library server with password PW and the control secret on a loopback port.
struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<Exit>>,
}

impl Server {
    async fn start(config: Config) -> Server {
        let secret = ControlSecret::new(SECRET).expect("valid secret");
        Server::start_plain(Config { control: Some(secret), ..config }).await
    }

    /// Without the control secret unless `config` has one.
    async fn start_plain(config: Config) -> Server {
        let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::INFO).try_init();
        let config = Config { password_md5: md5(PW), ..config };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Server { addr, _stop: stop, task }
    }

    async fn join(&self, name: &str) -> TroopClient {
        TroopClient::join(self.addr, name, PW, T).await.unwrap_or_else(|e| panic!("{name} could not join: {e}"))
    }

    async fn control(&self) -> ControlClient {
        ControlClient::connect(self.addr, SECRET, T).await.expect("control connection")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn console(text: &str) -> Body {
    Body::Console { string: text.into() }
}

/// `from` sends a console line; `to` must get it within `within`.
async fn relays(from: &mut TroopClient, to: &mut TroopClient, text: &str, within: Duration) {
    from.send(console(text)).await.expect("send");
    to.recv_until_match(within, |_, m| matches!(&m.body, Body::Console { string } if string == text))
        .await
        .unwrap_or_else(|e| panic!("{} did not get {:.20}... from {} in {within:?}: {e}", to.name, text, from.name));
}

/// Makes every client process all join traffic so far (RESETs included) before it edits:
/// each sends a marker, all wait for all.
async fn settle(clients: &mut [TroopClient]) {
    for c in clients.iter_mut() {
        let marker = format!("settled {}", c.name);
        c.send(console(&marker)).await.unwrap();
    }
    let names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
    for c in clients.iter_mut() {
        for name in &names {
            let marker = format!("settled {name}");
            c.recv_until_match(T, |_, m| matches!(&m.body, Body::Console { string } if *string == marker))
                .await
                .unwrap_or_else(|e| panic!("{} never settled: {e}", c.name));
        }
    }
}

/// The sentences of the MSG_KILLs among `seen`.
fn kills(seen: &[troop_server::message::Message]) -> Vec<&str> {
    seen.iter()
        .filter_map(|m| match &m.body {
            Body::Kill { string } => Some(string.as_str()),
            _ => None,
        })
        .collect()
}

/// Opens a raw connection and writes `bytes` (errors ignored: the server may close first).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    s
}

fn line(secret: &str) -> Vec<u8> {
    format!("TROOP-HUB-CONTROL/1 {secret}\n").into_bytes()
}

fn frame(json: &str) -> Vec<u8> {
    let mut f = (json.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(json.as_bytes());
    f
}

/// Reads until the server closes; returns how many bytes came first.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the server did not close the connection within {within:?} ({total} bytes read)"),
        }
    }
}

#[tokio::test]
async fn a_locked_server_refuses_logins_until_armed_with_the_right_md5() {
    let (_p, addr) = spawn_binary(&[], &[("TROOP_CONTROL_SECRET", SECRET)]).await;
    assert!(matches!(login(addr, "a", PW).await, Err(ClientError::Refused(-1))));
    assert!(matches!(login(addr, "a", "").await, Err(ClientError::Refused(-1))), "locked, not password-less");
    let mut ctl = ControlClient::connect(addr, SECRET, T).await.unwrap();
    let snap = ctl.snapshot().await.unwrap();
    assert!(!snap.armed && snap.name.is_none() && snap.performers.is_empty());
    assert!(!ctl.verify(&md5(PW)).await.unwrap());
    assert!(matches!(ctl.arm("NOT-AN-MD5", None, None).await, Err(ControlError::Refused(_))));
    ctl.arm(&md5(PW), Some("jam"), Some(Duration::from_secs(600))).await.unwrap();
    let snap = ctl.snapshot().await.unwrap();
    assert!(snap.armed);
    assert_eq!(snap.name.as_deref(), Some("jam"));
    assert!(matches!(login(addr, "a", "wrong").await, Err(ClientError::Refused(-1))));
    let a = TroopClient::join(addr, "a", PW, T).await.expect("the right password gets in");
    assert!(ctl.verify(&md5(PW)).await.unwrap());
    assert!(!ctl.verify(&md5("wrong")).await.unwrap());
    // Arming again is refused, with `once` or without: the password is never replaced.
    let again = ctl.arm(&md5("next"), None, None).await;
    assert!(matches!(&again, Err(ControlError::Refused(e)) if e == "already armed"), "{again:?}");
    assert!(matches!(login(addr, "b", "next").await, Err(ClientError::Refused(-1))));
    TroopClient::join(addr, "b", PW, T).await.expect("the first password still gets in");
    assert_eq!(ctl.snapshot().await.unwrap().name.as_deref(), Some("jam"));
    drop(a);
}

#[tokio::test]
async fn arm_once_arms_a_locked_server_and_is_refused_by_an_armed_one() {
    let (_p, addr) = spawn_binary(&[], &[("TROOP_CONTROL_SECRET", SECRET)]).await;
    let mut ctl = ControlClient::connect(addr, SECRET, T).await.unwrap();
    ctl.arm_once(&md5(PW), Some("jam"), None).await.expect("a locked server takes its first arm");
    let again = ctl.arm_once(&md5("thief"), Some("other"), None).await;
    assert!(matches!(&again, Err(ControlError::Refused(e)) if e == "already armed"), "{again:?}");
    let snap = ctl.snapshot().await.unwrap();
    assert_eq!(snap.name.as_deref(), Some("jam"), "the refused arm changed nothing");
    assert!(matches!(login(addr, "a", "thief").await, Err(ClientError::Refused(-1))));
    TroopClient::join(addr, "a", PW, T).await.expect("the first password still gets in");
}

#[tokio::test]
async fn a_wrong_secret_arms_nothing_and_the_session_keeps_relaying() {
    let s = Server::start(Config::default()).await;
    let mut a = s.join("a").await;
    let mut b = s.join("b").await;
    let mut bad = ControlClient::connect(s.addr, "ffffffffffffffffffffffffffffffff", T).await.unwrap();
    assert!(matches!(bad.arm(&md5("evil"), None, None).await, Err(ControlError::Closed)));
    let mut raw_bad =
        raw(s.addr, &[line("0123456789abcdef0123456789abcdee"), frame(r#"{"op":"snapshot"}"#)].concat()).await;
    assert_eq!(read_to_close(&mut raw_bad, T).await, 0, "closed without a reply");
    assert!(matches!(login(s.addr, "c", "evil").await, Err(ClientError::Refused(-1))));
    relays(&mut a, &mut b, "still relaying", T).await;
    // A server without a secret takes no control connection at all.
    let plain = Server::start_plain(Config::default()).await;
    let mut none = ControlClient::connect(plain.addr, SECRET, T).await.unwrap();
    assert!(matches!(none.snapshot().await, Err(ControlError::Closed)));
}

#[tokio::test]
async fn garbage_huge_frames_and_floods_leave_the_performers_alone() {
    let s = Server::start(Config::default()).await;
    let mut a = s.join("a").await;
    let mut b = s.join("b").await;
    let hostile: Vec<Vec<u8>> = vec![
        [line(SECRET), b"garbage, not a frame".to_vec()].concat(),
        [line(SECRET), vec![0xff, 0xff, 0xff, 0xff]].concat(),
        [line(SECRET), ((64 << 10) as u32 + 1).to_be_bytes().to_vec()].concat(),
        [line(SECRET), frame("not json")].concat(),
        [line(SECRET), frame("[1, 2]")].concat(),
        [b"TROOP-HUB-CONTROL/1 ".to_vec(), vec![b'a'; 300]].concat(),
        b"TROOP-HUB-CONTROL/2 x\n".to_vec(),
    ];
    for bytes in &hostile {
        let mut c = raw(s.addr, bytes).await;
        assert_eq!(
            read_to_close(&mut c, T).await,
            0,
            "dropped without a reply: {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(28)])
        );
        relays(&mut a, &mut b, "after hostile input", T).await;
    }
    // 500 control connections at once, while a and b go on relaying.
    let flood = (0..500).map(|_| {
        let addr = s.addr;
        tokio::spawn(async move {
            let Ok(mut c) = TcpStream::connect(addr).await else {
                return (None, false);
            };
            let _ = c.write_all(&[line(SECRET), frame(r#"{"op":"snapshot"}"#)].concat()).await;
            let mut head = [0u8; 4];
            let answered = matches!(tokio::time::timeout(T, c.read_exact(&mut head)).await, Ok(Ok(_)));
            (Some(c), answered)
        })
    });
    let flood: Vec<_> = flood.collect();
    for k in 0..20 {
        relays(&mut a, &mut b, &format!("during the flood {k}"), Duration::from_secs(1)).await;
    }
    let mut held = Vec::new();
    for task in flood {
        held.push(task.await.expect("flood task"));
    }
    let answered = held.iter().filter(|(_, ok)| *ok).count();
    assert!(answered > 0 && answered < 500, "the per-address cap held ({answered} answered)");
    drop(held);
    let deadline = Instant::now() + T;
    loop {
        match ControlClient::connect(s.addr, SECRET, T).await.unwrap().snapshot().await {
            Ok(snap) => break assert_eq!(snap.performers.len(), 2),
            Err(e) => assert!(Instant::now() < deadline, "no control connection after the flood: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relays(&mut b, &mut a, "after the flood", T).await;
}

#[tokio::test]
async fn snapshots_list_joined_performers_and_forget_those_who_left() {
    let s = Server::start(Config::default()).await;
    let mut pair = [s.join("alice").await, s.join("bob").await];
    settle(&mut pair).await;
    let [mut a, mut b] = pair;
    a.insert(0, "hello").await.unwrap();
    b.recv_until_match(T, |c, _| c.document() == "hello").await.unwrap();
    let mut ctl = s.control().await;
    let snap = ctl.snapshot().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let who: Vec<(i64, &str, u8, &str)> =
        snap.performers.iter().map(|p| (p.id, p.name.as_str(), p.colour, p.address.as_str())).collect();
    assert_eq!(who, vec![(0, "alice", 0, "127.0.0.1"), (1, "bob", 1, "127.0.0.1")]);
    assert!(snap.performers.iter().all(|p| p.since_ms <= now && now - p.since_ms < 60_000));
    assert_eq!(snap.document, "hello");
    assert_eq!(snap.counters.operations, 1);
    assert!(snap.counters.bytes_relayed > 0 && snap.last_activity_ms.is_some());
    assert!(snap.armed && snap.name.is_none());
    a.close().await;
    b.recv_until_match(T, |_, m| matches!(m.body, Body::Remove)).await.unwrap();
    let snap = ctl.snapshot().await.unwrap();
    assert_eq!(snap.performers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["bob"]);
}

/// Reads events until `seq` (inclusive), checking they are numbered one after the other.
async fn events_until(stream: &mut EventStream, from: u64, seq: u64) -> Vec<EventKind> {
    let mut out = Vec::new();
    let mut expect = from + 1;
    while expect <= seq {
        let e = stream.next_within(T).await.expect("an event in time").expect("stream open");
        assert_eq!(e.seq, expect, "events are numbered one by one");
        expect += 1;
        out.push(e.kind);
    }
    out
}

#[tokio::test]
async fn operation_events_applied_to_the_snapshot_reproduce_the_document() {
    let s = Server::start(Config::default()).await;
    let mut pair = [s.join("a").await, s.join("b").await];
    settle(&mut pair).await;
    let [mut a, mut b] = pair;
    a.insert(0, "seed\n").await.unwrap();
    b.recv_until_match(T, |c, _| c.document() == "seed\n").await.unwrap();
    a.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    let (start, mut stream) = s.control().await.subscribe().await.unwrap();
    assert_eq!(start.document, "seed\n");
    let typists: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            tokio::spawn(async move {
                for round in 0..60u64 {
                    let len = c.document().chars().count() as u64;
                    if round % 4 == 3 {
                        c.delete((round * 7 + k as u64) % len.max(1), 2).await.unwrap();
                    } else {
                        c.insert((round * 5 + k as u64) % (len + 1), &format!("{k}é")).await.unwrap();
                    }
                    while c.try_recv().await.unwrap().is_some() {}
                    tokio::task::yield_now().await;
                }
                while !c.is_synchronized() {
                    c.recv(T).await.unwrap();
                }
                c
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in typists {
        done.push(t.await.expect("typist"));
    }
    settle(&mut done).await; // both have seen every operation
    let end = s.control().await.snapshot().await.unwrap();
    let (mut document, mut operations) = (start.document.clone(), 0);
    for kind in events_until(&mut stream, start.seq, end.seq).await {
        if let EventKind::Operation { ops, author } = kind {
            assert!(author == 0 || author == 1);
            document = ops.apply(&document).expect("each operation fits the document it follows");
            operations += 1;
        }
    }
    assert_eq!(document, end.document, "the events reproduce the server's document");
    assert_eq!(end.counters.operations - start.counters.operations, operations);
    assert!(operations >= 40, "both typed concurrently ({operations} operations)");
    for c in &done {
        assert_eq!(c.document(), end.document, "{} converged", c.name);
    }
}

#[tokio::test]
async fn every_kind_of_event_is_reported_with_its_details() {
    let s = Server::start(Config::default()).await;
    let mut a = s.join("a").await;
    a.insert(0, "a = 1\nb = 2\nc = 3").await.unwrap();
    a.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    let (start, mut stream) = s.control().await.subscribe().await.unwrap();
    a.send(Body::EvaluateString { string: "print(1)".into(), reply: 1 }).await.unwrap();
    a.send(Body::EvaluateBlock { start: 2, end: 2, reply: 1 }).await.unwrap();
    a.send(Body::EvaluateBlock { start: 1, end: 3, reply: 1 }).await.unwrap();
    a.send(Body::Select { start: 1, end: 4, reply: 1 }).await.unwrap();
    a.send(Body::SetMark { index: 3, reply: 1 }).await.unwrap();
    a.send(console("hi")).await.unwrap();
    a.send(Body::Constraint { constraint_id: 2 }).await.unwrap();
    let b = s.join("b").await;
    b.close().await;
    let kinds = events_until(&mut stream, start.seq, start.seq + 10).await;
    let block = |text: &str, start, end| EventKind::Evaluate {
        author: 0,
        kind: EvalKind::Block,
        text: text.into(),
        start: Some(start),
        end: Some(end),
    };
    let expected = vec![
        EventKind::Evaluate { author: 0, kind: EvalKind::String, text: "print(1)".into(), start: None, end: None },
        block("b = 2", 2, 2),
        block("a = 1\nb = 2", 1, 3),
        EventKind::Select { id: 0, start: 1, end: 4 },
        EventKind::Mark { id: 0, index: 3 },
        EventKind::Console { author: 0, text: "hi".into() },
        EventKind::Constraint { id: 2 },
        EventKind::Join { id: 1, name: "b".into(), colour: 1, address: "127.0.0.1".into() },
        EventKind::Reset,
        EventKind::Leave { id: 1 },
    ];
    assert_eq!(kinds, expected, "events in order");
    assert_eq!(s.control().await.snapshot().await.unwrap().counters.evaluations, 3);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_while_eight_performers_keep_relaying() {
    let config = Config { control_queue_bytes: 256 << 10, ..Config::default() };
    let s = Server::start(config).await;
    let mut performers = Vec::new();
    for k in 0..8 {
        performers.push(s.join(&format!("p{k}")).await);
    }
    settle(&mut performers).await;
    // Subscribes, then never reads; a small receive buffer so the backlog builds up sooner.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(s.addr).await.unwrap();
    stuck.write_all(&[line(SECRET), frame(r#"{"op":"subscribe"}"#)].concat()).await.unwrap();
    let big = "x".repeat(64 << 10);
    let mut slowest = Duration::ZERO;
    for round in 0..160usize {
        let started = Instant::now();
        let text = format!("{round} {big}");
        let (before, rest) = performers.split_at_mut(round % 8);
        let (sender, after) = rest.split_first_mut().expect("a sender");
        sender.send(console(&text)).await.unwrap();
        sender.insert(0, "e").await.unwrap();
        for other in before.iter_mut().chain(after.iter_mut()) {
            other
                .recv_until_match(T, |_, m| matches!(&m.body, Body::Console { string } if *string == text))
                .await
                .unwrap_or_else(|e| panic!("{} missed round {round}: {e}", other.name));
        }
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(1), "relays stayed prompt (slowest round {slowest:?})");
    let got = read_to_close(&mut stuck, Duration::from_secs(10)).await;
    assert!(got < 160 * (64 << 10), "dropped before it got everything ({got} bytes)");
    // The edits all arrived everywhere, and a new subscriber takes the freed place.
    for p in performers.iter_mut() {
        while !(p.is_synchronized() && p.document().len() == 160) {
            p.recv(T).await.unwrap_or_else(|e| panic!("{} never saw every edit: {e}", p.name));
        }
    }
    let (snap, _) = s.control().await.subscribe().await.expect("a new subscriber");
    assert_eq!(snap.document, "e".repeat(160));
}

#[tokio::test]
async fn subscribers_are_capped_send_nothing_back_and_bad_requests_get_errors() {
    let s = Server::start(Config { max_subscribers: 2, ..Config::default() }).await;
    let replies =
        ctl_raw(s.addr, &[r#"{"op":"reboot"}"#, r#"{"op":"arm"}"#, r#"{"op":"verify","password_md5":"x"}"#]).await;
    assert!(replies[0].starts_with(r#"{"ok":false,"error":"unknown variant `reboot`"#), "{}", replies[0]);
    assert!(replies[1].starts_with(r#"{"ok":false,"error":"missing field"#), "{}", replies[1]);
    assert_eq!(replies[2], r#"{"ok":true,"match":false}"#, "the connection stays usable after errors");
    // A subscriber that sends a request is closed.
    let mut sub =
        raw(s.addr, &[line(SECRET), frame(r#"{"op":"subscribe"}"#), frame(r#"{"op":"snapshot"}"#)].concat()).await;
    read_to_close(&mut sub, T).await;
    let (_, mut first) = s.control().await.subscribe().await.unwrap();
    let (_, _second) = s.control().await.subscribe().await.unwrap();
    assert!(matches!(s.control().await.subscribe().await, Err(ControlError::Refused(_))));
    let mut a = s.join("a").await;
    a.send(console("x")).await.unwrap();
    let e = first.next_within(T).await.unwrap().unwrap();
    assert!(matches!(e.kind, EventKind::Join { .. }), "{e:?}");
}

/// Requests one after the other on a fresh raw control connection; the replies' JSON text.
async fn ctl_raw(addr: SocketAddr, requests: &[&str]) -> Vec<String> {
    let mut c = raw(addr, &line(SECRET)).await;
    let mut replies = Vec::new();
    for json in requests {
        c.write_all(&frame(json)).await.expect("send a request");
        let mut head = [0u8; 4];
        c.read_exact(&mut head).await.expect("a reply");
        let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
        c.read_exact(&mut body).await.expect("the reply's body");
        replies.push(String::from_utf8(body).expect("UTF-8"));
    }
    replies
}

// ---- the binary ----

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port and waits until it accepts connections.
async fn spawn_binary(args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_troop-server"));
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()]).args(args);
    cmd.env_remove("TROOP_PASSWORD").env_remove("TROOP_PASSWORD_MD5").env_remove("TROOP_CONTROL_SECRET");
    cmd.envs(envs.iter().copied());
    let proc = Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn troop-server"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + T;
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "troop-server did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (proc, addr)
}

#[tokio::test]
async fn end_sends_every_performer_the_sentence_and_the_server_exits_zero() {
    let (mut p, addr) = spawn_binary(&["--password", PW], &[("TROOP_CONTROL_SECRET", SECRET)]).await;
    let mut a = TroopClient::join(addr, "a", PW, T).await.unwrap();
    let mut b = TroopClient::join(addr, "b", PW, T).await.unwrap();
    let (_, mut events) = ControlClient::connect(addr, SECRET, T).await.unwrap().subscribe().await.unwrap();
    let started = Instant::now();
    ControlClient::connect(addr, SECRET, T).await.unwrap().end(SENTENCE).await.expect("end acknowledged");
    for c in [&mut a, &mut b] {
        let seen = c.expect_closed(T).await.expect("closed after end");
        assert_eq!(kills(&seen), vec![SENTENCE], "{} got MSG_KILL with the sentence", c.name);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = p.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut left = Vec::new();
    while let Ok(Some(e)) = events.next_within(T).await {
        left.push(e.kind);
    }
    assert_eq!(left, vec![EventKind::Leave { id: 0 }, EventKind::Leave { id: 1 }], "the subscriber saw them go");
}

#[tokio::test]
async fn a_removed_performer_gets_the_sentence_and_stays_out_while_the_session_is_locked() {
    let server = Server::start(Config::default()).await;
    let mut clients = vec![server.join("alice").await, server.join("bob").await];
    settle(&mut clients).await;
    let (mut bob, mut alice) = (clients.remove(1), clients.remove(0));
    let (snap, mut events) = server.control().await.subscribe().await.expect("subscribe");
    assert!(!snap.locked);
    let mut ctl = server.control().await;
    assert!(ctl.lock(true).await.expect("lock"));
    assert!(ctl.snapshot().await.expect("snapshot").locked);
    assert!(matches!(login(server.addr, "carol", PW).await, Err(ClientError::Refused(-2))), "new names stay out");
    let sentence = "Troop Hub: the session's owner removed you: spam";
    assert_eq!(ctl.remove("bob", sentence).await.expect("remove"), vec![1]);
    let seen = bob.expect_closed(T).await.expect("bob's connection is closed");
    assert_eq!(kills(&seen), vec![sentence], "bob got MSG_KILL with the sentence");
    alice
        .recv_until_match(T, |_, m| m.src_id == 1 && matches!(m.body, Body::Remove))
        .await
        .expect("alice is told bob left");
    assert!(matches!(login(server.addr, "bob", PW).await, Err(ClientError::Refused(-2))), "bob stays out");
    assert_eq!(ctl.remove("nobody", sentence).await.expect("remove nobody"), Vec::<i64>::new());
    // Alice keeps playing, and may come back while it is locked.
    alice.insert(0, "d1 >> play('x')").await.expect("alice types");
    // While alice plays, a stranger with the password cannot log in as her from elsewhere.
    let elsewhere = "127.0.0.2".parse().ok();
    let stranger = login_from(elsewhere, server.addr, "alice", PW, troop_server::session::VERSION).await;
    assert!(matches!(stranger, Err(ClientError::Refused(-2))), "{stranger:?}");
    drop(alice);
    // Nor join as the removed bob after logging in under alice's admitted name.
    let deadline = Instant::now() + T;
    let (mut sneak, id) = loop {
        match login(server.addr, "alice", PW).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "alice's name is admitted once she left: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let connect = Body::Connect { name: "bob".into(), hostname: "127.0.0.1".into(), port: 1, dummy: 0 };
    sneak.write_all(troop_server::message::Message::new(id, connect).encode().as_bytes()).await.expect("sent");
    assert_eq!(read_to_close(&mut sneak, T).await, 0, "closed without a word");
    let deadline = Instant::now() + T;
    let mut alice = loop {
        match TroopClient::join(server.addr, "alice", PW, T).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "alice could not come back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!ctl.lock(false).await.expect("unlock"));
    let _bob_again = server.join("bob").await;
    alice.insert(0, "# ").await.expect("alice types again");
    let mut kinds = Vec::new();
    while !kinds.iter().any(|k| matches!(k, EventKind::Lock { locked: false })) {
        match events.next_within(T).await {
            Ok(Some(e)) => kinds.push(e.kind),
            other => panic!("the events stopped before the unlock: {other:?} after {kinds:?}"),
        }
    }
    let moderation: Vec<&EventKind> =
        kinds.iter().filter(|k| matches!(k, EventKind::Lock { .. } | EventKind::Removed { .. })).collect();
    assert_eq!(
        moderation,
        vec![
            &EventKind::Lock { locked: true },
            &EventKind::Removed { id: 1, name: "bob".into(), reason: sentence.into() },
            &EventKind::Lock { locked: false },
        ]
    );
    let removed_at = kinds.iter().position(|k| matches!(k, EventKind::Removed { .. })).unwrap_or(usize::MAX);
    assert_eq!(kinds.get(removed_at + 1), Some(&EventKind::Leave { id: 1 }), "the leave follows the removal");
}

#[tokio::test]
async fn the_idle_exit_given_by_arm_counts_from_arming() {
    let (mut p, addr) = spawn_binary(&[], &[("TROOP_CONTROL_SECRET", SECRET)]).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // locked and idle, but no timer yet
    assert!(p.0.try_wait().unwrap().is_none(), "no idle exit before arming");
    let mut ctl = ControlClient::connect(addr, SECRET, T).await.unwrap();
    let armed = Instant::now();
    ctl.arm(&md5(PW), None, Some(Duration::from_millis(400))).await.unwrap();
    let status = loop {
        if let Some(status) = p.0.try_wait().expect("wait") {
            break status;
        }
        assert!(armed.elapsed() < T, "no idle exit after arming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(armed.elapsed() >= Duration::from_millis(400), "counted from the arm");
}

#[test]
fn the_secret_comes_only_from_the_environment_and_must_be_long_enough() {
    let run = |args: &[&str], secret: &str| {
        Command::new(env!("CARGO_BIN_EXE_troop-server"))
            .args(["--port", "0"])
            .args(args)
            .env("TROOP_CONTROL_SECRET", secret)
            .output()
            .expect("run troop-server")
    };
    let out = run(&[], "abc123-short");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("TROOP_CONTROL_SECRET must be 32 to 235 hex digits"), "{text}");
    assert!(!text.contains("abc123-short"), "the value is not echoed");
    let flag = run(&["--control-secret", SECRET], SECRET);
    assert!(!flag.status.success(), "there is no flag for the secret");
}
