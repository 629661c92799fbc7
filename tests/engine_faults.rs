//! The hub with a Docker engine that is closed, stalls, then comes back: starts fail fast with
//! a clear sentence, queries keep answering, and the hub recovers by itself. The engine socket
//! the hub uses is a forwarder in front of the real one, switched between behaviours. A SIGTERM
//! with the engine stalled ends within a bound and leaves the sessions to the next hub.

mod common;

use common::engine_switch::{behind_switch, CLOSED, FORWARD, STALLED};
use common::{TestHub, T};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use troop_hub::admin::{self, start_session};

async fn query(hub: &TestHub, name: &str) -> Value {
    admin::request(hub.addr, &json!({"type": "query", "name": name}), T).await.expect("query answered")["result"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_fail_fast_while_the_engine_is_away_and_the_hub_recovers_by_itself() {
    common::session_image();
    let mut hub = TestHub::new("engine_timeout: 2s");
    let mode = behind_switch(&mut hub, CLOSED);
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
    // The hub has the request (it says so in its log) before the query is timed. The count
    // is read before the request is sent: the hub may log it before the spawned task returns.
    let asked = |log: &str| log.matches("start requested").count();
    let before = asked(&hub.log());
    let addr = hub.addr;
    let pending = tokio::spawn(async move { start_session(addr, "b", "pw", T).await });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_with_the_engine_stalled_ends_within_a_bound_and_the_next_hub_takes_over() {
    common::session_image();
    // 28 sessions: with 8 removals at a time, each waiting out its 12 s limit (engine_timeout
    // x 6), a stalled engine would hold the shutdown for 4 rounds (48 s); the hub gives up
    // after one. (1 s for the engine made starts time out beside the other test.)
    let n = 28;
    let mut hub = common::hub_for_many(n, "2s");
    let mode = behind_switch(&mut hub, FORWARD);
    let mut hub = hub.start().await;
    let owners = common::start_many(&hub, "s", n, T).await;
    hub.wait_containers(n).await;

    mode.store(STALLED, Ordering::SeqCst);
    let t = Instant::now();
    hub.signal("TERM");
    let code = hub.wait_exit(Duration::from_secs(60)).await;
    let took = t.elapsed();
    assert_eq!(code, Some(0), "{}", hub.log());
    assert!(took < Duration::from_secs(35), "the shutdown waited out every removal: {took:?}\n{}", hub.log());
    let log = hub.log();
    assert_eq!(log.matches("left running for the next hub").count(), 1, "said once:\n{log}");
    drop(owners);

    // The engine answers again: the next hub finds what was left and a SIGTERM leaves nothing.
    mode.store(FORWARD, Ordering::SeqCst);
    hub.spawn().await;
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", hub.log());
    assert!(hub.containers().is_empty(), "left: {:?}", hub.containers());
}
