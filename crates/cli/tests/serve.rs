//! `warmpool serve` from the outside: the real binary on a free loopback port,
//! the real engine, and curl as the client.

mod common;

use common::server::*;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A curl follower of the job's output, returned once it has received the job's
/// first line (bounded), with that line. Its output is read on until it ends,
/// so it never blocks on a full pipe.
fn attach_follower(s: &Server, id: &str) -> (std::process::Child, String) {
    let mut follower = Command::new("curl")
        .args(["-s", "-N"])
        .arg(format!("{}/v1/jobs/{id}/output?follow=true", s.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut followed = std::io::BufReader::new(follower.stdout.take().unwrap());
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut followed, &mut line);
        let _ = line_tx.send(line);
        let _ = std::io::copy(&mut followed, &mut std::io::sink());
    });
    let first = line_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the follower never received the job's first line");
    (follower, first)
}

#[test]
fn submit_wait_and_read_a_job() {
    let s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["sh","-c","echo hi $X; echo err >&2; exit 3"],"env":{"X":"1"}}"#,
    );
    assert_eq!(code, 200, "{body}\n{}", s.log());
    let j = json(&body);
    assert_eq!(j["state"], "failed");
    assert_eq!(j["exit_code"], 3);
    assert_eq!(j["stdout"], "hi 1\n");
    assert_eq!(j["stderr"], "err\n");
    let id = j["id"].as_str().unwrap().to_string();
    let (code, body) = s.get(&format!("/v1/jobs/{id}"));
    assert_eq!(code, 200);
    assert_eq!(json(&body)["stdout"], "hi 1\n");
    let (code, raw) = s.get(&format!("/v1/jobs/{id}/output?stream=stderr"));
    assert_eq!((code, raw.as_str()), (200, "err\n"));
    let (code, body) = s.post("/v1/jobs?wait=true", r#"{"profile":"bb","args":["true"]}"#);
    assert_eq!(code, 200);
    assert_eq!(json(&body)["state"], "succeeded");
    let (code, body) = s.get("/v1/jobs?state=succeeded&profile=bb&limit=10");
    assert_eq!(code, 200);
    assert_eq!(json(&body).as_array().unwrap().len(), 1);
    let (code, body) = s.get("/v1/pools");
    assert_eq!(code, 200);
    let pools = json(&body);
    assert_eq!(pools[0]["profile"], "bb");
    assert!(pools[0]["hits"].as_u64().unwrap() + pools[0]["misses"].as_u64().unwrap() >= 2);
}

#[test]
fn follow_output_live_and_cancel() {
    let s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs",
        r#"{"profile":"bb","args":["sh","-c","echo one; sleep 1; echo two"]}"#,
    );
    assert_eq!(code, 201, "{body}");
    let j = json(&body);
    assert_eq!(j["state"], "queued");
    let id = j["id"].as_str().unwrap().to_string();
    let (code, followed) = s.curl(&["-N"], &format!("/v1/jobs/{id}/output?follow=true"));
    assert_eq!(code, 200);
    assert_eq!(followed, "one\ntwo\n");
    let (code, body) = s.post("/v1/jobs", r#"{"profile":"bb","args":["sleep","30"]}"#);
    assert_eq!(code, 201);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    // Cancel a job that runs, not one still queued.
    s.wait_state(&id, "running");
    let (code, body) = s.post(&format!("/v1/jobs/{id}/cancel"), "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "cancelled");
    let (code, _) = s.post(&format!("/v1/jobs/{id}/cancel"), "");
    assert_eq!(code, 409, "an ended job cannot be cancelled");
}

#[test]
fn bad_input_gets_a_clear_4xx() {
    let s = Server::start("", &[]);
    for (body, want) in [
        ("{not json", "invalid job"),
        (r#"{"profile":"bb","surprise":true}"#, "surprise"),
        (r#"{"profile":"nope"}"#, "no profile"),
        (r#"{"profile":"bb","env":{"BAD-NAME":"x"}}"#, "BAD-NAME"),
        (r#"{"profile":"bb","timeout":"forever"}"#, "timeout"),
    ] {
        let (code, resp) = s.post("/v1/jobs", body);
        assert_eq!(code, 400, "{body} -> {resp}");
        assert!(
            json(&resp)["error"].as_str().unwrap().contains(want),
            "{resp}"
        );
    }
    let (code, resp) = s.get("/v1/jobs/j-no-such-job");
    assert_eq!(code, 404);
    assert!(json(&resp)["error"].as_str().is_some());
    let big = format!(
        r#"{{"profile":"bb","stdin":"{}"}}"#,
        "x".repeat(11 * 1024 * 1024)
    );
    let path = std::env::temp_dir().join(unique("big.json"));
    std::fs::write(&path, big).unwrap();
    let (code, _) = s.curl(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", path.display()),
        ],
        "/v1/jobs",
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 413);
    let (code, body) = s.get("/v1/jobs?state=succeeded");
    assert_eq!(
        (code, body.as_str()),
        (200, "[]"),
        "nothing was half-created"
    );
}

#[test]
fn queue_overflow_is_429_with_retry_after() {
    let s = Server::start("max_containers = 1\nmax_queue = 0\n", &[]);
    let (code, _) = s.post("/v1/jobs", r#"{"profile":"bb","args":["sleep","5"]}"#);
    assert_eq!(code, 201);
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"profile":"bb"}"#,
        ])
        .arg(format!("{}/v1/jobs", s.base))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.starts_with("http/1.1 429"),
        "{text}\npools: {:?}\njobs: {:?}",
        s.get("/v1/pools"),
        s.get("/v1/jobs")
    );
    assert!(text.contains("retry-after:"), "{text}");
}

#[test]
fn a_burst_of_submits_never_queues_past_max_queue() {
    let s = Server::start("max_containers = 1\nmax_queue = 2\n", &[]);
    let (code, body) = s.post("/v1/jobs", r#"{"profile":"bb","args":["sleep","20"]}"#);
    assert_eq!(code, 201, "{body}");
    s.wait_state(json(&body)["id"].as_str().unwrap(), "running");
    // The pool is full: two more may wait, however many ask at once.
    let s = std::sync::Arc::new(s);
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.post("/v1/jobs", r#"{"profile":"bb","args":["true"]}"#).0)
        })
        .collect();
    let codes: Vec<u16> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = codes.iter().filter(|c| **c == 201).count();
    assert!(codes.iter().all(|c| *c == 201 || *c == 429), "{codes:?}");
    assert_eq!(accepted, 2, "max_queue = 2 with the pool full: {codes:?}");
}

#[test]
fn auth_when_a_token_is_set() {
    let token = unique("tok");
    let mut s = Server::start("", &[("WARMPOOL_API_TOKEN", &token)]);
    assert_eq!(s.get("/v1/pools").0, 200, "with the token");
    s.token = Some("wrong".into());
    assert_eq!(s.get("/v1/pools").0, 401);
    s.token = None;
    assert_eq!(s.get("/v1/pools").0, 401);
    assert_eq!(s.get("/healthz").0, 200, "health is open");
}

#[test]
fn refuses_a_public_listen_without_a_token() {
    let dir = std::env::temp_dir().join(unique("pub"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("w.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"0.0.0.0:{}\"\n[profiles.bb]\nimage = \"{BUSYBOX}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env_remove("WARMPOOL_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARMPOOL_API_TOKEN"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_are_redacted_and_never_stored() {
    let secret = unique("s3cret");
    let s = Server::start("secret_env = [\"API_TOKEN\"]\n", &[("API_TOKEN", &secret)]);
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["sh","-c","echo token=$API_TOKEN; echo len=${#API_TOKEN}"],"env":{"PLAIN":"visible"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let j = json(&body);
    assert_eq!(
        j["stdout"],
        format!("token=[redacted]\nlen={}\n", secret.len())
    );
    // Nothing under data_dir holds the secret (the database, its WAL, anything).
    for entry in std::fs::read_dir(s.dir.join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret stored"
        );
    }
    let (code, resp) = s.post("/v1/jobs", r#"{"profile":"bb","env":{"API_TOKEN":"mine"}}"#);
    assert_eq!(code, 400, "{resp}");
}

#[test]
fn metrics_are_prometheus_text() {
    let s = Server::start("", &[]);
    s.post("/v1/jobs?wait=true", r#"{"profile":"bb","args":["true"]}"#);
    let (code, text) = s.get("/metrics");
    assert_eq!(code, 200);
    let sample = regex_lite(&text);
    assert!(sample > 10, "{text}");
    assert!(
        text.contains("warmpool_pool_idle{profile=\"bb\"}"),
        "{text}"
    );
    assert!(
        text.contains("warmpool_jobs_total{state=\"succeeded\"} 1"),
        "{text}"
    );
    // One node alone is a cluster of one, holding its lease.
    assert!(text.contains("warmpool_node_leased 1"), "{text}");
    dashboard_queries_only_exported_metrics(&text);
}

/// Every metric the Grafana dashboard in `examples/` queries is one this server
/// exports (a sample name in `text`), and each panel has a query.
fn dashboard_queries_only_exported_metrics(text: &str) {
    let path = repo_root().join("examples/grafana/warmpool-dashboard.json");
    let dash = json(&std::fs::read_to_string(&path).unwrap());
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut queried = std::collections::BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("warmpool_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                queried.insert(name);
            }
        }
    }
    let missing: Vec<_> = queried
        .iter()
        .filter(|m| !exported.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}"
    );
    // The hit rate, claim latency and engine panels an operator alerts on.
    for m in [
        "warmpool_pool_hits_total",
        "warmpool_claim_seconds_bucket",
        "warmpool_pool_engine_down",
    ] {
        assert!(queried.contains(m), "the dashboard does not show {m}");
    }
}

#[test]
fn backup_copies_the_store_while_the_server_runs() {
    let s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["echo","kept"]}"#,
    );
    assert_eq!(code, 200, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let restored = s.dir.join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let dest = restored.join("jobs.sqlite3");
    let out = std::process::Command::new(BIN)
        .args(["backup", "--config", s.cfg.to_str().unwrap(), "--to"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    // Again onto the same file: refused, exit 125, the reason said.
    let again = std::process::Command::new(BIN)
        .args(["backup", "--config", s.cfg.to_str().unwrap(), "--to"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&again.stderr).contains("new file"));
    // The copy opens as a store and holds the job.
    let copy = warmpool_store::SqliteStore::open(
        &restored,
        std::sync::Arc::new(warmpool_store::SystemClock),
    )
    .expect("the copy opens as a store");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let job = rt
        .block_on(warmpool_store::JobStore::get(&copy, &id))
        .unwrap()
        .expect("the job is in the copy");
    assert_eq!(job.state, warmpool_store::JobState::Succeeded);
}

/// Every line is a comment or `name{labels} value`; the number of samples.
fn regex_lite(text: &str) -> usize {
    let mut samples = 0;
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = name_labels.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = name_labels.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
            }
        }
        samples += 1;
    }
    samples
}

#[test]
fn a_restart_loses_no_accepted_job() {
    let mut s = Server::start("max_containers = 1\n", &[]);
    let (code, body) = s.post("/v1/jobs", r#"{"profile":"bb","args":["sleep","30"]}"#);
    assert_eq!(code, 201);
    let running = json(&body)["id"].as_str().unwrap().to_string();
    s.wait_state(&running, "running");
    let (code, body) = s.post(
        "/v1/jobs",
        r#"{"profile":"bb","args":["echo","after the restart"]}"#,
    );
    assert_eq!(code, 201);
    let queued = json(&body)["id"].as_str().unwrap().to_string();
    s.signal(9);
    s.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = json(&s.get(&format!("/v1/jobs/{queued}")).1);
        if j["state"] == "succeeded" {
            assert_eq!(j["stdout"], "after the restart\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queued job did not run: {j}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let j = json(&s.get(&format!("/v1/jobs/{running}")).1);
    assert_eq!(j["state"], "interrupted", "{j}");
    assert!(j["error"].as_str().unwrap_or("").contains("restart"), "{j}");
}

#[test]
fn sigterm_finishes_running_jobs_and_leaves_no_container() {
    let mut s = Server::start("min_idle = 2\nmax_containers = 2\n", &[]);
    let (code, body) = s.post(
        "/v1/jobs",
        r#"{"profile":"bb","args":["sh","-c","sleep 1; echo done"]}"#,
    );
    assert_eq!(code, 201);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    s.wait_state(&id, "running");
    let status = s.signal(15);
    assert_eq!(status.code(), Some(0), "{}", s.log());
    assert_eq!(s.containers(), "", "containers left after SIGTERM");
    // The running job finished within the grace, and says so after a restart.
    s.spawn();
    let j = json(&s.get(&format!("/v1/jobs/{id}")).1);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["stdout"], "done\n");
}

#[test]
fn a_follower_that_disconnects_does_not_disturb_the_job() {
    let s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs",
        r#"{"profile":"bb","args":["sh","-c","echo start; sleep 1.5; echo end"]}"#,
    );
    assert_eq!(code, 201);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    // The follower goes away mid-stream: once it has the first line, while the
    // job still runs.
    let (mut follower, first) = attach_follower(&s, &id);
    assert_eq!(first, "start\n", "the follower's first line");
    let _ = follower.kill();
    let _ = follower.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = json(&s.get(&format!("/v1/jobs/{id}")).1);
        if j["state"] != "running" && j["state"] != "queued" {
            assert_eq!(j["state"], "succeeded", "{j}");
            assert_eq!(j["stdout"], "start\nend\n");
            break;
        }
        assert!(Instant::now() < deadline, "the job never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_with_a_follower_attached_stops_within_the_grace() {
    let mut s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs",
        r#"{"profile":"bb","args":["sh","-c","echo up; sleep 60"]}"#,
    );
    assert_eq!(code, 201);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    s.wait_state(&id, "running");
    // A follower holds a connection open: signal only once it is attached, that
    // is once the job's first line has reached it.
    let (mut follower, first) = attach_follower(&s, &id);
    assert_eq!(first, "up\n", "the follower's first line");
    let started = Instant::now();
    let status = s.signal(15);
    // shutdown_grace is 5 s in these tests; the job outlives it and is killed.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the stop hung on open connections"
    );
    assert_eq!(status.code(), Some(0), "{}", s.log());
    assert_eq!(s.containers(), "");
    let _ = follower.kill();
    let _ = follower.wait();
    s.spawn();
    let j = json(&s.get(&format!("/v1/jobs/{id}")).1);
    assert_eq!(j["state"], "interrupted", "{j}");
}

#[test]
fn server_sent_events_carry_both_streams_and_the_end() {
    let s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs",
        r#"{"profile":"bb","args":["sh","-c","echo out1; echo err1 >&2; sleep 0.5; echo out2; exit 2"]}"#,
    );
    assert_eq!(code, 201);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let (code, events) = s.curl(
        &["-N", "-H", "Accept: text/event-stream"],
        &format!("/v1/jobs/{id}/output?follow=true"),
    );
    assert_eq!(code, 200);
    // Reassemble each stream from its events (data lines joined by newlines).
    let mut out = String::new();
    let mut err = String::new();
    let mut end = None;
    for block in events.split("\n\n").filter(|b| !b.is_empty()) {
        let mut lines = block.lines();
        let event = lines
            .next()
            .unwrap()
            .strip_prefix("event: ")
            .unwrap()
            .to_string();
        let data: Vec<&str> = lines
            .map(|l| l.strip_prefix("data: ").unwrap_or(l))
            .collect();
        let data = data.join("\n");
        match event.as_str() {
            "stdout" => out.push_str(&data),
            "stderr" => err.push_str(&data),
            "end" => end = Some(json(&data)),
            other => panic!("unknown event {other}"),
        }
    }
    assert_eq!(out, "out1\nout2\n");
    assert_eq!(err, "err1\n");
    let end = end.expect("an end event");
    assert_eq!(end["state"], "failed");
    assert_eq!(end["exit_code"], 2);
}

#[test]
fn the_openapi_document_is_valid() {
    let s = Server::start("", &[]);
    let (code, doc) = s.get("/v1/openapi.json");
    assert_eq!(code, 200);
    let v = json(&doc);
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/output",
        "/v1/jobs/{id}/cancel",
        "/v1/pools",
    ] {
        assert!(v["paths"][path].is_object(), "{path} is described");
    }
    // Validated by the reference validator (installed from PyPI when missing).
    let python = python_package(
        "py-openapi",
        "openapi-spec-validator",
        OPENAPI_SPEC_VALIDATOR,
    )
    .join("bin/python");
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(sys.stdin)); print('valid')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), doc.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenAPI document does not validate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");
}

#[test]
fn a_job_that_cannot_start_costs_no_parked_container() {
    // A secret the server does not have: every job of this profile fails before
    // it starts, and must leave the parked container to the next job.
    let missing = unique("WP_MISSING").replace('-', "_").to_uppercase();
    let s = Server::start(
        &format!("min_idle = 1\nmax_idle = 1\nsecret_env = [\"{missing}\"]\n"),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while json(&s.get("/v1/pools").1)[0]["idle"] != 1 {
        assert!(Instant::now() < deadline, "nothing parked:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = s.post("/v1/jobs?wait=true", r#"{"profile":"bb","args":["true"]}"#);
    assert_eq!(code, 200, "{body}\n{}", s.log());
    let j = json(&body);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains(&missing), "{j}");
    let pools = json(&s.get("/v1/pools").1);
    assert_eq!(
        pools[0]["hits"], 0,
        "a parked container was claimed: {pools}"
    );
    assert_eq!(pools[0]["idle"], 1, "{pools}");
}

#[test]
fn the_env_of_a_job_that_never_started_is_scrubbed_from_the_store() {
    let missing = unique("WP_MISSING").replace('-', "_").to_uppercase();
    let s = Server::start(&format!("secret_env = [\"{missing}\"]\n"), &[]);
    let private = unique("private-value");
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        &format!(r#"{{"profile":"bb","args":["true"],"env":{{"MINE":"{private}"}}}}"#),
    );
    assert_eq!(code, 200, "{body}\n{}", s.log());
    assert_eq!(json(&body)["state"], "failed", "{body}");
    // Within a second or so of its end, no file under data_dir (the database,
    // its WAL) holds the job's env value any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(s.dir.join("data")).unwrap().any(|entry| {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
            bytes
                .windows(private.len())
                .any(|w| w == private.as_bytes())
        });
        if !found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the env value of an ended job is still in the store's files"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A job's JSON shows a head of its output, never the whole of a large one:
/// 10 MiB of NUL bytes (once 63 MB of `\u0000` escapes) is a body under 2 MiB
/// that says how much there is, and `/output` has every byte.
#[test]
fn a_job_with_megabytes_of_nul_bytes_shows_a_head() {
    const TEN_MIB: usize = 10 << 20;
    let s = Server::start("output_limit = \"16m\"\n", &[]);
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["head","-c","10485760","/dev/zero"]}"#,
    );
    assert_eq!(code, 200, "{}", s.log());
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let (code, got) = s.get(&format!("/v1/jobs/{id}"));
    assert_eq!(code, 200);
    for body in [body, got] {
        assert!(
            body.len() < 2 << 20,
            "a body of {} bytes for a 1 MiB inline limit",
            body.len()
        );
        let j = json(&body);
        assert_eq!(j["state"], "succeeded", "{}", &body[..body.len().min(500)]);
        assert_eq!(j["stdout_bytes"], TEN_MIB as u64);
        assert_eq!(j["stdout_cut"], true);
        assert_eq!(j["stderr_bytes"], 0);
        assert_eq!(j["stderr_cut"], false);
        assert_eq!(j["truncated"], false);
        assert_eq!(j["output_url"], format!("/v1/jobs/{id}/output"));
        let text = j["stdout"].as_str().unwrap();
        assert!(!text.is_empty() && text.chars().all(|c| c == '\u{FFFD}'));
        assert!(!body.contains("\\u0000"));
    }
    let (code, raw) = s.get_bytes(&format!("/v1/jobs/{id}/output"));
    assert_eq!(code, 200);
    assert_eq!(raw.len(), TEN_MIB);
    assert!(raw.iter().all(|&b| b == 0));
}

/// Output that is not UTF-8 is shown as text with U+FFFD for what is not, and
/// is exact at `/output`.
#[test]
fn output_that_is_not_utf8_is_text_inline_and_exact_at_output() {
    let s = Server::start("", &[]);
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["printf","ok\\377\\376\\000\\033[1mend\\n\\tx\\r\\n"]}"#,
    );
    assert_eq!(code, 200, "{}", s.log());
    let j = json(&body);
    let expected: &[u8] = b"ok\xff\xfe\0\x1b[1mend\n\tx\r\n";
    assert_eq!(
        j["stdout"], "ok\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}[1mend\n\tx\r\n",
        "{body}"
    );
    assert_eq!(j["stdout_bytes"], expected.len() as u64);
    assert_eq!(j["stdout_cut"], false);
    let id = j["id"].as_str().unwrap();
    assert_eq!(json(&s.get(&format!("/v1/jobs/{id}")).1), j);
    let (code, raw) = s.get_bytes(&format!("/v1/jobs/{id}/output"));
    assert_eq!((code, raw.as_slice()), (200, expected));
}

/// `[server] inline_output` sets the head; the list shows none.
#[test]
fn the_inline_head_is_configurable() {
    let s = Server::start_with("inline_output = \"4k\"", "", &[]);
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["sh","-c","head -c 100000 /dev/zero | tr '\\0' a; echo err >&2"]}"#,
    );
    assert_eq!(code, 200, "{}", s.log());
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let (_, got) = s.get(&format!("/v1/jobs/{id}"));
    for j in [json(&body), json(&got)] {
        assert_eq!(j["stdout"].as_str().unwrap(), "a".repeat(4096));
        assert_eq!(j["stdout_bytes"], 100_000);
        assert_eq!(j["stdout_cut"], true);
        assert_eq!(j["stderr"], "err\n");
        assert_eq!(j["stderr_cut"], false);
    }
    let (code, list) = s.get("/v1/jobs");
    assert_eq!(code, 200);
    let listed = &json(&list)[0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["stdout"], "");
    assert_eq!(
        (
            listed["stdout_bytes"].as_u64(),
            listed["stdout_cut"].as_bool()
        ),
        (Some(100_000), Some(true))
    );
    let (code, raw) = s.get_bytes(&format!("/v1/jobs/{id}/output"));
    assert_eq!((code, raw.len()), (200, 100_000));
}

/// POST a body too large for a command line (curl reads it from a file).
fn post_file(s: &Server, path: &str, body: &str) -> (u16, String) {
    let file = std::env::temp_dir().join(unique("body.json"));
    std::fs::write(&file, body).unwrap();
    let r = s.curl(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
        ],
        path,
    );
    let _ = std::fs::remove_file(&file);
    r
}

/// `n` env entries `Knnnn=vvv...`, each `len` bytes as the kernel counts them
/// (with its NUL).
fn env_entries(n: usize, len: usize) -> serde_json::Map<String, serde_json::Value> {
    (0..n)
        .map(|i| {
            let key = format!("K{i:04}");
            let value = "v".repeat(len - key.len() - 2);
            (key, serde_json::Value::String(value))
        })
        .collect()
}

#[test]
fn job_input_over_the_limits_is_a_fast_400_naming_the_limit() {
    let s = Server::start("", &[]);
    let json_body = |v: serde_json::Value| v.to_string();
    let cases = [
        (
            json_body(
                serde_json::json!({"profile": "bb", "args": ["true"], "env": env_entries(60_000, 16)}),
            ),
            "env: 60000 entries, over the limit of 4096 ([server] max_env)",
        ),
        (
            json_body(
                serde_json::json!({"profile": "bb", "args": ["true"], "env": {"BIG": "x".repeat(1 << 20)}}),
            ),
            "over the limit of 1048576 ([server] max_env_bytes)",
        ),
        (
            json_body(serde_json::json!({"profile": "bb", "args": vec!["a"; 5000]})),
            "args: 5000 arguments, over the limit of 4096 ([server] max_args)",
        ),
        (
            json_body(
                serde_json::json!({"profile": "bb", "args": ["echo", "x".repeat(512 << 10)]}),
            ),
            "over the limit of 524288 ([server] max_args_bytes)",
        ),
    ];
    for (body, want) in cases {
        let began = Instant::now();
        let (code, resp) = post_file(&s, "/v1/jobs", &body);
        let took = began.elapsed();
        assert_eq!(code, 400, "{want}: {resp}");
        let error = json(&resp)["error"].as_str().unwrap().to_string();
        assert!(error.contains(want), "{error}");
        // Before the limits a 60k-entry env took 8 s to be accepted; a refusal
        // is milliseconds. Bounded generously for a busy machine.
        assert!(took < Duration::from_secs(20), "{want}: took {took:?}");
    }
    let (code, body) = s.get("/v1/jobs");
    assert_eq!((code, body.as_str()), (200, "[]"), "nothing was stored");
}

#[test]
fn a_job_at_the_limits_runs_with_all_its_input() {
    let s = Server::start("", &[]);
    // 4096 env entries of 256 bytes: 1 MiB, both env limits exactly.
    let env = env_entries(4096, 256);
    // 4096 arguments in 512 KiB exactly: sh -c SCRIPT sh ARGS...
    let script = "echo $#; env | grep -c ^K; printf %s \"$K4095\" | wc -c; wc -c";
    let mut args: Vec<String> = vec!["sh".into(), "-c".into(), script.into(), "sh".into()];
    let used: usize = args.iter().map(|a| a.len() + 1).sum();
    let rest = 512 * 1024 - used;
    let n = 4096 - args.len();
    for i in 0..n {
        let len = rest / n - 1 + if i == n - 1 { rest % n } else { 0 };
        args.push("a".repeat(len));
    }
    assert_eq!(args.iter().map(|a| a.len() + 1).sum::<usize>(), 512 * 1024);
    let stdin = "x".repeat(1 << 20);
    let body = serde_json::json!({"profile": "bb", "env": env, "args": args, "stdin": stdin});
    let (code, resp) = post_file(&s, "/v1/jobs?wait=true", &body.to_string());
    assert_eq!(code, 200, "{resp}\n{}", s.log());
    let j = json(&resp);
    assert_eq!(j["state"], "succeeded", "{j}");
    let lines: Vec<&str> = j["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::trim)
        .collect();
    assert_eq!(lines, ["4092", "4096", "249", "1048576"], "{j}");

    // The job's timeout runs from the hand-over, whatever the spec's size: a
    // job at the limits that overruns a 2s timeout ends within its grace.
    let body = serde_json::json!({"profile": "bb", "env": env_entries(4096, 256), "args": ["sleep", "120"], "timeout": "2s"});
    let began = Instant::now();
    let (code, resp) = post_file(&s, "/v1/jobs?wait=true", &body.to_string());
    assert_eq!(code, 200, "{resp}");
    assert_eq!(json(&resp)["state"], "timed_out", "{resp}");
    assert!(
        began.elapsed() < Duration::from_secs(50),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn big_submits_do_not_stall_healthz() {
    let s = Server::start("", &[]);
    let over =
        serde_json::json!({"profile": "bb", "args": ["true"], "env": env_entries(60_000, 16)})
            .to_string();
    let near =
        serde_json::json!({"profile": "bb", "args": ["true"], "env": env_entries(4000, 250)})
            .to_string();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let (checks, slow) = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..3 {
                    let (code, resp) = post_file(&s, "/v1/jobs", &over);
                    assert_eq!(code, 400, "{resp}");
                    let (code, resp) = post_file(&s, "/v1/jobs", &near);
                    assert_eq!(code, 201, "{resp}");
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // Before, two 60k-entry submits held both async workers for 8 s and
        // /healthz with them. Every check must answer within a generous bound.
        let (mut checks, mut slow) = (0, Vec::new());
        while done.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            let began = Instant::now();
            let (code, body) = s.curl(&["--max-time", "5"], "/healthz");
            checks += 1;
            if code != 200 {
                slow.push((code, body, began.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (checks, slow)
    });
    assert!(checks > 0);
    assert!(slow.is_empty(), "{checks} checks, failed: {slow:?}");
}

/// One request as curl sends it, with the server's token or without:
/// (status, Content-Type without its parameters, body).
fn answer(s: &Server, token: bool, args: &[&str], path: &str) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-S",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
        "--max-time",
        "60",
    ]);
    if let (true, Some(t)) = (token, &s.token) {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .args(args)
        .arg(format!("{}{path}", s.base))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", ""));
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    let ctype = ctype.split(';').next().unwrap_or("").trim().to_string();
    (code.trim().parse().unwrap_or(0), ctype, body.to_string())
}

/// Every (path template, method) the document lists.
fn documented_operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((path.clone(), method.clone()));
        }
    }
    ops
}

#[test]
fn every_answer_a_route_gives_is_in_the_openapi_document() {
    let token = unique("tok");
    // One container and no queue (a 429 is one running job away); a small
    // max_body (a 413 is a small body away).
    let s = Server::start_with(
        "max_body = \"64k\"",
        "max_containers = 1\nmax_queue = 0\n",
        &[("WARMPOOL_API_TOKEN", &token)],
    );
    let (code, _, doc) = answer(&s, true, &[], "/v1/openapi.json");
    assert_eq!(code, 200);
    let doc = json(&doc);
    let ops = documented_operations(&doc);
    // What the server answered, per operation: (template, method, status).
    let mut seen = std::collections::BTreeSet::new();
    let mut check =
        |template: &str, method: &str, want: u16, (code, ctype, body): (u16, String, String)| {
            assert_eq!(code, want, "{method} {template}: {ctype} {body}");
            let r = &doc["paths"][template][method]["responses"][code.to_string()];
            assert!(
                r.is_object(),
                "{method} {template} answered {code}, which the document does not list: {body}"
            );
            match r.get("content").and_then(|c| c.as_object()) {
                Some(types) => assert!(
                    types.contains_key(&ctype),
                    "{method} {template} {code}: {ctype} is not one of {:?}",
                    types.keys()
                ),
                None => assert!(
                    body.is_empty(),
                    "{method} {template} {code}: a body the document does not describe"
                ),
            }
            if ctype == "application/json" && code >= 400 {
                assert!(json(&body)["error"].is_string(), "{body}");
            }
            seen.insert((template.to_string(), method.to_string(), code.to_string()));
            body
        };
    let concrete = |t: &str| t.replace("{id}", "j-no-such-job");
    let method_args = |m: &str| vec!["-X".to_string(), m.to_uppercase()];
    let many_headers: Vec<String> = (0..120)
        .flat_map(|i| ["-H".to_string(), format!("X-Filler-{i}: x")])
        .collect();
    let long_query = format!("?x={}", "a".repeat(70_000));
    for (template, method) in &ops {
        let m = method_args(method);
        let m: Vec<&str> = m.iter().map(String::as_str).collect();
        let path = concrete(template);
        // The HTTP layer's answers, before any route: a request target over
        // 64 KiB, over 100 headers.
        check(
            template,
            method,
            414,
            answer(&s, true, &m, &format!("{path}{long_query}")),
        );
        let mut args = m.clone();
        args.extend(many_headers.iter().map(String::as_str));
        check(template, method, 431, answer(&s, true, &args, &path));
        // Every /v1 route asks for the token; the others do not.
        if template.starts_with("/v1/") {
            check(template, method, 401, answer(&s, false, &m, &path));
            let mut wrong = m.clone();
            wrong.extend(["-H", "Authorization: Bearer wrong"]);
            check(template, method, 401, answer(&s, false, &wrong, &path));
        }
    }
    let post = |body: &str| {
        vec![
            "-X".to_string(),
            "POST".to_string(),
            "-H".to_string(),
            "Content-Type: application/json".to_string(),
            "--data-binary".to_string(),
            body.to_string(),
        ]
    };
    let submit = |q: &str, body: &str| {
        let args = post(body);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        answer(&s, true, &args, &format!("/v1/jobs{q}"))
    };
    let get = |path: &str| answer(&s, true, &[], path);
    let jobs = "/v1/jobs";

    // POST /v1/jobs
    let ended = check(
        jobs,
        "post",
        200,
        submit("?wait=true", r#"{"profile":"bb","args":["true"]}"#),
    );
    let ended = json(&ended)["id"].as_str().unwrap().to_string();
    for (q, body, says) in [
        ("", "{not json", "invalid job"),
        ("", r#"{"profile":"bb","surprise":1}"#, "surprise"),
        // Schema and server agree: "" is no profile (the schema's enum and minLength).
        ("", r#"{"profile":""}"#, "no profile \"\""),
        ("", r#"{"profile":"nope"}"#, "no profile \"nope\""),
        ("", r#"{"profile":"bb","timeout":"0s"}"#, "timeout"),
        ("", r#"{"profile":"bb","env":{"A-B":"x"}}"#, "A-B"),
        ("?wait=maybe", r#"{"profile":"bb"}"#, "invalid query"),
        (
            "?wait=true&wait=false",
            r#"{"profile":"bb"}"#,
            "duplicate field `wait`",
        ),
    ] {
        let body = check(jobs, "post", 400, submit(q, body));
        assert!(
            json(&body)["error"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let profile = &doc["components"]["schemas"]["SubmitJob"]["properties"]["profile"];
    assert_eq!(profile["enum"], serde_json::json!(["bb"]), "{profile}");
    assert_eq!(profile["minLength"], 1, "{profile}");
    let big = format!(r#"{{"profile":"bb","stdin":"{}"}}"#, "x".repeat(100_000));
    let file = s.dir.join("big.json");
    std::fs::write(&file, big).unwrap();
    let mut args = post("");
    args.pop();
    args.push(format!("@{}", file.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(jobs, "post", 413, answer(&s, true, &args, jobs));

    // GET /v1/jobs
    check(
        jobs,
        "get",
        200,
        get("/v1/jobs?state=succeeded&profile=bb&limit=1"),
    );
    for (q, says) in [
        ("limit=0", "limit: 0 is out of range (1 to 1000)"),
        ("limit=1001", "limit: 1001 is out of range (1 to 1000)"),
        ("limit=-1", "invalid query"),
        ("limit=1&limit=2", "duplicate field `limit`"),
        ("state=sleeping", "not a job state"),
        ("state=", "not a job state"),
    ] {
        let body = check(jobs, "get", 400, get(&format!("/v1/jobs?{q}")));
        assert!(
            json(&body)["error"].as_str().unwrap().contains(says),
            "{q}: {body}"
        );
    }

    // GET /v1/jobs/{id}
    let one = "/v1/jobs/{id}";
    check(one, "get", 200, get(&format!("/v1/jobs/{ended}")));
    check(one, "get", 404, get("/v1/jobs/j-no-such-job"));
    check(one, "get", 400, get("/v1/jobs/%FF"));

    // GET /v1/jobs/{id}/output
    let output = "/v1/jobs/{id}/output";
    check(output, "get", 200, get(&format!("/v1/jobs/{ended}/output")));
    check(
        output,
        "get",
        200,
        answer(
            &s,
            true,
            &["-H", "Accept: text/event-stream"],
            &format!("/v1/jobs/{ended}/output"),
        ),
    );
    check(output, "get", 404, get("/v1/jobs/j-no-such-job/output"));
    check(output, "get", 400, get("/v1/jobs/%FF/output"));
    for q in [
        "stream=stdin",
        "stream=stdout&stream=stderr",
        "follow=maybe",
    ] {
        check(
            output,
            "get",
            400,
            get(&format!("/v1/jobs/{ended}/output?{q}")),
        );
        // The stream is checked for SSE too, which carries both.
        check(
            output,
            "get",
            400,
            answer(
                &s,
                true,
                &["-H", "Accept: text/event-stream"],
                &format!("/v1/jobs/{ended}/output?{q}"),
            ),
        );
    }

    // POST /v1/jobs/{id}/cancel, and a full queue
    let cancel = "/v1/jobs/{id}/cancel";
    let running = check(
        jobs,
        "post",
        201,
        submit("", r#"{"profile":"bb","args":["sleep","30"]}"#),
    );
    let running = json(&running)["id"].as_str().unwrap().to_string();
    s.wait_state(&running, "running");
    let body = check(
        jobs,
        "post",
        429,
        submit("", r#"{"profile":"bb","args":["true"]}"#),
    );
    assert!(body.contains("max_queue"), "{body}");
    let cancel_path = |id: &str| format!("/v1/jobs/{id}/cancel");
    let post_empty = ["-X", "POST"];
    check(
        cancel,
        "post",
        200,
        answer(&s, true, &post_empty, &cancel_path(&running)),
    );
    check(
        cancel,
        "post",
        409,
        answer(&s, true, &post_empty, &cancel_path(&running)),
    );
    check(
        cancel,
        "post",
        404,
        answer(&s, true, &post_empty, &cancel_path("j-no-such-job")),
    );
    check(
        cancel,
        "post",
        400,
        answer(&s, true, &post_empty, "/v1/jobs/%FF/cancel"),
    );

    // The rest
    for path in [
        "/v1/pools",
        "/v1/nodes",
        "/v1/openapi.json",
        "/healthz",
        "/metrics",
    ] {
        check(path, "get", 200, get(path));
    }
    let readyz = get("/readyz");
    let code = readyz.0;
    assert!(code == 200 || code == 503, "{readyz:?}");
    check("/readyz", "get", code, readyz);

    // What the document lists and no request here provoked: failures of the
    // store (500; 503 while it is unreachable) and of the server, a shutdown,
    // a job removed by retention while a submit waits for it, a pool refilling.
    let mut unprovoked = Vec::new();
    for (template, method) in &ops {
        for status in doc["paths"][template][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
        {
            if !seen.contains(&(template.clone(), method.clone(), status.clone())) {
                unprovoked.push(format!("{method} {template} {status}"));
            }
        }
    }
    let expected = |u: &String| {
        let (route, status) = u.rsplit_once(' ').unwrap();
        (status == "500" && route.contains(" /v1/"))
            || (status == "503" && route.contains(" /v1/"))
            || u == "post /v1/jobs 404"
            || u == "get /readyz 503"
            || u == "get /readyz 200"
    };
    let missed: Vec<&String> = unprovoked.iter().filter(|u| !expected(u)).collect();
    assert!(
        missed.is_empty(),
        "documented but never provoked: {missed:?}"
    );
}

/// The schemathesis release the suite runs (and `.ci/run` installs): its
/// command line changed between major versions.
const SCHEMATHESIS: &str = "4.32.5";

/// The openapi-spec-validator release the suite validates with.
const OPENAPI_SPEC_VALIDATOR: &str = "0.9.0";

/// schemathesis, installed when missing (see [`python_package`]).
fn schemathesis() -> std::path::PathBuf {
    python_package("py", "schemathesis", SCHEMATHESIS).join("bin/schemathesis")
}

/// The virtualenv `target/<venv>` (`.ci/run` puts schemathesis in `target/py`
/// too) holding `package` at `version`, installed from PyPI when missing (and
/// python3-venv with tests/need.sh); a clear panic when that cannot be done (no
/// python3 or no PyPI), never a skip. One installer at a time.
fn python_package(venv: &str, package: &str, version: &str) -> std::path::PathBuf {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let venv = target.join(venv);
    let python = venv.join("bin/python");
    let installed = || {
        Command::new(&python)
            .args([
                "-c",
                &format!("import importlib.metadata as m; print(m.version({package:?}))"),
            ])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    if installed() == version {
        return venv;
    }
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e} (the serve suite needs python3)"));
        assert!(
            out.status.success(),
            "{what} failed: the serve suite runs {package} {version} from PyPI \
             (`.ci/run` installs it; or: python3 -m venv {v} && {v}/bin/pip install {package}=={version}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            v = venv.display(),
        );
    };
    if !python.exists() {
        // Debian's python3 makes virtualenvs only with python3-venv.
        run(
            Command::new("bash")
                .arg(repo_root().join("tests/need.sh"))
                .arg("python3-venv"),
            "tests/need.sh python3-venv",
        );
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
    }
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            &format!("{package}=={version}"),
        ]),
        &format!("pip install {package}"),
    );
    let v = installed();
    assert_eq!(v, version, "{package} in {}", venv.display());
    venv
}

#[test]
fn schemathesis_finds_nothing_against_a_real_server() {
    let st = schemathesis();
    let token = unique("tok");
    // Whatever schemathesis submits is harmless and bounded: the only profile's
    // image echoes its arguments (ENTRYPOINT sh -c 'echo ...'), in at most two
    // containers with a short queue, each job at most 10 s and 64 KiB of
    // output; small count limits keep the generated jobs small.
    let s = Server::start_profiles(
        "max_env = 8\nmax_args = 8\n",
        &format!(
            r#"[profiles.echo]
image = "{ENTRY}"
network = "none"
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
job_timeout = "10s"
output_limit = "64k"
memory = "64m"
pids_limit = 32
max_containers = 2
max_queue = 4
max_wait = "10s"
"#
        ),
        &[("WARMPOOL_API_TOKEN", &token)],
    );
    let began = Instant::now();
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(repo_root().join("crates/cli/tests/schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/v1/openapi.json", s.base))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "all",
            // Bounded: at most 50 cases an operation and phase (about 40 s
            // here), the same ones every run.
            "--max-examples",
            "50",
            "--seed",
            "1",
            // The same cases every run (and no example database kept).
            "--generation-deterministic",
            "--request-timeout",
            "60",
            "--no-color",
        ])
        // Anything it writes (reports, caches) stays in the server's dir, removed after.
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}\nschemathesis took {:?}", began.elapsed());
    assert!(
        out.status.success() && text.contains("No issues found"),
        "schemathesis found failures ({}):\n{text}\nserver log:\n{}",
        out.status,
        s.log()
    );
    // Everything it ran is gone once the server stops.
    let mut s = s;
    let status = s.signal(15);
    assert!(status.success(), "{status:?}\n{}", s.log());
    assert_eq!(s.containers(), "", "containers left behind");
}
