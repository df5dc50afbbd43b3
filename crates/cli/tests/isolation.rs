//! What must hold between jobs and around them, against the real engine: secrets
//! stay out of container config and logs, nothing a job leaves reaches the next,
//! timeouts and output caps hold, the profile's knobs reach the engine, and no
//! container is left behind.
//!
//! Every case runs twice (`single_use::NAME`, `reuse::NAME`). On a reuse profile
//! (read-only root, `/tmp` on tmpfs, `reuse` above 1) the job under test runs in
//! a container that has already served `common::dirty_job` and been reset by its
//! gate (`common::Reused`); a case of several jobs runs them all in that one
//! container. Adapted there:
//! - `leftovers_never_reach_the_next_job`: the write to `/` fails with EROFS (the
//!   root is read-only); the jobs run in one container (single use: three).
//! - `a_container_serves_exactly_reuse_jobs`: single use, one job; reuse = 3,
//!   three jobs in one container, then it is removed.
//! - `secrets_stay_out_of_container_config_and_logs`: also, the secret reaches
//!   no later job of the same container.
//! - `profile_knobs_reach_the_engine`: also the read-only root and the gate's
//!   `--reuse` argument.
//! - `bad_job_input_creates_nothing`: also handed to a reused container: refused
//!   before anything reaches it, and no container is created for it.
//! - `missing_image_names_profile_and_image`: no container can exist, so none is
//!   reused; the error is the same on a reuse profile.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use warmpool_core::{Job, Profile};
use warmpool_exec::RunControl;

in_both_modes!(
    secrets_stay_out_of_container_config_and_logs,
    leftovers_never_reach_the_next_job,
    a_container_serves_exactly_reuse_jobs,
    timeout_kills_a_job_that_ignores_sigterm,
    timeout_lets_a_job_handle_sigterm,
    per_job_timeout_overrides_the_profile,
    output_past_the_cap_is_cut_and_the_job_goes_on,
    container_killed_from_outside_is_reported,
    read_only_rootfs_with_tmpfs,
    profile_knobs_reach_the_engine,
    bad_job_input_creates_nothing,
    missing_image_names_profile_and_image,
);

fn docker_inspect(id: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker inspect {id}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait (bounded) until a job container of this test's profile exists; its id.
async fn find_container(e: &Engine, p: &Profile) -> String {
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

/// Where a case's jobs run: single use, each on a container parked for it;
/// reuse, all in one container that served the dirty job first.
enum Runner {
    SingleUse(Engine, Box<Profile>),
    Reuse(Box<Reused>),
}

impl Runner {
    async fn new(e: &Engine, mode: Mode, p: &Profile) -> Runner {
        match mode {
            Mode::SingleUse => Runner::SingleUse(e.clone(), Box::new(p.clone())),
            Mode::Reuse => Runner::Reuse(Box::new(Reused::dirty(e, p).await)),
        }
    }

    async fn run(&mut self, job: Job) -> (Captured, warmpool_exec::Outcome) {
        match self {
            Runner::SingleUse(e, p) => run_warm(e, p, job).await,
            Runner::Reuse(r) => r.run(job).await,
        }
    }

    /// The container this runner reuses, if it does.
    fn reused(&self) -> Option<&Reused> {
        match self {
            Runner::SingleUse(..) => None,
            Runner::Reuse(r) => Some(r),
        }
    }
}

/// Run `job` in the background (the mode's way), its container removed (single
/// use) or still parked (reuse: the runner comes back with it) before the
/// handle resolves.
fn spawn_run(
    mut runner: Runner,
    job: Job,
) -> tokio::task::JoinHandle<((Captured, warmpool_exec::Outcome), Runner)> {
    tokio::spawn(async move {
        let r = runner.run(job).await;
        if let Runner::SingleUse(e, _) = &runner {
            e.executor.drain().await;
        }
        (r, runner)
    })
}

async fn secrets_stay_out_of_container_config_and_logs(mode: Mode) {
    let e = engine();
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.env = vec![("PUBLIC_SETTING".into(), "visible".into())];
    let secret = unique("s3cr3t-value");
    let job = Job {
        args: vec![
            "sh".into(),
            "-c".into(),
            // It also keeps the secret where a later job of a reused container
            // could look: scratch files, a process left behind (its env).
            "echo \"$API_TOKEN\" > /tmp/token; echo \"$API_TOKEN\" > /dev/shm/token; \
             sleep 1000 >/dev/null 2>&1 & echo len=${#API_TOKEN}; sleep 1.5"
                .into(),
        ],
        env: vec![("API_TOKEN".into(), secret.clone())],
        ..Job::default()
    };
    let running = spawn_run(Runner::new(&e, mode, &p).await, job);
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
    let ((out, _), mut runner) = running.await.unwrap();
    assert_eq!(
        out.stdout_text(),
        format!("len={}\n", secret.len()),
        "the secret reached the job"
    );
    if let Runner::Reuse(r) = &mut runner {
        assert_eq!(r.id(), id, "the job ran in the reused container");
        // The next job of the same container finds the secret nowhere: not in
        // any process's env (the gate's included: not readable), the gate's
        // command line, or a file in a place a job may write. It reads the
        // secret from stdin, so its own env and command line do not hold it.
        let look = Job {
            stdin: Some(format!("{secret}\n").into_bytes()),
            ..common::job(&[
                "sh",
                "-c",
                "read -r s; for f in /proc/[0-9]*/environ /proc/1/cmdline \
                 $(find /tmp /dev /dev/shm /dev/mqueue -xdev -type f); do \
                 grep -qF \"$s\" \"$f\" 2>/dev/null && echo \"found in $f\"; done; \
                 echo looked; cat /proc/1/environ >/dev/null 2>&1 || echo gate env unreadable",
            ])
        };
        let (next, o) = r.run(look).await;
        assert_eq!(o.container, id);
        assert_eq!(
            next.stdout_text(),
            "looked\ngate env unreadable\n",
            "{next:?}"
        );
    }
    drop(runner);
    assert_clean(&e, &p).await;
}

async fn leftovers_never_reach_the_next_job(mode: Mode) {
    let e = engine();
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let mut runner = Runner::new(&e, mode, &p).await;
    let (first, o1) = runner
        .run(job(&[
            "sh",
            "-c",
            "echo data > /tmp/leftover && echo wrote tmp; echo data > /leftover-root && echo wrote root",
        ]))
        .await;
    match mode {
        Mode::SingleUse => assert_eq!(first.stdout_text(), "wrote tmp\nwrote root\n"),
        // Adapted: a reuse profile's root is read-only; the write fails as under
        // `docker run --read-only`, and only /tmp (tmpfs) holds a leftover.
        Mode::Reuse => {
            assert_eq!(first.stdout_text(), "wrote tmp\n");
            assert_eq!(
                first.stderr_text(),
                "sh: can't create /leftover-root: Read-only file system\n"
            );
        }
    }
    let (second, o2) = runner
        .run(job(&[
            "sh",
            "-c",
            "ls /tmp/leftover /leftover-root 2>&1; exit 0",
        ]))
        .await;
    let text = second.stdout_text();
    assert!(text.contains("/tmp/leftover: No such file"), "{text}");
    assert!(text.contains("/leftover-root: No such file"), "{text}");
    // The gate volume is read-only: a job cannot plant a new gate for later jobs.
    let (third, o3) = runner
        .run(job(&[
            "sh",
            "-c",
            "touch /.warmpool/planted 2>&1; echo code=$?",
        ]))
        .await;
    let text = third.stdout_text();
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.ends_with("code=1\n"), "{text}");
    match mode {
        // Each job its own container...
        Mode::SingleUse => assert!(
            o1.container != o2.container && o2.container != o3.container,
            "{o1:?} {o2:?} {o3:?}"
        ),
        // ...or all in the one the dirty job used first.
        Mode::Reuse => {
            let id = runner.reused().map(Reused::id).unwrap_or_default();
            assert!(
                [&o1, &o2, &o3].iter().all(|o| o.container == id),
                "{o1:?} {o2:?} {o3:?}"
            );
            assert_eq!(runner.reused().and_then(Reused::jobs), Some(4));
        }
    }
    drop(runner);
    assert_clean(&e, &p).await;
}

/// A container serves `reuse` jobs, then it is removed: single use, one; on a
/// reuse profile (reuse = 3 here), the dirty job and two more.
async fn a_container_serves_exactly_reuse_jobs(mode: Mode) {
    let e = engine();
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let id = match mode {
        Mode::SingleUse => {
            let resolved = resolve(&e, &p).await;
            let parked = e.executor.park(resolved).await.unwrap();
            let id = parked.id().to_string();
            let mut sink = CollectSink::default();
            let o = parked
                .run(job(&["echo", "once"]), &mut sink, RunControl::default())
                .await
                .unwrap();
            assert_eq!(o.container, id);
            id
        }
        Mode::Reuse => {
            p.reuse = 3;
            let mut r = Reused::dirty(&e, &p).await;
            let (out, o) = r.run(job(&["echo", "second"])).await;
            assert_eq!(out.stdout_text(), "second\n");
            assert_eq!(r.jobs(), Some(2), "parked again for its third job");
            let (out, o3) = r.run(job(&["echo", "third"])).await;
            assert_eq!(out.stdout_text(), "third\n");
            assert!(
                o.container == r.id() && o3.container == r.id(),
                "all in container {}: {o:?} {o3:?}",
                r.id()
            );
            assert_eq!(r.jobs(), None, "parked again after its last job");
            r.id().to_string()
        }
    };
    e.executor.drain().await;
    let gone = Command::new("docker")
        .args(["inspect", &id])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the used container must be removed");
    assert_clean(&e, &p).await;
}

async fn timeout_kills_a_job_that_ignores_sigterm(mode: Mode) {
    let e = engine();
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.job_timeout = Duration::from_secs(1);
    p.kill_grace = Duration::from_secs(1);
    let (out, o) = run_in(
        &e,
        mode,
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

async fn timeout_lets_a_job_handle_sigterm(mode: Mode) {
    let e = engine();
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.job_timeout = Duration::from_millis(800);
    p.kill_grace = Duration::from_secs(10);
    let j = job(&[
        "sh",
        "-c",
        "trap 'echo got TERM; exit 5' TERM; echo up; while :; do sleep 0.1; done",
    ]);
    let (out, o) = match mode {
        // The cold path, single use.
        Mode::SingleUse => run_cold(&e, &p, j).await,
        Mode::Reuse => run_in(&e, mode, &p, j).await,
    };
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

async fn per_job_timeout_overrides_the_profile(mode: Mode) {
    let e = engine();
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let j = Job {
        timeout: Some(Duration::from_millis(500)),
        ..job(&["sleep", "30"])
    };
    let (out, o) = run_in(&e, mode, &p, j).await;
    assert!(o.timed_out);
    assert!(o.lost.is_none(), "the gate reported the exit: {o:?}");
    assert_eq!(out.code, 128 + 15, "sleep dies of the forwarded SIGTERM");
    assert_clean(&e, &p).await;
}

async fn output_past_the_cap_is_cut_and_the_job_goes_on(mode: Mode) {
    let e = engine();
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.output_limit = 1024 * 1024;
    let (out, o) = run_in(
        &e,
        mode,
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

async fn container_killed_from_outside_is_reported(mode: Mode) {
    let e = engine();
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let running = spawn_run(
        Runner::new(&e, mode, &p).await,
        job(&["sh", "-c", "echo started; sleep 30"]),
    );
    let id = find_container(&e, &p).await;
    // Kill it only once the job runs (its sleep is in the container's process list).
    wait_in_top(&id, "sleep 30").await;
    let killed = Command::new("docker").args(["kill", &id]).output().unwrap();
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let ((out, o), runner) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the run must end when its container dies")
        .unwrap();
    assert_eq!(out.code, 137);
    assert!(o.started, "the job had started");
    assert!(o.lost.is_some(), "a dead container is reported: {o:?}");
    assert!(!o.timed_out);
    if let Some(r) = runner.reused() {
        assert_eq!(r.id(), id, "the job ran in the reused container");
        assert_eq!(r.jobs(), None, "a dead container is not parked again");
    }
    drop(runner);
    assert_clean(&e, &p).await;
}

async fn read_only_rootfs_with_tmpfs(mode: Mode) {
    let e = engine();
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.read_only = true;
    p.tmpfs = vec![warmpool_core::config::Tmpfs {
        path: "/tmp".into(),
        options: "size=8m".into(),
    }];
    let j = job(&[
        "sh",
        "-c",
        "touch /x 2>/dev/null || echo rootfs read-only; touch /tmp/y && echo tmp writable",
    ]);
    let (out, _) = match mode {
        // The cold path, single use.
        Mode::SingleUse => run_cold(&e, &p, j).await,
        Mode::Reuse => run_in(&e, mode, &p, j).await,
    };
    assert_eq!(out.stdout_text(), "rootfs read-only\ntmp writable\n");
    assert_clean(&e, &p).await;
}

async fn profile_knobs_reach_the_engine(mode: Mode) {
    let e = engine();
    let reuse_keys = match mode {
        Mode::SingleUse => "",
        Mode::Reuse => "read_only = true\ntmpfs = [\"/tmp\"]\nreuse = 5",
    };
    let config = warmpool_core::Config::parse(&format!(
        r#"
        [profiles.knobs]
        image = "warmpool-test/busybox:latest"
        memory = "64m"
        cpus = 0.5
        pids_limit = 32
        network = "none"
        cap_drop = ["NET_RAW"]
        security_opt = ["no-new-privileges"]
        labels = {{ purpose = "knob-test" }}
        {reuse_keys}
        "#
    ))
    .unwrap();
    let mut p = config.profiles["knobs"].clone();
    let label = unique("knobs");
    p.labels.insert(TEST_LABEL.into(), label.clone());
    let _cleanup = CleanupGuard(label.clone());
    // Single use: a parked container; reuse: one that ran the dirty job.
    let (id, mut reused, parked) = match mode {
        Mode::SingleUse => {
            let parked = e.executor.park(resolve(&e, &p).await).await.unwrap();
            (parked.id().to_string(), None, Some(parked))
        }
        Mode::Reuse => {
            let r = Reused::dirty(&e, &p).await;
            (r.id().to_string(), Some(r), None)
        }
    };
    let v: serde_json::Value = serde_json::from_str(&docker_inspect(&id)).unwrap();
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
    match mode {
        Mode::SingleUse => {
            assert_eq!(hc["ReadonlyRootfs"], false);
            assert_eq!(c["Config"]["Entrypoint"].as_array().map(Vec::len), Some(1));
        }
        Mode::Reuse => {
            assert_eq!(hc["ReadonlyRootfs"], true);
            assert!(hc["Tmpfs"].get("/tmp").is_some(), "{hc}");
            assert_eq!(c["Config"]["Entrypoint"][1], "--reuse");
        }
    }
    assert_eq!(
        c["State"]["Running"], true,
        "parked means running, at the gate"
    );
    // The limits are in force inside: the job sees them in its cgroup.
    let limits = job(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; \
         cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    let (out, o) = match (parked, &mut reused) {
        (Some(parked), _) => {
            let mut sink = CollectSink::default();
            let o = parked
                .run(limits, &mut sink, RunControl::default())
                .await
                .unwrap();
            (sink.stdout, o)
        }
        (None, Some(r)) => {
            let (out, o) = r.run(limits).await;
            (out.stdout, o)
        }
        (None, None) => unreachable!(),
    };
    assert_eq!(o.exit_code(), 0);
    assert_eq!(o.container, id);
    assert_eq!(String::from_utf8_lossy(&out), "32\n67108864\n");
    drop(reused);
    e.executor.drain().await;
    let left = warmpool_runtime::Runtime::list(e.runtime.as_ref(), &[(TEST_LABEL, label.as_str())])
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// `docker events` for this test's containers from `since` (seconds) on.
fn events(p: &Profile, since: u64, filter: &[&str]) -> String {
    let label = format!("label={TEST_LABEL}={}", p.labels[TEST_LABEL]);
    let (since, until) = (since.to_string(), (since + 3).to_string());
    let mut args = vec![
        "events", "--since", &since, "--until", &until, "--filter", &label,
    ];
    for f in filter {
        args.extend(["--filter", f]);
    }
    let events = Command::new("docker").args(&args).output().unwrap();
    assert!(events.status.success());
    String::from_utf8_lossy(&events.stdout).into_owned()
}

async fn bad_job_input_creates_nothing(mode: Mode) {
    let e = engine();
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    // Reuse: a container that served a job already is there, and is handed
    // the bad job too.
    let mut reused = match mode {
        Mode::SingleUse => None,
        Mode::Reuse => Some(Reused::dirty(&e, &p).await),
    };
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
        .run_cold(resolved, bad.clone(), &mut sink, RunControl::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT-A-NAME"), "{err}");
    if let Some(r) = &mut reused {
        let err = r
            .try_run(bad, RunControl::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("NOT-A-NAME"), "{err}");
    }
    let reused_id = reused.as_ref().map(|r| r.id().to_string());
    drop(reused);
    assert_clean(&e, &p).await;
    match reused_id {
        // Not even created and removed again: the engine saw no container of this test.
        None => assert_eq!(events(&p, since, &[]), "", "the engine saw a container"),
        // The reused container is removed with the refused job (it may have
        // been created in `since`'s second too); no other job container was
        // created.
        Some(id) => {
            let created = events(&p, since, &["event=create", "label=warmpool.role=job"]);
            let others: Vec<&str> = created.lines().filter(|l| !l.contains(&id)).collect();
            assert!(
                others.is_empty(),
                "the engine created a container: {others:?}"
            );
        }
    }
}

async fn missing_image_names_profile_and_image(mode: Mode) {
    let e = engine();
    let p = mode.profile("warmpool-test/does-not-exist:never");
    let _cleanup = cleanup(&p);
    let err = e.executor.resolve(&p).await.unwrap_err().to_string();
    assert!(
        err.contains(&p.name) && err.contains("does-not-exist"),
        "{err}"
    );
    assert!(err.contains("docker build"), "says how to fix it: {err}");
}
