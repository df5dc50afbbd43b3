//! The `warmpool` binary from the outside: `run` as a stand-in for `docker run`,
//! `doctor`, and `bench`, against the real engine.

mod common;

use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");

/// A config file with profiles of this test's own (unique label) for `image`.
fn config(extra: &str) -> (PathBuf, String) {
    ensure_images();
    let label = unique("cli");
    // Extra profiles may carry this config's label too: "@LABEL@" stands for it.
    let extra = extra.replace("@LABEL@", &label);
    let dir = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warmpool.toml");
    let text = format!(
        r#"
[profiles.bb]
image = "{BUSYBOX}"
env = {{ GREETING = "hi" }}
network = "none"
labels = {{ "{TEST_LABEL}" = "{label}" }}
{extra}
"#
    );
    std::fs::write(&path, text).unwrap();
    (path, label)
}

fn warmpool(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c.stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_no_containers(label: &str) {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={label}"),
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "", "containers left for {label}");
}

/// `warmpool run --config CFG --profile bb EXTRA...`
fn run_command(cfg: &std::path::Path, extra: &[&str]) -> Command {
    let mut args = vec!["run", "--config", cfg.to_str().unwrap(), "--profile", "bb"];
    args.extend_from_slice(extra);
    warmpool(&args)
}

fn run(cfg: &std::path::Path, extra: &[&str]) -> Output {
    run_command(cfg, extra).output().unwrap()
}

#[test]
fn run_prints_only_the_jobs_output_and_exits_with_its_code() {
    let (cfg, label) = config("");
    let out = run(
        &cfg,
        &[
            "-e",
            "JOB=1",
            "--",
            "sh",
            "-c",
            "echo $GREETING $JOB; echo oops >&2; exit 42",
        ],
    );
    assert_eq!(text(&out.stdout), "hi 1\n");
    assert_eq!(text(&out.stderr), "oops\n", "nothing of warmpool's own");
    assert_eq!(out.status.code(), Some(42));
    let out = run(&cfg, &["--warm", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "128 + SIGKILL");
    assert_no_containers(&label);
}

#[test]
fn warm_and_cold_agree_and_timing_goes_to_stderr() {
    let (cfg, label) = config("");
    let cold = run(&cfg, &["--cold", "--", "sh", "-c", "echo same; pwd"]);
    let warm = run(
        &cfg,
        &["--warm", "--timing", "--", "sh", "-c", "echo same; pwd"],
    );
    assert_eq!(cold.stdout, warm.stdout);
    assert_eq!(text(&cold.stdout), "same\n/\n");
    let timing = text(&warm.stderr);
    assert!(timing.contains("warmpool: warm: park"), "{timing}");
    assert!(timing.contains("first output"), "{timing}");
    assert_no_containers(&label);
}

#[test]
fn env_from_our_environment_and_stdin_with_i() {
    let (cfg, label) = config("");
    let mut child = run_command(
        &cfg,
        &[
            "-i",
            "-e",
            "FROM_HOST",
            "--",
            "sh",
            "-c",
            "echo $FROM_HOST; cat",
        ],
    )
    .env("FROM_HOST", "passed through")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "passed through\npiped in\n");
    assert_no_containers(&label);
}

#[test]
fn bad_input_is_a_clear_error_with_code_125() {
    let (cfg, _) = config("");
    let out = run(&cfg, &["-e", "BAD-NAME=x", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("BAD-NAME"),
        "{}",
        text(&out.stderr)
    );

    let (cfg, _) = config("memroy = \"1g\"");
    let out = run(&cfg, &["--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("profile \"bb\"") && err.contains("memroy"),
        "{err}"
    );

    let (cfg, _) = config("");
    let out = warmpool(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--profile",
        "nope",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no profile \"nope\""),
        "{}",
        text(&out.stderr)
    );

    let out = warmpool(&[
        "run",
        "--config",
        "/nonexistent/warmpool.toml",
        "--profile",
        "bb",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("/nonexistent/warmpool.toml"));
}

#[test]
fn secrets_never_reach_warmpools_own_logs() {
    let (cfg, label) = config("");
    let secret = unique("hunter2");
    let out = run_command(
        &cfg,
        &[
            "-e",
            &format!("TOKEN={secret}"),
            "--",
            "sh",
            "-c",
            "echo ${#TOKEN}",
        ],
    )
    .env("WARMPOOL_LOG", "trace")
    .output()
    .unwrap();
    assert_eq!(text(&out.stdout), format!("{}\n", secret.len()));
    assert!(!text(&out.stderr).is_empty(), "trace logging was on");
    assert!(
        !text(&out.stderr).contains(&secret),
        "the secret is in warmpool's logs"
    );
    assert_no_containers(&label);
}

#[test]
fn signals_are_passed_to_the_job() {
    let (cfg, label) = config("");
    let mut child = run_command(
        &cfg,
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo up; while :; do sleep 0.1; done",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !text(&seen).contains("up") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "ended before it was up");
        seen.extend_from_slice(&buf[..n]);
    }
    unsafe { kill(child.id() as i32, 15) };
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(text(&rest), "got TERM\n");
    assert_eq!(status.code(), Some(3));
    assert_no_containers(&label);
}

#[test]
fn memory_stays_bounded_when_a_job_writes_a_gigabyte() {
    let (cfg, label) = config("");
    let mut child = run_command(
        &cfg,
        &[
            "--",
            "sh",
            "-c",
            "head -c 1073741824 /dev/zero; echo end >&2",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    // Peak resident memory of the warmpool process, read while it runs.
    let mut peak_kb = 0u64;
    while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            peak_kb = kb;
        }
        if status.contains("State:\tZ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The default cap (10 MiB) plus the marker reached our stdout; the rest was dropped.
    assert_eq!(
        total,
        10 * 1024 * 1024
            + "\n[warmpool: stdout cut at 10485760 bytes; the job went on]\n".len() as u64
    );
    assert!(err.ends_with("end\n"), "the job ran to its end: {err}");
    assert!(peak_kb > 0, "measured");
    eprintln!("peak RSS of warmpool run for a 1 GiB job: {peak_kb} KiB");
    assert!(
        peak_kb < 64 * 1024,
        "peak RSS {peak_kb} KiB for a 1 GiB job"
    );
    assert_no_containers(&label);
}

#[test]
fn a_slow_reader_gets_everything_and_the_right_exit_code() {
    let (cfg, label) = config("");
    let mut child = run_command(
        &cfg,
        &[
            "--",
            "sh",
            "-c",
            "head -c 1500000 /dev/zero; echo done >&2; exit 1",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // About 640 KB/s: the job ends long before we have read its output.
        std::thread::sleep(Duration::from_millis(100));
        match std::io::Read::read(&mut stdout, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(total, 1_500_000, "all of stdout arrived");
    assert_eq!(err, "done\n");
    assert_eq!(status.code(), Some(1), "the job's own exit code");
    assert_no_containers(&label);
}

#[test]
fn a_reader_that_does_not_read_does_not_stop_the_timeout() {
    let (cfg, label) = config("kill_grace = \"1s\"");
    // A unique sleep, to find the job's process on this host (containers share the kernel).
    let marker = format!("61.{}", std::process::id());
    let script = format!("yes | head -c 50000000; sleep {marker}");
    let mut child = run_command(&cfg, &["--timeout", "1s", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The job's own processes: busybox's shell runs `yes` and `head` as forks of
    // itself, so each shows the script's command line (with its unique marker).
    // Warmpool's own command line holds the script too, but starts with its path.
    let job_processes = || -> Vec<String> {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        text(&ps.stdout)
            .lines()
            .filter(|l| l.starts_with("sh -c ") && l.contains(&marker))
            .map(str::to_string)
            .collect()
    };
    // Read nothing: the job blocks on its full output pipe, and the timeout must
    // still stop it. First see it run, then see it gone, all before we read.
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_processes().is_empty() {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job_alive = job_processes();
        if job_alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the timed-out job still runs while its output is not read: {job_alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut sink).unwrap();
    let status = child.wait().unwrap();
    assert!(matches!(status.code(), Some(137) | Some(143)), "{status:?}");
    assert_no_containers(&label);
}

#[test]
fn unset_env_removes_the_images_value() {
    let (cfg, label) = config(&format!(
        "\n[profiles.user]\nimage = \"{USER}\"\nnetwork = \"none\"\nlabels = {{ \"{TEST_LABEL}\" = \"@LABEL@\" }}\n"
    ));
    let out = warmpool(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--profile",
        "user",
        "-e",
        "APP_MODE",
        "--",
        "sh",
        "-c",
        "echo ${APP_MODE-removed}",
    ])
    .env_remove("APP_MODE")
    .output()
    .unwrap();
    assert_eq!(text(&out.stdout), "removed\n", "{}", text(&out.stderr));
    let docker = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-e",
            "APP_MODE",
            USER,
            "sh",
            "-c",
            "echo ${APP_MODE-removed}",
        ])
        .env_remove("APP_MODE")
        .output()
        .unwrap();
    assert_eq!(out.stdout, docker.stdout, "as docker run does");
    assert_no_containers(&label);
}

#[test]
fn killing_warmpool_leaves_no_container_behind() {
    let (cfg, label) = config("");
    let mut child = run_command(&cfg, &["--", "sh", "-c", "echo up; sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"up\n");
    unsafe { kill(child.id() as i32, 9) };
    child.wait().unwrap();
    // The gate sees its host go, kills the job and exits; the engine removes the
    // container (auto-remove). Nothing else cleans up here.
    let filter = format!("label={TEST_LABEL}={label}");
    let mut left = String::from("?");
    for _ in 0..200 {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .unwrap();
        left = text(&out.stdout).trim().to_string();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left, "", "containers left after warmpool was killed");
}

#[test]
fn doctor_reports_what_is_wrong_and_how_to_fix_it() {
    let (cfg, doctor_label) = config(&format!(
        "\n[profiles.ghost]\nimage = \"warmpool-test/not-built:never\"\nlabels = {{ \"{TEST_LABEL}\" = \"@LABEL@\" }}\n\n[profiles.noshell]\nimage = \"{NOSHELL}\"\nnetwork = \"none\"\nlabels = {{ \"{TEST_LABEL}\" = \"@LABEL@\" }}\n"
    ));
    let out = warmpool(&["doctor", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("ok    engine"), "{report}");
    assert!(report.contains("ok    profile bb"), "{report}");
    assert!(report.contains("ok    profile noshell"), "{report}");
    assert_no_containers(&doctor_label);
    assert!(
        report.contains("FAIL  profile ghost") && report.contains("docker build"),
        "{report}"
    );

    let (cfg, _) = config("");
    let out = warmpool(&["doctor", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let out = warmpool(&["doctor", "--config", cfg.to_str().unwrap()])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        report.contains("FAIL  engine") && report.contains("DOCKER_HOST"),
        "{report}"
    );
}

#[test]
fn bench_measures_all_four_modes() {
    let (cfg, label) = config("");
    let out = warmpool(&[
        "bench",
        "--config",
        cfg.to_str().unwrap(),
        "--profile",
        "bb",
        "--jobs",
        "2",
        "--json",
        "--",
        "echo",
        "hello",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modes: Vec<&str> = v["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["warm", "cold", "docker exec", "docker run"]);
    for m in v["modes"].as_array().unwrap() {
        let p50 = m["exit_p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50.is_finite(), "{m}");
        assert!(
            m["first_output_p50_ms"].as_f64().unwrap().is_finite(),
            "{m}"
        );
    }
    assert!(v["ratios"]["run_exit_over_warm_exit"].as_f64().unwrap() > 0.0);
    // The bench's own containers (warm, cold, keeper, docker run) are all gone.
    assert_no_containers(&label);
}

#[test]
fn bench_throughput_compares_single_use_with_reuse() {
    let (cfg, label) = config("");
    let out = warmpool(&[
        "bench",
        "--config",
        cfg.to_str().unwrap(),
        "--profile",
        "bb",
        "--throughput",
        "--duration",
        "2s",
        "--concurrency",
        "2",
        "--reuse",
        "5",
        "--json",
        "--",
        "sh",
        "-c",
        "echo hi > /tmp/f && cat /tmp/f",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modes = v["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2, "{v}");
    assert_eq!(
        (modes[0]["reuse"].as_u64(), modes[1]["reuse"].as_u64()),
        (Some(1), Some(5)),
        "{v}"
    );
    for m in modes {
        assert!(m["jobs"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["failed"], 0, "{m}");
        assert!(
            m["p99_ms"].as_f64().unwrap() >= m["p50_ms"].as_f64().unwrap(),
            "{m}"
        );
    }
    // Single use never reuses; the reuse mode does, and parks fewer
    // containers than it runs jobs.
    assert_eq!(modes[0]["reused"], 0, "{v}");
    assert!(modes[1]["reused"].as_u64().unwrap() > 0, "{v}");
    assert!(
        modes[1]["containers_parked"].as_u64().unwrap() < modes[1]["jobs"].as_u64().unwrap(),
        "{v}"
    );
    assert!(v["reuse_over_single"].as_f64().unwrap() > 0.0, "{v}");
    assert_no_containers(&label);
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
