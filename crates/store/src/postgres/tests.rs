//! What only the PostgreSQL backend has, tested from inside: the retry rule
//! at an unknown commit (a real one: a trigger ends the connection during
//! `COMMIT`), an insert recognising its own committed row, connect errors.
//! The conformance suite and the cluster tests are in `tests/postgres/`.

use std::sync::LazyLock;

use super::*;
use crate::clock::{ManualClock, SystemClock};
use crate::conformance::job;
use warmpool_testkit::postgres::PgCluster;

static CLUSTER: LazyLock<PgCluster> = LazyLock::new(PgCluster::start);

async fn store(db: &str) -> (PgStore, String) {
    let url = tokio::task::block_in_place(|| CLUSTER.create_database(db));
    let store = PgStore::connect(&url, Arc::new(ManualClock::new()))
        .await
        .expect("connect");
    (store, db.to_owned())
}

fn count_jobs(db: &str) -> String {
    tokio::task::block_in_place(|| CLUSTER.psql(db, "SELECT count(*) FROM jobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_insert_recognises_its_own_committed_row() {
    let (store, db) = store("u_retried_insert").await;
    let conn = store.pool.get().await.expect("a connection");
    let tx = listen::Tx::new(conn.client().expect("a client"), "test");
    let c = &tx;
    let row = NewRow::encode(&job("py"), true, 1_000).expect("encode");
    let first = row.insert(c, None, false).await.expect("insert");
    // The same attempt again, as after a commit whose answer was lost.
    assert_eq!(row.insert(c, None, true).await.expect("retry"), first);
    assert_eq!(count_jobs(&db), "1");
    // Not a retry: the id is someone else's, a new one is drawn.
    let second = row.insert(c, None, false).await.expect("insert");
    assert_ne!(second, first);
    // A retry whose id holds another job: not ours, a new id too.
    let other = NewRow::encode(&job("go"), true, 1_000)
        .expect("encode")
        .with_id(&first);
    let third = other.insert(c, None, true).await.expect("insert");
    assert!(third != first && third != second);
    assert_eq!(count_jobs(&db), "3");
    drop(tx);
    conn.release();
}

/// The next commit that inserted or updated a job ends its connection (once
/// per `RESTART` of the sequence): the transaction is rolled back and the
/// client sees the connection die at `COMMIT`.
fn kill_the_next_commit(db: &str) {
    tokio::task::block_in_place(|| {
        CLUSTER.psql(
            db,
            "CREATE SEQUENCE kill_once;
             CREATE FUNCTION kill_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('kill_once') = 1 THEN
                     PERFORM pg_terminate_backend(pg_backend_pid());
                     PERFORM pg_sleep(5);
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER kill_at_commit AFTER INSERT OR UPDATE ON jobs
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kill_at_commit();",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_is_retried_only_where_that_is_safe() {
    let (store, db) = store("u_lost_commit").await;
    kill_the_next_commit(&db);
    // An insert retries (its repeat is recognised): stored once.
    let id = store.insert(&job("py")).await.expect("insert, retried");
    assert_eq!(count_jobs(&db), "1");
    // A start does not: its outcome is reported unknown, and it was not stored.
    tokio::task::block_in_place(|| CLUSTER.psql(&db, "ALTER SEQUENCE kill_once RESTART"));
    match store.start(&id, "a", true).await {
        Err(StoreError::Backend { action, message }) => {
            assert_eq!(action, "mark a job running");
            assert!(message.contains("may or may not be stored"), "{message}");
        }
        other => panic!("a start whose commit was cut: {other:?}"),
    }
    let record = store.get(&id).await.expect("get").expect("stored");
    assert_eq!(record.state, crate::JobState::Queued);
    assert!(store.start(&id, "a", true).await.expect("start"));
}

#[tokio::test]
async fn an_unreachable_database_is_an_open_error_without_the_password() {
    // Nothing listens on port 1 of loopback.
    let url = "postgres://u:s3cret@127.0.0.1:1/db?connect_timeout=1";
    let started = std::time::Instant::now();
    match PgStore::connect(url, Arc::new(SystemClock)).await {
        Err(StoreError::Open(message)) => {
            assert!(message.contains("u:***@127.0.0.1:1/db"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < pool::RETRY_FOR + Duration::from_secs(5));
}

#[tokio::test]
async fn a_bad_url_is_refused_without_the_password() {
    match PgStore::connect(
        "postgres://u:s3cret@h/db?sslmode=nonsense",
        Arc::new(SystemClock),
    )
    .await
    {
        Err(StoreError::Open(message)) => assert!(!message.contains("s3cret"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pgpassword_fills_a_missing_password_only() {
    let mut config: Config = "postgres://u@h/db".parse().expect("parse");
    fill_password(&mut config, Some("from-env".into()));
    assert_eq!(config.get_password(), Some(&b"from-env"[..]));
    let mut config: Config = "postgres://u:in-url@h/db".parse().expect("parse");
    fill_password(&mut config, Some("from-env".into()));
    assert_eq!(config.get_password(), Some(&b"in-url"[..]));
    let mut config: Config = "postgres://u@h/db".parse().expect("parse");
    fill_password(&mut config, None);
    assert_eq!(config.get_password(), None);
}
