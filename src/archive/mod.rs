//! The archive store: every Troop session's code and timeline kept in an embedded SQLite
//! database (WAL) so a performance outlives its session.
//!
//! Recording calls ([`Archive::begin`], [`Archive::record`], [`Archive::document`],
//! [`Archive::finish`]) never block: they go in order through a channel to one writer thread
//! ([`writer`]) that commits them in batches, and retries a batch that fails for a reason that
//! may pass (a full disk, a locked file) until it commits. The queue holds at most
//! [`MAX_QUEUED_LINES`] timeline lines ([`MAX_QUEUED_BYTES`] bytes); past that a line is dropped
//! and its session marked truncated. Session passwords are hashed (argon2id, [`password`]) on a
//! thread of their own ([`hasher`]), never on the writer. Deletes, closing and pruning run on
//! the writer too ([`upkeep`]); reading calls are blocking (the hub runs them in
//! `spawn_blocking`) and use their own connections beside the writer ([`read`]). Write failures
//! are counted and logged once per episode ([`health`]); the schema and its migrations live in
//! [`schema`].

mod hasher;
mod health;
mod password;
mod read;
mod schema;
mod upkeep;
mod writer;

pub use password::release_idle_work_areas;
pub use read::Page;
pub use upkeep::{PRUNE_CHUNK, RECENT};

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, Row};
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
    #[error(
        "archive: {0}: the archive's writer did not answer in time (it may be unable to write; see the hub's log)"
    )]
    Unanswered(String),
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
    /// Statistics per performer, from the timeline, once the session has ended.
    #[schema(value_type = std::collections::BTreeMap<String, crate::audience::PerformerStats>)]
    pub stats: crate::audience::StatsByName,
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
    /// The counts so far (left in place until the writer has committed them).
    fn counts(&self) -> Overflow {
        Overflow {
            warned: self.warned,
            dropped: self.dropped,
            operations: self.operations,
            evaluations: self.evaluations,
            performers: self.performers.clone(),
        }
    }

    /// Takes away what the writer committed (lines dropped meanwhile stay).
    fn subtract(&mut self, done: &Overflow) {
        self.dropped = self.dropped.saturating_sub(done.dropped);
        self.operations = self.operations.saturating_sub(done.operations);
        self.evaluations = self.evaluations.saturating_sub(done.evaluations);
        self.performers.retain(|p| !done.performers.contains(p));
    }
}

/// State the callers and the writer share.
#[derive(Default)]
struct Shared {
    queued_lines: AtomicUsize,
    queued_bytes: AtomicUsize,
    dropped_lines: AtomicU64,
    overflow: Mutex<HashMap<String, Overflow>>,
    /// The newest document per session not yet written, with the event it is as of (only
    /// the newest is worth writing; it leaves once committed).
    documents: Mutex<HashMap<String, Arc<(String, u64)>>>,
    health: health::Health,
    /// Held by a test to pause the writer between batches.
    #[cfg(test)]
    gate: Mutex<()>,
    /// Errors a test makes the writer's next transactions fail with (SQLite result codes).
    #[cfg(test)]
    fail_next: Mutex<std::collections::VecDeque<std::os::raw::c_int>>,
    /// A test's limit on the writer's database size in pages (a real SQLITE_FULL past it).
    #[cfg(test)]
    page_limit: Mutex<Option<i64>>,
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
    /// Dropped first (field order): the hasher finishes its work and lets go of its sender.
    hasher: hasher::Hasher,
    /// Dropped before `_writer` (field order): the writer then drains, commits and stops.
    tx: Sender<Op>,
    _writer: WriterThread,
    shared: Arc<Shared>,
    path: PathBuf,
    keep: Duration,
    max_total_bytes: u64,
    max_session_bytes: u64,
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
    "id, name, started_ms, ended_ms, end_reason, performers, operations, evaluations, bytes, truncated, stats";

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
        stats: row.get::<_, Option<String>>(10)?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
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
        let writer = WriterThread(Some(thread));
        let hasher = hasher::Hasher::start(tx.clone()).map_err(ArchiveError::Writer)?;
        let path = std::path::absolute(&path).unwrap_or(path);
        tracing::info!(path = %path.display(), "archive: open");
        Ok(Archive {
            inner: Arc::new(Inner {
                hasher,
                tx,
                _writer: writer,
                max_session_bytes: settings.max_session_bytes,
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

    /// Timeline lines waiting for the writer now.
    pub fn queue_depth(&self) -> usize {
        self.inner.shared.queued_lines.load(Ordering::Relaxed)
    }

    /// Writes that failed so far (each failed attempt counts).
    pub fn write_errors(&self) -> u64 {
        self.inner.shared.health.write_errors()
    }

    /// Why the archive cannot write now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.inner.shared.health.problem()
    }

    fn send(&self, op: Op) {
        if self.inner.tx.send(op).is_err() {
            tracing::error!("archive: the writer thread is gone; a recording call is lost");
        }
    }

    // ---- recording (non-blocking; all go through the writer in order) ----

    /// A session begins (or a restarted hub continues it: then the existing row is kept as is,
    /// a password hash it lacked added). `password_md5` is hashed (argon2id, random salt) on
    /// the hasher's thread and never stored itself; the row is written with its hash, the
    /// session's later calls waiting for it. `None` means only an admin can read the archive.
    pub fn begin(&self, id: &str, name: &str, started_ms: u64, password_md5: Option<String>) {
        self.inner.hasher.begin(id, name, started_ms, password_md5);
    }

    /// One of session `id`'s calls, in order behind its `Begin` (see [`hasher`]).
    fn send_for(&self, id: &str, op: Op) {
        if self.inner.hasher.send(id, op).is_err() {
            tracing::error!(session = %id, "archive: the writer thread is gone; a recording call is lost");
        }
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
        if self.inner.hasher.send(id, op).is_err() {
            shared.dequeued(len);
            tracing::error!("archive: the writer thread is gone; a timeline line is lost");
        }
    }

    /// The document as the hub knows it after event `seq` (replaces the kept one; only the
    /// newest one still waiting is written). One over `max_session_bytes` is not kept.
    pub fn document(&self, id: &str, document: String, seq: u64) {
        if document.len() as u64 > self.inner.max_session_bytes {
            return;
        }
        let waiting = lock(&self.inner.shared.documents).insert(id.to_owned(), Arc::new((document, seq))).is_some();
        if !waiting {
            self.send_for(id, Op::Document { id: id.to_owned() });
        }
    }

    /// The session ended: its final document (`None`: the hub never had it, keep the last
    /// one written) and why ("its owner left", ...).
    pub fn finish(&self, id: &str, ended_ms: u64, reason: &str, document: Option<String>) {
        let document = document.filter(|d| d.len() as u64 <= self.inner.max_session_bytes);
        self.send_for(id, Op::Finish { id: id.to_owned(), ended_ms, reason: reason.to_owned(), document });
    }

    /// Waits until everything sent so far is committed, password hashes included (tests,
    /// shutdown).
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if let Err(done) = self.inner.hasher.flush(done) {
            if self.inner.tx.send(Op::Flush(done)).is_err() {
                return;
            }
        }
        let _ = committed.await;
    }
}
