//! A `warmpool serve` on an engine of the test's own (a second dockerd with
//! its own socket and data root, `warmpool_testkit::dockerd`), which the test
//! stops and starts again under the running server: jobs accepted during the
//! outage wait for the engine (up to `max_wait`) instead of failing, the pools
//! refill as soon as it is back, and `/readyz` says whether the node can take
//! work, not whether a pool happens to be below `min_idle`.

mod common;

use common::server::{json, Server};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmpool_testkit::dockerd::Dockerd;

/// Poll `f` every 100 ms until it is true; panic with `what` after `within`.
fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !f() {
        assert!(began.elapsed() < within, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
    began.elapsed()
}

/// `/readyz`'s status and body (a body that is not JSON as a string).
fn readyz(s: &Server) -> (u16, serde_json::Value) {
    let (code, body) = s.get("/readyz");
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Containers parked in this node's pool of `profile` (from `/v1/pools`).
fn idle(s: &Server, profile: &str) -> u64 {
    json(&s.get("/v1/pools").1)
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["profile"] == profile))
        .and_then(|p| p["idle"].as_u64())
        .unwrap_or(0)
}

fn job_state(s: &Server, id: &str) -> serde_json::Value {
    json(&s.get(&format!("/v1/jobs/{id}")).1)
}

fn submit(s: &Server, body: &str) -> String {
    let (code, resp) = s.post("/v1/jobs", body);
    assert_eq!(code, 201, "{resp}");
    json(&resp)["id"].as_str().unwrap().to_string()
}

#[test]
fn jobs_wait_out_an_engine_restart_and_the_pools_refill_at_once() {
    ensure_images();
    let mut engine = Dockerd::start().expect("a second dockerd");
    engine.load_image(BUSYBOX).expect("load the test image");
    let s = Server::start(
        &format!(
            r#"min_idle = 2
max_containers = 4
max_queue = 8
max_wait = "120s"

[profiles.short]
image = "{BUSYBOX}"
network = "none"
min_idle = 0
max_wait = "2s"
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}

[engine]
host = "{}"
"#,
            engine.docker_host()
        ),
        &[],
    );
    wait_for(Duration::from_secs(60), "the pool never filled", || {
        readyz(&s).0 == 200 && idle(&s, "bb") >= 2
    });
    let (_, up) = readyz(&s);

    // A job that is running when the engine goes away ends, and says so.
    let long = submit(&s, r#"{"profile":"bb","args":["sleep","300"]}"#);
    s.wait_state(&long, "running");

    engine.stop().expect("stop the test engine");
    wait_for(
        Duration::from_secs(20),
        "/readyz never said the engine is gone",
        || readyz(&s).0 == 503,
    );
    let (_, down) = readyz(&s);
    wait_for(
        Duration::from_secs(20),
        "/metrics never showed the pool's engine down",
        || {
            s.get("/metrics")
                .1
                .contains("warmpool_pool_engine_down{profile=\"bb\"} 1")
        },
    );
    wait_for(
        Duration::from_secs(30),
        "the running job never ended with its engine",
        || job_state(&s, &long)["state"] != "running",
    );

    // Jobs accepted during the outage wait for the engine...
    let waiting: Vec<String> = (0..3)
        .map(|i| {
            submit(
                &s,
                &format!(r#"{{"profile":"bb","args":["echo","after the outage {i}"]}}"#),
            )
        })
        .collect();
    // ...up to their profile's max_wait, and no longer.
    let short = submit(&s, r#"{"profile":"short","args":["echo","too late"]}"#);
    let ended = wait_for(
        Duration::from_secs(30),
        "a job of a 2s max_wait profile waited on",
        || job_state(&s, &short)["state"] != "queued",
    );
    let j = job_state(&s, &short);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["error"].as_str().unwrap_or_default().contains("max_wait"),
        "{j}"
    );
    eprintln!("the short max_wait job failed {ended:?} after it was submitted");
    // Meanwhile (longer than a failing cold start takes) the others still wait.
    // WARMPOOL_TEST_OUTAGE=40 holds the engine down for 40 s (the issue's
    // measured case; a back-off grows to its 30 s cap in that time).
    let outage = std::env::var("WARMPOOL_TEST_OUTAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    std::thread::sleep(Duration::from_secs(outage));
    for id in &waiting {
        let j = job_state(&s, id);
        assert_eq!(
            j["state"], "queued",
            "a job failed with its engine away: {j}"
        );
    }

    // The engine comes back: the waiting jobs run, the pool refills at once
    // (no back-off left over from the outage).
    engine.restart().expect("start the test engine again");
    let back = Instant::now();
    for (i, id) in waiting.iter().enumerate() {
        wait_for(
            Duration::from_secs(60),
            "a job that waited for the engine never ended",
            || {
                let st = job_state(&s, id)["state"].clone();
                st != "queued" && st != "running"
            },
        );
        let j = job_state(&s, id);
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["stdout"], format!("after the outage {i}\n"), "{j}");
    }
    let refilled = wait_for(
        // The goal is 5 s; the bound is loose for a busy machine, but far
        // below the 30 s a back-off left from the outage would take.
        Duration::from_secs(20),
        "the pool did not refill to min_idle after the engine came back",
        || readyz(&s).0 == 200 && idle(&s, "bb") >= 2,
    );
    eprintln!(
        "engine back: waiting jobs done and the pool at min_idle {:?} later",
        back.elapsed().max(refilled)
    );
    // It takes work as before.
    let (code, body) = s.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["echo","as before"]}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["stdout"], "as before\n", "{body}");
    // What /readyz said, up and down: why, and the pool levels.
    assert_eq!(up["ready"], true, "{up}");
    assert_eq!(up["engine"]["reachable"], true, "{up}");
    assert_eq!(up["store"]["writable"], true, "{up}");
    assert_eq!(up["pools"][0]["profile"], "bb", "{up}");
    assert_eq!(up["pools"][0]["min_idle"], 2, "{up}");
    assert_eq!(down["ready"], false, "{down}");
    assert_eq!(down["engine"]["reachable"], false, "{down}");
    assert_eq!(down["store"]["writable"], true, "{down}");
    assert!(
        down["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("engine"),
        "{down}"
    );
    drop(s);
    drop(engine);
}

#[test]
fn readyz_holds_while_the_pool_is_drained_by_load() {
    ensure_images();
    // min_idle 1 and back-to-back jobs: the pool is below min_idle between a
    // claim and the next park, all the time; the node is ready throughout.
    let s = Server::start("min_idle = 1\nmax_containers = 3\n", &[]);
    wait_for(Duration::from_secs(60), "the pool never filled", || {
        readyz(&s).0 == 200 && idle(&s, "bb") >= 1
    });
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, base) = (stop.clone(), s.base.clone());
        std::thread::spawn(move || {
            let mut answers = std::collections::BTreeMap::<String, usize>::new();
            let mut dipped = 0;
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new("curl")
                    .args(["-s", "-w", "\n%{http_code}", &format!("{base}/readyz")])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
                *answers.entry(code.to_string()).or_default() += 1;
                let levels: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                if levels["pools"][0]["idle"].as_u64() == Some(0) {
                    dipped += 1;
                }
            }
            (answers, dipped)
        })
    };
    for i in 0..40 {
        let (code, body) = s.post(
            "/v1/jobs?wait=true",
            &format!(r#"{{"profile":"bb","args":["echo","{i}"]}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }
    stop.store(true, Ordering::SeqCst);
    let (answers, dipped) = prober.join().unwrap();
    eprintln!("/readyz answers under load: {answers:?}; {dipped} showed the pool empty");
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        vec!["200"],
        "/readyz flapped under load: {answers:?}"
    );
}
