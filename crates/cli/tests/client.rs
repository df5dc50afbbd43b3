//! The client commands (`submit`, `jobs`, `logs`, `status`) from the outside: the
//! real binary against a real `warmpool serve` on a free loopback port and the
//! real engine.

mod common;

use common::server::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the client tests do with a server: run `warmpool` against it.
trait ClientExt {
    fn command(&self, args: &[&str]) -> Command;
    fn run(&self, args: &[&str]) -> Output;
    fn last_job(&self) -> serde_json::Value;
}

impl ClientExt for Server {
    /// `warmpool ARGS` against this server (its token in the environment).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("WARMPOOL_SERVER", &self.base)
            .env_remove("WARMPOOL_API_TOKEN")
            .stdin(Stdio::null());
        if let Some(t) = &self.token {
            cmd.env("WARMPOOL_API_TOKEN", t);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The newest job, as `warmpool jobs --json` shows it.
    fn last_job(&self) -> serde_json::Value {
        let out = self.run(&["jobs", "--json", "--limit", "1"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        jobs[0].clone()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn submit_streams_the_jobs_output_and_exits_with_its_code() {
    let s = Server::start("", &[]);
    let out = s.run(&[
        "submit",
        "--profile",
        "bb",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(7), "out\n".into(), "err\n".into()),
        "{}",
        s.log()
    );

    // Env (set, and taken from ours), stdin, and the --server flag over the env.
    let mut cmd = s.command(&[
        "submit",
        "--server",
        &s.base,
        "-p",
        "bb",
        "-e",
        "X=1",
        "-e",
        "FROM_HERE",
        "-i",
        "--",
        "sh",
        "-c",
        "echo $X $FROM_HERE; cat",
    ]);
    cmd.env("WARMPOOL_SERVER", "http://127.0.0.1:1")
        .env("FROM_HERE", "here")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped in\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "1 here\npiped in\n");

    // Death by a signal is 128+N, as `docker run` gives it.
    let out = s.run(&["submit", "-p", "bb", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", show(&out));

    // A refused job is warmpool's failure, with the server's reason.
    let out = s.run(&["submit", "-p", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("no profile \"nope\""),
        "{}",
        show(&out)
    );
}

#[test]
fn submit_shows_output_as_it_is_written_and_all_of_it() {
    let s = Server::start("", &[]);
    let mut child = s
        .command(&[
            "submit",
            "-p",
            "bb",
            "--",
            "sh",
            "-c",
            "echo first; sleep 3; echo second",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the first line came only after {:?}",
        started.elapsed()
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "second\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // Megabytes on both streams arrive whole, byte for byte.
    let out = s.run(&[
        "submit",
        "-p",
        "bb",
        "--",
        "sh",
        "-c",
        "head -c 4000000 /dev/zero; head -c 3000000 /dev/zero >&2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 4_000_000);
    assert_eq!(out.stderr.len(), 3_000_000);
    assert!(out.stdout.iter().chain(&out.stderr).all(|&b| b == 0));
}

#[test]
fn submit_sends_the_token() {
    let token = unique("tok");
    let s = Server::start("", &[("WARMPOOL_API_TOKEN", &token)]);
    let out = s.run(&["submit", "-p", "bb", "--", "echo", "authorized"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "authorized\n");

    let out = s
        .command(&["submit", "-p", "bb", "--", "true"])
        .env_remove("WARMPOOL_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("401") && err.contains("WARMPOOL_API_TOKEN is not set here"),
        "{err}"
    );
}

#[test]
fn ctrl_c_cancels_the_job() {
    let s = Server::start("", &[]);
    let mut child = s
        .command(&[
            "submit",
            "-p",
            "bb",
            "--",
            "sh",
            "-c",
            "echo started; sleep 30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    let started = Instant::now();
    unsafe { kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(10));
    let job = s.last_job();
    assert_eq!(job["state"], "cancelled", "{job}");
}

#[test]
fn jobs_lists_and_logs_prints() {
    let s = Server::start("", &[]);
    let out = s.run(&[
        "submit",
        "-p",
        "bb",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    let job = s.last_job();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["exit_code"], 7);

    let out = s.run(&["jobs"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "PROFILE", "STATE", "EXIT", "WARM", "CREATED", "(UTC)"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..4], [id.as_str(), "bb", "failed", "7"], "{table}");
    let out = s.run(&["jobs", "--state", "succeeded", "--profile", "bb"]);
    assert_eq!(text(&out.stdout).lines().count(), 1, "only the header");
    let out = s.run(&["jobs", "--state", "sleeping"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("sleeping"), "{}", show(&out));

    let out = s.run(&["logs", &id]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(0), "out\n".into(), "err\n".into())
    );
    let out = s.run(&["logs", "--stream", "stderr", &id]);
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("".into(), "err\n".into())
    );
    let out = s.run(&["logs", "j-no-such-job"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("no job"), "{}", show(&out));

    // --follow from the middle of a running job: what was written, then the rest.
    let mut child = s
        .command(&[
            "submit",
            "-p",
            "bb",
            "--",
            "sh",
            "-c",
            "echo one; echo e1 >&2; sleep 2; echo two; echo e2 >&2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut submitted = BufReader::new(child.stdout.take().unwrap());
    submitted.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    let running = s.last_job();
    assert_eq!(running["state"], "running", "{running}");
    let out = s.run(&["logs", "--follow", running["id"].as_str().unwrap()]);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(0), "one\ntwo\n".into(), "e1\ne2\n".into())
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    drop(submitted);
}

#[test]
fn status_shows_the_pools() {
    let s = Server::start("", &[]);
    let out = s.run(&["submit", "-p", "bb", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = s.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            "NODE", "PROFILE", "IMAGE", "IDLE", "BUSY", "STARTING", "QUEUED", "TARGET", "HITS",
            "MISSES", "HIT", "RATE", "CLAIM", "P50", "CLAIM", "P99"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..3], [s.instance.as_str(), "bb", BUSYBOX], "{table}");
    let hits: u64 = row[8].parse().unwrap();
    let misses: u64 = row[9].parse().unwrap();
    assert_eq!(hits + misses, 1, "{table}");
    assert!(row[10].ends_with('%'), "{table}");
    // One claim: its time, in ms, is both percentiles.
    for cell in &row[11..13] {
        let ms: f64 = cell.strip_suffix("ms").unwrap().parse().unwrap();
        assert!(ms > 0.0, "{table}");
    }

    // --watch, not on a terminal: a new table each interval, until Ctrl-C. Stop
    // it once it has printed three tables.
    let mut child = s
        .command(&["status", "--watch", "--interval", "200ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (chunk_tx, chunk_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
            if chunk_tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut watched = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while text(&watched).matches("PROFILE").count() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match chunk_rx.recv_timeout(left) {
            Ok(chunk) => watched.extend(chunk),
            Err(_) => panic!(
                "status --watch never printed three tables:\n{}",
                text(&watched)
            ),
        }
    }
    unsafe { kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    reader.join().unwrap();
    watched.extend(chunk_rx.try_iter().flatten());
    assert_eq!(status.code(), Some(0), "Ctrl-C ends the watch cleanly");
    assert!(
        !text(&watched).contains('\x1b'),
        "no escapes off a terminal"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let base = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["submit", "-p", "bb", "--", "true"],
        vec!["jobs"],
        vec!["logs", "j-1"],
        vec!["status"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env("WARMPOOL_SERVER", &base)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", show(&out));
        let err = text(&out.stderr);
        assert!(
            err.starts_with("warmpool: error: ")
                && err.contains(&format!(
                    "connection refused; is `warmpool serve` running at {base}?"
                )),
            "{args:?}: {err}"
        );
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
