//! [`Hasher`]: the archive's password hashing, on a thread of its own. A session's password
//! md5 becomes its argon2id hash and name key here (~25 ms and 19 MiB each), one at a time in
//! the order sessions began, and the result goes to the writer as one more recording call. The
//! writer never hashes, so a burst of starts never holds up anyone's recording.

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::password;
use super::writer::Op;

enum Job {
    Hash {
        id: String,
        name: String,
        md5: String,
    },
    /// Passed on to the writer once the hashes asked before it are sent.
    Flush(oneshot::Sender<()>),
}

pub(super) struct Hasher {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Hasher {
    /// Starts the thread; it sends its results to the writer through `writer`.
    pub(super) fn start(writer: Sender<Op>) -> std::io::Result<Hasher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("archive-hasher".into()).spawn(move || {
            for job in rx {
                let op = match job {
                    Job::Hash { id, name, md5 } => {
                        let md5 = md5.to_ascii_lowercase();
                        let key = password::name_key(&name, &md5);
                        match password::hash(&md5) {
                            Ok(hash) => Op::Password { id, hash, key },
                            Err(e) => {
                                tracing::error!(session = %id, error = %e, "archive: cannot hash the session password; only an admin can read this archive");
                                continue;
                            }
                        }
                    }
                    Job::Flush(done) => Op::Flush(done),
                };
                if writer.send(op).is_err() {
                    break;
                }
            }
        })?;
        Ok(Hasher { tx: Some(tx), thread: Some(thread) })
    }

    /// Hashes session `id`'s password md5 and hands the result to the writer.
    pub(super) fn hash(&self, id: &str, name: &str, md5: String) {
        let job = Job::Hash { id: id.to_owned(), name: name.to_owned(), md5 };
        if self.tx.as_ref().is_none_or(|tx| tx.send(job).is_err()) {
            tracing::error!(session = %id, "archive: the hasher thread is gone; this session's archive has no password");
        }
    }

    /// Sends `done` to the writer after every hash asked so far; `Err(done)` if the hasher
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
