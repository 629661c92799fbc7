//! The archive's one writer thread: takes the recording calls in order from the channel and
//! commits them in batches (one transaction every [`BATCH_WINDOW`] or [`BATCH_ROWS`] calls,
//! whichever comes first, at once on a flush). Owns the per-session rules: duplicate
//! sequence numbers are ignored, the per-session byte cap, the counters and performer names,
//! and folding lines the caller had to drop (a full queue) into the sessions they belong to.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{from_sql_int, lock, password, sql_int, Overflow, Shared};

/// The longest a recorded call waits before it is committed.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// The most calls one transaction takes.
const BATCH_ROWS: usize = 500;
/// How long the writer naps when nothing is queued, within a batch.
const NAP: Duration = Duration::from_millis(20);
/// The most distinct performer names kept for one session.
const MAX_PERFORMERS: usize = 256;
/// Unknown session ids remembered for logging once each (then forgotten all together).
const MAX_UNKNOWN_LOGGED: usize = 1024;

/// One recording call, as the caller sent it.
pub(super) enum Op {
    Begin {
        id: String,
        name: String,
        started_ms: u64,
        password_md5: Option<String>,
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
}

pub(super) struct Writer {
    conn: Connection,
    rx: Receiver<Op>,
    shared: Arc<Shared>,
    max_session_bytes: u64,
    unknown: HashSet<String>,
}

impl Writer {
    pub(super) fn new(conn: Connection, rx: Receiver<Op>, shared: Arc<Shared>, max_session_bytes: u64) -> Writer {
        Writer { conn, rx, shared, max_session_bytes, unknown: HashSet::new() }
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
            let deadline = Instant::now() + BATCH_WINDOW;
            let in_transaction = match self.conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "archive: cannot start a transaction; writing without one");
                    false
                }
            };
            let mut flushes = Vec::new();
            let mut calls = 0;
            let mut next = Some(first);
            loop {
                let Some(op) = next.take() else {
                    // Nothing queued: nap rather than wake for every line (at 1,000 lines/s a
                    // wake-up each would compete with the session servers for the cores).
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(NAP));
                    match self.rx.try_recv() {
                        Ok(op) => next = Some(op),
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                    continue;
                };
                if let Op::Flush(done) = op {
                    flushes.push(done);
                    break;
                }
                // A session's start (its password hash) and end are committed at once: a
                // hub killed right after cannot lose them (lines may wait for the batch).
                let urgent = matches!(op, Op::Begin { .. } | Op::Finish { .. });
                self.apply(op);
                calls += 1;
                if urgent || calls >= BATCH_ROWS || Instant::now() >= deadline {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(op) => next = Some(op),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.apply_overflow(None);
            if in_transaction {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    tracing::error!(error = %e, calls, "archive: commit failed; this batch is lost");
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
        tracing::debug!("archive: writer stopped");
    }

    fn apply(&mut self, op: Op) {
        let (what, id, result) = match op {
            Op::Begin { id, name, started_ms, password_md5 } => {
                let result = self.begin(&id, &name, started_ms, password_md5);
                ("beginning", id, result)
            }
            Op::Record { id, seq, time_ms, kind, performer, line } => {
                self.shared.dequeued(line.len());
                let result = self.record(&id, seq, time_ms, kind, performer, &line);
                ("recording a line of", id, result)
            }
            Op::Document { id } => {
                let document = lock(&self.shared.documents).remove(&id);
                let result = match document {
                    Some(document) => self
                        .conn
                        .prepare_cached("UPDATE sessions SET document = ?2 WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![id, document]))
                        .map(drop),
                    None => Ok(()),
                };
                ("keeping the document of", id, result)
            }
            Op::Finish { id, ended_ms, reason, document } => {
                self.apply_overflow(Some(&id));
                let result = self
                    .conn
                    .prepare_cached("UPDATE sessions SET ended_ms = ?2, end_reason = ?3, document = COALESCE(?4, document) WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id, sql_int(ended_ms), reason, document]))
                    .map(drop);
                ("finishing", id, result)
            }
            Op::Flush(done) => {
                let _ = done.send(());
                return;
            }
        };
        if let Err(e) = result {
            tracing::warn!(session = %id, error = %e, "archive: {what} a session failed");
        }
    }

    fn begin(&mut self, id: &str, name: &str, started_ms: u64, password_md5: Option<String>) -> rusqlite::Result<()> {
        self.unknown.remove(id);
        let exists =
            self.conn.prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")?.query_row([id], |_| Ok(())).optional()?;
        if exists.is_some() {
            return Ok(()); // a restarted hub continues it: the row is kept as it is
        }
        let md5 = password_md5.map(|m| m.to_ascii_lowercase());
        let key = md5.as_deref().and_then(|m| password::name_key(name, m));
        let hash = md5.and_then(|md5| match password::hash(&md5) {
            Ok(hash) => Some(hash),
            Err(e) => {
                tracing::error!(session = %id, error = %e, "archive: cannot hash the session password; only an admin can read this archive");
                None
            }
        });
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (id, name, started_ms, password_hash, name_key) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, name, sql_int(started_ms), hash, key])?;
        Ok(())
    }

    fn record(
        &mut self,
        id: &str,
        seq: u64,
        time_ms: u64,
        kind: &'static str,
        performer: Option<String>,
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
                self.add_performers(id, &[name])?;
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

    /// Folds lines the caller dropped on a full queue into their sessions (truncated, counted,
    /// performers kept): for every session, or for `finished` alone and then forgets it.
    fn apply_overflow(&mut self, finished: Option<&str>) {
        let pending: Vec<(String, Overflow)> = {
            let mut map = lock(&self.shared.overflow);
            match finished {
                Some(id) => map.remove(id).map(|o| (id.to_owned(), o)).into_iter().collect(),
                None => map.iter_mut().filter(|(_, o)| o.dropped > 0).map(|(id, o)| (id.clone(), o.take())).collect(),
            }
        };
        for (id, o) in pending {
            if o.dropped == 0 {
                continue;
            }
            let result = self
                .conn
                .prepare_cached(
                    "UPDATE sessions SET truncated = 1, operations = operations + ?2, evaluations = evaluations + ?3
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, sql_int(o.operations), sql_int(o.evaluations)]))
                .and_then(|_| self.add_performers(&id, &o.performers));
            if let Err(e) = result {
                tracing::warn!(session = %id, error = %e, "archive: marking a session truncated failed");
            }
        }
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
