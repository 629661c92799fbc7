//! Replays the golden transcripts recorded from upstream Troop 0.10.3 against our binary with
//! the shared checker (`../shared/troop-conformance/check.py`). Every scenario must pass.

use std::path::PathBuf;
use std::process::Command;

/// The conformance kit: `TROOP_CONFORMANCE_DIR`, else `shared/troop-conformance` beside the
/// repository checkout.
fn kit() -> PathBuf {
    if let Some(dir) = std::env::var_os("TROOP_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/troop-conformance")
}

#[test]
fn upstream_transcripts_all_pass() {
    let kit = kit();
    let check = kit.join("check.py");
    assert!(
        check.is_file(),
        "conformance kit not found at {} (set TROOP_CONFORMANCE_DIR to the troop-conformance folder)",
        kit.display()
    );
    let server = env!("CARGO_BIN_EXE_troop-server");
    let out = Command::new("python3")
        .arg(&check)
        .arg("--server-cmd")
        .arg(format!("{server} --port {{port}} --password {{password}}"))
        .output()
        .expect("python3 must be installed to run the conformance checker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "conformance failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("30 passed, 0 failed") || last.ends_with(", 0 failed"), "unexpected summary: {last}");
    assert!(!last.starts_with("0 passed"), "no transcript ran: {stdout}");
}
