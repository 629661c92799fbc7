//! The archive against real Docker and real sockets: a session's code and timeline outlive
//! it and are given only to whoever proves its password (or the admin); a container killed
//! from outside loses nothing that reached the hub; a hub SIGKILLed and restarted continues
//! the same timeline without a gap or a duplicate; a full disk under a running hub stops
//! recording, never playing, and recording catches up when space returns.

mod common;

use common::{docker_ok, eventually, http, owner, performer, TestHub, T};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troop_server::client::TroopClient;
use troop_server::message::Body;
use troop_server::ot::Operation;

const TOKEN: &str = "archive-admin-token-7f3a9c2e41b8d605";

/// A hub whose archive lives in its own temp dir.
async fn hub_with(extra: &str) -> TestHub {
    let mut hub = TestHub::new("");
    let db = hub.dir.path().join("data").join("archive.db");
    hub.extra_yaml = format!("archive: {{path: {}}}\n{extra}", db.display());
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    hub.start().await
}

/// Alice types (unicode included) and evaluates a block; returns her document.
async fn play(alice: &mut TroopClient, text: &str) -> String {
    let len = alice.document().chars().count() as u64;
    alice.insert(len, text).await.unwrap();
    alice.send(Body::EvaluateBlock { start: 1, end: 2, reply: 0 }).await.unwrap();
    while !alice.is_synchronized() {
        alice.recv(T).await.unwrap();
    }
    alice.document().to_string()
}

struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// A GET with the session password header (or the admin token).
async fn get(hub: &TestHub, path: &str, password: Option<&str>, admin: bool) -> Answer {
    let mut s = tokio::net::TcpStream::connect(hub.http).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(pw) = password {
        req.push_str(&format!("X-Session-Password: {pw}\r\n"));
    }
    if admin {
        req.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut raw)).await.expect("answered in time").unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Answer { status, headers: head.to_string(), body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Waits until the API counts `n` evaluations in the hub's only session: then everything the
/// performer did before them has reached the hub.
async fn evaluations_are(hub: &TestHub, n: u64) {
    eventually(&format!("the hub to see {n} evaluations"), T, async || {
        let info = http(hub.http, "GET", "/api/v1/sessions", Some(TOKEN), None).await.json();
        match info["sessions"][0]["evaluations"].as_u64() {
            Some(seen) if seen == n => Ok(()),
            _ => Err(format!("evaluations {}", info["sessions"][0]["evaluations"])),
        }
    })
    .await
}

/// The archived sessions of `name` once the hub has them (its writer commits in batches).
async fn listed(hub: &TestHub, name: &str, pw: &str, ended: usize) -> Vec<Value> {
    eventually(&format!("{name} archived"), T, async || {
        let a = get(hub, &format!("/api/v1/archive?name={name}"), Some(pw), false).await;
        if a.status == 200 {
            let list: Vec<Value> = serde_json::from_str(&a.body).unwrap();
            if list.iter().filter(|s| !s["ended_ms"].is_null()).count() >= ended {
                return Ok(list);
            }
        }
        Err(format!("{} {}", a.status, a.body))
    })
    .await
}

/// The document a timeline gives, applied from empty; and its event numbers.
fn replay(timeline: &str) -> (String, Vec<u64>) {
    let (mut doc, mut seqs) = (String::new(), Vec::new());
    for line in timeline.lines() {
        let m: Value = serde_json::from_str(line).expect("each line is JSON");
        match m["type"].as_str().unwrap() {
            "snapshot" => {
                doc = m["document"].as_str().unwrap().to_string();
                seqs.push(m["revision"].as_u64().unwrap());
            }
            kind => {
                seqs.push(m["seq"].as_u64().unwrap());
                if kind == "operation" {
                    let op: Operation = serde_json::from_value(m["ops"].clone()).unwrap();
                    doc = op.apply(&doc).expect("each operation fits");
                }
            }
        }
    }
    (doc, seqs)
}

#[tokio::test]
async fn the_code_outlives_the_session_for_whoever_knows_its_password() {
    let hub = hub_with("").await;
    let o = owner(&hub, "gig", "pw-gig").await;
    let mut alice = performer(&o, "alice", "pw-gig").await;
    play(&mut alice, "d1 >> play(\"x-o-\")  # ünïcödé 🎵\n").await;
    let doc = play(&mut alice, &format!("p1 >> pads([0, 2]) {}\n", "é".repeat(3))).await;
    // play() waits for the edit's answer, not the evaluation's: wait until the server applied
    // both evaluations, so the owner's leaving cannot overtake the second.
    evaluations_are(&hub, 2).await;
    drop(o);
    let list = listed(&hub, "gig", "pw-gig", 1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    let id = s["id"].as_str().unwrap();
    let tl = get(&hub, &format!("/api/v1/archive/{id}/timeline"), Some("pw-gig"), false).await;
    assert_eq!(s["performers"], serde_json::json!(["alice"]), "{s}\n{}", tl.body);
    assert_eq!(s["end_reason"], "its owner left");
    assert!(s["operations"].as_u64().unwrap() >= 2 && s["evaluations"].as_u64() == Some(2), "{s}");

    // The code, byte for byte, as a file named after the session and the day.
    let code = get(&hub, &format!("/api/v1/archive/{id}/code"), Some("pw-gig"), false).await;
    assert_eq!(code.status, 200);
    assert_eq!(code.body, doc, "the downloaded code is the last document");
    assert!(code.headers.contains("attachment; filename=\"gig-20"), "{}", code.headers);
    // The timeline replayed from empty gives the same document, in order.
    let tl = get(&hub, &format!("/api/v1/archive/{id}/timeline"), Some("pw-gig"), false).await;
    assert_eq!(tl.status, 200);
    let (replayed, seqs) = replay(&tl.body);
    assert_eq!(replayed, doc);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate: {seqs:?}");
    assert!(tl.body.contains("\"type\":\"evaluate\"") && tl.body.contains("\"type\":\"join\""));

    // Proof: a wrong password, none, an unknown name; the admin sees all.
    assert_eq!(get(&hub, "/api/v1/archive?name=gig", Some("nope"), false).await.status, 403);
    assert_eq!(get(&hub, "/api/v1/archive?name=gig", None, false).await.status, 401);
    assert_eq!(get(&hub, "/api/v1/archive?name=nobody", Some("pw-gig"), false).await.status, 403);
    assert_eq!(get(&hub, &format!("/api/v1/archive/{id}/code"), Some("nope"), false).await.status, 403);
    let all = get(&hub, "/api/v1/archive", None, true).await;
    assert_eq!(all.status, 200);
    assert!(all.body.contains(id));
    assert!(http(hub.http, "GET", "/archive", None, None).await.status == 200, "the archive form");
    assert!(http(hub.http, "GET", &format!("/a/{id}"), None, None).await.status == 200, "the replay page");
    // The admin deletes it.
    let gone = http(hub.http, "DELETE", &format!("/api/v1/archive/{id}"), Some(TOKEN), None).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(get(&hub, &format!("/api/v1/archive/{id}"), None, true).await.status, 404);
    let log = hub.log();
    assert!(!log.contains("pw-gig") && !log.contains(&troop_server::md5_hex("pw-gig")), "no password in the log");
}

#[tokio::test]
async fn a_container_killed_from_outside_loses_nothing_that_reached_the_hub() {
    let hub = hub_with("").await;
    let o = owner(&hub, "crash", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    let doc = play(&mut alice, "Clock.bpm = 140 # ⏱\n").await;
    // Everything alice did has reached the hub once the session list counts her evaluation.
    evaluations_are(&hub, 1).await;
    let container = hub.containers().pop().expect("the session's container");
    docker_ok(&["kill", &container]);
    let list = listed(&hub, "crash", "pw", 1).await;
    let id = list[0]["id"].as_str().unwrap();
    let code = get(&hub, &format!("/api/v1/archive/{id}/code"), Some("pw"), false).await;
    assert_eq!(code.body, doc);
    let tl = get(&hub, &format!("/api/v1/archive/{id}/timeline"), Some("pw"), false).await;
    assert_eq!(replay(&tl.body).0, doc);
    drop(o);
}

#[tokio::test]
async fn a_hub_killed_and_restarted_continues_the_same_timeline() {
    let mut hub = hub_with("orphans: adopt").await;
    let o = owner(&hub, "onward", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    play(&mut alice, "first part\n").await;
    // The session's row (with its password's slow hash) is on disk: the hub's writer commits
    // a session's start at once, lines within 100 ms.
    eventually("the first part to be archived", T, async || {
        let list = get(&hub, "/api/v1/archive?name=onward", None, true).await.body;
        if list.contains("\"operations\":1") {
            Ok(())
        } else {
            Err(list)
        }
    })
    .await;
    hub.signal("KILL");
    hub.wait_exit(T).await;
    drop(o);
    // Alice plays on while the hub is away: the restarted hub cannot hear those events.
    play(&mut alice, "while the hub was away\n").await;
    hub.spawn().await;
    eventually("the restarted hub to follow the session again", T, async || {
        let info = http(hub.http, "GET", "/api/v1/sessions", Some(TOKEN), None).await.json();
        if info["sessions"][0]["performers"].as_array().map_or(0, Vec::len) == 1 {
            Ok(())
        } else {
            Err(info.to_string())
        }
    })
    .await;
    let doc = play(&mut alice, "after the restart\n").await;
    let r = http(hub.http, "DELETE", "/api/v1/sessions/onward", Some(TOKEN), None).await;
    assert_eq!(r.status, 204);
    let list = listed(&hub, "onward", "pw", 1).await;
    assert_eq!(list.len(), 1, "one timeline, not two: {list:?}");
    assert_eq!(list[0]["end_reason"], "an admin ended it");
    let id = list[0]["id"].as_str().unwrap();
    let tl = get(&hub, &format!("/api/v1/archive/{id}/timeline"), Some("pw"), false).await;
    let (replayed, seqs) = replay(&tl.body);
    assert_eq!(replayed, doc, "no gap: the replay reaches the final document");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "no duplicate: {seqs:?}");
    assert!(tl.body.contains("\"type\":\"snapshot\""), "what the hub missed is bridged by a snapshot");
    let code = get(&hub, &format!("/api/v1/archive/{id}/code"), Some("pw"), false).await;
    assert_eq!(code.body, doc);
}

#[test]
fn troop_hub_archive_prune_runs_on_the_configured_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.yaml");
    let db = dir.path().join("kept").join("archive.db");
    std::fs::write(&config, format!("archive: {{path: {}}}\n", db.display())).unwrap();
    let prune = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_troop-hub"))
            .args(["--config", &config.display().to_string(), "archive", "prune"])
            .output()
            .expect("run troop-hub")
    };
    let out = prune(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.lines().last(), Some("pruned 0 sessions (0 bytes of timelines)"), "{said}");
    assert!(db.exists(), "the file and its directory are created");
    std::fs::write(&config, "archive: off\n").unwrap();
    let out = prune(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`archive: off`"), "one clear line");
}

#[tokio::test]
async fn a_hub_killed_in_a_busy_session_leaves_a_sound_file_whose_code_is_the_last_edit() {
    let mut hub = hub_with("orphans: remove").await;
    let o = owner(&hub, "busy", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    // A burst of edits, each acknowledged, faster than the document is stored (every 5 s).
    let edits = 200;
    for i in 0..edits {
        let len = alice.document().chars().count() as u64;
        alice.insert(len, &format!("{i} ü🎵\n")).await.unwrap();
        while !alice.is_synchronized() {
            alice.recv(T).await.unwrap();
        }
    }
    let doc = alice.document().to_string();
    // Every edit is in the archive's timeline (its writer commits within 100 ms) ...
    let id = eventually("every edit to be archived", T, async || {
        let list: Vec<Value> = serde_json::from_str(&get(&hub, "/api/v1/archive?name=busy", None, true).await.body)
            .map_err(|e| e.to_string())?;
        match list.first() {
            Some(s) if s["operations"].as_u64() >= Some(edits) => Ok(s["id"].as_str().unwrap_or_default().to_string()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // ... and the hub dies right then, in the middle of the session.
    hub.signal("KILL");
    hub.wait_exit(T).await;
    let db = hub.dir.path().join("data").join("archive.db");
    {
        let conn = rusqlite::Connection::open(&db).expect("open the archive");
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
        assert_eq!(check, "ok");
        let stored: String =
            conn.query_row("SELECT document FROM sessions WHERE id = ?1", [&id], |r| r.get(0)).expect("its row");
        assert_ne!(stored, doc, "the stored document lags the last edits (the case under test)");
    }
    drop(o);
    // The next hub removes the session it does not adopt and closes it in the archive, with the
    // code of the last recorded edit.
    hub.spawn().await;
    let list = listed(&hub, "busy", "pw", 1).await;
    assert_eq!(list[0]["end_reason"], "the hub stopped while it ran");
    let code = get(&hub, &format!("/api/v1/archive/{id}/code"), Some("pw"), false).await;
    assert_eq!(code.body, doc, "the code is the last document the performers had");
    let tl = get(&hub, &format!("/api/v1/archive/{id}/timeline"), Some("pw"), false).await;
    let (replayed, seqs) = replay(&tl.body);
    assert_eq!(replayed, doc, "the timeline up to the kill is all there");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate");
    assert!(!list[0]["truncated"].as_bool().unwrap_or(true), "nothing was lost");
}

/// Fills the filesystem `dir` is on (from outside the hub's mount namespace, through
/// `/proc/PID/root`) until it has no room; returns the filler's path.
fn fill_disk(hub: &TestHub, dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let pid = hub.proc.as_ref().expect("started").id();
    let filler = std::path::PathBuf::from(format!("/proc/{pid}/root{}", dir.join("filler").display()));
    let mut f = std::fs::File::create(&filler).expect("create the filler in the hub's tmpfs");
    let chunk = vec![b'x'; 16 * 1024];
    loop {
        match f.write_all(&chunk).and_then(|()| f.flush()) {
            Ok(()) => continue,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => return filler,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

/// "No space left on device".
const ENOSPC: i32 = 28;

#[tokio::test]
async fn a_full_disk_stops_recording_not_playing_and_recording_resumes_when_space_returns() {
    // The hub runs in a mount namespace of its own, its archive on a 3 MiB tmpfs.
    let mut hub = TestHub::new("");
    let data = hub.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    hub.extra_yaml = format!("archive: {{path: {}}}\n", data.join("archive.db").display());
    hub.envs.push(("TROOP_HUB_ADMIN_TOKEN".into(), TOKEN.into()));
    let unshare = if running_as_root() { "unshare -m --propagation private" } else { "unshare -Urm" };
    hub.wrapper = unshare.split(' ').map(String::from).collect();
    hub.wrapper.extend([
        "sh".into(),
        "-c".into(),
        "mount -t tmpfs -o size=3m tmpfs \"$TMPFS\" && exec \"$0\" \"$@\"".into(),
    ]);
    hub.envs.push(("TMPFS".into(), data.display().to_string()));
    let hub = hub.start().await;
    assert!(
        std::fs::read_dir(&data).unwrap().next().is_none(),
        "the archive is on the hub's own tmpfs, not in the directory this test sees"
    );

    let o = owner(&hub, "disk", "pw").await;
    let mut alice = performer(&o, "alice", "pw").await;
    let typed = std::cell::Cell::new(0u64);
    let edit = async |alice: &mut TroopClient| {
        let len = alice.document().chars().count() as u64;
        alice.insert(len, &format!("{} ü🎵 a line of live code\n", typed.get())).await.unwrap();
        typed.set(typed.get() + 1);
        while !alice.is_synchronized() {
            alice.recv(T).await.unwrap();
        }
    };
    for _ in 0..20 {
        edit(&mut alice).await;
    }
    let filler = fill_disk(&hub, &data);
    // Performers keep playing, every edit acknowledged, until the archive finds the disk full.
    let mut full = false;
    for _ in 0..3000 {
        edit(&mut alice).await;
        let ready = http(hub.http, "GET", "/readyz", None, None).await.json();
        if ready["warnings"].to_string().contains("the archive cannot write") {
            full = true;
            break;
        }
    }
    assert!(full, "the hub says its archive cannot write: {}", hub.log());
    eprintln!("the archive found the disk full after {} edits", typed.get());
    for _ in 0..20 {
        edit(&mut alice).await;
    }
    let metrics = http(hub.http, "GET", "/metrics", None, None).await.body;
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("troop_hub_archive_write_errors_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(errors.is_some_and(|n| n > 0), "write errors counted: {metrics}");
    assert_eq!(hub.log().matches("archive: cannot write").count(), 1, "one log line for the episode");

    // Space returns: recording catches up with everything held meanwhile, and the warning goes.
    std::fs::remove_file(&filler).expect("remove the filler");
    edit(&mut alice).await;
    hub.eventually("the archive to write again", T, async || {
        let ready = http(hub.http, "GET", "/readyz", None, None).await.json();
        match ready["warnings"].to_string().contains("archive") {
            false => Ok(()),
            true => Err(ready.to_string()),
        }
    })
    .await;
    let doc = alice.document().to_string();
    let id = eventually("every edit to be archived", T, async || {
        let list: Vec<Value> = serde_json::from_str(&get(&hub, "/api/v1/archive?name=disk", None, true).await.body)
            .map_err(|e| e.to_string())?;
        match list.first() {
            Some(s) if s["operations"].as_u64() >= Some(typed.get()) => {
                Ok(s["id"].as_str().unwrap_or_default().to_string())
            }
            other => Err(format!("{other:?} of {}", typed.get())),
        }
    })
    .await;
    let tl = get(&hub, &format!("/api/v1/archive/{id}/timeline"), Some("pw"), false).await;
    let (replayed, seqs) = replay(&tl.body);
    assert_eq!(replayed, doc, "the timeline holds every edit, those made while the disk was full too");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate");
    assert!(hub.log().contains("archive: writing again"));
}

/// Whether this test runs as root (then a plain mount namespace is enough; otherwise a user
/// namespace gives the right to mount).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
