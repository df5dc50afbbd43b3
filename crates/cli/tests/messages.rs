//! What the binary says when things go wrong, from the outside: a bad duration
//! names its key, a job stopped at its timeout says so on stderr under `run`
//! and `submit`, and `bench` says which job arguments it measured.

mod common;

use common::server::{json, Server, BIN};
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A config with one busybox profile `bb` (this test's label) plus `extra`.
fn config(extra: &str) -> (PathBuf, String) {
    ensure_images();
    let label = unique("msg");
    let dir = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warmpool.toml");
    std::fs::write(
        &path,
        format!(
            "[profiles.bb]\nimage = \"{BUSYBOX}\"\nnetwork = \"none\"\nlabels = {{ \"{TEST_LABEL}\" = \"{label}\" }}\n{extra}\n"
        ),
    )
    .unwrap();
    (path, label)
}

fn warmpool(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_bad_duration_names_the_profile_and_the_key() {
    for (key, value) in [("job_timeout", "\"5 parsecs\""), ("kill_grace", "\"-2s\"")] {
        let (cfg, _) = config(&format!("{key} = {value}"));
        let out = warmpool(&["run", "-c", cfg.to_str().unwrap(), "-p", "bb", "--", "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(
            stderr.contains(&format!("profile \"bb\": key `{key}`: ")),
            "{key}: {stderr}"
        );
        let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
    }
}

#[test]
fn run_says_when_the_job_ran_past_its_timeout() {
    let (cfg, label) = config("job_timeout = \"1s\"\nkill_grace = \"1s\"");
    let _cleanup = CleanupGuard(label);
    let out = warmpool(&[
        "run",
        "-c",
        cfg.to_str().unwrap(),
        "-p",
        "bb",
        "--",
        "sleep",
        "30",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("warmpool: the job ran past its timeout ([profiles.bb] job_timeout, 1s) and was stopped"),
        "{stderr}"
    );
    // --timeout is named when it is what stopped the job.
    let out = warmpool(&[
        "run",
        "-c",
        cfg.to_str().unwrap(),
        "-p",
        "bb",
        "--timeout",
        "500ms",
        "--",
        "sleep",
        "30",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ran past its timeout (--timeout 500ms)"),
        "{stderr}"
    );
    // A job that ends in time prints nothing of warmpool's.
    let out = warmpool(&["run", "-c", cfg.to_str().unwrap(), "-p", "bb", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
}

#[test]
fn submit_says_when_the_job_ran_past_its_timeout() {
    let s = Server::start("", &[]);
    let out = Command::new(BIN)
        .args([
            "submit",
            "--server",
            &s.base,
            "-p",
            "bb",
            "--timeout",
            "1s",
            "--",
            "sleep",
            "30",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("ran past its timeout"), "{stderr}");
    let jobs = json(&s.get("/v1/jobs").1);
    println!("{jobs}");
}

#[test]
fn bench_names_the_job_arguments_it_measured() {
    let (cfg, label) = config("");
    let _cleanup = CleanupGuard(label);
    let out = warmpool(&[
        "bench",
        "-c",
        cfg.to_str().unwrap(),
        "-p",
        "bb",
        "--jobs",
        "2",
        "--",
        "echo",
        "hi",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("job args [\"echo\", \"hi\"]"), "{stdout}");
    assert!(!stdout.contains("job argv from the image"), "{stdout}");
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
}
