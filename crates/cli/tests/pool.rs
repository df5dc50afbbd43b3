//! The pool against the real engine: filling, bursts, health, stale images,
//! retries, ownership and shutdown.

mod common;

use common::*;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use warmpool_core::{labels, Job, Profile};
use warmpool_exec::RunControl;
use warmpool_pool::{sweep, Pool};
use warmpool_runtime::{EngineEvent, Runtime};

/// A pool of `p` for a test-unique instance.
async fn start(e: &Engine, p: &Profile) -> Pool {
    let resolved = resolve(e, p).await;
    Pool::start(e.executor.clone(), resolved, &unique("inst"))
}

fn pool_profile(image: &str, min_idle: usize, max_containers: usize) -> Profile {
    let mut p = profile(image);
    p.min_idle = min_idle;
    p.max_idle = min_idle.max(1);
    p.max_containers = max_containers;
    p
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn fills_to_min_idle_and_labels_its_containers() {
    let e = engine();
    let p = pool_profile(BUSYBOX, 2, 4);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(
        pool.wait_idle(2, Duration::from_secs(30)).await,
        "{:?}",
        pool.stats()
    );
    let stats = pool.stats();
    assert_eq!(stats.idle, 2);
    assert_eq!(stats.busy, 0);
    for id in pool.idle_ids() {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{index .Config.Labels \"warmpool.instance\"}} {{index .Config.Labels \"warmpool.profile\"}} {{.State.Running}}", &id])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.starts_with("inst-"), "{text}");
        assert!(
            text.trim_end().ends_with(&format!("{} true", p.name)),
            "{text}"
        );
    }
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_burst_of_three_times_max_containers_queues_and_completes() {
    let e = engine();
    let p = pool_profile(BUSYBOX, 1, 2);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
    let mut runs = Vec::new();
    for i in 0..6 {
        let pool = pool.clone();
        runs.push(tokio::spawn(async move {
            let job = Job {
                env: vec![("N".into(), i.to_string())],
                ..job(&["sh", "-c", "sleep 0.3; echo job $N"])
            };
            let mut sink = CollectSink::default();
            let run = pool
                .run(job, &mut sink, RunControl::default())
                .await
                .unwrap();
            (i, String::from_utf8_lossy(&sink.stdout).to_string(), run)
        }));
    }
    for r in runs {
        let (i, out, run) = r.await.unwrap();
        assert_eq!(out, format!("job {i}\n"));
        assert_eq!(run.outcome.exit_code(), 0);
    }
    let c = pool.counters();
    let hits = c.hits.load(std::sync::atomic::Ordering::Relaxed);
    let misses = c.misses.load(std::sync::atomic::Ordering::Relaxed);
    let queued = c.queued.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hits + misses, 6);
    assert!(
        queued >= 3,
        "with 2 containers at most, most of 6 jobs queue: {queued}"
    );
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let e = engine();
    let mut p = pool_profile(BUSYBOX, 0, 1);
    p.max_idle = 0;
    p.max_queue = 1;
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    let busy = pool.claim().await.unwrap(); // takes the only slot
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.claim().await.map(|c| c.id().to_string()) })
    };
    wait_until("one claim queues", || pool.stats().queued == 1).await;
    let refused = pool.claim().await.err().expect("refused");
    assert!(refused.to_string().contains("full"), "{refused}");
    drop(busy); // frees the slot: the queued claim gets a new container
    let served = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_killed_parked_container_is_noticed_and_replaced() {
    let e = engine();
    let p = pool_profile(BUSYBOX, 1, 4);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
    let victim = pool.idle_ids()[0].clone();
    let killed = Command::new("docker")
        .args(["kill", &victim])
        .output()
        .unwrap();
    assert!(killed.status.success());
    wait_until(
        "the dead container leaves the pool and a new one is parked",
        || {
            let ids = pool.idle_ids();
            ids.len() == 1 && ids[0] != victim
        },
    )
    .await;
    assert_eq!(pool.stats().reaped, 1);
    // The pool hands out only live containers.
    let mut sink = CollectSink::default();
    let run = pool
        .run(job(&["echo", "alive"]), &mut sink, RunControl::default())
        .await
        .unwrap();
    assert_eq!(sink.stdout, b"alive\n");
    assert!(!run.retried);
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_claimed_container_removed_before_hand_over_is_retried_transparently() {
    let e = engine();
    let p = pool_profile(BUSYBOX, 1, 4);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
    let claimed = pool.claim().await.unwrap();
    assert!(claimed.hit);
    let rm = Command::new("docker")
        .args(["rm", "-f", claimed.id()])
        .output()
        .unwrap();
    assert!(rm.status.success());
    let mut sink = CollectSink::default();
    let run = pool
        .run_claimed(
            claimed,
            job(&["echo", "ran anyway"]),
            &mut sink,
            RunControl::default(),
        )
        .await
        .unwrap();
    assert!(run.retried);
    assert_eq!(sink.stdout, b"ran anyway\n");
    assert_eq!(run.outcome.exit_code(), 0);
    assert_eq!(pool.stats().retried, 1);
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn retagging_the_image_rolls_the_parked_containers() {
    let e = engine();
    let tag = format!("warmpool-test/roll-{}:latest", unique("r").to_lowercase());
    let tagged = Command::new("docker")
        .args(["tag", BUSYBOX, &tag])
        .output()
        .unwrap();
    assert!(tagged.status.success());
    let p = pool_profile(&tag, 2, 6);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(pool.wait_idle(2, Duration::from_secs(30)).await);
    let old_ids = pool.idle_ids();
    let old_image = pool.profile().image.id.clone();
    // A job running on the old image goes on untouched.
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut sink = CollectSink::default();
            let run = pool
                .run(
                    job(&["sh", "-c", "sleep 2; echo old job done"]),
                    &mut sink,
                    RunControl::default(),
                )
                .await
                .unwrap();
            (run, sink.stdout)
        })
    };
    // Rebuild: same tag, new image.
    let dir = std::env::temp_dir().join(unique("rollctx"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {BUSYBOX}\nLABEL rebuilt={}\n", unique("v")),
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    wait_until("the parked containers run the new image", || {
        let ids = pool.idle_ids();
        pool.profile().image.id != old_image
            && ids.len() == 2
            && ids.iter().all(|i| !old_ids.contains(i))
    })
    .await;
    for id in pool.idle_ids() {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.Image}}", &id])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            pool.profile().image.id
        );
    }
    let (run, out) = running.await.unwrap();
    assert_eq!(out, b"old job done\n");
    assert_eq!(run.outcome.exit_code(), 0);
    assert!(pool.stats().replaced >= 1, "{:?}", pool.stats());
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
    let _ = Command::new("docker").args(["rmi", &tag]).output();
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish_then_leaves_nothing() {
    let e = engine();
    let p = pool_profile(BUSYBOX, 2, 4);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(pool.wait_idle(2, Duration::from_secs(30)).await);
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut sink = CollectSink::default();
            let run = pool
                .run(
                    job(&["sh", "-c", "sleep 1; echo finished"]),
                    &mut sink,
                    RunControl::default(),
                )
                .await;
            (run.map(|r| r.outcome.exit_code()), sink.stdout)
        })
    };
    wait_until("the job runs", || pool.stats().busy == 1).await;
    pool.shutdown(Duration::from_secs(20)).await;
    let (code, out) = running.await.unwrap();
    assert_eq!(code.unwrap(), 0);
    assert_eq!(out, b"finished\n");
    assert!(pool.claim().await.is_err(), "a closed pool takes no jobs");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn shutdown_kills_what_outlives_the_grace() {
    let e = engine();
    let p = pool_profile(BUSYBOX, 1, 4);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    assert!(pool.wait_idle(1, Duration::from_secs(30)).await);
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut sink = CollectSink::default();
            pool.run(job(&["sleep", "60"]), &mut sink, RunControl::default())
                .await
                .map(|r| r.outcome)
        })
    };
    wait_until("the job runs", || pool.stats().busy == 1).await;
    pool.shutdown(Duration::from_millis(500)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(outcome.exit_code(), 0, "killed: {outcome:?}");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn sweep_removes_only_its_own_instances_leftovers() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let mine = unique("mine");
    let theirs = unique("theirs");
    let mut ids = Vec::new();
    for inst in [&mine, &theirs] {
        let out = Command::new("docker")
            .args([
                "create",
                "--label",
                "warmpool.managed=true",
                "--label",
                &format!("warmpool.instance={inst}"),
                "--label",
                &format!("{TEST_LABEL}={}", p.labels[TEST_LABEL]),
                BUSYBOX,
                "sleep",
                "60",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let runtime: Arc<dyn Runtime> = e.runtime.clone();
    assert_eq!(sweep(&runtime, &mine).await.unwrap(), 1);
    let exists = |id: &str| {
        Command::new("docker")
            .args(["inspect", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!exists(&ids[0]), "our leftover is removed");
    assert!(exists(&ids[1]), "another instance's container is untouched");
    let _ = Command::new("docker").args(["rm", "-f", &ids[1]]).output();
}

#[tokio::test]
async fn a_pool_that_dies_abruptly_leaves_no_orphans_after_a_restart() {
    let p = pool_profile(BUSYBOX, 2, 4);
    let _cleanup = cleanup(&p);
    let instance = unique("crash");
    // The first life of the pool, on a runtime of its own that we then drop on the
    // floor: no shutdown, no cleanup, as if the process had been killed.
    let (p1, inst1) = (p.clone(), instance.clone());
    let old_ids = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let ids = rt.block_on(async move {
            let e = engine();
            let pool = Pool::start(e.executor.clone(), resolve(&e, &p1).await, &inst1);
            assert!(pool.wait_idle(2, Duration::from_secs(30)).await);
            let busy = pool.claim().await.unwrap();
            assert!(pool.wait_idle(2, Duration::from_secs(30)).await);
            let mut ids = pool.idle_ids();
            ids.push(busy.id().to_string());
            std::mem::forget(busy);
            ids
        });
        rt.shutdown_background();
        ids
    })
    .join()
    .unwrap();
    assert_eq!(old_ids.len(), 3);
    // The second life: sweep what the first left, then fill again.
    let e = engine();
    let runtime: Arc<dyn Runtime> = e.runtime.clone();
    sweep(&runtime, &instance).await.unwrap();
    let pool = Pool::start(e.executor.clone(), resolve(&e, &p).await, &instance);
    assert!(pool.wait_idle(2, Duration::from_secs(30)).await);
    let exists = |id: &str| {
        Command::new("docker")
            .args(["inspect", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    wait_until("no container of the first life is left", || {
        old_ids.iter().all(|id| !exists(id))
    })
    .await;
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn pools_sweep_their_instance_and_fill_every_profile() {
    let e = engine();
    let instance = unique("set");
    let label = unique("setlabel");
    let config = warmpool_core::Config::parse(&format!(
        r#"
        [server]
        instance = "{instance}"
        [profiles.a]
        image = "{BUSYBOX}"
        network = "none"
        min_idle = 1
        labels = {{ "{TEST_LABEL}" = "{label}" }}
        [profiles.b]
        image = "{NOSHELL}"
        network = "none"
        min_idle = 2
        labels = {{ "{TEST_LABEL}" = "{label}" }}
        "#
    ))
    .unwrap();
    let _cleanup = CleanupGuard(label.clone());
    // A leftover of an earlier life of this instance.
    let out = Command::new("docker")
        .args([
            "create",
            "--label",
            "warmpool.managed=true",
            "--label",
            &format!("warmpool.instance={instance}"),
            "--label",
            &format!("{TEST_LABEL}={label}"),
            BUSYBOX,
            "true",
        ])
        .output()
        .unwrap();
    let leftover = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pools = warmpool_pool::Pools::start(&config, e.executor.clone())
        .await
        .unwrap();
    assert_eq!(pools.swept, 1);
    let gone = !Command::new("docker")
        .args(["inspect", &leftover])
        .output()
        .unwrap()
        .status
        .success();
    assert!(gone, "the leftover is removed");
    wait_until("every pool is at min_idle", || pools.ready()).await;
    assert_eq!(pools.get("b").unwrap().stats().idle, 2);
    let mut sink = CollectSink::default();
    let run = pools
        .get("b")
        .unwrap()
        .run(
            job(&["args", "from", "b"]),
            &mut sink,
            RunControl::default(),
        )
        .await
        .unwrap();
    assert!(run.hit);
    assert_eq!(sink.stdout, b"from\nb\n");
    pools.shutdown(Duration::from_secs(5)).await;
    let left = e
        .runtime
        .list(&[(TEST_LABEL, label.as_str())])
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn timed_out_and_cancelled_queued_claims_leak_no_slot() {
    let e = engine();
    let mut p = pool_profile(BUSYBOX, 0, 1);
    p.max_idle = 0;
    // Long enough for a park on a loaded machine: the run after each round may
    // have to wait for the container parked for the (abandoned) queued claim.
    p.max_wait = Duration::from_secs(3);
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    for _ in 0..2 {
        let busy = pool.claim().await.unwrap();
        // One queued claim times out, another is abandoned by its caller.
        let timed_out = pool.claim().await.err().expect("times out");
        assert!(timed_out.to_string().contains("max_wait"), "{timed_out}");
        let abandoned = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.claim().await.map(|c| c.id().to_string()) })
        };
        wait_until("the claim queues", || pool.stats().queued == 1).await;
        abandoned.abort();
        drop(busy);
        // The slot came back: the next job runs (the pool is not stuck at 1 busy).
        let mut sink = CollectSink::default();
        let run = tokio::time::timeout(
            Duration::from_secs(30),
            pool.run(job(&["echo", "ok"]), &mut sink, RunControl::default()),
        )
        .await
        .expect("no slot leaked")
        .unwrap();
        assert_eq!(run.outcome.exit_code(), 0);
        wait_until("nothing busy", || {
            pool.stats().busy == 0 && pool.stats().starting == 0
        })
        .await;
    }
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

/// A small, seeded random source (splitmix64): the delays differ per run, and a
/// failure prints the seed that reproduces them.
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// What the engine holds of this test's containers: (running ids, others as
/// `id state`).
async fn on_engine(e: &Engine, label: &str) -> (Vec<String>, Vec<String>) {
    let list = e.runtime.list(&[(TEST_LABEL, label)]).await.unwrap();
    let mut running = Vec::new();
    let mut other = Vec::new();
    for c in list {
        if c.state == warmpool_runtime::ContainerState::Running {
            running.push(c.id);
        } else {
            other.push(format!("{} {}", c.id, c.state));
        }
    }
    (running, other)
}

#[tokio::test]
async fn claims_dropped_during_cold_starts_leave_no_container_behind() {
    // The measured defect: a job cancelled during its cold start (its claim future
    // dropped while the engine creates the container) left a container in `Created`
    // that nobody counted or removed. Here 4 callers make 20 claims each and drop
    // every one after a random 0-250 ms, so many are dropped inside a create.
    let e = engine();
    let p = pool_profile(BUSYBOX, 0, 4);
    let label = p.labels[TEST_LABEL].clone();
    let _cleanup = cleanup(&p);
    let pool = start(&e, &p).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("delay seed: {seed}");
    let mut callers = Vec::new();
    for caller in 0..4u64 {
        let pool = pool.clone();
        let mut delays = Delays(seed ^ caller.wrapping_mul(0x2545_f491_4f6c_dd1d));
        callers.push(tokio::spawn(async move {
            for _ in 0..20 {
                let delay = Duration::from_millis(delays.next_ms(251));
                // Dropped at the delay, whatever the claim is doing; a claim served
                // before it is dropped with its container (a job that ended).
                let _ = tokio::time::timeout(delay, pool.claim()).await;
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    // Wait for the state that must come: nothing in flight or busy, no container
    // of this test other than running parked ones, and exactly the pool's idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = pool.stats();
        let (running, other) = on_engine(&e, &label).await;
        let mut idle = pool.idle_ids();
        idle.sort();
        let mut running_sorted = running.clone();
        running_sorted.sort();
        if stats.busy == 0 && stats.starting == 0 && other.is_empty() && idle == running_sorted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool and the engine did not settle (seed {seed}): pool {stats:?}, idle \
             {idle:?}; engine running {running:?}, other {other:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_cold_start_whose_claim_is_dropped_serves_the_next_claim() {
    // One container at most, none kept parked: a claim dropped during its cold
    // start leaves the container it began to the pool, and the next claim (queued
    // behind that park) gets exactly that one: the engine creates one container.
    let e = engine();
    let mut p = pool_profile(BUSYBOX, 0, 1);
    p.max_idle = 0;
    let label = p.labels[TEST_LABEL].clone();
    let _cleanup = cleanup(&p);
    // Every job container created for this test (not the engine's one gate-fill
    // helper), from the engine's events. The subscription is live once it reports
    // a marker container created now.
    let mut events = e
        .runtime
        .events(&[(TEST_LABEL, label.as_str()), (labels::ROLE, "job")])
        .await
        .unwrap();
    let (created_tx, mut created_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(event)) = futures_util::StreamExt::next(&mut events).await {
            if let EngineEvent::Container { id, action } = event {
                if action == warmpool_runtime::ContainerAction::Create
                    && created_tx.send(id).is_err()
                {
                    return;
                }
            }
        }
    });
    let mut next_created = async |within: Duration| {
        tokio::time::timeout(within, created_rx.recv())
            .await
            .ok()
            .flatten()
    };
    let mut markers = Vec::new();
    'live: loop {
        assert!(markers.len() < 30, "the engine's events never came");
        let marker = Command::new("docker")
            .args(["create", "--label", &format!("{TEST_LABEL}={label}")])
            .args(["--label", &format!("{}=job", labels::ROLE), BUSYBOX, "true"])
            .output()
            .unwrap();
        assert!(marker.status.success());
        markers.push(String::from_utf8_lossy(&marker.stdout).trim().to_string());
        while let Some(id) = next_created(Duration::from_secs(1)).await {
            if markers.contains(&id) {
                break 'live;
            }
        }
    }
    let _ = Command::new("docker")
        .arg("rm")
        .arg("-f")
        .args(&markers)
        .output();

    let pool = start(&e, &p).await;
    // Dropped inside its park: once the pool counts the container it is starting.
    {
        let claim = pool.claim();
        tokio::pin!(claim);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool.stats().starting == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the claim never started a container: {:?}",
                pool.stats()
            );
            tokio::select! {
                _ = &mut claim => panic!("the claim was served before its park was seen"),
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    }
    let claimed = pool.claim().await.unwrap();
    assert!(!claimed.hit);
    let served = claimed.id().to_string();
    // Up to the served container's creation (events come in the engine's order).
    let mut created = Vec::new();
    while !created.contains(&served) {
        match next_created(Duration::from_secs(30)).await {
            Some(id) if markers.contains(&id) => {}
            Some(id) => created.push(id),
            None => panic!("no create event for {served}; created {created:?}"),
        }
    }
    assert_eq!(
        created,
        vec![served],
        "one container served both claims: {:?}, started {}",
        pool.stats(),
        pool.counters()
            .started
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(claimed);
    pool.shutdown(Duration::from_secs(5)).await;
    assert_clean(&e, &p).await;
}
