//! Reuse mode in a real container, where the gate is PID 1 and the reset runs:
//! what one job leaves behind (files in tmpfs mounts and /dev, a double-forked
//! daemon, SysV IPC objects, changed modes and symlinks) is gone for the next,
//! which cannot read the earlier job's env or stdin through /proc/1 either; a
//! container that cannot be put back says so and ends. Needs the engine and
//! the test images (`tests/images/build.sh`, built here when missing). Every
//! container carries this run's label and is removed when the test ends.

mod common;

use common::{gate_dir, spec, stdout_of, Session};
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use warmpool_gate::protocol::{ExitStatus, Frame, JobSpec};

use warmpool_testkit::labelled::{ensure_images, unique, Cleanup, BUSYBOX, TEST_LABEL};

/// A container whose PID 1 is the gate in reuse mode, attached through
/// `docker run -i`; `extra` goes before the image (`--read-only` etc.).
fn reuse_container(run: &str, name: &str, extra: &[&str]) -> Session {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "-i", "--rm", "--name", name])
        .args(["--label", &format!("{TEST_LABEL}={run}")])
        .args(["--network", "none", "--log-driver", "none"])
        .args(["--entrypoint", "/g/gate"])
        .args(["-v", &format!("{}:/g:ro", gate_dir().display())])
        .args(extra)
        .args([BUSYBOX, warmpool_gate::protocol::REUSE_ARG]);
    Session::start(cmd)
}

/// A static helper (busybox has no `ipcmk` nor `setfattr`), built with the rustc
/// at hand: without arguments it creates one SysV shared memory segment, message
/// queue and semaphore set; `xattr-set PATH` / `xattr-get PATH` set and show a
/// `user.wp` extended attribute. None (those parts of the tests are skipped)
/// when it cannot be built.
fn ipc_helper() -> Option<&'static str> {
    static HELPER: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *HELPER.get_or_init(build_ipc_helper)
}

fn build_ipc_helper() -> Option<&'static str> {
    let src = gate_dir().join("helper.rs");
    std::fs::write(
        &src,
        r#"
extern "C" {
    fn shmget(key: i32, size: usize, flags: i32) -> i32;
    fn msgget(key: i32, flags: i32) -> i32;
    fn semget(key: i32, nsems: i32, flags: i32) -> i32;
    fn setxattr(path: *const u8, name: *const u8, value: *const u8, size: usize, flags: i32) -> i32;
    fn getxattr(path: *const u8, name: *const u8, value: *mut u8, size: usize) -> isize;
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let c = |s: &str| format!("{s}\0");
    match args.get(1).map(String::as_str) {
        Some("xattr-set") => {
            let (p, n, v) = (c(&args[2]), c("user.wp"), "leak");
            let r = unsafe { setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr(), v.len(), 0) };
            println!("xattr set on {}: {r}", args[2]);
            if r != 0 { std::process::exit(1) }
        }
        Some("xattr-get") => {
            let (p, n) = (c(&args[2]), c("user.wp"));
            let mut buf = [0u8; 64];
            let r = unsafe { getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr(), buf.len()) };
            if r < 0 { println!("xattr on {}: none", args[2]) } else {
                println!("xattr on {}: {}", args[2], String::from_utf8_lossy(&buf[..r as usize]))
            }
        }
        _ => {
            // IPC_PRIVATE, IPC_CREAT | 0600
            let (shm, msg, sem) = unsafe { (shmget(0, 4096, 0o1600), msgget(0, 0o1600), semget(0, 1, 0o1600)) };
            println!("ipc made: shm {shm} msg {msg} sem {sem}");
            if shm < 0 || msg < 0 || sem < 0 { std::process::exit(1) }
        }
    }
}
"#,
    )
    .ok()?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let ok = Command::new(rustc)
        .args(["--edition=2021", "-O", "-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(gate_dir().join("helper"))
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some("/g/helper")
    } else {
        eprintln!("no static SysV IPC helper could be built: that part is skipped");
        None
    }
}

/// Whether the gate's memory (the container's PID 1, read from the host through
/// /proc/<pid>/mem) holds any of `needles`. None when it cannot be read here
/// (not root, or the engine's processes are in another PID namespace).
fn gate_memory_holds(name: &str, needles: &[&[u8]]) -> Option<Vec<String>> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", name])
        .output()
        .ok()?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !cmdline.windows(7).any(|w| w == b"--reuse") {
        return None;
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut found = Vec::new();
    let mut scanned = 0usize;
    for line in maps.lines() {
        let mut cols = line.split_whitespace();
        let (Some(range), Some(perms)) = (cols.next(), cols.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scanned += buf.len();
        for n in needles {
            if buf.windows(n.len()).any(|w| w == *n) {
                found.push(format!("{} in {line}", String::from_utf8_lossy(n)));
            }
        }
    }
    assert!(scanned > 0, "nothing of the gate's memory could be read");
    Some(found)
}

#[test]
fn the_next_job_finds_nothing_of_the_last() {
    ensure_images();
    let run = unique("reset");
    let _cleanup = Cleanup(run.clone());
    let name = unique("wp-gate-reset");
    let ipcmk = ipc_helper();
    let mut g = reuse_container(&run, &name, &["--read-only", "--tmpfs", "/tmp"]);
    g.ready();

    let secret_env = unique("wp-secret-env");
    let secret_in = unique("wp-secret-stdin");
    let script = format!(
        "echo \"env $SECRET_ENV\"; cat; echo; \
         cd /tmp && touch /tmp/a /dev/shm/b /dev/leftover /dev/mqueue/q && \
         mkdir -p /tmp/d/e && touch /tmp/d/e/f && chmod 000 /tmp/d && chmod 700 /tmp && \
         mknod /dev/leftnode c 1 3 && rm /dev/fd && ln -s /etc /dev/fd && \
         {ipc} {xattr} \
         (setsid sh -c 'sleep 1000 & echo daemon $!' &) ; sleep 0.3; ps; echo job1 done",
        ipc = ipcmk.map(|p| format!("{p} &&")).unwrap_or_default(),
        xattr = ipcmk
            .map(|p| format!("{p} xattr-set /tmp && {p} xattr-set /dev/shm &&"))
            .unwrap_or_default(),
    );
    let mut job1 = spec(&["sh", "-c", &script]);
    job1.env = vec![
        b"PATH=/usr/bin:/bin".to_vec(),
        format!("SECRET_ENV={secret_env}").into_bytes(),
        b"HOSTNAME=job1-host".to_vec(),
        b"HOME=/job1-home".to_vec(),
    ];
    job1.stdin = Some(secret_in.clone().into_bytes());
    let (frames, (ok, report)) = g.job(&job1);
    let out = stdout_of(&frames);
    assert!(out.contains("job1 done"), "{frames:?}");
    assert!(
        out.contains(&secret_env) && out.contains(&secret_in),
        "{out}"
    );
    assert!(out.contains("sleep 1000"), "the daemon runs: {out}");
    if ipcmk.is_some() {
        assert!(out.contains("ipc made"), "{out}");
    }
    assert_eq!(frames.last(), Some(&Frame::Exit(ExitStatus::Code(0))));
    eprintln!("reset after job 1: {report}");
    assert!(ok, "the reset failed: {report}");
    // Restored on /tmp: its mode (and its xattr); on /dev/shm: its xattr.
    let (tmp, shm) = match ipcmk {
        Some(_) => (
            "/tmp: 2 entries removed, 2 restored",
            "/dev/shm: 1 entry removed, 1 restored",
        ),
        None => (
            "/tmp: 2 entries removed, 1 restored",
            "/dev/shm: 1 entry removed;",
        ),
    };
    for part in [
        "processes: 1 killed, none left",
        tmp,
        shm,
        "/dev/mqueue: 1 entry removed",
        "cwd: /",
        "job state zeroed",
    ] {
        assert!(report.contains(part), "want {part:?} in {report:?}");
    }
    assert!(
        report.contains("/dev: 3 entries removed, 1 restored"),
        "{report}"
    );
    if ipcmk.is_some() {
        assert!(
            report.contains("sysvipc: 1 shm, 1 msg, 1 sem removed"),
            "{report}"
        );
    }
    // READY again, with the same payload.
    g.ready();

    // Parked again: nothing of job 1's env or stdin is left in the gate's memory.
    match gate_memory_holds(&name, &[secret_env.as_bytes(), secret_in.as_bytes()]) {
        Some(found) => assert!(found.is_empty(), "the gate still holds: {found:?}"),
        None => eprintln!("the gate's memory cannot be read from here: that check is skipped"),
    }

    let script = "echo TMP; ls -a /tmp; echo SHM; ls -a /dev/shm; echo MQ; ls -a /dev/mqueue; \
                  echo DEV; ls /dev; echo PS; ps; echo IPC; cat /proc/sysvipc/shm /proc/sysvipc/msg /proc/sysvipc/sem; \
                  echo ENV; env; echo ENVIRON; cat /proc/1/environ; echo; echo CMDLINE; cat /proc/1/cmdline; echo; \
                  echo MEM; head -c 64 /proc/1/mem; echo; echo MODE; stat -c '%a' /tmp; readlink /dev/fd; pwd";
    let script = match ipcmk {
        Some(p) => format!("{p} xattr-get /tmp; {p} xattr-get /dev/shm; {script}"),
        None => script.to_string(),
    };
    let job2 = spec(&["sh", "-c", &script]);
    let (frames, (ok, report)) = g.job(&job2);
    let out = stdout_of(&frames);
    let err = common::stderr_of(&frames);
    assert!(ok, "{report}");
    let section = |name: &str| -> String {
        let start = out
            .find(&format!("{name}\n"))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        let rest = &out[start + name.len() + 1..];
        let end = rest
            .find(|c: char| c.is_ascii_uppercase())
            .map(|i| rest[..i].rfind('\n').map_or(0, |j| j + 1))
            .unwrap_or(rest.len());
        rest[..end].to_string()
    };
    if ipcmk.is_some() {
        assert!(
            out.starts_with("xattr on /tmp: none\nxattr on /dev/shm: none\n"),
            "{out}"
        );
    }
    assert_eq!(section("TMP"), ".\n..\n", "{out}");
    assert_eq!(section("SHM"), ".\n..\n", "{out}");
    assert_eq!(section("MQ"), ".\n..\n", "{out}");
    let dev = section("DEV");
    assert!(
        !dev.contains("leftover") && !dev.contains("leftnode"),
        "{dev}"
    );
    assert!(dev.contains("null") && dev.contains("fd"), "{dev}");
    assert!(!out.contains("sleep"), "a process of job 1 survived: {out}");
    let ipc_lines = out.lines().filter(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|id| id.parse::<i32>().is_ok())
    });
    assert_eq!(ipc_lines.count(), 0, "SysV objects left: {out}");
    assert!(
        !out.contains(&secret_env) && !err.contains(&secret_env),
        "{out}"
    );
    assert!(
        !out.contains(&secret_in) && !err.contains(&secret_in),
        "{out}"
    );
    assert!(
        !out.contains("job1-host") && !out.contains("/job1-home"),
        "{out}"
    );
    assert!(
        out.contains("HOSTNAME="),
        "docker's HOSTNAME as for any job: {out}"
    );
    assert!(
        err.contains("/proc/1/environ") && err.contains("/proc/1/mem"),
        "job 2 must not read the gate's environ or memory: {err}"
    );
    assert!(out.contains("/g/gate\0--reuse\0"), "{out}");
    assert!(out.ends_with("1777\n/proc/self/fd\n/\n"), "{out}");

    // Parked: the host closing stdin ends the container, quietly.
    g.ready();
    g.close_stdin();
    let (rest, stderr, code) = g.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, Some(0), "{stderr}");
}

fn one_job_then_reset(extra: &[&str], job: &JobSpec) -> (bool, String, Option<i32>) {
    ensure_images();
    let run = unique("reset-fail");
    let _cleanup = Cleanup(run.clone());
    let name = unique("wp-gate-reset-fail");
    let mut g = reuse_container(&run, &name, extra);
    g.ready();
    let (_, (ok, report)) = g.job(job);
    let (rest, _, code) = if ok {
        g.close_stdin();
        g.finish()
    } else {
        g.finish()
    };
    assert!(
        ok || rest.is_empty(),
        "nothing after a failed reset: {rest:?}"
    );
    (ok, report, code)
}

#[test]
fn a_writable_root_cannot_be_reset() {
    let (ok, report, code) = one_job_then_reset(&["--tmpfs", "/tmp"], &spec(&["true"]));
    assert!(!ok);
    assert!(
        report.contains("/ is a read-write") && report.contains("overlay"),
        "{report}"
    );
    assert_eq!(code, Some(0));
}

#[test]
fn what_cannot_be_put_back_fails_the_reset() {
    let (ok, report, code) = one_job_then_reset(
        &["--read-only", "--tmpfs", "/tmp"],
        &spec(&["rm", "/dev/null"]),
    );
    assert!(!ok);
    assert!(report.contains("/dev/null"), "{report}");
    assert_eq!(code, Some(0));
}

#[test]
fn a_gate_of_another_user_resets_what_its_jobs_leave() {
    // The gate runs as the container's user, as the job does: it kills what that
    // uid started, opens up directories the job made unreadable before removing
    // them, and a later job of the same uid still cannot read its memory.
    ensure_images();
    let run = unique("reset-user");
    let _cleanup = Cleanup(run.clone());
    let name = unique("wp-gate-reset-user");
    let ipcmk = ipc_helper();
    let mut g = reuse_container(
        &run,
        &name,
        &["--read-only", "--tmpfs", "/tmp", "--user", "1000:1000"],
    );
    g.ready();
    let secret = unique("wp-secret-user");
    let script = format!(
        "id -u; mkdir -p /tmp/d/e && touch /tmp/d/e/f && chmod 000 /tmp/d/e /tmp/d && \
         touch /dev/shm/x && {ipc} (setsid sh -c 'sleep 1000 &' &); echo job1 done",
        ipc = ipcmk.map(|p| format!("{p} &&")).unwrap_or_default()
    );
    let mut job1 = spec(&["sh", "-c", &script]);
    job1.env.push(format!("SECRET={secret}").into_bytes());
    let (frames, (ok, report)) = g.job(&job1);
    let out = stdout_of(&frames);
    assert!(
        out.starts_with("1000\n") && out.contains("job1 done"),
        "{frames:?}"
    );
    eprintln!("reset after job 1 (uid 1000): {report}");
    assert!(ok, "{report}");
    assert!(report.contains("/tmp: 1 entry removed"), "{report}");
    assert!(report.contains("/dev/shm: 1 entry removed"), "{report}");
    if ipcmk.is_some() {
        assert!(
            report.contains("sysvipc: 1 shm, 1 msg, 1 sem removed"),
            "{report}"
        );
    }
    g.ready();
    let script = "ls -a /tmp; ps; cat /proc/1/environ; head -c 16 /proc/1/mem; echo end";
    let (frames, (ok, report)) = g.job(&spec(&["sh", "-c", script]));
    assert!(ok, "{report}");
    let out = stdout_of(&frames);
    let err = common::stderr_of(&frames);
    assert!(out.starts_with(".\n..\n"), "{out}");
    assert!(!out.contains("sleep"), "{out}");
    assert!(!out.contains(&secret), "{out}");
    assert!(
        err.contains("/proc/1/environ") && err.contains("/proc/1/mem"),
        "same uid, but the gate is not dumpable: {err}"
    );
    g.ready();
    g.close_stdin();
    assert_eq!(g.finish().2, Some(0));
}

#[test]
fn many_jobs_in_one_container_leak_nothing() {
    // Job after job: each gets its own env, stdin and exit; the gate's open
    // files (seen from the host) do not grow with the number of jobs.
    ensure_images();
    let run = unique("reset-many");
    let _cleanup = Cleanup(run.clone());
    let name = unique("wp-gate-reset-many");
    let mut g = reuse_container(&run, &name, &["--read-only", "--tmpfs", "/tmp"]);
    g.ready();
    let pid = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &name])
            .output()
            .expect("docker inspect")
            .stdout,
    )
    .trim()
    .to_string();
    let open_files = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());
    let mut after_first = None;
    for i in 0..20 {
        let mut job = spec(&[
            "sh",
            "-c",
            "echo $N; cat; touch /tmp/$N; sleep 100 & exit $N",
        ]);
        job.env.push(format!("N={i}").into_bytes());
        job.stdin = Some(format!("in{i}\n").into_bytes());
        let (frames, (ok, report)) = g.job(&job);
        assert!(ok, "job {i}: {report}");
        assert_eq!(stdout_of(&frames), format!("{i}\nin{i}\n"));
        assert_eq!(frames.last(), Some(&Frame::Exit(ExitStatus::Code(i))));
        assert!(report.contains("processes: 1 killed"), "{report}");
        assert!(report.contains("/tmp: 1 entry removed"), "{report}");
        g.ready();
        if i == 0 {
            after_first = open_files().ok();
        }
    }
    if let (Some(first), Ok(last)) = (after_first, open_files()) {
        assert_eq!(first, last, "the gate's open files grew");
    }
    g.close_stdin();
    assert_eq!(g.finish().2, Some(0));
}

#[test]
fn the_hosts_ipc_namespace_is_not_reset() {
    // The reset removes every SysV object and POSIX queue of its IPC namespace:
    // with --ipc host those would be the host's, so the gate refuses.
    let host_ns = std::fs::read_link("/proc/self/ns/ipc")
        .map(|l| l.to_string_lossy() == "ipc:[4026531839]")
        .unwrap_or(false);
    if !host_ns {
        eprintln!("this test does not run in the initial IPC namespace: skipped");
        return;
    }
    let (ok, report, code) = one_job_then_reset(
        &["--read-only", "--tmpfs", "/tmp", "--ipc", "host"],
        &spec(&["true"]),
    );
    assert!(!ok);
    assert!(report.contains("host's IPC namespace"), "{report}");
    assert_eq!(code, Some(0));
}

#[test]
#[ignore = "a measurement, not a check: cargo test -p warmpool-gate --test gate_engine -- --ignored --nocapture reset_time"]
fn reset_time() {
    // How long the host waits between a job's EXIT and the READY after its
    // reset, job after job in one container (docs/reuse.md, "Simulation":
    // `warmpool simulate --reset-ms` defaults to about the median of this). Two
    // kinds of job: one that leaves nothing, and one that leaves a file in a
    // tmpfs and a background process. Printed, never asserted.
    ensure_images();
    let run = unique("reset-time");
    let _cleanup = Cleanup(run.clone());
    let name = unique("wp-gate-reset-time");
    let mut g = reuse_container(&run, &name, &["--read-only", "--tmpfs", "/tmp"]);
    g.ready();
    for (label, script) in [
        ("clean job", "echo hi"),
        (
            "file + background process",
            "touch /tmp/x; sleep 100 & echo hi",
        ),
    ] {
        let mut took = Vec::new();
        for _ in 0..40 {
            g.send(&spec(&["sh", "-c", script]));
            let _ = g.until(|f| matches!(f, Frame::Exit(_)));
            let exit_at = std::time::Instant::now();
            match g.next() {
                Some(Frame::Reset { ok: true, .. }) => {}
                other => panic!("want RESET(ok), got {other:?}"),
            }
            g.ready();
            took.push(exit_at.elapsed());
        }
        took.sort_unstable();
        let at = |q: f64| took[((q * took.len() as f64) as usize).min(took.len() - 1)];
        println!(
            "reset time, {label}: min {:?}, p50 {:?}, p90 {:?}, max {:?} ({} jobs)",
            took[0],
            at(0.5),
            at(0.9),
            took[took.len() - 1],
            took.len()
        );
    }
    g.close_stdin();
    assert_eq!(g.finish().2, Some(0));
}
