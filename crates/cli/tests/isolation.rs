//! What must hold between jobs and around them, against the real engine: secrets
//! stay out of container config and logs, nothing a job leaves reaches the next,
//! timeouts and output caps hold, the profile's knobs reach the engine, and no
//! container is left behind.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use warmpool_core::Job;
use warmpool_exec::RunControl;

fn docker_inspect(id: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker inspect {id}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait (bounded) until a job container of this test's profile exists; its id.
async fn find_container(e: &Engine, p: &warmpool_core::Profile) -> String {
    let label = p.labels[TEST_LABEL].clone();
    for _ in 0..200 {
        let found =
            // The job's container, not the gate-fill helper that carries the same labels.
            warmpool_runtime::Runtime::list(
                e.runtime.as_ref(),
                &[(TEST_LABEL, label.as_str()), ("warmpool.role", "job")],
            )
                .await
                .unwrap();
        if let Some(c) = found.into_iter().next() {
            return c.id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no container appeared for {label}");
}

/// Wait (bounded) until `needle` is in the container's process list (`docker
/// top`): the job runs.
async fn wait_in_top(id: &str, needle: &str) {
    for _ in 0..400 {
        let top = Command::new("docker").args(["top", id]).output().unwrap();
        if String::from_utf8_lossy(&top.stdout).contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{needle:?} never ran in container {id}");
}

/// Run `job` warm on an engine handle of its own, in the background, its
/// container removed before the handle resolves.
fn spawn_warm(
    p: &warmpool_core::Profile,
    job: Job,
) -> tokio::task::JoinHandle<(Captured, warmpool_exec::Outcome)> {
    let p = p.clone();
    tokio::spawn(async move {
        let e = engine();
        let r = run_warm(&e, &p, job).await;
        e.executor.drain().await;
        r
    })
}

#[tokio::test]
async fn secrets_stay_out_of_container_config_and_logs() {
    let e = engine();
    let mut p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.env = vec![("PUBLIC_SETTING".into(), "visible".into())];
    let secret = unique("s3cr3t-value");
    let job = Job {
        args: vec![
            "sh".into(),
            "-c".into(),
            "echo len=${#API_TOKEN}; sleep 1.5".into(),
        ],
        env: vec![("API_TOKEN".into(), secret.clone())],
        ..Job::default()
    };
    let running = spawn_warm(&p, job);
    let id = find_container(&e, &p).await;
    // Inspect while the job runs, when the secret is in the container's process.
    wait_in_top(&id, "sleep 1.5").await;
    let inspect = docker_inspect(&id);
    assert!(
        inspect.contains("PUBLIC_SETTING=visible"),
        "profile env is config"
    );
    assert!(
        !inspect.contains(&secret),
        "the job's secret is in docker inspect"
    );
    assert!(
        !inspect.contains("API_TOKEN"),
        "even the job env's name stays out"
    );
    assert!(
        inspect.contains("\"Type\": \"none\""),
        "the log driver is none"
    );
    let (out, _) = running.await.unwrap();
    assert_eq!(
        out.stdout_text(),
        format!("len={}\n", secret.len()),
        "the secret reached the job"
    );
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn leftovers_never_reach_the_next_job() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let (first, _) = run_warm(
        &e,
        &p,
        job(&[
            "sh",
            "-c",
            "echo data > /tmp/leftover && echo data > /leftover-root && echo wrote",
        ]),
    )
    .await;
    assert_eq!(first.stdout_text(), "wrote\n");
    let (second, _) = run_warm(
        &e,
        &p,
        job(&["sh", "-c", "ls /tmp/leftover /leftover-root 2>&1; exit 0"]),
    )
    .await;
    let text = second.stdout_text();
    assert!(text.contains("/tmp/leftover: No such file"), "{text}");
    assert!(text.contains("/leftover-root: No such file"), "{text}");
    // The gate volume is read-only: a job cannot plant a new gate for later jobs.
    let (third, _) = run_warm(
        &e,
        &p,
        job(&["sh", "-c", "touch /.warmpool/planted 2>&1; echo code=$?"]),
    )
    .await;
    let text = third.stdout_text();
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.ends_with("code=1\n"), "{text}");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_parked_container_serves_exactly_one_job() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let resolved = resolve(&e, &p).await;
    let parked = e.executor.park(resolved).await.unwrap();
    let id = parked.id().to_string();
    let mut sink = CollectSink::default();
    let o = parked
        .run(job(&["echo", "once"]), &mut sink, RunControl::default())
        .await
        .unwrap();
    assert_eq!(o.container, id);
    e.executor.drain().await;
    let gone = Command::new("docker")
        .args(["inspect", &id])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the used container must be removed");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn timeout_kills_a_job_that_ignores_sigterm() {
    let e = engine();
    let mut p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.job_timeout = Duration::from_secs(1);
    p.kill_grace = Duration::from_secs(1);
    let (out, o) = run_warm(
        &e,
        &p,
        job(&[
            "sh",
            "-c",
            "trap '' TERM; echo waiting; sleep 60; echo never",
        ]),
    )
    .await;
    assert!(o.timed_out);
    assert_eq!(out.stdout_text(), "waiting\n");
    assert_eq!(out.code, 137, "killed");
    // The job was killed within grace + 1 s of its timeout (measured from the
    // hand-over by the run itself); assert_clean then checks its container is gone.
    assert!(
        o.run.exit <= p.job_timeout + p.kill_grace + Duration::from_secs(1),
        "the job ended {:?} after hand-over",
        o.run.exit
    );
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn timeout_lets_a_job_handle_sigterm() {
    let e = engine();
    let mut p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.job_timeout = Duration::from_millis(800);
    p.kill_grace = Duration::from_secs(10);
    let (out, o) = run_cold(
        &e,
        &p,
        job(&[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 5' TERM; echo up; while :; do sleep 0.1; done",
        ]),
    )
    .await;
    assert!(o.timed_out);
    assert_eq!(out.stdout_text(), "up\ngot TERM\n");
    assert_eq!(out.code, 5);
    assert!(
        o.run.exit < Duration::from_secs(5),
        "the grace was not needed: {:?}",
        o.run.exit
    );
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn per_job_timeout_overrides_the_profile() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let j = Job {
        timeout: Some(Duration::from_millis(500)),
        ..job(&["sleep", "30"])
    };
    let (out, o) = run_warm(&e, &p, j).await;
    assert!(o.timed_out);
    assert!(o.lost.is_none(), "the gate reported the exit: {o:?}");
    assert_eq!(out.code, 128 + 15, "sleep dies of the forwarded SIGTERM");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn output_past_the_cap_is_cut_and_the_job_goes_on() {
    let e = engine();
    let mut p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.output_limit = 1024 * 1024;
    let (out, o) = run_warm(
        &e,
        &p,
        job(&[
            "sh",
            "-c",
            "yes warmpool | head -c 20000000; echo finished >&2; exit 4",
        ]),
    )
    .await;
    assert!(o.stdout_truncated);
    assert!(!o.stderr_truncated);
    let marker = "\n[warmpool: stdout cut at 1048576 bytes; the job went on]\n";
    assert_eq!(out.stdout.len(), 1024 * 1024 + marker.len());
    assert!(out.stdout_text().ends_with(marker));
    assert_eq!(
        out.stderr_text(),
        "finished\n",
        "the job went on after the cut"
    );
    assert_eq!(out.code, 4);
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn container_killed_from_outside_is_reported() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let running = spawn_warm(&p, job(&["sh", "-c", "echo started; sleep 30"]));
    let id = find_container(&e, &p).await;
    // Kill it only once the job runs (its sleep is in the container's process list).
    wait_in_top(&id, "sleep 30").await;
    let killed = Command::new("docker").args(["kill", &id]).output().unwrap();
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let (out, o) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the run must end when its container dies")
        .unwrap();
    assert_eq!(out.code, 137);
    assert!(o.started, "the job had started");
    assert!(o.lost.is_some(), "a dead container is reported: {o:?}");
    assert!(!o.timed_out);
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn read_only_rootfs_with_tmpfs() {
    let e = engine();
    let mut p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.read_only = true;
    p.tmpfs = vec![warmpool_core::config::Tmpfs {
        path: "/tmp".into(),
        options: "size=8m".into(),
    }];
    let (out, _) = run_cold(
        &e,
        &p,
        job(&[
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo rootfs read-only; touch /tmp/y && echo tmp writable",
        ]),
    )
    .await;
    assert_eq!(out.stdout_text(), "rootfs read-only\ntmp writable\n");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn profile_knobs_reach_the_engine() {
    let e = engine();
    let config = warmpool_core::Config::parse(
        r#"
        [profiles.knobs]
        image = "warmpool-test/busybox:latest"
        memory = "64m"
        cpus = 0.5
        pids_limit = 32
        network = "none"
        cap_drop = ["NET_RAW"]
        security_opt = ["no-new-privileges"]
        labels = { purpose = "knob-test" }
        "#,
    )
    .unwrap();
    let mut p = config.profiles["knobs"].clone();
    let label = unique("knobs");
    p.labels.insert(TEST_LABEL.into(), label.clone());
    let resolved = resolve(&e, &p).await;
    let parked = e.executor.park(resolved).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&docker_inspect(parked.id())).unwrap();
    let c = &v[0];
    let hc = &c["HostConfig"];
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 32);
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["CapDrop"][0], "NET_RAW");
    assert_eq!(hc["SecurityOpt"][0], "no-new-privileges");
    assert_eq!(hc["LogConfig"]["Type"], "none");
    assert_eq!(c["Config"]["Labels"]["warmpool.managed"], "true");
    assert_eq!(c["Config"]["Labels"]["warmpool.profile"], "knobs");
    assert_eq!(c["Config"]["Labels"]["purpose"], "knob-test");
    assert_eq!(c["Config"]["Entrypoint"][0], warmpool_gate::GATE_PATH);
    assert_eq!(
        c["State"]["Running"], true,
        "parked means running, at the gate"
    );
    // The limits are in force inside: the job sees them in its cgroup.
    let mut sink = CollectSink::default();
    let o = parked
        .run(
            job(&[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; \
                 cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
            ]),
            &mut sink,
            RunControl::default(),
        )
        .await
        .unwrap();
    assert_eq!(o.exit_code(), 0);
    assert_eq!(String::from_utf8_lossy(&sink.stdout), "32\n67108864\n");
    e.executor.drain().await;
    let left = warmpool_runtime::Runtime::list(e.runtime.as_ref(), &[(TEST_LABEL, label.as_str())])
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn bad_job_input_creates_nothing() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let resolved = resolve(&e, &p).await;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let bad = Job {
        env: vec![("NOT-A-NAME".into(), "v".into())],
        ..job(&["true"])
    };
    let mut sink = CollectSink::default();
    let err = e
        .executor
        .run_cold(resolved, bad, &mut sink, RunControl::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT-A-NAME"), "{err}");
    assert_clean(&e, &p).await;
    // Not even created and removed again: the engine saw no container of this test.
    let events = Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(since + 3).to_string(),
            "--filter",
            &format!("label={TEST_LABEL}={}", p.labels[TEST_LABEL]),
        ])
        .output()
        .unwrap();
    assert!(events.status.success());
    assert_eq!(
        String::from_utf8_lossy(&events.stdout),
        "",
        "the engine saw a container"
    );
}

#[tokio::test]
async fn missing_image_names_profile_and_image() {
    let e = engine();
    let p = profile("warmpool-test/does-not-exist:never");
    let _cleanup = cleanup(&p);
    let err = e.executor.resolve(&p).await.unwrap_err().to_string();
    assert!(
        err.contains(&p.name) && err.contains("does-not-exist"),
        "{err}"
    );
    assert!(err.contains("docker build"), "says how to fix it: {err}");
}
