//! [`Health`]: whether the archive can write now, as the writer finds out. A failure starts an
//! episode: one error line in the log (not one per edit), then silence until a commit goes
//! through again, which ends it with one line. Counted for the metrics and read by `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Health {
    failing: AtomicBool,
    write_errors: AtomicU64,
    /// What the current episode's first error said.
    problem: Mutex<Option<String>>,
}

impl Health {
    /// A write failed (`what` it was doing). Logged once per episode.
    pub(super) fn failed(&self, what: &str, error: &rusqlite::Error, retried: bool) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::AcqRel) {
            let then = match retried {
                true => "sessions keep playing; recording waits in memory and is retried until it works",
                false => "sessions keep playing; what could not be written marks its session truncated",
            };
            tracing::error!(error = %error, "archive: cannot write ({what}); {then}");
            *super::lock(&self.problem) = Some(format!("the archive cannot write: {error}"));
        }
    }

    /// A commit went through with nothing lost: ends an episode.
    pub(super) fn wrote(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            *super::lock(&self.problem) = None;
            tracing::info!(errors = self.write_errors.load(Ordering::Relaxed), "archive: writing again");
        }
    }

    /// The current episode's sentence, if the archive cannot write now.
    pub(super) fn problem(&self) -> Option<String> {
        super::lock(&self.problem).clone()
    }

    pub(super) fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
}
