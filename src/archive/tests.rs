//! The archive store against real SQLite files in temporary directories: round trips,
//! duplicates after a restart, passwords, caps, pruning, closing, deleting, reopening,
//! schema versions and a writer that falls behind.

use super::*;
use std::time::Instant;

const MIB: u64 = 1 << 20;
const ALL: Page = Page { limit: usize::MAX, before_ms: None };

pub(super) fn settings(dir: &tempfile::TempDir) -> ArchiveSettings {
    ArchiveSettings {
        path: dir.path().join("nested/dir/archive.sqlite"),
        keep: Duration::from_secs(3600),
        max_session_bytes: 64 * MIB,
        max_total_bytes: 1 << 40,
    }
}

pub(super) fn open(dir: &tempfile::TempDir) -> Archive {
    Archive::open(settings(dir)).unwrap()
}

pub(super) fn line(seq: u64, kind: &str) -> String {
    format!(r#"{{"seq":{seq},"type":"{kind}","text":"x"}}"#)
}

pub(super) fn timeline(archive: &Archive, id: &str) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    archive.timeline(id, &mut |l| lines.push(l.to_owned())).unwrap().then_some(lines)
}

/// Records `seqs` of plain operation lines.
pub(super) fn record_ops(archive: &Archive, id: &str, seqs: impl IntoIterator<Item = u64>) {
    for seq in seqs {
        archive.record(id, seq, 1000 + seq, "operation", None, line(seq, "operation"));
    }
}

#[tokio::test]
async fn begin_record_finish_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    assert!(archive.path().exists());
    archive.begin("s1", "jam", 1_000, None);
    archive.record("s1", 1, 1_001, "join", Some("alice".into()), line(1, "join"));
    archive.record("s1", 2, 1_002, "operation", None, line(2, "operation"));
    archive.record("s1", 3, 1_003, "join", Some("bob".into()), line(3, "join"));
    archive.record("s1", 4, 1_004, "evaluate", None, line(4, "evaluate"));
    archive.record("s1", 5, 1_005, "join", Some("alice".into()), line(5, "join"));
    archive.record("s1", 6, 1_006, "mark", None, line(6, "mark"));
    archive.document("s1", "draft".into(), 0);
    let document = "d1 >> play(\"x-o-\") # ünïcödé 🎶 \u{0}\r\n\ttabs".to_owned();
    archive.finish("s1", 9_000, "its owner left", Some(document.clone()));
    archive.flush().await;

    let summary = archive.summary("s1").unwrap().unwrap();
    assert_eq!(
        summary,
        Summary {
            id: "s1".into(),
            name: "jam".into(),
            started_ms: 1_000,
            ended_ms: Some(9_000),
            end_reason: Some("its owner left".into()),
            performers: vec!["alice".into(), "bob".into()],
            operations: 1,
            evaluations: 1,
            bytes: (1..=6)
                .map(|s| [1, 2, 1, 4, 1, 6][s - 1])
                .zip(["join", "operation", "join", "evaluate", "join", "mark"])
                .map(|_| 0)
                .sum::<u64>()
                + summary.bytes,
            truncated: false,
            stats: Default::default(),
        }
    );
    let lines = timeline(&archive, "s1").unwrap();
    assert_eq!(
        lines,
        vec![
            line(1, "join"),
            line(2, "operation"),
            line(3, "join"),
            line(4, "evaluate"),
            line(5, "join"),
            line(6, "mark")
        ]
    );
    assert_eq!(summary.bytes, lines.iter().map(|l| l.len() as u64).sum::<u64>());
    assert_eq!(archive.code("s1").unwrap().unwrap().as_bytes(), document.as_bytes());
    assert_eq!(archive.summaries(None, ALL).unwrap(), vec![summary.clone()]);
    assert_eq!(archive.summaries(Some("jam"), ALL).unwrap(), vec![summary]);
    assert!(archive.summaries(Some("other"), ALL).unwrap().is_empty());
    assert_eq!(archive.last_seq("s1").unwrap(), Some(6));
    // Unknown sessions.
    assert_eq!(archive.summary("nope").unwrap(), None);
    assert_eq!(archive.code("nope").unwrap(), None);
    assert_eq!(timeline(&archive, "nope"), None);
    assert_eq!(archive.last_seq("nope").unwrap(), None);
}

#[tokio::test]
async fn document_keeps_the_newest_and_summaries_are_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("old", "jam", 1_000, None);
    archive.begin("new", "jam", 2_000, None);
    archive.begin("other", "solo", 1_500, None);
    for i in 0..50 {
        archive.document("new", format!("version {i}"), 0);
    }
    archive.flush().await;
    assert_eq!(archive.code("new").unwrap().unwrap(), "version 49");
    assert_eq!(archive.code("old").unwrap().unwrap(), "");
    assert_eq!(archive.last_seq("old").unwrap(), None, "no line recorded yet");
    let ids = |v: Vec<Summary>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(archive.summaries(None, ALL).unwrap()), ["new", "other", "old"]);
    assert_eq!(ids(archive.summaries(Some("jam"), ALL).unwrap()), ["new", "old"]);
    // A restarted hub begins again: the row keeps its name and start (a password it lacked
    // is added: it is the same session's).
    archive.begin("old", "renamed", 5_000, Some(troop_server::md5_hex("pw")));
    archive.flush().await;
    let old = archive.summary("old").unwrap().unwrap();
    assert_eq!((old.name.as_str(), old.started_ms), ("jam", 1_000));
    assert!(archive.verify("old", "pw").unwrap());
    // A password it had is never replaced.
    archive.begin("old", "jam", 1_000, Some(troop_server::md5_hex("other")));
    archive.flush().await;
    assert!(archive.verify("old", "pw").unwrap() && !archive.verify("old", "other").unwrap());
}

#[tokio::test]
async fn duplicates_after_a_restart_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("s", "jam", 0, None);
    record_ops(&archive, "s", 1..=10);
    archive.flush().await;
    assert_eq!(archive.last_seq("s").unwrap(), Some(10));
    // The hub restarts and replays from 5.
    drop(archive);
    let archive = open(&dir);
    archive.begin("s", "jam", 0, None);
    record_ops(&archive, "s", 5..=15);
    archive.flush().await;
    let lines = timeline(&archive, "s").unwrap();
    assert_eq!(lines.len(), 15);
    assert_eq!(lines, (1..=15).map(|s| line(s, "operation")).collect::<Vec<_>>());
    let summary = archive.summary("s").unwrap().unwrap();
    assert_eq!(summary.operations, 15);
    assert_eq!(archive.last_seq("s").unwrap(), Some(15));
}

#[tokio::test]
async fn lines_for_unknown_sessions_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    record_ops(&archive, "ghost", 1..=3);
    archive.document("ghost", "x".into(), 0);
    archive.finish("ghost", 1, "gone", Some("x".into()));
    archive.flush().await;
    assert_eq!(timeline(&archive, "ghost"), None);
    assert!(archive.summaries(None, ALL).unwrap().is_empty());
}

#[tokio::test]
async fn passwords() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("a", "jam", 1_000, Some(troop_server::md5_hex("secret")));
    archive.begin("b", "jam", 2_000, Some(troop_server::md5_hex("other")));
    archive.begin("c", "jam", 3_000, Some(troop_server::md5_hex("secret").to_uppercase()));
    archive.begin("d", "jam", 4_000, None);
    archive.flush().await;

    // Nothing but the argon2id PHC string is stored.
    let conn = Connection::open(archive.path()).unwrap();
    let hashes: Vec<Option<String>> = conn
        .prepare("SELECT password_hash FROM sessions ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(hashes[..3].iter().all(|h| h.as_deref().unwrap().starts_with("$argon2id$v=19$m=19456,t=2,p=1$")));
    assert_eq!(hashes[3], None);
    assert_ne!(hashes[0], hashes[2], "random salts");
    let md5 = troop_server::md5_hex("secret");
    let found: i64 = conn
        .query_row("SELECT count(*) FROM sessions WHERE instr(password_hash, ?1) OR instr(document, ?1)", [&md5], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(found, 0);

    let ids = |v: Vec<Summary>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(archive.summaries_for("jam", "secret").unwrap()), ["c", "a"]);
    assert_eq!(ids(archive.summaries_for("jam", "other").unwrap()), ["b"]);
    assert!(archive.summaries_for("jam", "wrong").unwrap().is_empty());
    assert!(archive.summaries_for("unknown", "secret").unwrap().is_empty());

    assert!(archive.verify("a", "secret").unwrap());
    assert!(!archive.verify("a", "other").unwrap());
    assert!(archive.verify("b", "other").unwrap());
    assert!(!archive.verify("d", "").unwrap(), "no password: admin only");
    assert!(!archive.verify("unknown", "secret").unwrap());
}

#[tokio::test]
async fn the_session_cap_truncates_and_keeps_the_final_document() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(ArchiveSettings { max_session_bytes: 100, ..settings(&dir) }).unwrap();
    archive.begin("s", "jam", 0, None);
    let big = "y".repeat(40);
    for seq in 1..=5 {
        archive.record("s", seq, seq, "operation", None, big.clone());
    }
    archive.record("s", 6, 6, "evaluate", None, "z".into()); // would fit, but the timeline stays whole
    archive.record("s", 7, 7, "join", Some("carol".into()), "j".into());
    archive.finish("s", 10, "its owner left", Some("final code".into()));
    archive.flush().await;
    let summary = archive.summary("s").unwrap().unwrap();
    assert!(summary.truncated);
    assert_eq!(summary.bytes, 80);
    assert_eq!((summary.operations, summary.evaluations), (5, 1), "counted when truncated");
    assert_eq!(summary.performers, ["carol"]);
    assert_eq!(timeline(&archive, "s").unwrap(), [big.clone(), big]);
    assert_eq!(archive.code("s").unwrap().unwrap(), "final code");
    assert_eq!(archive.last_seq("s").unwrap(), Some(7));
}

#[tokio::test]
async fn prune_by_age_never_touches_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(ArchiveSettings { keep: Duration::from_secs(10), ..settings(&dir) }).unwrap();
    archive.begin("old", "a", 0, None);
    record_ops(&archive, "old", 1..=3);
    archive.finish("old", 1_000, "done", Some("code".into()));
    archive.begin("recent", "b", 0, None);
    archive.finish("recent", 15_000, "done", Some("".into()));
    archive.begin("live", "c", 0, None);
    record_ops(&archive, "live", 1..=3);
    archive.flush().await;
    let old_size = archive.summary("old").unwrap().unwrap().bytes + 4;

    let report = archive.prune(20_000).unwrap();
    assert_eq!(report, PruneReport { removed: 1, bytes_freed: old_size });
    assert_eq!(archive.summary("old").unwrap(), None);
    assert_eq!(timeline(&archive, "old"), None);
    assert!(archive.summary("recent").unwrap().is_some());
    assert!(archive.summary("live").unwrap().is_some());
    // Far in the future: everything ended goes, the live one stays.
    assert_eq!(archive.prune(u64::MAX).unwrap().removed, 1);
    assert_eq!(archive.summaries(None, ALL).unwrap().into_iter().map(|s| s.id).collect::<Vec<_>>(), ["live"]);
    assert_eq!(archive.prune(u64::MAX).unwrap(), PruneReport::default());
}

#[tokio::test]
async fn prune_by_total_removes_the_oldest_ended_first_but_never_what_just_ended() {
    let dir = tempfile::tempdir().unwrap();
    let keep = Duration::from_secs(30 * 24 * 3600);
    let archive = Archive::open(ArchiveSettings { max_total_bytes: 2_500, keep, ..settings(&dir) }).unwrap();
    let line = "x".repeat(1_000);
    let hour = RECENT.as_millis() as u64;
    let now = 10 * hour;
    // Ended in the order b, a, c (hours ago); d is live and bigger than the cap on its own;
    // e ended a minute ago.
    let ended =
        [("a", Some(2 * hour)), ("b", Some(hour)), ("c", Some(3 * hour)), ("d", None), ("e", Some(now - 60_000))];
    for (id, ended) in ended {
        archive.begin(id, "jam", 0, None);
        archive.record(id, 1, 1, "operation", None, line.clone());
        if let Some(ended) = ended {
            archive.finish(id, ended, "done", Some(String::new()));
        }
    }
    archive.flush().await;
    // 5000 bytes: b, a and c go (2000 left): oldest first, and e stays though still over.
    let report = archive.prune(now).unwrap();
    assert_eq!(report, PruneReport { removed: 3, bytes_freed: 3_000 });
    let ids = |v: Vec<Summary>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(archive.summaries(None, ALL).unwrap()), ["e", "d"]);
    // Live sessions are never pruned, even past the total; a recently ended one goes only
    // once it is no longer recent.
    archive.record("d", 2, 2, "operation", None, line.clone());
    archive.record("d", 3, 3, "operation", None, line);
    archive.flush().await;
    assert_eq!(archive.prune(now).unwrap().removed, 0, "e ended a minute ago");
    assert_eq!(archive.prune(now + hour).unwrap().removed, 1);
    assert_eq!(ids(archive.summaries(None, ALL).unwrap()), ["d"]);
    assert_eq!(archive.prune(now + hour).unwrap().removed, 0);
    // Freed pages go back to the file system (auto_vacuum = INCREMENTAL).
    let conn = Connection::open(archive.path()).unwrap();
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    assert_eq!(free, 0);
}

#[tokio::test]
async fn pruning_runs_in_chunks_and_takes_every_old_session() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    let n = PRUNE_CHUNK * 3 + 5;
    for i in 0..n {
        let id = format!("s{i}");
        archive.begin(&id, "jam", 0, None);
        archive.record(&id, 1, 1, "operation", None, line(1, "operation"));
        archive.finish(&id, 1_000 + i as u64, "done", None);
    }
    archive.flush().await;
    let report = archive.prune(1_000 + 10 * 3_600_000).unwrap();
    assert_eq!(report.removed, n, "every chunk ran");
    assert!(archive.summaries(None, ALL).unwrap().is_empty());
}

#[tokio::test]
async fn close_unfinished_spares_the_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("dead", "a", 0, None);
    archive.begin("adopted", "b", 0, None);
    archive.begin("ended", "c", 0, None);
    archive.finish("ended", 50, "its owner left", Some(String::new()));
    archive.flush().await;
    assert_eq!(archive.close_unfinished(&["adopted".to_owned()], 99, "the hub stopped").unwrap(), 1);
    let dead = archive.summary("dead").unwrap().unwrap();
    assert_eq!((dead.ended_ms, dead.end_reason.as_deref()), (Some(99), Some("the hub stopped")));
    assert_eq!(archive.summary("adopted").unwrap().unwrap().ended_ms, None);
    let ended = archive.summary("ended").unwrap().unwrap();
    assert_eq!((ended.ended_ms, ended.end_reason.as_deref()), (Some(50), Some("its owner left")));
    assert_eq!(archive.close_unfinished(&[], 100, "again").unwrap(), 1);
    assert_eq!(archive.close_unfinished(&[], 100, "again").unwrap(), 0);
}

#[tokio::test]
async fn delete_and_delete_name() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    for (id, name) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        archive.begin(id, name, 0, None);
        record_ops(&archive, id, 1..=3);
    }
    archive.flush().await;
    assert!(archive.delete("a1").unwrap());
    assert!(!archive.delete("a1").unwrap());
    assert_eq!(timeline(&archive, "a1"), None);
    assert_eq!(archive.delete_name("a").unwrap(), 1);
    assert_eq!(archive.delete_name("a").unwrap(), 0);
    assert_eq!(archive.summaries(None, ALL).unwrap().into_iter().map(|s| s.id).collect::<Vec<_>>(), ["b1"]);
    let conn = Connection::open(archive.path()).unwrap();
    let lines: i64 = conn.query_row("SELECT count(*) FROM lines", [], |r| r.get(0)).unwrap();
    assert_eq!(lines, 3, "the deleted sessions' lines are gone");
    // Lines of a deleted live session are ignored afterwards.
    assert!(archive.delete("b1").unwrap());
    record_ops(&archive, "b1", 4..=5);
    archive.flush().await;
    let lines: i64 = conn.query_row("SELECT count(*) FROM lines", [], |r| r.get(0)).unwrap();
    assert_eq!(lines, 0);
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("s", "jam", 7, Some(troop_server::md5_hex("pw")));
    record_ops(&archive, "s", 1..=4);
    archive.finish("s", 8, "done", Some("code ✓".into()));
    archive.flush().await;
    let before = archive.summary("s").unwrap().unwrap();
    let path = archive.path().to_owned();
    drop(archive);

    let archive = open(&dir);
    assert_eq!(archive.summary("s").unwrap().unwrap(), before);
    assert_eq!(timeline(&archive, "s").unwrap().len(), 4);
    assert_eq!(archive.code("s").unwrap().unwrap(), "code ✓");
    assert!(archive.verify("s", "pw").unwrap());
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, schema::LATEST);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&dir);
    std::fs::create_dir_all(settings.path.parent().unwrap()).unwrap();
    Connection::open(&settings.path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
    let err = Archive::open(settings.clone()).unwrap_err();
    assert!(matches!(err, ArchiveError::NewerSchema { version: 99, .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("archive database is from a newer troop-hub (schema 99)"), "{message}");
    assert!(message.contains("archive.sqlite"), "{message}");
    // Left as it was.
    let version: i64 =
        Connection::open(&settings.path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 99);
}

#[test]
fn an_unopenable_path_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = Archive::open(ArchiveSettings { path: file.join("archive.sqlite"), ..settings(&dir) }).unwrap_err();
    assert!(matches!(err, ArchiveError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("file"), "{err}");
    let err = Archive::open(ArchiveSettings { path: file.clone(), ..settings(&dir) }).unwrap_err();
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
}

#[tokio::test]
async fn recording_never_blocks_when_the_writer_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("s", "jam", 0, None);
    archive.flush().await;
    let total = 100_000u64;
    let started;
    {
        // The writer stops between batches: the queue fills, then lines are dropped.
        let _paused = lock(&archive.inner.shared.gate);
        started = Instant::now();
        for seq in 1..=total {
            let (kind, performer) =
                if seq % 1000 == 0 { ("join", Some(format!("p{seq}"))) } else { ("operation", None) };
            archive.record("s", seq, seq, kind, performer, line(seq, kind));
        }
        let elapsed = started.elapsed();
        eprintln!("{total} record calls with the writer paused: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(archive.dropped_lines(), total - MAX_QUEUED_LINES as u64);
    }
    archive.flush().await;
    eprintln!("and written by {:?}", started.elapsed());
    let summary = archive.summary("s").unwrap().unwrap();
    assert!(summary.truncated);
    assert_eq!(summary.operations, total - total / 1000, "dropped lines are still counted");
    assert_eq!(summary.performers.len(), 100, "names on dropped join lines are kept");
    let lines = timeline(&archive, "s").unwrap();
    assert_eq!(lines.len(), MAX_QUEUED_LINES);
    assert_eq!(lines[0], line(1, "operation"));
    assert_eq!(archive.inner.shared.queued_lines.load(Ordering::Relaxed), 0);
    assert_eq!(archive.inner.shared.queued_bytes.load(Ordering::Relaxed), 0);
    // The queue has room again.
    archive.record("s", total + 1, 0, "operation", None, line(total + 1, "operation"));
    archive.flush().await;
    assert_eq!(archive.last_seq("s").unwrap(), Some(total + 1));
}

#[tokio::test]
async fn clones_share_one_writer_and_the_last_drop_commits() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    let clone = archive.clone();
    archive.begin("s", "jam", 0, None);
    record_ops(&clone, "s", 1..=1000);
    drop(archive);
    drop(clone); // no flush: dropping the last clone waits for the writer
    let archive = open(&dir);
    assert_eq!(archive.last_seq("s").unwrap(), Some(1000));
    assert_eq!(timeline(&archive, "s").unwrap().len(), 1000);
}

#[test]
#[ignore = "timing: cargo test --release archive::tests::argon2_cost -- --ignored --nocapture"]
fn argon2_cost() {
    use argon2::{PasswordHash, PasswordVerifier};
    let md5 = troop_server::md5_hex("pw");
    let phc = password::hash(&md5).unwrap();
    let runs = 20;
    let reference = argon2::Argon2::default();
    let parsed = PasswordHash::new(&phc).unwrap();
    let started = Instant::now();
    for _ in 0..runs {
        assert!(reference.verify_password(md5.as_bytes(), &parsed).is_ok());
    }
    let fresh = started.elapsed() / runs;
    let started = Instant::now();
    for _ in 0..runs {
        assert!(password::verify(&phc, &md5));
    }
    let reused = started.elapsed() / runs;
    eprintln!(
        "argon2id verify (19 MiB, t=2, p=1): fresh memory {fresh:?}, reused work area {reused:?} ({:.2}x)",
        fresh.as_secs_f64() / reused.as_secs_f64()
    );
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default().to_owned();
        line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) / 1024
    };
    let burst = || {
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (phc, md5) = (phc.clone(), md5.clone());
                std::thread::spawn(move || (0..100).for_each(|_| assert!(password::verify(&phc, &md5))))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    };
    let before = rss();
    burst();
    let after_one = rss();
    burst();
    eprintln!("RSS {before} MiB, after 300 checks on 3 threads {after_one} MiB, after 300 more {} MiB", rss());
}

#[tokio::test]
async fn an_end_without_a_document_keeps_the_last_one_and_snapshots_name_performers() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(settings(&dir)).unwrap();
    archive.begin("s", "jam", 0, None);
    let snapshot =
        r#"{"type":"snapshot","revision":3,"document":"ab","performers":[{"id":0,"name":"ann"},{"id":1,"name":"bo"}]}"#;
    archive.record("s", 3, 1, "snapshot", None, snapshot.into());
    archive.document("s", "ab".into(), 0);
    archive.finish("s", 9, "the hub stopped while it ran", None);
    archive.flush().await;
    assert_eq!(archive.code("s").unwrap().as_deref(), Some("ab"), "finish(None) keeps the document");
    assert_eq!(archive.summary("s").unwrap().unwrap().performers, ["ann", "bo"]);
}

#[tokio::test]
async fn a_name_listing_finds_each_password_s_own_sessions_with_one_hash() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(settings(&dir)).unwrap();
    let md5 = |pw: &str| Some(troop_server::md5_hex(pw));
    archive.begin("a", "jam", 1, md5("first"));
    archive.begin("b", "jam", 2, md5("second"));
    archive.begin("c", "jam", 3, md5("first"));
    archive.begin("d", "other", 4, md5("first"));
    archive.flush().await;
    let ids = |list: Vec<Summary>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(archive.summaries_for("jam", "first").unwrap()), ["c", "a"]);
    assert_eq!(ids(archive.summaries_for("jam", "second").unwrap()), ["b"]);
    assert!(archive.summaries_for("jam", "third").unwrap().is_empty());
    assert!(archive.summaries_for("nobody", "first").unwrap().is_empty());
    // A row from before schema 2 (no name key) is still found by its own hash.
    let conn = rusqlite::Connection::open(dir.path().join("nested/dir/archive.sqlite")).unwrap();
    conn.execute("UPDATE sessions SET name_key = NULL WHERE id = 'a'", []).unwrap();
    assert_eq!(ids(archive.summaries_for("jam", "first").unwrap()), ["c", "a"]);
}

#[tokio::test]
async fn an_ended_session_and_one_closed_after_a_stop_both_get_their_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    let join = r#"{"type":"join","seq":1,"time_ms":1000,"id":0,"name":"ann","colour":0}"#;
    let typed = r#"{"type":"operation","seq":2,"time_ms":1500,"author":0,"ops":["d1 >> play('x')"]}"#;
    let ran = r#"{"type":"evaluate","seq":3,"time_ms":2500,"author":0,"kind":"string","text":"d1.stop()"}"#;
    for id in ["ended", "dead"] {
        archive.begin(id, "jam", 0, None);
        for (seq, kind, line) in [(1, "join", join), (2, "operation", typed), (3, "evaluate", ran)] {
            archive.record(id, seq, 1000, kind, None, line.to_string());
        }
    }
    archive.finish("ended", 9_000, "its owner left", None);
    archive.flush().await;
    assert_eq!(archive.close_unfinished(&[], 9_500, "the hub stopped while it ran").unwrap(), 1);
    for id in ["ended", "dead"] {
        let stats = archive.summary(id).unwrap().unwrap().stats;
        let ann = &stats["ann"];
        assert_eq!((ann.typed, ann.evaluations, ann.active_s, ann.share), (15, 1, 2, 1.0), "{id}: {stats:?}");
    }
}
