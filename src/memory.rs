//! The hub's freed memory. glibc keeps what a program frees in its arenas for the next
//! allocation (an arena per thread that allocated at the same time, up to eight per core). It
//! gives back to the system only free space at the top of an arena, and only past a trim
//! threshold that it raises (to twice the block, up to 64 MiB) whenever a large mapped block is
//! freed. A hub that decodes a large answer from the engine (every task of 1,000 Swarm
//! sessions, twice a second) on either runtime thread so keeps that peak in each thread's
//! arena, as RSS, though nothing uses it. So:
//! - at start ([`fix_malloc_thresholds`]) the hub fixes malloc's thresholds at glibc's defaults:
//!   a block of 128 KiB or more is mapped on its own and unmapped when freed, and free space
//!   past 128 KiB at an arena's top goes back;
//! - every [`TRIM_EVERY`] ([`trim_every`]) it frees the archive's argon2 work areas no hash
//!   used meanwhile (19 MiB each) and gives back the free pages inside every arena
//!   (`malloc_trim`, which locks each arena in turn while it works).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the hub gives its freed memory back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc's default mapping and trimming threshold, which the hub keeps fixed.
pub const MALLOC_THRESHOLD: usize = 128 * 1024;

/// Fixes malloc's mapping and trimming thresholds at [`MALLOC_THRESHOLD`], so that glibc does
/// not raise them as large blocks are freed. An operator's own setting of either
/// (`GLIBC_TUNABLES`, or the older `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`) wins.
/// Call it before any thread is spawned. Returns whether they were set.
pub fn fix_malloc_thresholds() -> bool {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    let tunables = tunables.to_string_lossy();
    let operators = tunables.contains("glibc.malloc.mmap_threshold")
        || tunables.contains("glibc.malloc.trim_threshold")
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
    !operators && set_thresholds(MALLOC_THRESHOLD)
}

fn set_thresholds(bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let n = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets allocator parameters; it takes no pointers.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, n) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, n) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

/// Gives back to the system the free pages inside every malloc arena (and the main arena's
/// free top). Returns whether any went back (always `false` where malloc is not glibc's).
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers; it locks each arena while it works.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Every `period` until `shutdown`: frees the archive's work areas no hash used for `period`,
/// then trims.
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
        // A long period: other tests in this binary use the archive's shared work areas.
        let task = tokio::spawn(trim_every(Duration::from_secs(3600), shutdown.clone()));
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "it runs until told to stop");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stopped at shutdown").expect("no panic");
    }
}
