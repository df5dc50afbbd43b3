//! The database going away under a running node: a restart is ridden out
//! (operations retry, the listener reconnects and says `Resync`); a database
//! that stays down makes operations fail with `Backend` in bounded time, never
//! hang. Each test has its own cluster (it is restarted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::block_in_place;
use warmpool_store::conformance::{exited, job};
use warmpool_store::{JobState, JobStore, ManualClock, StoreError, StoreEvent, StreamName};
use warmpool_testkit::postgres::PgCluster;

use super::connect;
use super::events::{any_event, next_event, until_listening};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_is_ridden_out() {
    let mut cluster = block_in_place(PgCluster::start);
    let url = block_in_place(|| cluster.create_database("restarted"));
    let clock = Arc::new(ManualClock::new());
    let store = connect(&url, &clock).await;
    let mut rx = store.events();
    until_listening(&store).await;
    let id = store.insert(&job("py")).await.expect("insert");
    assert!(store.start(&id, "a", true).await.expect("start"));
    store
        .append_output(&id, StreamName::Stdout, 0, b"before ")
        .await
        .expect("append");

    // Every event so far (the first Resync among them) is read.
    while rx.try_recv().is_ok() {}
    block_in_place(|| cluster.restart());
    // Every pooled connection was cut: the next operations reconnect.
    store
        .append_output(&id, StreamName::Stdout, 7, b"after")
        .await
        .expect("append after the restart");
    let record = store.get(&id).await.expect("get").expect("stored");
    assert_eq!(record.output_len, [12, 0]);
    // The listener reconnects and says events may have been missed.
    loop {
        if any_event(&mut rx).await == StoreEvent::Resync {
            break;
        }
    }
    let other = store.insert(&job("go")).await.expect("insert");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Queued {
            profile: "go".into()
        }
    );
    assert!(store
        .finish(&id, &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(store.queued_count("go").await.expect("count"), 1);
    assert!(store.queued(&other).await.expect("queued").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stays_down_fails_operations_in_bounded_time() {
    let mut cluster = block_in_place(PgCluster::start);
    let url = block_in_place(|| cluster.create_database("down"));
    let clock = Arc::new(ManualClock::new());
    let store = connect(&url, &clock).await;
    let id = store.insert(&job("py")).await.expect("insert");

    block_in_place(|| cluster.stop());
    let started = Instant::now();
    match store.get(&id).await {
        Err(StoreError::Backend { action, message }) => {
            assert_eq!(action, "read a job");
            assert!(message.contains("gave up after 10s"), "{message}");
        }
        other => panic!("a read with the database down: {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(20),
        "retried for a bounded time: {took:?}"
    );
    assert!(matches!(
        store.start(&id, "a", true).await,
        Err(StoreError::Backend { .. })
    ));

    // Back up: the same store works again, and nothing was half done.
    block_in_place(|| cluster.resume());
    assert_eq!(
        store.get(&id).await.expect("get").map(|r| r.state),
        Some(JobState::Queued)
    );
    assert!(store.start(&id, "a", true).await.expect("start"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_during_a_restart_waits_for_it() {
    let mut cluster = block_in_place(PgCluster::start);
    let url = block_in_place(|| cluster.create_database("during"));
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(connect(&url, &clock).await);
    block_in_place(|| cluster.stop());
    // Started while the database is down; it comes back within the retry time.
    let pending = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.insert(&job("py")).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    block_in_place(|| cluster.resume());
    let id = pending
        .await
        .expect("task")
        .expect("insert once the database is back");
    let listed = store
        .list(&warmpool_store::ListQuery {
            state: None,
            profile: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "stored once");
    assert_eq!(listed[0].id, id);
}
