//! The archive store: every Troop session's code and timeline kept in an embedded SQLite
//! database (WAL) so a performance outlives its session.
//!
//! Recording calls ([`Archive::begin`], [`Archive::record`], [`Archive::document`],
//! [`Archive::finish`]) never block: they go in order through a channel to one writer thread
//! ([`writer`]) that commits them in batches. The queue holds at most [`MAX_QUEUED_LINES`]
//! timeline lines ([`MAX_QUEUED_BYTES`] bytes); past that a line is dropped and its session
//! marked truncated. Reading calls are blocking (the hub runs them in `spawn_blocking`) and use
//! their own connections beside the writer. Session passwords are kept as argon2id hashes
//! ([`password`]); the schema and its migrations live in [`schema`].

mod password;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::oneshot;

use writer::{Op, Writer};

/// Timeline lines waiting for the writer at most; more are dropped (the session is marked
/// truncated).
pub const MAX_QUEUED_LINES: usize = 65_536;
/// Bytes of timeline lines waiting for the writer at most (a lone line always gets in).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Idle reading connections kept open.
const MAX_IDLE_READERS: usize = 4;
/// Sessions of one name whose password `summaries_for` checks at most.
const MAX_CHECKED: usize = 100;

/// Where the archive lives and how much it keeps.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// The SQLite file (its directory is created).
    pub path: PathBuf,
    /// Ended sessions are pruned this long after their end.
    pub keep: Duration,
    /// Timeline bytes kept for one session; later lines are dropped (the session is truncated).
    pub max_session_bytes: u64,
    /// Timeline and document bytes of all sessions; pruning removes the oldest ended ones past it.
    pub max_total_bytes: u64,
}

/// What went wrong, with the file or the session it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("creating the archive directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("opening the archive database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("archive database {}: {what}: {source}", path.display())]
    Setup { path: PathBuf, what: &'static str, source: rusqlite::Error },
    #[error("migrating the archive database {} to schema {version}: {source}", path.display())]
    Migrate { path: PathBuf, version: i64, source: rusqlite::Error },
    #[error("archive database is from a newer troop-hub (schema {version}): {}", path.display())]
    NewerSchema { path: PathBuf, version: i64 },
    #[error("starting the archive writer thread: {0}")]
    Writer(std::io::Error),
    #[error("archive: {context}: {source}")]
    Sqlite { context: String, source: rusqlite::Error },
}

/// One archived session as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub id: String,
    pub name: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub end_reason: Option<String>,
    /// Distinct names from join lines, in first-join order.
    pub performers: Vec<String>,
    pub operations: u64,
    pub evaluations: u64,
    /// Stored timeline bytes.
    pub bytes: u64,
    /// Some timeline lines were not stored (the session's cap, or a full queue).
    pub truncated: bool,
}

/// What [`Archive::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct PruneReport {
    pub removed: usize,
    /// Timeline and document bytes of the removed sessions.
    pub bytes_freed: u64,
}

/// Lines the callers dropped for one session since the writer last folded them in.
#[derive(Debug, Default)]
struct Overflow {
    warned: bool,
    dropped: u64,
    operations: u64,
    evaluations: u64,
    performers: Vec<String>,
}

impl Overflow {
    /// The counts so far, leaving zero (and the warned flag) behind.
    fn take(&mut self) -> Overflow {
        Overflow {
            warned: self.warned,
            dropped: std::mem::take(&mut self.dropped),
            operations: std::mem::take(&mut self.operations),
            evaluations: std::mem::take(&mut self.evaluations),
            performers: std::mem::take(&mut self.performers),
        }
    }
}

/// State the callers and the writer share.
#[derive(Default)]
struct Shared {
    queued_lines: AtomicUsize,
    queued_bytes: AtomicUsize,
    dropped_lines: AtomicU64,
    overflow: Mutex<HashMap<String, Overflow>>,
    /// The newest document per session not yet written (only the newest is worth writing).
    documents: Mutex<HashMap<String, String>>,
    /// Held by a test to pause the writer between batches.
    #[cfg(test)]
    gate: Mutex<()>,
}

impl Shared {
    /// Takes a place in the queue for a line of `len` bytes, or says there is none.
    fn admit(&self, len: usize) -> bool {
        if self.queued_lines.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_LINES {
            self.queued_lines.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before.saturating_add(len) > MAX_QUEUED_BYTES {
            self.dequeued(len);
            return false;
        }
        true
    }

    /// Gives back the place of a line of `len` bytes.
    fn dequeued(&self, len: usize) {
        self.queued_lines.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }
}

/// Locks, going on past a panic elsewhere (the guarded maps stay consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A count or time as SQLite stores it (saturating; nothing real comes near 2^63).
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored count or time (a negative one, never written by us, reads as 0).
fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The performers column; a damaged value is logged and read as no names.
fn parse_performers(id: &str, text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(session = %id, error = %e, "archive: the performers list does not parse; ignored");
        Vec::new()
    })
}

/// Joins the writer thread once the last sender is gone (declared after the sender).
struct WriterThread(Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            if thread.join().is_err() {
                tracing::error!("archive: the writer thread panicked");
            }
        }
    }
}

struct Inner {
    /// Dropped before `_writer` (field order): the writer then drains, commits and stops.
    tx: Sender<Op>,
    _writer: WriterThread,
    shared: Arc<Shared>,
    path: PathBuf,
    keep: Duration,
    max_total_bytes: u64,
    readers: Mutex<Vec<Connection>>,
}

/// The archive. Cheap to clone (an `Arc` inside). Writes go to one background writer thread
/// through a channel and are committed in batches (a transaction every ~100 ms or 500 calls,
/// whichever first) — never blocking the caller. Dropping the last clone waits for the writer
/// to commit what is queued.
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

const SUMMARY_COLUMNS: &str =
    "id, name, started_ms, ended_ms, end_reason, performers, operations, evaluations, bytes, truncated";

fn summary_from(row: &Row<'_>) -> rusqlite::Result<Summary> {
    let id: String = row.get(0)?;
    let performers: String = row.get(5)?;
    let performers = parse_performers(&id, &performers);
    Ok(Summary {
        name: row.get(1)?,
        started_ms: from_sql_int(row.get(2)?),
        ended_ms: row.get::<_, Option<i64>>(3)?.map(from_sql_int),
        end_reason: row.get(4)?,
        performers,
        operations: from_sql_int(row.get(6)?),
        evaluations: from_sql_int(row.get(7)?),
        bytes: from_sql_int(row.get(8)?),
        truncated: row.get(9)?,
        id,
    })
}

/// Deletes a session and its lines; whether it existed.
fn delete_session(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM lines WHERE session_id = ?1")?.execute([id])?;
    Ok(conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")?.execute([id])? > 0)
}

/// Timeline plus document bytes of a session, as pruning counts them.
const SIZE: &str = "bytes + octet_length(document)";

impl Archive {
    /// Opens (creating the parent directory and the file), sets WAL mode, synchronous=NORMAL and
    /// a busy timeout, migrates the schema (a newer unknown version is an error) and starts the
    /// writer thread.
    pub fn open(settings: ArchiveSettings) -> Result<Archive, ArchiveError> {
        let path = settings.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| ArchiveError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let conn = schema::open_writer(&path)?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(conn, rx, shared.clone(), settings.max_session_bytes);
        let thread = std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer.run())
            .map_err(ArchiveError::Writer)?;
        tracing::info!(path = %path.display(), "archive: open");
        Ok(Archive {
            inner: Arc::new(Inner {
                tx,
                _writer: WriterThread(Some(thread)),
                shared,
                path,
                keep: settings.keep,
                max_total_bytes: settings.max_total_bytes,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Timeline lines dropped so far because the writer's queue was full.
    pub fn dropped_lines(&self) -> u64 {
        self.inner.shared.dropped_lines.load(Ordering::Relaxed)
    }

    fn send(&self, op: Op) {
        if self.inner.tx.send(op).is_err() {
            tracing::error!("archive: the writer thread is gone; a recording call is lost");
        }
    }

    // ---- recording (non-blocking; all go through the writer in order) ----

    /// A session begins (or a restarted hub continues it: then the existing row is kept as is).
    /// `password_md5` is hashed (argon2id, random salt) on the writer thread and never stored
    /// itself; `None` means only an admin can read the archive.
    pub fn begin(&self, id: &str, name: &str, started_ms: u64, password_md5: Option<String>) {
        self.send(Op::Begin { id: id.to_owned(), name: name.to_owned(), started_ms, password_md5 });
    }

    /// One timeline line (a JSON object text) with its event number and time. Lines with a
    /// `seq` at or below the session's last stored one are ignored. `kind` is the line's
    /// "type"; `performer` the name on join lines. On a full queue the line is dropped and the
    /// session marked truncated (its counters still count it).
    pub fn record(
        &self,
        id: &str,
        seq: u64,
        time_ms: u64,
        kind: &'static str,
        performer: Option<String>,
        line: String,
    ) {
        let shared = &self.inner.shared;
        if !shared.admit(line.len()) {
            shared.dropped_lines.fetch_add(1, Ordering::Relaxed);
            let mut overflow = lock(&shared.overflow);
            let entry = overflow.entry(id.to_owned()).or_default();
            if !entry.warned {
                entry.warned = true;
                tracing::warn!(session = %id, "archive: the writer is behind; timeline lines are dropped and the archive is truncated");
            }
            entry.dropped += 1;
            let (operations, evaluations) = writer::counts(kind);
            entry.operations += operations as u64;
            entry.evaluations += evaluations as u64;
            if let (Some(name), "join") = (performer, kind) {
                if !entry.performers.contains(&name) {
                    entry.performers.push(name);
                }
            }
            return;
        }
        let len = line.len();
        let op = Op::Record { id: id.to_owned(), seq, time_ms, kind, performer, line };
        if self.inner.tx.send(op).is_err() {
            shared.dequeued(len);
            tracing::error!("archive: the writer thread is gone; a timeline line is lost");
        }
    }

    /// The document as the hub knows it now (replaces the kept one; only the newest one still
    /// waiting is written).
    pub fn document(&self, id: &str, document: String) {
        let waiting = lock(&self.inner.shared.documents).insert(id.to_owned(), document).is_some();
        if !waiting {
            self.send(Op::Document { id: id.to_owned() });
        }
    }

    /// The session ended: its final document (`None`: the hub never had it, keep the last
    /// one written) and why ("its owner left", ...).
    pub fn finish(&self, id: &str, ended_ms: u64, reason: &str, document: Option<String>) {
        self.send(Op::Finish { id: id.to_owned(), ended_ms, reason: reason.to_owned(), document });
    }

    /// Waits until everything sent so far is committed (tests, shutdown).
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.inner.tx.send(Op::Flush(done)).is_err() {
            return;
        }
        let _ = committed.await;
    }

    // ---- reading (blocking: the hub calls them in spawn_blocking) ----

    /// Runs `f` on an idle reading connection (opening one if none is idle).
    fn read<T>(
        &self,
        context: impl FnOnce() -> String,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ArchiveError> {
        let idle = lock(&self.inner.readers).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => schema::open_reader(&self.inner.path)?,
        };
        let result = f(&mut conn);
        let mut readers = lock(&self.inner.readers);
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result.map_err(|source| ArchiveError::Sqlite { context: context(), source })
    }

    /// The last stored sequence number of `id` (committed lines only: flush first if needed).
    pub fn last_seq(&self, id: &str) -> Result<Option<u64>, ArchiveError> {
        self.read(
            || format!("reading the last sequence number of session {id}"),
            |c| {
                let seq = c
                    .prepare_cached("SELECT last_seq FROM sessions WHERE id = ?1")?
                    .query_row([id], |row| row.get::<_, Option<i64>>(0))
                    .optional()?;
                Ok(seq.flatten().map(from_sql_int))
            },
        )
    }

    /// Summaries, newest first; of sessions named `name`, or all.
    pub fn summaries(&self, name: Option<&str>) -> Result<Vec<Summary>, ArchiveError> {
        self.read(
            || format!("listing sessions{}", name.map(|n| format!(" named {n:?}")).unwrap_or_default()),
            |c| {
                let sql = format!(
                    "SELECT {SUMMARY_COLUMNS} FROM sessions WHERE ?1 IS NULL OR name = ?1
                     ORDER BY started_ms DESC, id DESC"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map([name], summary_from)?;
                rows.collect()
            },
        )
    }

    /// Summaries of `name`'s sessions whose password is `password`, newest first, at most
    /// [`MAX_CHECKED`] looked at. Costs one argon2id computation whatever the name holds
    /// (equal timing whether it exists or not).
    pub fn summaries_for(&self, name: &str, password: &str) -> Result<Vec<Summary>, ArchiveError> {
        // One slow hash per request, whether the name has no session, one, or many: the
        // name key is compared with each row's (rows from before schema 2 have none and are
        // checked one by one, as they were).
        let md5 = troop_server::md5_hex(password);
        let key = password::name_key(name, &md5).unwrap_or_default();
        let candidates: Vec<(Summary, Option<String>, Option<String>)> = self.read(
            || format!("listing the sessions named {name:?} with a password"),
            |c| {
                let sql = format!(
                    "SELECT {SUMMARY_COLUMNS}, password_hash, name_key FROM sessions
                     WHERE name = ?1 AND password_hash IS NOT NULL
                     ORDER BY started_ms DESC, id DESC LIMIT {MAX_CHECKED}"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map([name], |row| Ok((summary_from(row)?, row.get(10)?, row.get(11)?)))?;
                rows.collect()
            },
        )?;
        let proved = |(summary, hash, stored): (Summary, Option<String>, Option<String>)| {
            let ok = match (stored, hash) {
                (Some(stored), _) => crate::gate::secret::same(stored.as_bytes(), key.as_bytes()),
                (None, Some(hash)) => password::verify(&hash, &md5),
                (None, None) => false,
            };
            ok.then_some(summary)
        };
        Ok(candidates.into_iter().filter_map(proved).collect())
    }

    /// Whether `password` proves archive `id` (false for an unknown id or one without a
    /// password, after the same work).
    pub fn verify(&self, id: &str, password: &str) -> Result<bool, ArchiveError> {
        let hash: Option<String> = self.read(
            || format!("reading the password of session {id}"),
            |c| {
                let hash = c
                    .prepare_cached("SELECT password_hash FROM sessions WHERE id = ?1")?
                    .query_row([id], |row| row.get::<_, Option<String>>(0))
                    .optional()?;
                Ok(hash.flatten())
            },
        )?;
        let md5 = troop_server::md5_hex(password);
        Ok(match hash {
            Some(hash) => password::verify(&hash, &md5),
            None => {
                password::dummy(&md5);
                false
            }
        })
    }

    /// One session's summary.
    pub fn summary(&self, id: &str) -> Result<Option<Summary>, ArchiveError> {
        self.read(
            || format!("reading session {id}"),
            |c| {
                let sql = format!("SELECT {SUMMARY_COLUMNS} FROM sessions WHERE id = ?1");
                c.prepare_cached(&sql)?.query_row([id], summary_from).optional()
            },
        )
    }

    /// The final (or latest) document.
    pub fn code(&self, id: &str) -> Result<Option<String>, ArchiveError> {
        self.read(
            || format!("reading the code of session {id}"),
            |c| {
                c.prepare_cached("SELECT document FROM sessions WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))
                    .optional()
            },
        )
    }

    /// The timeline lines in seq order (each a JSON object text), handed to `out` one per call,
    /// from one consistent snapshot. False when the session is unknown.
    pub fn timeline(&self, id: &str, out: &mut dyn FnMut(&str)) -> Result<bool, ArchiveError> {
        self.read(
            || format!("reading the timeline of session {id}"),
            |c| {
                let tx = c.transaction()?; // one snapshot for the check and the lines
                let found = tx
                    .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")?
                    .query_row([id], |_| Ok(()))
                    .optional()?;
                if found.is_none() {
                    return Ok(false);
                }
                {
                    let mut stmt = tx.prepare_cached("SELECT line FROM lines WHERE session_id = ?1 ORDER BY seq")?;
                    let mut rows = stmt.query([id])?;
                    while let Some(row) = rows.next()? {
                        let line = row.get_ref(0)?.as_str().map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
                        })?;
                        out(line);
                    }
                }
                tx.commit()?;
                Ok(true)
            },
        )
    }

    /// Deletes a session and its timeline; whether it existed. A live session's later lines are
    /// then ignored.
    pub fn delete(&self, id: &str) -> Result<bool, ArchiveError> {
        self.read(
            || format!("deleting session {id}"),
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existed = delete_session(&tx, id)?;
                tx.commit()?;
                Ok(existed)
            },
        )
    }

    /// Deletes every session named `name`; how many.
    pub fn delete_name(&self, name: &str) -> Result<usize, ArchiveError> {
        self.read(
            || format!("deleting the sessions named {name:?}"),
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached("DELETE FROM lines WHERE session_id IN (SELECT id FROM sessions WHERE name = ?1)")?
                    .execute([name])?;
                let removed = tx.prepare_cached("DELETE FROM sessions WHERE name = ?1")?.execute([name])?;
                tx.commit()?;
                Ok(removed)
            },
        )
    }

    /// Sessions not ended (a hub died) are marked ended at `now_ms` with `reason`, except the
    /// ids in `except` (still live, adopted). How many were closed.
    pub fn close_unfinished(&self, except: &[String], now_ms: u64, reason: &str) -> Result<usize, ArchiveError> {
        self.read(
            || "closing unfinished sessions".to_owned(),
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let open: Vec<String> = {
                    let mut stmt = tx.prepare_cached("SELECT id FROM sessions WHERE ended_ms IS NULL")?;
                    let rows = stmt.query_map([], |row| row.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut closed = 0;
                {
                    let mut update = tx.prepare_cached(
                        "UPDATE sessions SET ended_ms = ?2, end_reason = ?3 WHERE id = ?1 AND ended_ms IS NULL",
                    )?;
                    for id in open.iter().filter(|id| !except.contains(id)) {
                        closed += update.execute(params![id, sql_int(now_ms), reason])?;
                    }
                }
                tx.commit()?;
                Ok(closed)
            },
        )
    }

    /// Removes ended sessions that ended more than `keep` before `now_ms`, then the oldest-ended
    /// ones while the total (timeline and document bytes of all sessions) exceeds
    /// `max_total_bytes`. Live sessions are never removed.
    pub fn prune(&self, now_ms: u64) -> Result<PruneReport, ArchiveError> {
        let keep_ms = u64::try_from(self.inner.keep.as_millis()).unwrap_or(u64::MAX);
        let cutoff = sql_int(now_ms.saturating_sub(keep_ms));
        let max_total = self.inner.max_total_bytes;
        let report = self.read(
            || "pruning".to_owned(),
            |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut report = PruneReport::default();
                let ended: Vec<(String, i64, i64)> = {
                    let sql = format!(
                        "SELECT id, ended_ms, {SIZE} FROM sessions WHERE ended_ms IS NOT NULL
                         ORDER BY ended_ms, started_ms, id"
                    );
                    let mut stmt = tx.prepare_cached(&sql)?;
                    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut total: u64 = {
                    let sql = format!("SELECT COALESCE(SUM({SIZE}), 0) FROM sessions");
                    from_sql_int(tx.query_row(&sql, [], |row| row.get(0))?)
                };
                for (id, ended_ms, size) in ended {
                    if ended_ms >= cutoff && total <= max_total {
                        break; // sorted by end: the rest are newer and within the total
                    }
                    let size = from_sql_int(size);
                    if delete_session(&tx, &id)? {
                        report.removed += 1;
                        report.bytes_freed += size;
                        total = total.saturating_sub(size);
                    }
                }
                tx.commit()?;
                if report.removed > 0 {
                    c.execute_batch("PRAGMA incremental_vacuum")?;
                }
                Ok(report)
            },
        )?;
        if report.removed > 0 {
            tracing::info!(removed = report.removed, bytes_freed = report.bytes_freed, "archive: pruned");
        }
        Ok(report)
    }
}
