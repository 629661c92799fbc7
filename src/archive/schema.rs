//! The archive's SQLite file: opening connections (WAL, synchronous=NORMAL, busy timeout) and
//! the schema, versioned with `PRAGMA user_version`, one migration function per version.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::ArchiveError;

/// How long a connection waits for another one's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Migrations in order: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[fn(&Transaction<'_>) -> rusqlite::Result<()>] = &[v1, v2, v3, v4];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Version 1: sessions and their timeline lines.
fn v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE sessions (
             id            TEXT PRIMARY KEY NOT NULL,
             name          TEXT NOT NULL,
             started_ms    INTEGER NOT NULL,
             ended_ms      INTEGER,
             end_reason    TEXT,
             password_hash TEXT,
             document      TEXT NOT NULL DEFAULT '',
             bytes         INTEGER NOT NULL DEFAULT 0,
             last_seq      INTEGER,
             operations    INTEGER NOT NULL DEFAULT 0,
             evaluations   INTEGER NOT NULL DEFAULT 0,
             performers    TEXT NOT NULL DEFAULT '[]',
             truncated     INTEGER NOT NULL DEFAULT 0,
             capped        INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX sessions_name ON sessions (name, started_ms);
         CREATE INDEX sessions_ended ON sessions (ended_ms);
         CREATE INDEX sessions_started ON sessions (started_ms);
         CREATE TABLE lines (
             session_id TEXT NOT NULL,
             seq        INTEGER NOT NULL,
             time_ms    INTEGER NOT NULL,
             kind       TEXT NOT NULL,
             line       TEXT NOT NULL,
             PRIMARY KEY (session_id, seq)
         ) WITHOUT ROWID;",
    )
}

/// Version 2: `name_key`, one argon2id of the password md5 with a salt made from the session's
/// name, so listing a name's sessions costs one hash whatever the number of sessions.
fn v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE sessions ADD COLUMN name_key TEXT;")
}

/// Version 3: `document_seq`, the event the stored document is as of, so closing a session
/// a stopped hub left open can bring its code up to the last stored edit.
fn v3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE sessions ADD COLUMN document_seq INTEGER;")
}

/// Version 4: `stats`, the statistics per performer (JSON) computed from the timeline when
/// the session ends.
fn v4(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE sessions ADD COLUMN stats TEXT;")
}

fn sqlite<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Setup { path: path.to_path_buf(), what, source }
}

/// Settings every connection needs (synchronous and the busy timeout are per connection).
fn configure(conn: &Connection, path: &Path) -> Result<(), ArchiveError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite(path, "setting the busy timeout"))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(sqlite(path, "setting synchronous=NORMAL"))?;
    Ok(())
}

/// Opens (creating it) the database file for the writer, switches it to WAL and migrates it.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, ArchiveError> {
    let conn = Connection::open(path).map_err(|source| ArchiveError::Open { path: path.to_path_buf(), source })?;
    configure(&conn, path)?;
    let version = user_version(&conn).map_err(sqlite(path, "reading the schema version"))?;
    if version == 0 {
        // Only takes effect before the first table exists: a new file frees pruned pages.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL").map_err(sqlite(path, "setting auto_vacuum"))?;
    }
    let mode: String =
        conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(sqlite(path, "switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "archive: WAL is not available on this file system; readers may wait for the writer");
    }
    migrate(conn, path)
}

/// Opens another connection to an existing archive (reads, deletes, pruning).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, ArchiveError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|source| ArchiveError::Open { path: path.to_path_buf(), source })?;
    configure(&conn, path)?;
    Ok(conn)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the schema to [`LATEST`], one version per transaction; refuses a newer one.
fn migrate(mut conn: Connection, path: &Path) -> Result<Connection, ArchiveError> {
    loop {
        let version = user_version(&conn).map_err(sqlite(path, "reading the schema version"))?;
        if !(0..=LATEST).contains(&version) {
            return Err(ArchiveError::NewerSchema { path: path.to_path_buf(), version });
        }
        let Some(step) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
            return Ok(conn);
        };
        let next = version + 1;
        let failed = |source| ArchiveError::Migrate { path: path.to_path_buf(), version: next, source };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
        // Another process may have migrated between the read above and this lock.
        if user_version(&tx).map_err(failed)? != version {
            continue;
        }
        step(&tx).map_err(failed)?;
        tx.execute_batch(&format!("PRAGMA user_version = {next}")).map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(path = %path.display(), version = next, "archive: schema migrated");
    }
}
