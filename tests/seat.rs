//! Browser seats through a real hub on real Docker, spoken over the seat's WebSocket from
//! Rust: a seat plays in a session whose image has no control channel (upstream Troop's
//! mode: the hub reaches the Troop port itself, the password md5 is in the container's
//! environment), and gets the hub's ending sentence rather than the server's own goodbye.

mod common;

use common::{owner, TestHub, T};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use troop_server::client::TroopClient;
use troop_server::message::Body;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_of(ws: &mut Socket, kind: &str) -> Value {
    loop {
        let m = match tokio::time::timeout(T, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(t.as_str()).expect("JSON"),
            Some(Ok(_)) => continue,
            other => panic!("the seat closed before a {kind}: {other:?}"),
        };
        if m["type"] == "request_ack" && m["flag"] == 1 {
            ws.send(Message::text(r#"{"type":"ack"}"#)).await.expect("ack");
        }
        if m["type"] == kind {
            return m;
        }
    }
}

#[tokio::test]
async fn a_seat_plays_in_a_session_without_a_control_channel() {
    let hub = TestHub::new("control_channel: false\nwarm_pool: 0").start().await;
    let o = owner(&hub, "plain", "pw").await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], o.port));
    let mut alice = TroopClient::join(addr, "alice", "pw", T).await.expect("alice joins");
    alice.insert(0, "ü🎵\n").await.unwrap();
    while !alice.is_synchronized() {
        alice.recv(T).await.unwrap();
    }

    let url = format!("ws://{}/api/v1/sessions/plain/seat", hub.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("upgraded");
    ws.send(Message::text(json!({"type": "join", "name": "bea", "password": "pw"}).to_string())).await.unwrap();
    let id = next_of(&mut ws, "welcome").await["id"].as_i64().expect("an id");
    assert_eq!(next_of(&mut ws, "reset").await["document"], "ü🎵\n", "the seat gets the whole document");
    let ops = json!({"type": "operation", "ops": [2, "x", 1], "revision": 0});
    ws.send(Message::text(ops.to_string())).await.unwrap();
    alice.recv_until_match(T, |a, _| a.document() == "ü🎵x\n").await.expect("alice gets bea's edit");
    alice.insert(0, "a").await.unwrap();
    let op = next_of(&mut ws, "operation").await;
    let op = if op["src"] == id { next_of(&mut ws, "operation").await } else { op };
    assert_eq!(op["ops"], json!(["a", 4]));

    // The owner leaves: the hub stops the server (SIGTERM), and the seat hears the hub's
    // sentence, not the server's own goodbye.
    drop(o);
    let kill = next_of(&mut ws, "kill").await;
    assert_eq!(kill["string"], "Troop Hub: the session has ended: its owner left.", "{kill}");
    let goodbye = alice.recv_until_match(T, |_, m| matches!(m.body, Body::Kill { .. })).await;
    assert!(goodbye.is_ok(), "alice is told too");
}
