//! The hub caps glibc's malloc arenas at one per core (`troop_hub::malloc_arenas`): threads
//! that allocate at once then share arenas rather than each keeping one, with its freed
//! memory, of its own. Each case runs in a child process of this test binary, since the cap
//! holds for a whole process and only for arenas made after it.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::process::Command;

const CHILD: &str = "TROOP_HUB_ARENA_CHILD";

/// glibc's arenas in this process: `malloc_info` writes one `<heap nr=..>` for each.
fn arenas() -> usize {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream gives a stream writing into `buf`; it is closed before `buf` is
    // read (fclose sets `buf` and `len`) and `buf` is freed with `free`, as its man page says.
    unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        assert!(!f.is_null(), "open_memstream failed");
        libc::malloc_info(0, f);
        libc::fclose(f);
        let xml = String::from_utf8_lossy(std::slice::from_raw_parts(buf as *const u8, len)).into_owned();
        libc::free(buf.cast());
        xml.matches("<heap nr=").count()
    }
}

fn threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get()).min(64)
}

/// In the child: (arenas before, the cap set, arenas after `threads()` threads allocated at once).
fn child(capped: bool) -> (usize, usize, usize) {
    let before = arenas();
    let cap = if capped { troop_hub::malloc_arenas::limit().expect("the cap is set") } else { 0 };
    let n = threads();
    let all = std::sync::Arc::new(std::sync::Barrier::new(n));
    let hold: Vec<_> = (0..n)
        .map(|_| {
            let all = all.clone();
            std::thread::spawn(move || {
                let v = vec![1u8; 64 << 10];
                all.wait(); // every thread holds its allocation at once
                v.len()
            })
        })
        .collect();
    for t in hold {
        t.join().expect("an allocating thread");
    }
    (before, cap, arenas())
}

fn run_child(kind: &str) -> (usize, usize, usize) {
    let exe = std::env::current_exe().expect("this test binary");
    let out = Command::new(exe)
        .args(["--exact", "threads_allocating_at_once_share_one_arena_per_core", "--nocapture", "--test-threads=1"])
        .env(CHILD, kind)
        .env_remove("GLIBC_TUNABLES")
        .output()
        .expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the {kind} child failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text
        .lines()
        .find_map(|l| l.split_once("arenas: ").map(|(_, f)| f))
        .unwrap_or_else(|| panic!("no figures from the {kind} child: {text}"));
    let f: Vec<usize> = line.split(' ').map(|x| x.parse().expect("a number")).collect();
    (f[0], f[1], f[2])
}

#[test]
fn threads_allocating_at_once_share_one_arena_per_core() {
    if let Ok(kind) = std::env::var(CHILD) {
        let (before, cap, after) = child(kind == "capped");
        println!("\narenas: {before} {cap} {after}");
        return;
    }
    let n = threads();
    let (_, _, glibc_default) = run_child("default");
    let (before, cap, capped) = run_child("capped");
    // glibc alone gives most of the threads an arena each (it allows eight per core)...
    assert!(glibc_default > n / 2, "{n} threads made only {glibc_default} arenas without the cap");
    // ...the cap holds them to one per core, beside those made before it was set.
    assert!(capped <= before.max(cap), "{n} threads made {capped} arenas with a cap of {cap} ({before} before it)");
}
