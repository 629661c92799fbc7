//! The hub's freed memory. glibc keeps what a program frees in its arenas for the next
//! allocation (an arena per thread that allocated at the same time, up to eight per core) and
//! gives back to the system only the free space at the top of one, and only past a threshold
//! that it raises to the size of the largest mapped block a program ever freed. A hub that
//! decodes a large answer from the engine (every task of 1,000 Swarm sessions, twice a second)
//! so keeps that peak in each thread's arena, as RSS, though nothing uses it. So:
//! - at start ([`settle`]) the hub fixes malloc's thresholds at glibc's defaults: a block of
//!   128 KiB or more is mapped on its own and unmapped when freed;
//! - every [`TRIM_EVERY`] ([`trim_every`]) it frees the archive's argon2 work areas if no hash
//!   ran meanwhile (19 MiB each) and hands every arena's free pages back (`malloc_trim`).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the hub gives its freed memory back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Blocks of this size or larger are mapped on their own and unmapped when freed; freed space
/// past this at the top of an arena goes back at once (glibc's defaults, fixed).
pub const THRESHOLD: usize = 128 * 1024;

/// Fixes malloc's mapping and trimming thresholds at [`THRESHOLD`] (glibc raises both as large
/// blocks are freed, and then keeps whole freed answers). An operator's `GLIBC_TUNABLES` for
/// either wins. Returns whether they were set.
pub fn settle() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains("glibc.malloc.mmap_threshold") || tunables.contains("glibc.malloc.trim_threshold") {
        return false;
    }
    fix_thresholds(THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_thresholds(bytes: usize) -> bool {
    let n = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets allocator parameters; it takes no pointers.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, n) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_thresholds(_bytes: usize) -> bool {
    false
}

/// Gives the free pages of every malloc arena back to the system. Returns whether any were
/// (always `false` where the allocator is not glibc's).
pub fn trim() -> bool {
    release()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() -> bool {
    // SAFETY: malloc_trim takes no pointers; it locks each arena while it works.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() -> bool {
    false
}

/// Every `period` until `shutdown`: frees the archive's work areas unused for `period`, then
/// trims.
pub async fn trim_every(period: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: nothing has been freed yet
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                crate::archive::release_idle_work_areas(period);
                trim();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trimming_stops_when_the_hub_shuts_down() {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(trim_every(Duration::from_millis(5), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await; // a few trims
        assert!(!task.is_finished(), "it trims until told to stop");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stopped at shutdown").expect("no panic");
    }
}
