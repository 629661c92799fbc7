//! The hub gives back the memory it freed (`troop_hub::memory`): a peak that glibc would keep
//! as the process's RSS after it was freed goes back to the system at the next trim.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024.0
}

#[test]
fn a_freed_peak_goes_back_to_the_system_at_the_next_trim() {
    let before = rss_mib();
    // A 64 MiB peak in small pieces (as a decoded engine answer is), of which every 64th
    // stays: glibc cannot give the freed space back by lowering its top.
    let mut pieces: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 1000]).collect();
    let mut k = 0;
    pieces.retain(|_| {
        k += 1;
        k % 64 == 0
    });
    let held = rss_mib();
    assert!(
        held - before > 32.0,
        "glibc kept only {:.1} MiB of the freed peak; the test proves nothing",
        held - before
    );
    assert!(troop_hub::memory::trim(), "nothing was given back");
    let after = rss_mib();
    assert!(held - after > 32.0, "RSS went from {held:.1} to {after:.1} MiB only");
    assert_eq!(pieces.len(), 1024, "the pieces kept are still there");
}

const CHILD: &str = "TROOP_HUB_MEMORY_CHILD";

/// In a child process (malloc's settings hold for a whole process): RSS kept, in MiB, after an
/// 8 MiB answer is decoded and freed once a 16 MiB block has been freed before it.
fn kept_after_a_large_free(settled: bool) -> f64 {
    if settled {
        assert!(troop_hub::memory::fix_malloc_thresholds(), "the thresholds were not set");
    }
    drop(std::hint::black_box(vec![1u8; 16 << 20])); // glibc now raises its thresholds to 16 MiB...
    let before = rss_mib();
    drop(std::hint::black_box(vec![2u8; 8 << 20])); // ...and so keeps this one, unless settled
    rss_mib() - before
}

#[test]
fn a_freed_answer_goes_back_at_once_after_larger_ones_were_freed() {
    if let Ok(kind) = std::env::var(CHILD) {
        println!("\nkept: {}", kept_after_a_large_free(kind == "settled"));
        return;
    }
    let run = |kind: &str| -> f64 {
        let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "a_freed_answer_goes_back_at_once_after_larger_ones_were_freed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, kind)
            .env_remove("GLIBC_TUNABLES")
            .output()
            .expect("run the child");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "the {kind} child failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        text.lines()
            .find_map(|l| l.split_once("kept: ").and_then(|(_, v)| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no figure from the {kind} child: {text}"))
    };
    let glibc = run("default");
    assert!(glibc > 6.0, "glibc alone kept only {glibc:.1} MiB; the test proves nothing");
    let settled = run("settled");
    assert!(settled < 1.0, "the hub's settings kept {settled:.1} MiB of a freed 8 MiB answer");
}
