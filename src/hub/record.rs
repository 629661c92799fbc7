//! Recording each followed session into the archive as it happens: a line per event viewers
//! would get (operations, evaluations, joins, leaves, cursors), a snapshot line whenever the
//! hub (re)subscribes and finds it missed events (a restarted hub continues the same timeline
//! without a gap or a duplicate), the document every few seconds (on the next edit, or on the
//! follower's timer when the session goes quiet, so the stored code is never more than
//! [`DOCUMENT_EVERY`] behind), and the final code and reason when the session ends. The
//! archive's writer thread does the I/O; nothing here waits.

use crate::archive::Archive;
use crate::audience::{LiveDoc, LiveMessage};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The document is written at most this often while a session runs (the final one always),
/// and at least this often while it changes.
pub const DOCUMENT_EVERY: Duration = Duration::from_secs(5);

/// Unix time now, in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One session's recording.
pub(super) struct Recorder {
    archive: Archive,
    id: String,
    document_written: Option<Instant>,
    dirty: bool,
}

impl Recorder {
    /// Starts (or, after a restart, continues) session `id`'s timeline.
    pub fn begin(archive: Archive, id: &str, name: &str, started_ms: u64, password_md5: Option<String>) -> Recorder {
        archive.begin(id, name, started_ms, password_md5);
        Recorder { archive, id: id.to_string(), document_written: None, dirty: false }
    }

    /// The state at a (re)subscription: kept as a snapshot line, which the archive ignores
    /// if it already holds event `seq` (nothing was missed).
    pub fn snapshot(&mut self, seq: u64, snapshot: &LiveMessage, doc: &LiveDoc) {
        self.archive.record(&self.id, seq, unix_ms(), "snapshot", None, snapshot.to_text());
        self.dirty = true;
        self.document(doc, seq);
    }

    /// One event in viewers' form (already serialised as `text`).
    pub fn event(&mut self, message: &LiveMessage, text: &str, doc: &LiveDoc) {
        let (kind, seq, time_ms, performer) = match message {
            LiveMessage::Operation { seq, time_ms, .. } => ("operation", *seq, *time_ms, None),
            LiveMessage::Evaluate { seq, time_ms, .. } => ("evaluate", *seq, *time_ms, None),
            LiveMessage::Join { seq, time_ms, name, .. } => ("join", *seq, *time_ms, Some(name.clone())),
            LiveMessage::Leave { seq, time_ms, .. } => ("leave", *seq, *time_ms, None),
            LiveMessage::Mark { seq, time_ms, .. } => ("mark", *seq, *time_ms, None),
            LiveMessage::Removed { seq, time_ms, name, .. } => ("removed", *seq, *time_ms, Some(name.clone())),
            LiveMessage::Lock { seq, time_ms, .. } => ("lock", *seq, *time_ms, None),
            // Selections come and go with every drag; a replay does without them.
            LiveMessage::Select { .. }
            | LiveMessage::Snapshot(_)
            | LiveMessage::Ended { .. }
            | LiveMessage::Error { .. }
            | LiveMessage::More { .. } => return,
        };
        self.archive.record(&self.id, seq, time_ms, kind, performer, text.to_string());
        if kind == "operation" {
            self.dirty = true;
            self.document(doc, seq);
        }
    }

    /// The follower's timer: a document changed since its last write is written now if that
    /// write is old enough (a session gone quiet right after an edit).
    pub fn tick(&mut self, doc: &LiveDoc, seq: u64) {
        self.document(doc, seq);
    }

    /// Writes the document (as of event `seq`) if it changed and the last write is old enough.
    fn document(&mut self, doc: &LiveDoc, seq: u64) {
        let due = self.document_written.is_none_or(|t| t.elapsed() >= DOCUMENT_EVERY);
        if self.dirty && due {
            self.archive.document(&self.id, doc.text().to_string(), seq);
            self.document_written = Some(Instant::now());
            self.dirty = false;
        }
    }

    /// The session ended: its final code and why.
    pub fn finish(self, reason: &str, doc: Option<&LiveDoc>) {
        let document = doc.map(|d| d.text().to_string());
        self.archive.finish(&self.id, unix_ms(), reason, document);
    }
}

/// How often ended sessions past `keep` or over the total cap are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl super::Hub {
    /// Until shutdown: old archives are pruned now and every hour.
    pub async fn archive_upkeep(self: std::sync::Arc<Self>) {
        let Some(archive) = self.archive.get().cloned() else { return };
        loop {
            let a = archive.clone();
            match tokio::task::spawn_blocking(move || a.prune(unix_ms())).await {
                Ok(Ok(r)) if r.removed > 0 => {
                    tracing::info!(removed = r.removed, bytes = r.bytes_freed, "archive: pruned old sessions")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "archive: prune failed"),
                _ => {}
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }

    /// After a recovery: sessions the archive holds as running that this hub did not adopt
    /// are closed ("the hub stopped while it ran").
    pub(super) async fn close_unfinished(&self) {
        let Some(archive) = self.archive.get() else { return };
        let live: Vec<String> = super::lock(&self.registry).list().map(|s| s.id.clone()).collect();
        let a = archive.clone();
        let closed =
            tokio::task::spawn_blocking(move || a.close_unfinished(&live, unix_ms(), "the hub stopped while it ran"))
                .await;
        match closed {
            Ok(Ok(n)) if n > 0 => tracing::info!(sessions = n, "archive: closed sessions a stopped hub left open"),
            Ok(Err(e)) => tracing::warn!(error = %e, "archive: could not close sessions left open"),
            _ => {}
        }
    }
}
