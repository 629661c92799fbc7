//! Reading the archive (blocking: the hub calls these on the blocking pool): summaries, a
//! name's sessions that a password proves, one session's code and timeline. Each call takes
//! an idle reading connection of its own beside the writer (WAL lets them read while it
//! writes).

use rusqlite::{Connection, OptionalExtension};

use super::{
    from_sql_int, lock, password, schema, summary_from, Archive, ArchiveError, Summary, MAX_CHECKED, MAX_IDLE_READERS,
    SUMMARY_COLUMNS,
};

/// One page of a listing: at most `limit` sessions started before `before_ms` (all when `None`).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: usize,
    pub before_ms: Option<u64>,
}

impl Archive {
    /// Runs `f` on an idle reading connection (opening one if none is idle).
    pub(super) fn read<T>(
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

    /// Summaries, newest first; of sessions named `name`, or all; one page of them.
    pub fn summaries(&self, name: Option<&str>, page: Page) -> Result<Vec<Summary>, ArchiveError> {
        self.read(
            || format!("listing sessions{}", name.map(|n| format!(" named {n:?}")).unwrap_or_default()),
            |c| {
                let sql = format!(
                    "SELECT {SUMMARY_COLUMNS} FROM sessions WHERE (?1 IS NULL OR name = ?1)
                     AND (?2 IS NULL OR started_ms < ?2)
                     ORDER BY started_ms DESC, id DESC LIMIT ?3"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let before = page.before_ms.map(super::sql_int);
                let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
                let rows = stmt.query_map(rusqlite::params![name, before, limit], summary_from)?;
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
                let rows = stmt.query_map([name], |row| Ok((summary_from(row)?, row.get(11)?, row.get(12)?)))?;
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

    /// Up to `limit` timeline lines of `id` after event `after` (from the start when `None`),
    /// in seq order, each with its seq. `None` when the session is unknown. Paging lets a
    /// download go out as the client takes it, holding no connection or thread meanwhile.
    pub fn timeline_page(
        &self,
        id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<(u64, String)>>, ArchiveError> {
        self.read(
            || format!("reading the timeline of session {id}"),
            |c| {
                let tx = c.transaction()?;
                let found = tx
                    .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1")?
                    .query_row([id], |_| Ok(()))
                    .optional()?;
                if found.is_none() {
                    return Ok(None);
                }
                let after = after.map(super::sql_int).unwrap_or(-1);
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let page = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT seq, line FROM lines WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    )?;
                    let rows = stmt.query_map(rusqlite::params![id, after, limit], |row| {
                        Ok((from_sql_int(row.get(0)?), row.get::<_, String>(1)?))
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                };
                tx.commit()?;
                Ok(Some(page))
            },
        )
    }
}
