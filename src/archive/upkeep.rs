//! Upkeep of the archive, all on its one writer thread (as jobs between recording batches, so
//! the hub's file never has a second writer and recording never races a delete): deleting
//! sessions, closing those a stopped hub left open (their code rebuilt from the timeline), and
//! pruning in bounded chunks. Callers block until the writer answers (they run on the
//! blocking pool), at most [`JOB_TIMEOUT`].

use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};

use super::writer::Op;
use super::{delete_session, from_sql_int, sql_int, Archive, ArchiveError, PruneReport, SIZE};
use troop_server::ot::Operation;

/// How long a caller waits for the writer to run its job (it may be retrying a failing disk).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions one prune transaction removes at most (then recording gets a turn).
pub const PRUNE_CHUNK: usize = 20;
/// Pages freed after each prune chunk at most (8 MiB of 4 KiB pages).
const VACUUM_PAGES: u32 = 2048;
/// A session that ended less than this ago is never pruned to make room (only by age).
pub const RECENT: Duration = Duration::from_secs(3600);
/// Operations replayed at most to rebuild a session's code when closing it.
const MAX_REBUILD_OPS: usize = 100_000;

impl Archive {
    /// Runs `f` on the writer's connection between batches and waits for its answer.
    fn on_writer<T: Send + 'static>(
        &self,
        context: impl FnOnce() -> String,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ArchiveError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Op::Job(Box::new(move |c| {
            let _ = tx.send(f(c));
        })));
        match rx.recv_timeout(JOB_TIMEOUT) {
            Ok(result) => result.map_err(|source| ArchiveError::Sqlite { context: context(), source }),
            Err(_) => Err(ArchiveError::Unanswered(context())),
        }
    }

    /// Deletes a session and its timeline; whether it existed. A live session's later lines are
    /// then ignored.
    pub fn delete(&self, id: &str) -> Result<bool, ArchiveError> {
        let id = id.to_owned();
        let context = format!("deleting session {id}");
        self.on_writer(
            || context,
            move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existed = delete_session(&tx, &id)?;
                tx.commit()?;
                Ok(existed)
            },
        )
    }

    /// Deletes every session named `name`; how many.
    pub fn delete_name(&self, name: &str) -> Result<usize, ArchiveError> {
        let name = name.to_owned();
        let context = format!("deleting the sessions named {name:?}");
        self.on_writer(
            || context,
            move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached("DELETE FROM lines WHERE session_id IN (SELECT id FROM sessions WHERE name = ?1)")?
                    .execute([&name])?;
                let removed = tx.prepare_cached("DELETE FROM sessions WHERE name = ?1")?.execute([&name])?;
                tx.commit()?;
                Ok(removed)
            },
        )
    }

    /// Sessions not ended (a hub died) are marked ended at `now_ms` with `reason`, except the
    /// ids in `except` (still live, adopted); each one's code is brought up to its last stored
    /// edit (the stored document plus the timeline after it). How many were closed.
    pub fn close_unfinished(&self, except: &[String], now_ms: u64, reason: &str) -> Result<usize, ArchiveError> {
        let (except, reason) = (except.to_vec(), reason.to_owned());
        self.on_writer(
            || "closing unfinished sessions".to_owned(),
            move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let open: Vec<(String, String, Option<i64>)> = {
                    let mut stmt =
                        tx.prepare_cached("SELECT id, document, document_seq FROM sessions WHERE ended_ms IS NULL")?;
                    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut closed = 0;
                for (id, document, document_seq) in open.into_iter().filter(|(id, ..)| !except.contains(id)) {
                    let code = rebuild(&tx, &id, document, document_seq)?;
                    let stats = super::writer::stats_of(&tx, &id);
                    closed += tx
                        .prepare_cached(
                            "UPDATE sessions SET ended_ms = ?2, end_reason = ?3, document = COALESCE(?4, document),
                             stats = ?5 WHERE id = ?1 AND ended_ms IS NULL",
                        )?
                        .execute(params![id, sql_int(now_ms), reason, code, stats])?;
                }
                tx.commit()?;
                Ok(closed)
            },
        )
    }

    /// Removes ended sessions that ended more than `keep` before `now_ms`, then the
    /// oldest-ended ones while the total (timeline and document bytes of all sessions) exceeds
    /// `max_total_bytes`, except those that ended within [`RECENT`]. Live sessions are never
    /// removed. Runs in chunks of [`PRUNE_CHUNK`] sessions, each its own transaction followed by
    /// a bounded `incremental_vacuum`, so recording waits for one chunk at most.
    pub fn prune(&self, now_ms: u64) -> Result<PruneReport, ArchiveError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let cutoff = sql_int(now_ms.saturating_sub(ms(self.inner.keep)));
        let recent = sql_int(now_ms.saturating_sub(ms(RECENT)));
        let max_total = self.inner.max_total_bytes;
        let mut report = PruneReport::default();
        loop {
            let chunk = self.on_writer(|| "pruning".to_owned(), move |c| prune_chunk(c, cutoff, recent, max_total))?;
            report.removed += chunk.removed;
            report.bytes_freed += chunk.bytes_freed;
            if chunk.removed < PRUNE_CHUNK {
                break;
            }
        }
        if report.removed > 0 {
            tracing::info!(removed = report.removed, bytes_freed = report.bytes_freed, "archive: pruned");
        }
        Ok(report)
    }
}

/// One chunk of pruning: at most [`PRUNE_CHUNK`] sessions, oldest-ended first.
fn prune_chunk(c: &mut Connection, cutoff: i64, recent: i64, max_total: u64) -> rusqlite::Result<PruneReport> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = PruneReport::default();
    let ended: Vec<(String, i64, i64)> = {
        let sql = format!(
            "SELECT id, ended_ms, {SIZE} FROM sessions WHERE ended_ms IS NOT NULL
             ORDER BY ended_ms, started_ms, id LIMIT {PRUNE_CHUNK}"
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
        let too_old = ended_ms < cutoff;
        let makes_room = total > max_total && ended_ms < recent;
        if !too_old && !makes_room {
            break; // sorted by end: the rest are newer
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
        c.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
    }
    Ok(report)
}

/// Session `id`'s code as of its last stored line: `document` (stored as of event
/// `document_seq`) with the operations after it applied, or from the last snapshot after it.
/// `None` when it cannot be rebuilt (no known starting point, an operation that does not
/// apply, or too many): the stored document stays.
fn rebuild(c: &Connection, id: &str, document: String, document_seq: Option<i64>) -> rusqlite::Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Snapshot {
        document: String,
    }
    #[derive(serde::Deserialize)]
    struct Edit {
        ops: Operation,
    }
    let mut stmt = c.prepare_cached("SELECT kind, line FROM lines WHERE session_id = ?1 AND seq > ?2 ORDER BY seq")?;
    let mut rows = stmt.query(params![id, document_seq.unwrap_or(-1)])?;
    let mut code = document_seq.map(|_| document);
    let mut applied = 0;
    while let Some(row) = rows.next()? {
        let kind: String = row.get(0)?;
        let line = row.get_ref(1)?.as_str().unwrap_or("");
        match kind.as_str() {
            "snapshot" => code = serde_json::from_str::<Snapshot>(line).ok().map(|s| s.document),
            "operation" => {
                applied += 1;
                let Some(current) = &code else { continue };
                let next = serde_json::from_str::<Edit>(line).ok().and_then(|e| e.ops.apply(current).ok());
                if next.is_none() || applied > MAX_REBUILD_OPS {
                    return Ok(None);
                }
                code = next;
            }
            _ => {}
        }
    }
    Ok(code)
}
