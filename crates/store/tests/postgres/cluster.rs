//! Several nodes on one database: two (or three) stores on the same database
//! are two nodes. The shared queue, leases, take-over and fencing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use warmpool_store::conformance::{exited, job};
use warmpool_store::{
    Beat, Clock, JobState, JobStore, ManualClock, NewJob, NodeBeat, PgStore, StoreError, StreamName,
};

use super::{connect, fresh_database};

fn beat(node: &str) -> NodeBeat {
    NodeBeat {
        node: node.into(),
        address: format!("http://{node}:8080"),
        pools: r#"{"py":{"idle":1}}"#.into(),
    }
}

async fn two_nodes() -> (PgStore, PgStore, Arc<ManualClock>) {
    let url = fresh_database();
    let clock = Arc::new(ManualClock::new());
    let a = connect(&url, &clock).await;
    let b = connect(&url, &clock).await;
    (a, b, clock)
}

async fn output(store: &PgStore, id: &str) -> Vec<u8> {
    store
        .read_output(id, StreamName::Stdout, 0, usize::MAX)
        .await
        .expect("read")
        .expect("known job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_at_once_never_get_one_job_twice() {
    let (a, b, _) = two_nodes().await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut inserted = HashSet::new();
    for _ in 0..120 {
        inserted.insert(a.insert(&job("py")).await.expect("insert"));
    }
    b.insert(&job("other")).await.expect("insert");
    let claimers: Vec<_> = (0..6)
        .map(|n| {
            let (store, node) = if n % 2 == 0 { (&a, "a") } else { (&b, "b") };
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(q) = store
                    .claim_next("py", node, true, false)
                    .await
                    .expect("claim")
                {
                    assert_eq!(q.job, job("py"), "claimed with its input");
                    got.push((q.id, node));
                }
                got
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await.expect("claimer"));
    }
    let ids: HashSet<&String> = claimed.iter().map(|(id, _)| id).collect();
    assert_eq!(claimed.len(), 120, "every job claimed once");
    assert_eq!(ids.len(), 120);
    assert_eq!(ids, inserted.iter().collect());
    for (id, node) in &claimed {
        let record = a.get(id).await.expect("get").expect("stored");
        assert_eq!(record.state, JobState::Running);
        assert_eq!(record.node.as_deref(), Some(*node));
        assert_eq!(record.warm, Some(true));
        // The input went with the claim.
        assert_eq!(a.queued(id).await.expect("queued"), None);
    }
    assert_eq!(a.queued_count("py").await.expect("count"), 0);
    assert_eq!(b.queued_count("other").await.expect("count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_go_oldest_first_and_keep_input_when_asked() {
    let (a, _b, clock) = two_nodes().await;
    let first = a
        .insert(&NewJob {
            stdin: Some(b"in".to_vec()),
            ..job("py")
        })
        .await
        .expect("insert");
    let second = a.insert(&job("py")).await.expect("insert");
    clock.advance(Duration::from_secs(2));
    let q = a
        .claim_next("py", "a", false, true)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(q.id, first);
    assert_eq!(q.job.stdin.as_deref(), Some(&b"in"[..]));
    let record = a.get(&first).await.expect("get").expect("stored");
    assert_eq!(record.started_ms, Some(clock.now_ms()));
    assert_eq!(record.warm, Some(false));
    assert_eq!(
        a.claim_next("go", "a", false, false).await.expect("claim"),
        None
    );
    let q = a.claim_next("py", "a", true, false).await.expect("claim");
    assert_eq!(q.map(|q| q.id), Some(second));
    assert_eq!(
        a.claim_next("py", "a", true, false).await.expect("claim"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_heartbeats_and_nodes() {
    let (a, b, clock) = two_nodes().await;
    assert_eq!(
        a.heartbeat(&beat("a")).await.expect("beat"),
        Beat::Fenced,
        "no join yet"
    );
    a.join(&beat("a")).await.expect("join");
    b.join(&beat("b")).await.expect("join");
    clock.advance(Duration::from_secs(3));
    let changed = NodeBeat {
        pools: "{}".into(),
        ..beat("a")
    };
    assert_eq!(a.heartbeat(&changed).await.expect("beat"), Beat::Alive);
    let nodes = b.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].node, "a");
    assert_eq!(nodes[0].pools, "{}");
    assert_eq!(nodes[0].address, "http://a:8080");
    assert_eq!(nodes[0].generation, 1);
    assert_eq!(nodes[0].joined_ms, clock.now_ms() - 3_000);
    assert_eq!(nodes[0].last_seen_ms, clock.now_ms());
    assert!(!nodes[0].lost);
    assert_eq!(nodes[1].last_seen_ms, clock.now_ms() - 3_000);

    // The same name joining through another store (a new process): the old
    // one's lease is gone.
    b.join(&beat("a")).await.expect("join as a");
    assert_eq!(a.heartbeat(&beat("a")).await.expect("beat"), Beat::Fenced);
    assert_eq!(b.heartbeat(&beat("a")).await.expect("beat"), Beat::Alive);
    let nodes = a.nodes().await.expect("nodes");
    assert_eq!(nodes[0].generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_take_overs_at_once_happen_once() {
    let url = fresh_database();
    let clock = Arc::new(ManualClock::new());
    let a = connect(&url, &clock).await;
    let b = Arc::new(connect(&url, &clock).await);
    let c = Arc::new(connect(&url, &clock).await);
    for (store, node) in [(&a, "a"), (&*b, "b"), (&*c, "c")] {
        store.join(&beat(node)).await.expect("join");
    }
    let mut running = Vec::new();
    for profile in ["py", "retry", "retry"] {
        a.insert(&job(profile)).await.expect("insert");
        let keep = profile == "retry";
        let q = a.claim_next(profile, "a", true, keep).await.expect("claim");
        running.push(q.expect("a job").id);
    }
    // The third was cancelled while it ran: it is interrupted, not rerun.
    a.request_cancel(&running[2]).await.expect("cancel");
    let theirs = b
        .insert_started(&job("py"), "b", true)
        .await
        .expect("insert");

    // Not lost a millisecond before the timeout.
    clock.advance(Duration::from_secs(30) - Duration::from_millis(1));
    assert!(b
        .take_over("b", Duration::from_secs(30), &[])
        .await
        .expect("take")
        .is_empty());
    clock.advance(Duration::from_millis(1));
    b.heartbeat(&beat("b")).await.expect("beat");
    c.heartbeat(&beat("c")).await.expect("beat");
    let requeue = vec!["retry".to_owned()];
    let (by_b, by_c) = tokio::join!(
        b.take_over("b", Duration::from_secs(30), &requeue),
        c.take_over("c", Duration::from_secs(30), &requeue),
    );
    let mut all: Vec<_> = by_b.expect("take b");
    all.extend(by_c.expect("take c"));
    assert_eq!(all.len(), 1, "node a was taken over once: {all:?}");
    let taken = &all[0];
    assert_eq!(taken.node, "a");
    assert_eq!(taken.requeued, vec![running[1].clone()]);
    assert_eq!(
        taken.interrupted,
        vec![running[0].clone(), running[2].clone()]
    );

    let interrupted = a.get(&running[0]).await.expect("get").expect("stored");
    assert_eq!(interrupted.state, JobState::Interrupted);
    assert_eq!(
        interrupted.error.as_deref(),
        Some("node \"a\" was lost (no heartbeat for 30s)")
    );
    assert_eq!(interrupted.finished_ms, Some(clock.now_ms()));
    let requeued = a.get(&running[1]).await.expect("get").expect("stored");
    assert_eq!(requeued.state, JobState::Queued);
    assert_eq!(
        (requeued.node, requeued.started_ms, requeued.warm),
        (None, None, None)
    );
    // The requeued job runs again with its input.
    assert_eq!(
        a.queued(&running[1]).await.expect("queued").map(|q| q.job),
        Some(job("retry"))
    );
    assert_eq!(
        b.get(&theirs).await.expect("get").expect("stored").state,
        JobState::Running,
        "the live node's job is its own"
    );
    let nodes = b.nodes().await.expect("nodes");
    assert!(nodes[0].lost && !nodes[1].lost && !nodes[2].lost);
    assert_eq!(a.heartbeat(&beat("a")).await.expect("beat"), Beat::Fenced);
    // Once lost, not again.
    clock.advance(Duration::from_secs(60));
    b.heartbeat(&beat("b")).await.expect("beat");
    let again = b
        .take_over("b", Duration::from_secs(30), &requeue)
        .await
        .expect("take");
    assert_eq!(again.len(), 1, "c, not a again: {again:?}");
    assert_eq!(again[0].node, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_late_writes_are_fenced() {
    let (a, b, clock) = two_nodes().await;
    a.join(&beat("a")).await.expect("join");
    b.join(&beat("b")).await.expect("join");
    let interrupted = a.insert(&job("py")).await.expect("insert");
    let requeued = a.insert(&job("retry")).await.expect("insert");
    assert!(a.start(&interrupted, "a", true).await.expect("start"));
    let q = a.claim_next("retry", "a", true, true).await.expect("claim");
    assert_eq!(q.map(|q| q.id).as_deref(), Some(requeued.as_str()));
    for id in [&interrupted, &requeued] {
        a.append_output(id, StreamName::Stdout, 0, b"first run")
            .await
            .expect("append");
    }
    clock.advance(Duration::from_secs(31));
    b.heartbeat(&beat("b")).await.expect("beat");
    let taken = b
        .take_over("b", Duration::from_secs(30), &["retry".to_owned()])
        .await
        .expect("take over");
    assert_eq!(taken[0].requeued, vec![requeued.clone()]);

    // The requeued job starts from nothing: no output, lengths 0.
    let record = b.get(&requeued).await.expect("get").expect("stored");
    assert_eq!(record.output_len, [0, 0]);
    assert!(output(&b, &requeued).await.is_empty());
    // Node a's late writes are refused, to both jobs, and store nothing.
    for id in [&interrupted, &requeued] {
        match a.append_output(id, StreamName::Stdout, 9, b" more").await {
            Err(StoreError::Fenced { id: fenced }) => assert_eq!(&fenced, id),
            other => panic!("a late append: {other:?}"),
        }
        match a.finish(id, &exited(0)).await {
            Err(StoreError::Fenced { .. }) => {}
            other => panic!("a late finish: {other:?}"),
        }
    }
    assert_eq!(output(&b, &interrupted).await, b"first run");
    assert_eq!(
        b.get(&interrupted)
            .await
            .expect("get")
            .expect("stored")
            .state,
        JobState::Interrupted
    );
    // b runs it again; a's late writes still go nowhere, b's are stored.
    let q = b
        .claim_next("retry", "b", false, true)
        .await
        .expect("claim");
    assert_eq!(q.map(|q| q.id).as_deref(), Some(requeued.as_str()));
    assert!(matches!(
        a.append_output(&requeued, StreamName::Stdout, 0, b"stale")
            .await,
        Err(StoreError::Fenced { .. })
    ));
    b.append_output(&requeued, StreamName::Stdout, 0, b"second run")
        .await
        .expect("append");
    assert_eq!(output(&b, &requeued).await, b"second run");
    let ended = b.finish(&requeued, &exited(0)).await.expect("finish");
    assert_eq!(ended.map(|r| r.state), Some(JobState::Succeeded));
    assert_eq!(
        b.queued(&requeued).await.expect("queued"),
        None,
        "input wiped at the end"
    );

    // a joins again (its containers are gone): its new jobs are its own, and a
    // job it started under the new generation is fenced by yet another join.
    a.join(&beat("a")).await.expect("join again");
    assert_eq!(a.heartbeat(&beat("a")).await.expect("beat"), Beat::Alive);
    let id = a.insert(&job("py")).await.expect("insert");
    assert!(a.start(&id, "a", true).await.expect("start"));
    a.append_output(&id, StreamName::Stdout, 0, b"ok")
        .await
        .expect("append");
    b.join(&beat("a")).await.expect("a new process named a");
    assert!(matches!(
        a.append_output(&id, StreamName::Stdout, 2, b"late").await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        a.finish(&id, &exited(0)).await,
        Err(StoreError::Fenced { .. })
    ));
    // The new process (b's store, joined as a) does not own it either: its
    // join ended it (a run of an earlier generation), so its start's
    // recover finds nothing left to interrupt.
    assert!(matches!(
        b.finish(&id, &exited(0)).await,
        Err(StoreError::Fenced { .. })
    ));
    let record = b.get(&id).await.expect("get").expect("stored");
    assert_eq!(record.state, JobState::Interrupted);
    assert_eq!(
        record.error.as_deref(),
        Some("node \"a\" joined again (generation 3) while this job ran under an earlier one")
    );
    assert_eq!(
        output(&b, &id).await,
        b"ok",
        "a's late append stored nothing"
    );
    let recovered = b.recover("a", "restarted").await.expect("recover");
    assert!(recovered.interrupted.is_empty(), "{recovered:?}");
}

/// Appends through `store` at the stored length, one byte at a time, until
/// they are fenced; how many were stored (answered `Ok`).
async fn append_until_fenced(store: Arc<PgStore>, id: String) -> u64 {
    let mut stored = 0u64;
    loop {
        match store
            .append_output(&id, StreamName::Stdout, stored, b"x")
            .await
        {
            Ok(()) => stored += 1,
            Err(StoreError::Fenced { id: fenced }) => {
                assert_eq!(fenced, id);
                return stored;
            }
            Err(e) => panic!("append to {id}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_racing_a_take_over_land_before_it_or_not_at_all() {
    let (a, b, clock) = two_nodes().await;
    let a = Arc::new(a);
    a.join(&beat("a")).await.expect("join");
    b.join(&beat("b")).await.expect("join");
    a.insert(&job("retry")).await.expect("insert");
    let kept = a.claim_next("retry", "a", true, true).await.expect("claim");
    let kept = kept.expect("a job").id;
    let plain = a
        .insert_started(&job("py"), "a", true)
        .await
        .expect("insert");
    let free = a.insert(&job("go")).await.expect("insert");
    clock.advance(Duration::from_secs(31));
    b.heartbeat(&beat("b")).await.expect("beat");

    let writers: Vec<_> = [&kept, &plain, &free]
        .into_iter()
        .map(|id| tokio::spawn(append_until_fenced(Arc::clone(&a), id.clone())))
        .collect();
    // Take over only once every writer has stored something.
    for id in [&kept, &plain, &free] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.get(id).await.expect("get").expect("stored").output_len[0] == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no append to {id}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let taken = b
        .take_over("b", Duration::from_secs(30), &["retry".to_owned()])
        .await
        .expect("take over");
    assert_eq!(taken[0].requeued, vec![kept.clone()]);
    assert_eq!(taken[0].interrupted, vec![plain.clone()]);
    let mut counts = Vec::new();
    for writer in writers {
        let fenced = tokio::time::timeout(Duration::from_secs(10), writer).await;
        counts.push(fenced.expect("fenced after the take-over").expect("writer"));
    }
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");

    // Queued again from nothing: no append of the lost run landed after the
    // take-over cleared its output.
    let record = b.get(&kept).await.expect("get").expect("stored");
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(record.output_len, [0, 0]);
    assert!(output(&b, &kept).await.is_empty());
    // Every append answered `Ok` is stored, and none after.
    for (id, n) in [(&plain, counts[1]), (&free, counts[2])] {
        let record = b.get(id).await.expect("get").expect("stored");
        assert_eq!(record.output_len[0], n, "{id}");
        assert_eq!(output(&b, id).await.len() as u64, n, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_expire_by_the_clock_and_cancels_are_listed() {
    let (a, b, clock) = two_nodes().await;
    let old = a
        .insert(&NewJob {
            stdin: Some(b"x".to_vec()),
            ..job("py")
        })
        .await
        .expect("insert");
    let other = a.insert(&job("go")).await.expect("insert");
    clock.advance(Duration::from_secs(10));
    let young = a.insert(&job("py")).await.expect("insert");
    assert_eq!(a.queued_count("py").await.expect("count"), 2);
    let expired = b
        .expire_queued("py", Duration::from_secs(10), "waited too long")
        .await
        .expect("expire");
    assert_eq!(expired, vec![old.clone()]);
    let record = a.get(&old).await.expect("get").expect("stored");
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error.as_deref(), Some("waited too long"));
    assert_eq!(record.finished_ms, Some(clock.now_ms()));
    assert_eq!(a.queued(&old).await.expect("queued"), None);
    assert_eq!(a.queued_count("py").await.expect("count"), 1);
    assert!(a.queued(&young).await.expect("queued").is_some());
    assert!(a.queued(&other).await.expect("queued").is_some());

    assert!(a.start(&young, "a", true).await.expect("start"));
    assert!(a.cancels_requested("a").await.expect("cancels").is_empty());
    b.request_cancel(&young).await.expect("cancel");
    assert_eq!(
        a.cancels_requested("a").await.expect("cancels"),
        vec![young]
    );
    assert!(a.cancels_requested("b").await.expect("cancels").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_seen_by_two_nodes_at_once_starts_one_job() {
    let (a, b, _) = two_nodes().await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    for n in 0..20 {
        let delivery = format!("d-{n}");
        let bot = job("bot");
        let (first, second) = tokio::join!(
            a.insert_for_delivery(&delivery, "{}", &bot),
            b.insert_for_delivery(&delivery, "{}", &bot),
        );
        let started: Vec<String> = [first.expect("a"), second.expect("b")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(started.len(), 1, "delivery {delivery}: {started:?}");
    }
    assert_eq!(a.queued_count("bot").await.expect("count"), 20);
    assert_eq!(
        b.unanswered_deliveries().await.expect("deliveries").len(),
        20
    );
}
