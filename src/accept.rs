//! Pausing after a failed accept, for both front doors (TCP and HTTP): the error is logged and
//! the accept loop waits 10 ms, doubling up to 1 s while accepts keep failing (out of file
//! descriptors, most often), instead of spinning; a successful accept starts over at 10 ms.

use std::time::Duration;

/// The first pause after a failed accept.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two failed accepts.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// The pause before the next accept, growing while accepts fail.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: FIRST_PAUSE }
    }
}

impl AcceptBackoff {
    /// An accept succeeded: the next failure pauses [`FIRST_PAUSE`] again.
    pub fn reset(&mut self) {
        self.next = FIRST_PAUSE;
    }

    /// An accept failed: logs it (`front_door` names which) and returns how long to pause.
    pub fn failed(&mut self, front_door: &'static str, error: &std::io::Error) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        tracing::warn!(front_door, error = %error, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second_and_start_over_after_a_success() {
        let e = std::io::Error::other("too many open files");
        let mut b = AcceptBackoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.failed("test", &e).as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed("test", &e), FIRST_PAUSE);
    }
}
