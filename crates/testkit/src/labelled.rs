//! Containers a test makes on the shared engine: the test images it needs, a
//! name no other test or session uses, and a guard that removes every
//! container carrying the test's label when it is dropped (a failed assertion
//! included), so a test leaves nothing behind.

use std::process::Command;

/// The label every test container carries, with the test run's own value.
pub const TEST_LABEL: &str = "warmpool-test-run";

/// The image the engine tests run (built by `tests/images/build.sh`).
pub const BUSYBOX: &str = "warmpool-test/busybox:latest";

/// Build the test images (`tests/images/build.sh`, FROM scratch, nothing
/// pulled) unless `BUSYBOX` is there already; panics saying why a build failed.
pub fn ensure_images() {
    let have = Command::new("docker")
        .args(["image", "inspect", BUSYBOX])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/images/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run tests/images/build.sh");
    assert!(
        out.status.success(),
        "building the test images failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `prefix`, this process and the clock: a name no other test uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Removes every container labelled `TEST_LABEL=<its value>` when dropped.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={TEST_LABEL}={}", self.0);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}
