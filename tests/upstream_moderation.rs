//! Moderation against upstream Troop 0.10.3's own client code: `tests/upstream/moderation.py`
//! imports Troop's hub client, Sender and message classes from a checkout of Qirky/Troop and
//! drives them against a real hub on real Docker. A removed performer receives the hub's
//! sentence in Troop's MSG_KILL, cannot join again while the lock holds (Troop's own "maximum
//! number of users" sentence), the other performer keeps playing, and the session's timeline
//! shows both events.
//!
//! Ignored in the default run: Troop is not part of this repository. Run it with a checkout
//! and Python 3.10 (Troop 0.10.3 does not run on 3.11+):
//!
//!     TROOP_UPSTREAM=/path/to/Troop cargo test --test upstream_moderation -- --ignored
//!
//! Without TROOP_UPSTREAM or Python 3.10 it fails saying which is missing.

mod common;

use common::{http, owner, TestHub, T};
use serde_json::Value;
use std::process::Command;

const TOKEN: &str = "upstream-admin-token-3b7c9d1e5f2a4680";
const PW: &str = "pw-gig 2";

#[tokio::test]
#[ignore = "needs a checkout of upstream Troop (TROOP_UPSTREAM) and Python 3.10"]
async fn upstream_troop_sees_the_removal_the_lock_and_keeps_playing() {
    let troop = std::env::var("TROOP_UPSTREAM")
        .unwrap_or_else(|_| panic!("set TROOP_UPSTREAM to a checkout of Qirky/Troop (the folder with run-client.py)"));
    assert!(std::path::Path::new(&troop).join("run-client.py").exists(), "no run-client.py in {troop}");
    let python = Command::new("python")
        .env("PYENV_VERSION", "3.10.13")
        .args(["-c", "import sys; print(sys.version_info[:2])"])
        .output();
    let version = python.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    assert_eq!(version.trim(), "(3, 10)", "Python 3.10 is needed (pyenv 3.10.13): Troop 0.10.3 does not run on 3.11+");

    let mut hub = TestHub::new("");
    let db = hub.dir.path().join("data").join("archive.db");
    hub.extra_yaml = format!("archive: {{path: {}}}\n", db.display());
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    let hub = hub.start().await;
    let o = owner(&hub, "gig", PW).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream/moderation.py");
    let (hub_port, http_addr) = (hub.addr.port().to_string(), hub.http.to_string());
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python")
            .env("PYENV_VERSION", "3.10.13")
            .env("TROOP_UPSTREAM", &troop)
            .args([script, "127.0.0.1", &hub_port, "gig", PW, &http_addr])
            .output()
    });
    let out =
        tokio::time::timeout(T * 6, run).await.expect("the script ends in time").expect("joined").expect("python runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the upstream client saw something wrong:\n{stdout}\n{stderr}\n{}", hub.log());
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("one JSON line");
    assert_eq!(seen["locked"], Value::Bool(true));
    assert_eq!(seen["removed"], serde_json::json!([1]));
    assert_eq!(seen["sentence"], "Troop Hub: the session's owner removed you from the session: please rest");
    assert_eq!(seen["kill_src"], -1, "from the server, as upstream's own shutdown sends it");
    assert_eq!(
        seen["rejoin"],
        "bob could not join: Failed to connect: Maximum number of users connected. Please try again later.",
        "Troop's own sentence for a refused login"
    );

    drop(o);
    let timeline = hub
        .eventually("the archived timeline with both events", T, async || {
            let listed = http(hub.http, "GET", "/api/v1/archive?name=gig", Some(TOKEN), None).await.json();
            let id = listed[0]["id"].as_str().unwrap_or_default().to_string();
            let t = http(hub.http, "GET", &format!("/api/v1/archive/{id}/timeline"), Some(TOKEN), None).await.body;
            let kinds: Vec<String> = t
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|m| m["type"] == "lock" || m["type"] == "removed")
                .map(|m| m["type"].as_str().unwrap_or_default().to_string())
                .collect();
            (kinds == ["lock", "removed"]).then_some(t.clone()).ok_or(format!("{kinds:?}"))
        })
        .await;
    assert!(!timeline.contains("please rest"), "the reason stays between the owner and the performer");
}
