//! The PostgreSQL backend against a real, throwaway PostgreSQL: the
//! conformance suite (each case its own database on one shared cluster), then
//! what only a shared database has: several nodes (two stores on one
//! database), events between them, migrations, and a database restart.

mod cluster;
mod events;
mod restart;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use warmpool_store::conformance::Harness;
use warmpool_store::{ManualClock, PgStore};
use warmpool_testkit::postgres::PgCluster;

/// One cluster for the whole test binary (stopped by its watchdog at exit).
static CLUSTER: LazyLock<PgCluster> = LazyLock::new(PgCluster::start);

/// A new, empty database on the shared cluster; its URL.
pub fn fresh_database() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    CLUSTER.create_database(&format!("t{n}"))
}

pub async fn connect(url: &str, clock: &Arc<ManualClock>) -> PgStore {
    PgStore::connect(url, Arc::clone(clock) as _)
        .await
        .expect("connect to the test database")
}

/// Each case's own database, created at its first open.
struct PgHarness {
    url: OnceLock<String>,
}

impl Harness for PgHarness {
    type Store = PgStore;

    fn open(&self, clock: Arc<ManualClock>) -> impl std::future::Future<Output = PgStore> + Send {
        let url = self.url.get_or_init(fresh_database).clone();
        async move { connect(&url, &clock).await }
    }

    fn open_second(
        &self,
        clock: Arc<ManualClock>,
    ) -> impl std::future::Future<Output = PgStore> + Send {
        let url = self.url.get_or_init(fresh_database).clone();
        async move { connect(&url, &clock).await }
    }
}

warmpool_store::conformance_tests!(PgHarness {
    url: OnceLock::new()
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once() {
    let url = fresh_database();
    let clock = Arc::new(ManualClock::new());
    let stores = futures_util::future::join_all((0..4).map(|_| connect(&url, &clock))).await;
    assert_eq!(stores.len(), 4);
    let db = url.rsplit('/').next().expect("a database name");
    assert_eq!(
        CLUSTER.psql(
            db,
            "SELECT string_agg(version::text, ',') FROM warmpool_schema"
        ),
        "1"
    );
    drop(stores);
    // A database written by a newer warmpool is refused, not touched.
    CLUSTER.psql(db, "INSERT INTO warmpool_schema VALUES (99, 0)");
    match PgStore::connect(&url, clock).await {
        Err(warmpool_store::StoreError::Open(message)) => {
            assert!(message.contains("schema version 99"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
