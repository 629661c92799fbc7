//! The archive under faults, against real SQLite files in temporary directories: a full
//! database (SQLite's own SQLITE_FULL), busy and failed commits, a batch that cannot be
//! saved, a prune from another process racing the hub's recording, deletes on the writer,
//! closing what a stopped hub left (the code rebuilt from the timeline), timelines in pages.

use super::tests::{line, open, record_ops, timeline};
use super::*;
use std::time::Instant;

/// Polls `ok` until it holds or `within` passes.
fn wait_until(within: Duration, what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn a_full_database_loses_nothing_and_says_so_once_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("s", "jam", 0, Some(troop_server::md5_hex("pw")));
    record_ops(&archive, "s", 1..=10);
    archive.flush().await;
    let pages: i64 =
        Connection::open(archive.path()).unwrap().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    // No room to grow: SQLite answers SQLITE_FULL, as on a full disk.
    *lock(&archive.inner.shared.page_limit) = Some(pages);
    let big = "y".repeat(4_000);
    for seq in 11..=300u64 {
        archive.record(
            "s",
            seq,
            seq,
            "operation",
            None,
            format!(r#"{{"seq":{seq},"type":"operation","text":"{big}"}}"#),
        );
    }
    archive.finish("s", 9_000, "its owner left", Some("the final code".into()));
    wait_until(Duration::from_secs(10), "the archive says it cannot write", || archive.problem().is_some());
    let problem = archive.problem().unwrap_or_default();
    assert!(problem.contains("full"), "{problem}");
    assert_eq!(archive.dropped_lines(), 0, "lines wait, none dropped");
    // Room again: everything it was given is written, and it says it is well.
    *lock(&archive.inner.shared.page_limit) = None;
    tokio::time::timeout(Duration::from_secs(20), archive.flush()).await.expect("the writer recovers");
    assert_eq!(archive.problem(), None);
    assert!(archive.write_errors() >= 1);
    assert_eq!(timeline(&archive, "s").unwrap().len(), 300);
    let summary = archive.summary("s").unwrap().unwrap();
    assert!(!summary.truncated, "nothing was lost");
    assert_eq!(summary.ended_ms, Some(9_000), "the end was kept too");
    assert_eq!(archive.code("s").unwrap().unwrap(), "the final code");
    assert!(archive.verify("s", "pw").unwrap(), "the password hash too");
}

#[tokio::test]
async fn busy_and_failed_commits_are_retried_and_a_hopeless_batch_marks_its_session_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    // Busy, full, an I/O error at commit: each passes, so the batch is tried again whole.
    lock(&archive.inner.shared.fail_next).extend([5, 13, 10]); // SQLITE_BUSY, _FULL, _IOERR
    archive.begin("s", "jam", 0, None);
    record_ops(&archive, "s", 1..=50);
    archive.flush().await;
    assert_eq!(archive.last_seq("s").unwrap(), Some(50), "the Begin and every line survived");
    assert!(!archive.summary("s").unwrap().unwrap().truncated);
    assert_eq!(archive.write_errors(), 3);
    assert_eq!(archive.problem(), None, "the episode ended with the commit");
    // A corrupt database will not get better by trying again: the batch is lost, and its
    // session says so (truncated) rather than showing a silent gap.
    lock(&archive.inner.shared.fail_next).push_back(11); // SQLITE_CORRUPT
    record_ops(&archive, "s", 51..=60);
    archive.flush().await;
    record_ops(&archive, "s", 61..=70);
    archive.flush().await;
    let summary = archive.summary("s").unwrap().unwrap();
    assert!(summary.truncated, "a lost batch marks its session");
    assert_eq!(timeline(&archive, "s").unwrap().len(), 60, "lines 51-60 lost, the rest kept");
    assert_eq!(archive.problem(), None, "writing again");
}

#[tokio::test]
async fn a_prune_from_another_process_never_breaks_the_hubs_recording() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open(&dir);
    for i in 0..30 {
        let id = format!("old{i}");
        hub.begin(&id, "jam", 0, None);
        record_ops(&hub, &id, 1..=20);
        hub.finish(&id, 1_000, "done", None);
    }
    hub.begin("live", "jam", 0, None);
    hub.flush().await;
    // `troop-hub archive prune` opens the same file with a writer of its own.
    let cli = open(&dir);
    let recorder = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            for seq in 1..=3_000u64 {
                hub.record("live", seq, seq, "operation", None, line(seq, "operation"));
                if seq % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let pruned = tokio::task::spawn_blocking(move || cli.prune(365 * 24 * 3_600_000).map(|r| r.removed));
    assert_eq!(pruned.await.unwrap().unwrap(), 30);
    recorder.join().unwrap();
    hub.flush().await;
    assert_eq!(timeline(&hub, "live").unwrap().len(), 3_000, "every line of the live session");
    assert_eq!(hub.dropped_lines(), 0);
    assert!(!hub.summary("live").unwrap().unwrap().truncated);
}

#[tokio::test]
async fn deletes_run_on_the_writer_between_batches() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("gone", "jam", 0, None);
    record_ops(&archive, "gone", 1..=5);
    // No flush: the delete is queued behind the recording calls and sees them committed.
    let a = archive.clone();
    assert!(tokio::task::spawn_blocking(move || a.delete("gone")).await.unwrap().unwrap());
    assert_eq!(timeline(&archive, "gone"), None, "the session and every line went");
}

#[tokio::test]
async fn closing_a_session_a_stopped_hub_left_brings_its_code_to_the_last_stored_edit() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    let op =
        |seq: u64, ops: &str| format!(r#"{{"type":"operation","seq":{seq},"time_ms":{seq},"author":1,"ops":{ops}}}"#);
    // From a document stored as of event 2, then edits the hub recorded but never stored
    // as a document (it was killed within the document's interval).
    archive.begin("kept", "jam", 0, None);
    archive.record("kept", 1, 1, "snapshot", None, r#"{"type":"snapshot","document":"ab"}"#.into());
    archive.record("kept", 2, 2, "operation", None, op(2, r#"[2,"c"]"#));
    archive.document("kept", "abc".into(), 2);
    archive.record("kept", 3, 3, "operation", None, op(3, r#"[3,"dü"]"#));
    archive.record("kept", 4, 4, "mark", None, r#"{"type":"mark","seq":4}"#.into());
    archive.record("kept", 5, 5, "operation", None, op(5, r#"[1,-1,3]"#));
    // Never stored a document: rebuilt from its first snapshot.
    archive.begin("fresh", "jam", 0, None);
    archive.record("fresh", 1, 1, "snapshot", None, r#"{"type":"snapshot","document":"x"}"#.into());
    archive.record("fresh", 2, 2, "operation", None, op(2, r#"[1,"🎵"]"#));
    // An edit that does not apply: the stored document stays as it was.
    archive.begin("odd", "jam", 0, None);
    archive.document("odd", "stored".into(), 1);
    archive.record("odd", 2, 2, "operation", None, op(2, r#"[99,"z"]"#));
    archive.flush().await;
    let a = archive.clone();
    let closed = tokio::task::spawn_blocking(move || a.close_unfinished(&[], 9_000, "the hub stopped while it ran"));
    assert_eq!(closed.await.unwrap().unwrap(), 3);
    assert_eq!(archive.code("kept").unwrap().unwrap(), "acdü");
    assert_eq!(archive.code("fresh").unwrap().unwrap(), "x🎵");
    assert_eq!(archive.code("odd").unwrap().unwrap(), "stored");
}

#[tokio::test]
async fn a_timeline_reads_in_pages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let archive = open(&dir);
    archive.begin("s", "jam", 0, None);
    record_ops(&archive, "s", 1..=2_500);
    archive.flush().await;
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = archive.timeline_page("s", after, 1_000).unwrap().expect("the session exists");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|(seq, _)| *seq);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 2_500);
    assert!(seen.iter().enumerate().all(|(i, (seq, line))| *seq == i as u64 + 1 && *line == line_of(*seq)));
    assert_eq!(archive.timeline_page("nope", None, 10).unwrap(), None);
}

fn line_of(seq: u64) -> String {
    line(seq, "operation")
}
