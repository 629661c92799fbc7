//! The hub with a Docker engine that is closed, stalls, then comes back: starts fail fast with
//! a clear sentence, queries keep answering, and the hub recovers by itself. The engine socket
//! the hub uses is a forwarder in front of the real one, switched between behaviours.

mod common;

use common::{TestHub, T};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use troop_hub::admin::{self, start_session};

const CLOSED: u8 = 0;
const STALLED: u8 = 1;
const FORWARD: u8 = 2;

/// Listens on `path`; each connection is closed, held silent, or forwarded to the real engine.
fn engine_switch(path: std::path::PathBuf, mode: Arc<AtomicU8>) {
    let listener = UnixListener::bind(&path).expect("bind the forwarder socket");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mode = mode.load(Ordering::SeqCst);
            tokio::spawn(async move {
                match mode {
                    CLOSED => drop(client),
                    STALLED => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(client);
                    }
                    _ => {
                        if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                    }
                }
            });
        }
    });
}

async fn query(hub: &TestHub, name: &str) -> Value {
    admin::request(hub.addr, &json!({"type": "query", "name": name}), T).await.expect("query answered")["result"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_fail_fast_while_the_engine_is_away_and_the_hub_recovers_by_itself() {
    common::session_image();
    let mut hub = TestHub::new("engine_timeout: 2s");
    let sock = hub.dir.path().join("engine.sock");
    let mode = Arc::new(AtomicU8::new(CLOSED));
    engine_switch(sock.clone(), mode.clone());
    hub.envs.push(("DOCKER_HOST".into(), format!("unix://{}", sock.display())));
    let hub = hub.start().await;
    let down = "The hub cannot reach its Docker engine right now; try again in a moment";

    // Closed: refused at once, queries still answered.
    let t = Instant::now();
    let r = start_session(hub.addr, "a", "pw", T).await.unwrap();
    assert_eq!(r.err().as_deref(), Some(down));
    assert!(t.elapsed() < Duration::from_secs(3), "fails fast: {:?}", t.elapsed());
    assert_eq!(query(&hub, "a").await, Value::Null);

    // Stalled: refused within the engine timeout, queries answered meanwhile.
    mode.store(STALLED, Ordering::SeqCst);
    let addr = hub.addr;
    let pending = tokio::spawn(async move { start_session(addr, "b", "pw", T).await });
    // The hub has the request (it says so in its log) before the query is timed.
    let asked = |log: &str| log.matches("start requested").count();
    let before = asked(&hub.log());
    hub.eventually("the start to be under way", T, async || match asked(&hub.log()) > before {
        true => Ok(()),
        false => Err("not yet".into()),
    })
    .await;
    let t = Instant::now();
    assert_eq!(query(&hub, "b").await, Value::Null);
    assert!(t.elapsed() < Duration::from_secs(1), "queries do not wait for the engine");
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.err().as_deref(), Some(down));

    // Back: the next start works without restarting the hub.
    mode.store(FORWARD, Ordering::SeqCst);
    let owner =
        hub.eventually("a start to work again", T, async || start_session(hub.addr, "c", "pw", T).await.unwrap()).await;
    assert_eq!(query(&hub, "c").await, json!(["127.0.0.1", owner.port]));
    drop(owner);
    hub.wait_containers(0).await;
}
