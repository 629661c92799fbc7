//! [`Hasher`]: the archive's password hashing, on a thread of its own, and the order it keeps.
//! A session's password md5 becomes its argon2id hash and name key here (~25 ms and 19 MiB
//! each), one at a time in the order sessions began; the session's `Begin` then goes to the
//! writer carrying them. Until it has, the session's other calls (its first lines, its
//! document, its end) wait here in order, so the writer never holds a session's lines without
//! its password hash: a hub killed at any moment leaves no session that only the admin can
//! read. The writer never hashes, so a burst of starts never holds up anyone's recording.

use std::collections::HashMap;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::writer::Op;
use super::{lock, password};

enum Job {
    Begin {
        id: String,
        name: String,
        started_ms: u64,
        md5: String,
    },
    /// Passed on to the writer once the begins asked before it are sent.
    Flush(oneshot::Sender<()>),
}

/// Sessions whose `Begin` waits for its hash, with their calls meanwhile, in order.
type Waiting = Arc<Mutex<HashMap<String, Vec<Op>>>>;

pub(super) struct Hasher {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    writer: Sender<Op>,
    waiting: Waiting,
}

/// Sends session `id`'s `Begin`, then the calls that waited for it, holding `waiting`'s lock so
/// no later call overtakes them.
fn release(writer: &Sender<Op>, waiting: &Waiting, begin: Op, id: &str) {
    let mut w = lock(waiting);
    let _ = writer.send(begin);
    for op in w.remove(id).unwrap_or_default() {
        let _ = writer.send(op);
    }
}

impl Hasher {
    /// Starts the thread; it sends to the writer through `writer`.
    pub(super) fn start(writer: Sender<Op>) -> std::io::Result<Hasher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let waiting: Waiting = Arc::default();
        let (to_writer, held) = (writer.clone(), waiting.clone());
        let thread = std::thread::Builder::new().name("archive-hasher".into()).spawn(move || {
            for job in rx {
                match job {
                    Job::Begin { id, name, started_ms, md5 } => {
                        let md5 = md5.to_ascii_lowercase();
                        let key = password::name_key(&name, &md5);
                        let hash = password::hash(&md5)
                            .map_err(|e| {
                                tracing::error!(session = %id, error = %e, "archive: cannot hash the session password; only an admin can read this archive");
                            })
                            .ok();
                        let key = hash.as_ref().and(key);
                        let begin = Op::Begin { id: id.clone(), name, started_ms, hash, key };
                        release(&to_writer, &held, begin, &id);
                    }
                    Job::Flush(done) => {
                        let _ = to_writer.send(Op::Flush(done));
                    }
                }
            }
        })?;
        Ok(Hasher { tx: Some(tx), thread: Some(thread), writer, waiting })
    }

    /// Session `id` begins; with a password md5, its `Begin` goes to the writer once hashed
    /// (its other calls wait for it meanwhile).
    pub(super) fn begin(&self, id: &str, name: &str, started_ms: u64, md5: Option<String>) {
        let plain = |hash| Op::Begin { id: id.to_owned(), name: name.to_owned(), started_ms, hash, key: None };
        let Some(md5) = md5 else {
            let _ = self.send(id, plain(None));
            return;
        };
        lock(&self.waiting).entry(id.to_owned()).or_default();
        let job = Job::Begin { id: id.to_owned(), name: name.to_owned(), started_ms, md5 };
        if self.tx.as_ref().is_none_or(|tx| tx.send(job).is_err()) {
            tracing::error!(session = %id, "archive: the hasher thread is gone; this session's archive has no password");
            release(&self.writer, &self.waiting, plain(None), id);
        }
    }

    /// One of session `id`'s calls: to the writer, or held behind its `Begin`. `Err` gives the
    /// call back when the writer is gone.
    pub(super) fn send(&self, id: &str, op: Op) -> Result<(), Op> {
        let mut w = lock(&self.waiting);
        if let Some(held) = w.get_mut(id) {
            held.push(op);
            return Ok(());
        }
        self.writer.send(op).map_err(|e| e.0)
    }

    /// Sends `done` to the writer after every begin asked so far; `Err(done)` if the hasher
    /// is gone.
    pub(super) fn flush(&self, done: oneshot::Sender<()>) -> Result<(), oneshot::Sender<()>> {
        let Some(tx) = &self.tx else { return Err(done) };
        match tx.send(Job::Flush(done)) {
            Err(mpsc::SendError(Job::Flush(done))) => Err(done),
            _ => Ok(()),
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what was asked and end.
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("archive: the hasher thread panicked");
            }
        }
    }
}
