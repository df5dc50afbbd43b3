//! Containers that serve several jobs (`reuse = N`), on the real engine: the
//! gate resets its container between jobs and proves it, a job sees nothing of
//! the last one, and a container whose reset cannot be completed is removed.

mod common;

use common::server::{json, Server};
use common::*;
use std::time::{Duration, Instant};

const SUID: &str = "warmpool-test/suid:latest";

/// One container (max_containers = 1) serving up to 10 jobs: every job after
/// the first runs where the last one ran, after its reset.
fn reuse_server() -> Server {
    Server::start(
        &format!(
            r#"
[profiles.ru]
image = "{BUSYBOX}"
network = "none"
read_only = true
tmpfs = ["/tmp", "/work:exec"]
reuse = 10
min_idle = 1
max_containers = 1
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}

[profiles.su]
image = "{SUID}"
network = "none"
read_only = true
tmpfs = ["/tmp"]
reuse = 10
min_idle = 1
max_containers = 1
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
"#
        ),
        &[],
    )
}

fn run(s: &Server, body: &str) -> serde_json::Value {
    let (code, resp) = s.post("/v1/jobs?wait=true", body);
    assert_eq!(code, 200, "{resp}");
    json(&resp)
}

fn pool(s: &Server, profile: &str) -> serde_json::Value {
    json(&s.get("/v1/pools").1)
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["profile"] == profile).cloned())
        .unwrap_or_default()
}

fn wait_pool(s: &Server, profile: &str, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pool(s, profile);
        if f(&p) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_next_job_sees_nothing_of_the_last() {
    let s = reuse_server();
    wait_pool(&s, "ru", "never parked", |p| p["idle"] == 1);
    // The first job leaves something in every place it can write, a daemon
    // that escaped its process group, SysV objects, and its secrets in env and
    // stdin.
    let first = run(
        &s,
        r#"{"profile":"ru","env":{"LAST_SECRET":"job-one-env-secret"},"stdin":"job-one-stdin-secret\n","args":["sh","-c",
        "cat >/tmp/stdin-copy; echo x >/tmp/file; mkdir -p /tmp/d/e && echo y >/tmp/d/e/f && chmod 000 /tmp/d; echo z >/work/w; echo s >/dev/shm/seg; echo d >/dev/left-over; chmod 777 /tmp; setsid sh -c 'sleep 1000 & sleep 1001 &' ; jobtool sysv; cd /tmp; hostname"]}"#,
    );
    assert_eq!(first["state"], "succeeded", "{first}");
    let host = first["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        first["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("shm="),
        "{first}"
    );
    // Nothing of the first job in the second's script: its command line is
    // in `ps` for all to see.
    let second = run(
        &s,
        r#"{"profile":"ru","args":["sh","-c",
        "hostname; echo places:; ls -A /tmp /work /dev/shm /dev/mqueue; ls -A /dev | grep left.over; echo mode=$(stat -c %a /tmp); echo procs:; ps -o comm; echo sysv:; cat /proc/sysvipc/shm /proc/sysvipc/msg /proc/sysvipc/sem | grep -v key; echo env:; env; echo cwd=$(pwd); echo gate:; cat /proc/1/environ /proc/1/cmdline 2>&1; echo"]}"#,
    );
    assert_eq!(second["state"], "succeeded", "{second}");
    let out = second["stdout"].as_str().unwrap_or_default();
    let section = |name: &str, next: &str| -> String {
        out.split(&format!("{name}\n"))
            .nth(1)
            .and_then(|r| r.split(next).next())
            .unwrap_or("?")
            .to_string()
    };
    // The same container, reset.
    assert_eq!(out.lines().next(), Some(host.as_str()), "{out}");
    let places = section("places:", "mode=");
    assert!(
        places.lines().all(|l| l.is_empty() || l.ends_with(':')),
        "files left: {places:?}\n{out}"
    );
    assert!(
        out.contains("mode=1777\n"),
        "/tmp's mode not restored:\n{out}"
    );
    let procs = section("procs:", "sysv:");
    assert!(
        !procs.lines().any(|l| l.trim() == "sleep"),
        "a process of the first job survived: {procs:?}"
    );
    let sysv = section("sysv:", "env:");
    assert!(sysv.trim().is_empty(), "SysV objects left: {sysv:?}\n{out}");
    let env = section("env:", "cwd=");
    assert!(!env.contains("LAST_SECRET"), "{env}");
    // The image's working directory, whatever the last job's shell did.
    assert!(out.contains("cwd=/\n"), "{out}");
    assert!(!out.contains("job-one"), "the first job's secrets:\n{out}");
    wait_pool(&s, "ru", "the reuse is not counted", |p| {
        p["reused"].as_u64() >= Some(1)
            && p["reuse"] == 10
            && p["jobs_per_container"].as_f64() > Some(1.0)
            && p["reset_failed"] == 0
    });
    let metrics = s.get("/metrics").1;
    assert!(
        metrics.contains("warmpool_pool_reused_total{profile=\"ru\"}"),
        "{metrics}"
    );
}

#[test]
fn a_container_serves_at_most_reuse_jobs() {
    let s = reuse_server();
    wait_pool(&s, "ru", "never parked", |p| p["idle"] == 1);
    let hosts: Vec<String> = (0..12)
        .map(|_| {
            let j = run(&s, r#"{"profile":"ru","args":["hostname"]}"#);
            assert_eq!(j["state"], "succeeded", "{j}");
            j["stdout"].as_str().unwrap_or_default().trim().to_string()
        })
        .collect();
    // Ten on the first container, then a new one.
    assert!(hosts[..10].iter().all(|h| *h == hosts[0]), "{hosts:?}");
    assert_ne!(hosts[10], hosts[0], "{hosts:?}");
    assert_eq!(hosts[11], hosts[10], "{hosts:?}");
}

#[test]
fn a_reset_that_cannot_be_completed_removes_the_container() {
    let s = reuse_server();
    wait_pool(&s, "su", "never parked", |p| p["idle"] == 1);
    // A process that became root for good: the gate (uid 1000) may not kill it.
    let first = run(
        &s,
        r#"{"profile":"su","args":["sh","-c","setsid jobtool-suid rootsleep 1000 >/dev/null 2>&1 & sleep 1; hostname"]}"#,
    );
    assert_eq!(first["state"], "succeeded", "{first}");
    wait_pool(&s, "su", "the failed reset is not counted", |p| {
        p["reset_failed"] == 1 && p["reused"] == 0
    });
    let second = run(
        &s,
        r#"{"profile":"su","args":["sh","-c","hostname; ps -o args"]}"#,
    );
    assert_eq!(second["state"], "succeeded", "{second}");
    let out = second["stdout"].as_str().unwrap_or_default();
    assert_ne!(
        out.lines().next(),
        first["stdout"].as_str().unwrap_or_default().lines().next(),
        "the job ran in the container whose reset failed:\n{out}"
    );
    assert!(!out.contains("rootsleep"), "{out}");
}

#[test]
fn a_read_only_bind_mount_is_kept_across_resets() {
    // The gate's reset skips read-only mounts (it refuses unknown writable
    // ones): a profile's `mounts` do not stop a container from being reused.
    let host = std::env::temp_dir().join(unique("ro-mount"));
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::write(host.join("hello"), "from the host\n").expect("write");
    let s = Server::start(
        &format!(
            r#"
[profiles.rm]
image = "{BUSYBOX}"
network = "none"
read_only = true
tmpfs = ["/tmp"]
mounts = ["{}:/data:ro"]
reuse = 10
min_idle = 1
max_containers = 1
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
"#,
            host.display()
        ),
        &[],
    );
    wait_pool(&s, "rm", "never parked", |p| p["idle"] == 1);
    let job = r#"{"profile":"rm","args":["sh","-c","cat /data/hello; if touch /data/x 2>/dev/null; then echo writable; else echo read-only; fi; hostname"]}"#;
    let outs: Vec<String> = (0..3)
        .map(|_| {
            let j = run(&s, job);
            assert_eq!(j["state"], "succeeded", "{j}");
            j["stdout"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let hosts: Vec<&str> = outs
        .iter()
        .map(|o| o.lines().last().unwrap_or(""))
        .collect();
    for o in &outs {
        assert!(o.starts_with("from the host\nread-only\n"), "{o}");
    }
    assert!(
        hosts.iter().all(|h| *h == hosts[0]),
        "one container for the three jobs (reset, not replaced): {hosts:?}\n{}",
        s.log()
    );
    wait_pool(&s, "rm", "no reset counted", |p| p["reset_failed"] == 0);
    assert!(!host.join("x").exists());
    let _ = std::fs::remove_dir_all(&host);
}
