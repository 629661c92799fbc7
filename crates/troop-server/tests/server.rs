//! The session server over real sockets: behaviour beyond upstream that a client would notice
//! (robustness, limits, slow clients), and the binary's flags and signals.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use troop_server::client::{login, ClientError, TroopClient};
use troop_server::frame::Decoder;
use troop_server::message::{Body, Message};
use troop_server::ot::Operation;
use troop_server::server::{self, Config, Exit};

const PW: &str = "s3cret";
const T: Duration = Duration::from_secs(5);

/// A server running in this process on a free loopback port; stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<Exit>>>,
}

impl Server {
    async fn start(mut config: Config) -> Server {
        let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::INFO).try_init();
        config.password_md5 = troop_server::md5_hex(PW);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Server { addr, stop: Some(stop), task: Some(task) }
    }

    async fn join(&self, name: &str) -> TroopClient {
        TroopClient::join(self.addr, name, PW, T).await.unwrap_or_else(|e| panic!("{name} could not join: {e}"))
    }

    async fn shutdown(mut self) -> Exit {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(T, task).await.expect("server stops in time").expect("task").expect("io")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn console(text: &str) -> Body {
    Body::Console { string: text.into() }
}

/// Receives until a CONSOLE with exactly `text` arrives.
async fn expect_console(c: &mut TroopClient, text: &str) {
    c.recv_until_match(T, |_, m| matches!(&m.body, Body::Console { string } if string == text))
        .await
        .unwrap_or_else(|e| panic!("{} never got console {text:?}: {e}", c.name));
}

/// Makes every client process all join traffic so far: each sends a marker, all wait for all.
async fn settle(clients: &mut [&mut TroopClient]) {
    for c in clients.iter_mut() {
        let marker = format!("settled {}", c.name);
        c.send(console(&marker)).await.unwrap();
    }
    let names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
    for c in clients.iter_mut() {
        for name in &names {
            expect_console(c, &format!("settled {name}")).await;
        }
    }
}

#[tokio::test]
async fn login_split_across_reads_and_connect_right_behind_it_work() {
    let s = Server::start(Config::default()).await;
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.set_nodelay(true).unwrap();
    let login = format!("<4><0><-1><\"{}\"><\"split\"><\"0.10.3\">", troop_server::md5_hex(PW));
    let (a, b) = login.split_at(17);
    raw.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // a separate TCP segment, on purpose
                                                         // The rest of the login and the CONNECT in one write, without waiting for the reply.
    raw.write_all(format!("{b}<1><0><0><\"split\"><\"h\"><1><0>").as_bytes()).await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(T, raw.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(&reply, b"0000");
    let mut rest = vec![0u8; 256];
    let n = tokio::time::timeout(T, raw.read(&mut rest)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&rest[..n]);
    assert!(text.starts_with("<1><0><0><\"split\"><\"127.0.0.1\">"), "CONNECT was processed: {text}");
}

#[tokio::test]
async fn a_character_split_across_reads_arrives_whole() {
    let s = Server::start(Config::default()).await;
    let mut a = s.join("a").await;
    let mut b = s.join("b").await;
    settle(&mut [&mut a, &mut b]).await;
    let wire = "<2><1><1><[\"h😀\"]><0>".as_bytes().to_vec();
    let cut = wire.iter().position(|&x| x == 0xf0).unwrap() + 2; // inside the emoji
    b.send_raw(&wire[..cut]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.send_raw(&wire[cut..]).await.unwrap();
    a.recv_until_match(T, |c, _| c.document() == "h😀").await.expect("a sees the emoji");
}

#[tokio::test]
async fn an_operation_that_does_not_fit_drops_its_sender_and_leaves_the_document_alone() {
    let s = Server::start(Config::default()).await;
    let mut a = s.join("a").await;
    let mut b = s.join("b").await;
    settle(&mut [&mut a, &mut b]).await;
    a.insert(0, "hello").await.unwrap();
    b.recv_until_match(T, |c, _| c.document() == "hello").await.unwrap();
    a.recv_until_match(T, |c, _| c.is_synchronized()).await.unwrap();
    // Retains past the end of the document: upstream's relay thread dies here.
    let bad = Operation::from(vec![troop_server::ot::Part::Int(50), troop_server::ot::Part::Insert("x".into())]);
    b.send(Body::Operation { operation: bad, revision: b.revision() }).await.unwrap();
    a.recv_until_match(T, |_, m| matches!(m.body, Body::Remove) && m.src_id == 1).await.expect("REMOVE for b");
    b.expect_closed(T).await.expect("b is closed");
    // The session goes on with the document intact.
    a.insert(5, "!").await.unwrap();
    let mut c = s.join("c").await;
    assert_eq!(c.document(), "hello!");
    c.send(console("still relaying")).await.unwrap();
    expect_console(&mut a, "still relaying").await;
}

#[tokio::test]
async fn concurrent_editors_converge() {
    let s = Server::start(Config::default()).await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        clients.push(s.join(name).await);
    }
    // Every client starts from the same RESET.
    settle(&mut clients.iter_mut().collect::<Vec<_>>()).await;
    let mut tasks = Vec::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for round in 0..40u64 {
                let len = c.document().chars().count() as u64;
                if round % 3 == 2 && len > 0 {
                    c.delete((round * 7 + k as u64) % len, 1).await.unwrap();
                } else {
                    c.insert((round * 5 + k as u64) % (len + 1), &format!("{k}")).await.unwrap();
                }
                // Take whatever has arrived, without waiting for it.
                while c.try_recv().await.unwrap().is_some() {}
                tokio::task::yield_now().await;
            }
            c.send(console(&format!("done {k}"))).await.unwrap();
            for other in 0..3 {
                expect_console(&mut c, &format!("done {other}")).await;
            }
            c.recv_until_match(T, |c, _| c.is_synchronized()).await.ok();
            c
        }));
    }
    let mut docs = Vec::new();
    for t in tasks {
        let mut c = t.await.unwrap();
        // Let every pending acknowledgement arrive.
        while !c.is_synchronized() {
            c.recv(T).await.unwrap();
        }
        docs.push(c);
    }
    let late = s.join("late").await;
    for c in &docs {
        assert_eq!(c.document(), late.document(), "{} diverged", c.name);
    }
    // 81 inserts and 39 deletes, two of which may hit the same character.
    let len = late.document().chars().count();
    assert!((42..=81).contains(&len), "length {len}");
    for k in ["0", "1", "2"] {
        assert!(late.document().contains(k), "{k}'s text is there");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_does_not_stall_the_others() {
    let config = Config { queue: 32, ..Config::default() };
    let s = Server::start(config).await;
    let mut reader = s.join("reader").await;
    let mut talker = s.join("talker").await;
    let stuck = raw_join(s.addr, "stuck").await; // joins, then never reads again
    let stuck_id = 2;
    let big = "x".repeat(64 * 1024);
    let mut removed = false;
    for k in 0..400 {
        talker.send(console(&format!("{k}{big}"))).await.unwrap();
        // The others keep getting every message while the stuck client's queue fills up.
        let msg = reader
            .recv_until_match(T, |_, m| matches!(m.body, Body::Console { .. } | Body::Remove))
            .await
            .expect("reader keeps receiving");
        if matches!(msg.body, Body::Remove) {
            assert_eq!(msg.src_id, stuck_id);
            removed = true;
            break;
        }
        talker.recv(T).await.unwrap();
    }
    assert!(removed, "the stuck client was dropped");
    talker.send(console("after")).await.unwrap();
    expect_console(&mut reader, "after").await;
    drop(stuck);
}

#[tokio::test]
async fn oversized_messages_and_silent_connections_are_dropped() {
    let config = Config { max_message: 1024, login_timeout: Duration::from_millis(300), ..Config::default() };
    let s = Server::start(config).await;
    let mut a = s.join("a").await;
    let mut b = s.join("b").await;
    b.send(console(&"y".repeat(4096))).await.unwrap();
    b.expect_closed(T).await.expect("b dropped for a huge message");
    a.recv_until_match(T, |_, m| matches!(m.body, Body::Remove)).await.unwrap();
    // A connection that never logs in is closed after the login timeout.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(T, idle.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_closed_and_the_session_stays_usable() {
    let config = Config { max_connections_per_address: 3, ..Config::default() };
    let s = Server::start(config).await;
    // Three connections that started a login and stopped half-way hold their slots...
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"<4><0><-1><\"").await.unwrap();
        held.push(c);
    }
    // ... so a fourth is closed at once, with nothing sent.
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(T, extra.read(&mut buf)).await.expect("closed at once").unwrap_or(0);
    assert_eq!(n, 0);
    // A pre-login flood cannot make the server buffer much: 8 KiB of "login" is refused.
    let mut big = held.pop().unwrap();
    let _ = big.write_all(&[b'a'; 8192]).await;
    let n = tokio::time::timeout(T, big.read(&mut buf)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0, "an oversized login is closed unanswered");
    drop(held);
    // Once they are gone, performers get in again.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match TroopClient::join(s.addr, "a", PW, Duration::from_secs(1)).await {
            Ok(_) => break,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "never admitted again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refused_logins_get_their_code_and_use_no_id() {
    let s = Server::start(Config::default()).await;
    assert!(matches!(login(s.addr, "a", "wrong").await, Err(ClientError::Refused(-1))));
    let a = s.join("a").await;
    assert_eq!(a.id, 0);
    assert!(matches!(login(s.addr, "a", PW).await, Err(ClientError::Refused(-3))));
    assert_eq!(s.join("b").await.id, 1);
    assert_eq!(s.shutdown().await, Exit::Shutdown);
}

/// Logs in and joins by hand, acknowledging the barrier, and returns the raw socket.
async fn raw_join(addr: SocketAddr, name: &str) -> TcpStream {
    let (mut stream, id) = login(addr, name, PW).await.expect("login");
    let connect = Message::new(id, Body::Connect { name: name.into(), hostname: "h".into(), port: 1, dummy: 1 });
    stream.write_all(connect.encode().as_bytes()).await.unwrap();
    let mut decoder = Decoder::new(1 << 20);
    let mut reset = false;
    loop {
        while let Some(m) = decoder.next_message().expect("valid framing") {
            match m.body {
                Body::RequestAck { flag: 1, .. } => {
                    let ack = Message { msg_id: 1, src_id: id, body: Body::ConnectAck { reply: serde_json::json!(0) } };
                    stream.write_all(ack.encode().as_bytes()).await.unwrap();
                }
                Body::Reset { .. } => reset = true,
                Body::RequestAck { flag: 0, .. } if reset => return stream,
                _ => {}
            }
        }
        let n = tokio::time::timeout(T, stream.read_buf(decoder.buffer())).await.expect("join in time").unwrap();
        assert!(n > 0, "closed while joining");
    }
}

// ---- the binary ----

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the binary and waits until it accepts connections.
async fn spawn_binary(args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_troop-server"));
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()]).args(args);
    cmd.env_remove("TROOP_PASSWORD").env_remove("TROOP_PASSWORD_MD5");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn troop-server");
    let proc = Proc(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = tokio::time::Instant::now() + T;
    while TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "troop-server did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (proc, addr)
}

/// Waits for the process to exit; returns its status code.
async fn wait_exit(p: &mut Proc, within: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = p.0.try_wait().expect("wait") {
            return status.code();
        }
        assert!(tokio::time::Instant::now() < deadline, "process still running after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_sends_kill_to_everyone_and_exits_zero_quickly() {
    let md5 = troop_server::md5_hex(PW);
    let (mut p, addr) = spawn_binary(&[], &[("TROOP_PASSWORD_MD5", &md5)]).await;
    let mut a = TroopClient::join(addr, "a", PW, T).await.unwrap();
    let mut b = TroopClient::join(addr, "b", PW, T).await.unwrap();
    let started = std::time::Instant::now();
    let ok = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status().unwrap();
    assert!(ok.success());
    for c in [&mut a, &mut b] {
        let seen = c.expect_closed(T).await.expect("closed after shutdown");
        assert!(seen.iter().any(|m| matches!(m.body, Body::Kill { .. })), "{} got MSG_KILL", c.name);
    }
    assert_eq!(wait_exit(&mut p, Duration::from_secs(2)).await, Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn idle_exit_waits_for_the_last_client() {
    let (mut p, addr) = spawn_binary(&["--idle-exit", "500ms", "--password", PW], &[]).await;
    let a = TroopClient::join(addr, "a", PW, T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await; // longer than the idle time, on purpose
    assert!(p.0.try_wait().unwrap().is_none(), "exited with a client connected");
    a.close().await;
    assert_eq!(wait_exit(&mut p, Duration::from_secs(5)).await, Some(0));
}

#[tokio::test]
async fn a_server_nobody_joins_exits_when_its_idle_time_is_up() {
    // With nobody joined it has no timer ticking, only its idle exit's.
    let (mut p, _addr) = spawn_binary(&["--idle-exit", "400ms", "--password", PW], &[]).await;
    let t = std::time::Instant::now();
    assert_eq!(wait_exit(&mut p, Duration::from_secs(5)).await, Some(0));
    assert!(t.elapsed() >= Duration::from_millis(300), "exited before its idle time: {:?}", t.elapsed());
}

#[tokio::test]
async fn keepalive_pings_every_second() {
    let (_p, addr) = spawn_binary(&["--keepalive", "--password", PW], &[]).await;
    let mut a = TroopClient::join(addr, "a", PW, T).await.unwrap();
    a.recv_until_match(Duration::from_secs(3), |_, m| matches!(m.body, Body::KeepAlive))
        .await
        .expect("a server KEEP_ALIVE");
}

#[test]
fn a_malformed_password_digest_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_troop-server"))
        .args(["--port", "0"])
        .env_remove("TROOP_PASSWORD")
        .env("TROOP_PASSWORD_MD5", "not-a-digest")
        .output()
        .expect("run troop-server");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("TROOP_PASSWORD_MD5 must be 32 lowercase hex digits"), "{text}");
    assert!(!text.contains("not-a-digest"), "the value is not echoed");
}
