//! The hub's malloc arenas. glibc gives threads that allocate at the same time arenas of
//! their own (up to eight per core) and keeps each arena's freed memory for its next use, so a
//! hub whose threads all once allocated a lot (listing 1,000 Swarm tasks) holds that memory
//! several times over. At start, before any thread exists, the hub caps the arenas at one per
//! core: its async workers are one per core. An operator's own `glibc.malloc.arena_max` in
//! `GLIBC_TUNABLES` wins.

/// The cap for a machine of `cores` cores, or `None` when the operator set one in
/// `tunables` (the value of `GLIBC_TUNABLES`).
pub fn cap(cores: usize, tunables: Option<&str>) -> Option<usize> {
    if tunables.is_some_and(|t| t.split(':').any(|kv| kv.trim_start().starts_with("glibc.malloc.arena_max="))) {
        return None;
    }
    Some(cores.clamp(1, 64))
}

/// Caps the arenas (see [`cap`]) from this process's environment. Call it before any thread is
/// spawned. Returns the cap set, `None` when none was (the operator's own, or not glibc).
pub fn limit() -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    let n = cap(cores, tunables.as_deref())?;
    set(n).then_some(n)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(n: usize) -> bool {
    let n = libc::c_int::try_from(n).unwrap_or(1);
    // SAFETY: mallopt only sets an allocator parameter; it takes no pointers.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_n: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn one_arena_per_core_unless_the_operator_chose() {
        assert_eq!(cap(2, None), Some(2));
        assert_eq!(cap(0, None), Some(1));
        assert_eq!(cap(512, None), Some(64));
        assert_eq!(cap(2, Some("glibc.malloc.trim_threshold=0")), Some(2));
        assert_eq!(cap(2, Some("glibc.malloc.arena_max=1")), None);
        assert_eq!(cap(2, Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=8")), None);
    }
}
