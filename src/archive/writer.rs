//! The archive's one writer thread: takes the recording calls in order from the channel and
//! commits them in batches (one transaction every [`BATCH_WINDOW`] or [`BATCH_ROWS`] calls,
//! whichever comes first, at once on a flush). Owns the per-session rules: duplicate
//! sequence numbers are ignored, the per-session byte cap, the counters and performer names,
//! and folding lines the caller had to drop (a full queue) into the sessions they belong to.
//!
//! Nothing it was given is lost quietly. A batch whose transaction fails for a reason that
//! may pass (the database busy or locked, the disk full, an I/O error, a read-only file) is
//! rolled back and tried again whole, with a growing pause, until it commits; meanwhile new
//! calls wait in the queue (and past its bounds are dropped, marking their sessions
//! truncated). A call that fails for any other reason is logged and marks its session
//! truncated. Maintenance (deletes, pruning, closing) runs here too, as [`Job`]s between
//! batches, so there is one writer.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::oneshot;

use super::{from_sql_int, lock, sql_int, Overflow, Shared};

/// The longest a recorded call waits before it is committed.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// The most calls one transaction takes.
const BATCH_ROWS: usize = 500;
/// How long the writer naps when nothing is queued, within a batch.
const NAP: Duration = Duration::from_millis(20);
/// The first pause before a failed batch is tried again; it doubles up to [`LONGEST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// Once every archive handle is gone (the hub is stopping), a failing batch is tried this long.
const CLOSING_RETRIES: Duration = Duration::from_secs(10);
/// The most distinct performer names kept for one session.
const MAX_PERFORMERS: usize = 256;
/// Unknown session ids remembered for logging once each (then forgotten all together).
const MAX_UNKNOWN_LOGGED: usize = 1024;

/// Maintenance run on the writer's connection between batches; it answers its caller itself.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One recording call, as the caller sent it.
pub(super) enum Op {
    /// A session begins, with its password hash and name key (made off this thread).
    Begin {
        id: String,
        name: String,
        started_ms: u64,
        hash: Option<String>,
        key: Option<String>,
    },
    Record {
        id: String,
        seq: u64,
        time_ms: u64,
        kind: &'static str,
        performer: Option<String>,
        line: String,
    },
    /// The newest document of `id` waits in [`Shared::documents`] (only the newest is kept).
    Document {
        id: String,
    },
    Finish {
        id: String,
        ended_ms: u64,
        reason: String,
        document: Option<String>,
    },
    Flush(oneshot::Sender<()>),
    Job(Job),
}

/// Session `id`'s statistics per performer (JSON), from its stored timeline; `None` (and a
/// log line) if they cannot be read: a session's end never fails for its statistics.
pub(super) fn stats_of(conn: &rusqlite::Connection, id: &str) -> Option<String> {
    let read = || -> rusqlite::Result<String> {
        let mut stmt = conn.prepare_cached("SELECT line FROM lines WHERE session_id = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([id])?;
        let mut stats = crate::audience::Stats::default();
        let mut doc = crate::audience::LiveDoc::default();
        while let Some(row) = rows.next()? {
            if let Ok(line) = row.get_ref(0)?.as_str() {
                crate::audience::stats::fold_line(&mut stats, &mut doc, line);
            }
        }
        Ok(serde_json::to_string(&stats.report(&doc)).unwrap_or_else(|_| "{}".into()))
    };
    match read() {
        Ok(json) => Some(json),
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "archive: the session's statistics could not be counted");
            None
        }
    }
}

/// Whether a failure may pass by itself (then the batch is tried again).
pub(super) fn passing(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OutOfMemory
        )
    )
}

/// What one batch gathered from the queue.
#[derive(Default)]
struct Batch {
    ops: Vec<Op>,
    flushes: Vec<oneshot::Sender<()>>,
    job: Option<Job>,
}

pub(super) struct Writer {
    conn: Connection,
    rx: Receiver<Op>,
    shared: Arc<Shared>,
    max_session_bytes: u64,
    unknown: HashSet<String>,
    /// Documents written by the transaction under way (removed from the queue once committed).
    written: Vec<(String, Arc<(String, u64)>)>,
}

impl Writer {
    pub(super) fn new(conn: Connection, rx: Receiver<Op>, shared: Arc<Shared>, max_session_bytes: u64) -> Writer {
        Writer { conn, rx, shared, max_session_bytes, unknown: HashSet::new(), written: Vec::new() }
    }

    /// Runs until every [`super::Archive`] clone is gone and the channel is drained.
    pub(super) fn run(mut self) {
        let mut open = true;
        while open {
            let Ok(first) = self.rx.recv() else { break };
            #[cfg(test)]
            let shared = self.shared.clone();
            #[cfg(test)]
            let _paused = lock(&shared.gate);
            let mut batch = Batch::default();
            open = self.gather(first, &mut batch);
            if !batch.ops.is_empty() || self.overflow_pending() {
                self.commit(&batch.ops, !open);
            }
            for done in batch.flushes {
                let _ = done.send(());
            }
            if let Some(job) = batch.job {
                job(&mut self.conn);
            }
        }
        tracing::debug!("archive: writer stopped");
    }

    /// Takes calls from the queue into `batch` until the window closes, the batch is full, a
    /// session begins or ends, a flush or a job arrives. False once the channel is closed.
    fn gather(&mut self, first: Op, batch: &mut Batch) -> bool {
        let deadline = Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        loop {
            let Some(op) = next.take() else {
                // Nothing queued: nap rather than wake for every line (at 1,000 lines/s a
                // wake-up each would compete with the session servers for the cores).
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return true;
                }
                std::thread::sleep(left.min(NAP));
                match self.rx.try_recv() {
                    Ok(op) => next = Some(op),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return false,
                }
                continue;
            };
            match op {
                Op::Flush(done) => {
                    batch.flushes.push(done);
                    return true;
                }
                Op::Job(job) => {
                    batch.job = Some(job);
                    return true;
                }
                Op::Record { ref line, .. } => self.shared.dequeued(line.len()),
                _ => {}
            }
            // A session's start and end are committed at once: a hub killed right after
            // cannot lose them (lines may wait for the batch).
            let urgent = matches!(op, Op::Begin { .. } | Op::Finish { .. });
            batch.ops.push(op);
            if urgent || batch.ops.len() >= BATCH_ROWS || Instant::now() >= deadline {
                return true;
            }
            match self.rx.try_recv() {
                Ok(op) => next = Some(op),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Commits `ops` (and the dropped lines waiting to be folded in), trying again after a
    /// failure that may pass; `closing`: the hub is stopping, so only for a while.
    fn commit(&mut self, ops: &[Op], closing: bool) {
        let mut pause = FIRST_RETRY;
        let give_up = Instant::now() + CLOSING_RETRIES;
        loop {
            let folded = self.overflow_snapshot();
            self.written.clear();
            match self.transaction(ops, &folded) {
                Ok(clean) => {
                    self.committed(ops, &folded);
                    if clean {
                        self.shared.health.wrote();
                    }
                    return;
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    let again = passing(&e);
                    self.shared.health.failed("committing recorded calls", &e, again);
                    if !again {
                        let lines = ops.iter().filter(|op| matches!(op, Op::Record { .. })).count();
                        tracing::error!(calls = ops.len(), lines, error = %e, "archive: a batch cannot be committed and will not be by trying again; it is lost");
                        self.mark_lost(ops);
                        return;
                    }
                    if closing && Instant::now() >= give_up {
                        let lines = ops.iter().filter(|op| matches!(op, Op::Record { .. })).count();
                        tracing::error!(calls = ops.len(), lines, error = %e, "archive: the hub is stopping and the archive still cannot write; these calls are lost");
                        return;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LONGEST_RETRY);
                }
            }
        }
    }

    /// One attempt: `Err` when the batch must be rolled back and tried again; `Ok(clean)`,
    /// false when some call failed for good (its session is marked truncated).
    fn transaction(&mut self, ops: &[Op], folded: &[(String, Overflow)]) -> rusqlite::Result<bool> {
        #[cfg(test)]
        {
            if let Some(code) = lock(&self.shared.fail_next).pop_front() {
                return Err(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
            }
            let pages = lock(&self.shared.page_limit).unwrap_or(1_073_741_823);
            self.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut clean = true;
        for op in ops {
            if let Err((id, what, e)) = self.apply(op) {
                if passing(&e) {
                    return Err(e);
                }
                clean = false;
                self.shared.health.failed(what, &e, false);
                self.lost(&id)?;
            }
        }
        for (id, o) in folded {
            self.fold(id, o)?;
        }
        self.conn.execute_batch("COMMIT")?;
        Ok(clean)
    }

    /// After a commit: documents written leave the queue (unless a newer one came), folded
    /// counts leave the overflow, and ended sessions' overflow is forgotten.
    fn committed(&mut self, ops: &[Op], folded: &[(String, Overflow)]) {
        let mut documents = lock(&self.shared.documents);
        for (id, doc) in self.written.drain(..) {
            if documents.get(&id).is_some_and(|d| Arc::ptr_eq(d, &doc)) {
                documents.remove(&id);
            }
        }
        drop(documents);
        let mut overflow = lock(&self.shared.overflow);
        for (id, o) in folded {
            if let Some(left) = overflow.get_mut(id) {
                left.subtract(o);
            }
        }
        for op in ops {
            if let Op::Finish { id, .. } = op {
                if overflow.get(id).is_some_and(|o| o.dropped == 0) {
                    overflow.remove(id);
                }
            }
        }
    }

    /// A whole batch is lost: its sessions are marked truncated, if anything can be written.
    fn mark_lost(&mut self, ops: &[Op]) {
        let ids: HashSet<&str> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Record { id, .. } | Op::Begin { id, .. } | Op::Finish { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        for id in ids {
            let _ = self.lost(id);
        }
    }

    /// A call for session `id` failed for good: the session is marked truncated.
    fn lost(&mut self, id: &str) -> rusqlite::Result<()> {
        match self.conn.prepare_cached("UPDATE sessions SET truncated = 1 WHERE id = ?1")?.execute([id]) {
            Ok(_) => Ok(()),
            Err(e) if passing(&e) => Err(e),
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "archive: cannot mark a session truncated");
                Ok(())
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), (String, &'static str, rusqlite::Error)> {
        fn failed(
            id: &str,
            what: &'static str,
        ) -> impl FnOnce(rusqlite::Error) -> (String, &'static str, rusqlite::Error) {
            let id = id.to_owned();
            move |e| (id, what, e)
        }
        match op {
            Op::Begin { id, name, started_ms, hash, key } => {
                self.unknown.remove(id);
                // A restarted hub continues a session: the row is kept as it is, but a
                // password hash it lacks is added (it is the same session's).
                self.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO sessions (id, name, started_ms, password_hash, name_key)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| s.execute(params![id, name, sql_int(*started_ms), hash, key]))
                    .and_then(|_| {
                        self.conn
                            .prepare_cached(
                                "UPDATE sessions SET password_hash = ?2, name_key = ?3
                                 WHERE id = ?1 AND password_hash IS NULL AND ?2 IS NOT NULL",
                            )
                            .and_then(|mut s| s.execute(params![id, hash, key]))
                    })
                    .map(drop)
                    .map_err(failed(id, "beginning a session"))
            }
            Op::Record { id, seq, time_ms, kind, performer, line } => self
                .record(id, *seq, *time_ms, kind, performer.as_ref(), line)
                .map_err(failed(id, "recording a timeline line")),
            Op::Document { id } => {
                let document = lock(&self.shared.documents).get(id).cloned();
                let Some(document) = document else { return Ok(()) };
                let (text, seq) = &*document;
                let result = self
                    .conn
                    .prepare_cached("UPDATE sessions SET document = ?2, document_seq = ?3 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id, text, sql_int(*seq)]))
                    .map(drop);
                self.written.push((id.clone(), document));
                result.map_err(failed(id, "keeping a session's document"))
            }
            Op::Finish { id, ended_ms, reason, document } => {
                let stats = stats_of(&self.conn, id);
                self.conn
                    .prepare_cached(
                        "UPDATE sessions SET ended_ms = ?2, end_reason = ?3, document = COALESCE(?4, document),
                         stats = ?5 WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, sql_int(*ended_ms), reason, document, stats]))
                    .map(drop)
                    .map_err(failed(id, "ending a session"))
            }
            Op::Flush(_) | Op::Job(_) => Ok(()),
        }
    }

    fn record(
        &mut self,
        id: &str,
        seq: u64,
        time_ms: u64,
        kind: &'static str,
        performer: Option<&String>,
        line: &str,
    ) -> rusqlite::Result<()> {
        let state = self
            .conn
            .prepare_cached("SELECT last_seq, bytes, capped FROM sessions WHERE id = ?1")?
            .query_row([id], |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, i64>(1)?, row.get::<_, bool>(2)?)))
            .optional()?;
        let Some((last_seq, bytes, capped)) = state else {
            if self.unknown.len() >= MAX_UNKNOWN_LOGGED {
                self.unknown.clear();
            }
            if self.unknown.insert(id.to_owned()) {
                tracing::warn!(session = %id, "archive: a line for a session that was never begun (or was deleted) is ignored");
            }
            return Ok(());
        };
        let seq_sql = sql_int(seq);
        if last_seq.is_some_and(|last| seq_sql <= last) {
            return Ok(()); // already stored before a restart
        }
        let bytes = from_sql_int(bytes);
        let len = line.len() as u64;
        let fits = !capped && bytes.saturating_add(len) <= self.max_session_bytes;
        if fits {
            self.conn
                .prepare_cached("INSERT INTO lines (session_id, seq, time_ms, kind, line) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![id, seq_sql, sql_int(time_ms), kind, line])?;
        }
        let (operations, evaluations) = counts(kind);
        self.conn
            .prepare_cached(
                "UPDATE sessions SET last_seq = ?2, bytes = bytes + ?3, capped = capped OR ?4,
                     truncated = truncated OR ?4, operations = operations + ?5, evaluations = evaluations + ?6
                 WHERE id = ?1",
            )?
            .execute(params![id, seq_sql, if fits { sql_int(len) } else { 0 }, !fits, operations, evaluations])?;
        if kind == "join" {
            if let Some(name) = performer {
                self.add_performers(id, std::slice::from_ref(name))?;
            }
        }
        if kind == "snapshot" {
            // Performers already playing when the hub (re)subscribed are named only here.
            let names = snapshot_performers(line);
            if !names.is_empty() {
                self.add_performers(id, &names)?;
            }
        }
        Ok(())
    }

    /// Appends the names not yet listed, in order, up to [`MAX_PERFORMERS`].
    fn add_performers(&mut self, id: &str, names: &[String]) -> rusqlite::Result<()> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT performers FROM sessions WHERE id = ?1")?
            .query_row([id], |row| row.get(0))
            .optional()?;
        let Some(text) = text else { return Ok(()) };
        let mut list = super::parse_performers(id, &text);
        let before = list.len();
        for name in names {
            if list.len() < MAX_PERFORMERS && !list.contains(name) {
                list.push(name.clone());
            }
        }
        if list.len() != before {
            let text =
                serde_json::to_string(&list).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            self.conn
                .prepare_cached("UPDATE sessions SET performers = ?2 WHERE id = ?1")?
                .execute(params![id, text])?;
        }
        Ok(())
    }

    fn overflow_pending(&self) -> bool {
        lock(&self.shared.overflow).values().any(|o| o.dropped > 0)
    }

    /// The lines callers dropped on a full queue, by session, as they are now.
    fn overflow_snapshot(&self) -> Vec<(String, Overflow)> {
        let map = lock(&self.shared.overflow);
        map.iter().filter(|(_, o)| o.dropped > 0).map(|(id, o)| (id.clone(), o.counts())).collect()
    }

    /// Folds dropped lines into their session: truncated, counted, performers kept.
    fn fold(&mut self, id: &str, o: &Overflow) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE sessions SET truncated = 1, operations = operations + ?2, evaluations = evaluations + ?3
                 WHERE id = ?1",
            )?
            .execute(params![id, sql_int(o.operations), sql_int(o.evaluations)])?;
        self.add_performers(id, &o.performers)
    }
}

/// What a line of `kind` adds to (operations, evaluations).
pub(super) fn counts(kind: &str) -> (i64, i64) {
    match kind {
        "operation" => (1, 0),
        "evaluate" => (0, 1),
        _ => (0, 0),
    }
}

/// The performers' names in a snapshot line (`{"performers": [{"name": ...}, ...]}`).
fn snapshot_performers(line: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Snapshot {
        #[serde(default)]
        performers: Vec<Named>,
    }
    serde_json::from_str::<Snapshot>(line)
        .map(|s| s.performers.into_iter().map(|p| p.name).collect())
        .unwrap_or_default()
}
