//! The SQLite backend's own tests: the conformance suite on a temp directory,
//! then what only this backend has (files, locks, migrations, damaged rows,
//! group commit) and a measurement.

use super::schema::{
    configure_writer, migrate, APPLICATION_ID, BUSY_TIMEOUT, SCHEMA_VERSION, V1, V2, V3,
};
use super::writer::{commit_group, write_op, Counters, Durability};
use super::*;
use crate::clock::{ManualClock, SystemClock};
use crate::conformance::{exited, job, Harness};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TempDir(std::env::temp_dir().join(format!(
            "warmpool-store-test-{}-{n}-{}",
            std::process::id(),
            SystemClock.now_ms()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct SqliteHarness(TempDir);

impl Harness for SqliteHarness {
    type Store = SqliteStore;

    fn open(
        &self,
        clock: Arc<ManualClock>,
    ) -> impl std::future::Future<Output = SqliteStore> + Send {
        let store = SqliteStore::open(&self.0 .0, clock).expect("open the store");
        async move { store }
    }

    /// Beside the first store, without the directory's lock (test only).
    fn open_second(
        &self,
        clock: Arc<ManualClock>,
    ) -> impl std::future::Future<Output = SqliteStore> + Send {
        let store = SqliteStore::open_beside(&self.0 .0, clock).expect("open a second store");
        async move { store }
    }
}

crate::conformance_tests!(SqliteHarness(TempDir::new()));

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.0, Arc::new(ManualClock::new())).expect("open")
}

/// A second connection to the store's file, beside the store.
fn raw(dir: &TempDir) -> Connection {
    let db = Connection::open(dir.0.join(FILE_NAME)).expect("open raw");
    db.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
    db
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The database file and its WAL, as bytes.
fn file_bytes(store: &SqliteStore) -> Vec<u8> {
    let mut bytes = fs::read(store.path()).expect("read db");
    let wal = PathBuf::from(format!("{}-wal", store.path().display()));
    if let Ok(more) = fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

fn open_error(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Open(message)) => message,
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[test]
fn conditional_updates_are_the_cores_rules() {
    assert_eq!(states_where(JobState::can_start), "'queued'");
    assert_eq!(states_where(JobState::can_finish), "'queued', 'running'");
    assert!(
        CANCEL_NOW_SQL.ends_with("IN ('queued')"),
        "{}",
        *CANCEL_NOW_SQL
    );
    assert!(
        CANCEL_ASK_SQL.ends_with("IN ('running')"),
        "{}",
        *CANCEL_ASK_SQL
    );
    assert_eq!(
        *FINAL_STATES,
        "'succeeded', 'failed', 'timed_out', 'cancelled', 'interrupted'"
    );
}

#[tokio::test]
async fn the_service_can_hold_it_as_a_dyn_job_store() {
    let dir = TempDir::new();
    let store: Arc<dyn JobStore> = Arc::new(open(&dir));
    let id = store.insert(&job("py")).await.expect("insert");
    assert!(store.start(&id, "n1", true).await.expect("start"));
}

#[test]
fn a_second_open_of_the_same_store_is_refused_until_the_first_is_dropped() {
    let dir = TempDir::new();
    let store = open(&dir);
    let second = SqliteStore::open(&dir.0, Arc::new(ManualClock::new()));
    let message = open_error(second);
    assert!(
        message.contains("in use by another warmpool server"),
        "{message}"
    );
    drop(store);
    drop(open(&dir));
}

#[test]
fn a_file_held_by_an_old_warmpool_is_refused() {
    // Old warmpools held the file with SQLite's exclusive locking mode and
    // took no lock file.
    let dir = TempDir::new();
    drop(open(&dir));
    let old = raw(&dir);
    old.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .expect("exclusive");
    old.execute_batch("BEGIN EXCLUSIVE; COMMIT;").expect("lock");
    old.busy_timeout(Duration::ZERO).expect("busy");
    let message = open_error(SqliteStore::open_with(
        &dir.0,
        Arc::new(ManualClock::new()),
        Duration::from_millis(50),
        true,
    ));
    assert!(
        message.contains("in use by another warmpool server"),
        "{message}"
    );
}

#[test]
fn another_sqlite_file_is_not_taken_for_a_store() {
    let dir = TempDir::new();
    fs::create_dir_all(&dir.0).expect("mkdir");
    raw(&dir)
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .expect("create");
    let message = open_error(SqliteStore::open(&dir.0, Arc::new(ManualClock::new())));
    assert!(message.contains("is not a warmpool job store"), "{message}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new();
    drop(open(&dir));
    raw(&dir)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump");
    let message = open_error(SqliteStore::open(&dir.0, Arc::new(ManualClock::new())));
    assert!(message.contains("schema version 5"), "{message}");
}

#[test]
fn the_data_directory_and_file_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let store = open(&dir);
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.0), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(mode(&dir.0.join(LOCK_FILE_NAME)), 0o600);
}

#[tokio::test]
async fn start_wipes_env_and_stdin_from_the_files() {
    let dir = TempDir::new();
    let store = open(&dir);
    let secret = format!("wp-secret-{}-{}", std::process::id(), SystemClock.now_ms());
    let stdin_marker = format!("wp-stdin-{}-{}", std::process::id(), SystemClock.now_ms());
    // Large enough for overflow pages.
    let new = NewJob {
        env: vec![("TOKEN".into(), secret.clone())],
        stdin: Some(stdin_marker.repeat(2_000).into_bytes()),
        ..job("py")
    };
    let id = store.insert(&new).await.expect("insert");
    let ended = store.insert(&new).await.expect("insert");
    store.scrub().await.expect("scrub");
    let before = file_bytes(&store);
    assert!(contains(&before, secret.as_bytes()));
    assert!(contains(&before, stdin_marker.as_bytes()));

    assert!(store.start(&id, "n1", true).await.expect("start"));
    assert!(store
        .finish(&ended, &exited(1))
        .await
        .expect("finish")
        .is_some());
    store.scrub().await.expect("scrub");
    let after = file_bytes(&store);
    assert!(
        !contains(&after, secret.as_bytes()),
        "env value left in the files"
    );
    assert!(
        !contains(&after, stdin_marker.as_bytes()),
        "stdin left in the files"
    );
    assert!(contains(&after, id.as_bytes()));
}

/// A job that keeps its input while it runs (`claim_next` with `keep_input`)
/// loses it from the files at its end: by `finish`, by `take_over`, or when
/// claimed without keeping it.
#[tokio::test]
async fn kept_input_is_wiped_from_the_files_at_the_jobs_end() {
    let dir = TempDir::new();
    let clock = Arc::new(ManualClock::new());
    let store = SqliteStore::open(&dir.0, clock.clone()).expect("open");
    let marker = |what: &str| format!("wp-{what}-{}-{}", std::process::id(), SystemClock.now_ms());
    let new = |secret: &str| NewJob {
        env: vec![("TOKEN".into(), secret.to_owned())],
        stdin: Some(secret.repeat(2_000).into_bytes()),
        ..job("py")
    };
    let (finished, taken, plain) = (marker("finished"), marker("taken"), marker("plain"));
    store
        .join(&crate::conformance::beat("a"))
        .await
        .expect("join");
    for secret in [&finished, &taken, &plain] {
        store.insert(&new(secret)).await.expect("insert");
    }
    let claim = |keep| store.claim_next("py", "a", false, keep);
    let finished_id = claim(true).await.expect("claim").expect("queued").id;
    claim(true).await.expect("claim").expect("queued");
    claim(false).await.expect("claim").expect("queued");
    store.scrub().await.expect("scrub");
    let files = file_bytes(&store);
    assert!(contains(&files, finished.as_bytes()) && contains(&files, taken.as_bytes()));
    assert!(
        !contains(&files, plain.as_bytes()),
        "claimed without keeping it"
    );

    assert!(store
        .finish(&finished_id, &exited(0))
        .await
        .expect("finish")
        .is_some());
    store.scrub().await.expect("scrub");
    let files = file_bytes(&store);
    assert!(
        !contains(&files, finished.as_bytes()),
        "kept input left after finish"
    );
    assert!(contains(&files, taken.as_bytes()));
    clock.advance(Duration::from_secs(60));
    let taken_over = store
        .take_over("b", Duration::from_secs(30), &[])
        .await
        .expect("take over");
    assert_eq!(taken_over[0].interrupted.len(), 2);
    store.scrub().await.expect("scrub");
    assert!(
        !contains(&file_bytes(&store), taken.as_bytes()),
        "kept input left after take_over"
    );
}

/// SQLite sends an operation's events from the writer after its commit and
/// before its caller is answered: they are there when the call returns.
#[tokio::test]
async fn events_are_sent_before_the_call_returns() {
    let dir = TempDir::new();
    let store = open(&dir);
    let mut events = store.events();
    let id = store.insert(&job("py")).await.expect("insert");
    assert_eq!(
        events.try_recv().expect("an event"),
        StoreEvent::Queued {
            profile: "py".into()
        }
    );
    store.request_cancel(&id).await.expect("cancel");
    assert_eq!(
        events.try_recv().expect("an event"),
        StoreEvent::Ended { id }
    );
    assert!(events.try_recv().is_err());
    // A failed operation (rolled back) sends nothing.
    assert!(store
        .finish("jnope", &exited(0))
        .await
        .expect("finish")
        .is_none());
    assert!(store
        .append_output("jnope", StreamName::Stdout, 0, b"x")
        .await
        .is_err());
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn a_damaged_row_is_an_error_not_a_panic() {
    let dir = TempDir::new();
    let store = open(&dir);
    let id = store.insert(&job("py")).await.expect("insert");
    let fine = store.insert(&job("py")).await.expect("insert");
    store
        .append_output(&id, StreamName::Stdout, 0, b"abc")
        .await
        .expect("append");
    store
        .append_output(&id, StreamName::Stdout, 3, b"def")
        .await
        .expect("append");
    let db = raw(&dir);
    let damage = |sql: &str| {
        db.execute(sql, params![id]).expect("damage");
    };
    fn corrupt<T: fmt::Debug>(result: Result<T, StoreError>) -> String {
        match result {
            Err(e @ StoreError::Corrupt { .. }) => e.to_string(),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    damage("UPDATE jobs SET state = 'exploded' WHERE id = ?1");
    let message = corrupt(store.get(&id).await);
    assert!(
        message.contains("exploded") && message.contains(&id),
        "{message}"
    );
    corrupt(
        store
            .list(&ListQuery {
                state: None,
                profile: None,
                limit: 10,
            })
            .await,
    );
    corrupt(store.request_cancel(&id).await);
    assert!(store.get(&fine).await.expect("get").is_some());

    damage("UPDATE jobs SET state = 'queued', args = 'not json' WHERE id = ?1");
    corrupt(store.get(&id).await);
    corrupt(store.queued(&id).await);
    damage("UPDATE jobs SET args = '[]', exit_code = 'zero' WHERE id = ?1");
    corrupt(store.get(&id).await);
    damage("UPDATE jobs SET exit_code = 99999999999 WHERE id = ?1");
    corrupt(store.get(&id).await);
    damage("UPDATE jobs SET exit_code = NULL, stdout_len = 'many' WHERE id = ?1");
    corrupt(store.get(&id).await);
    corrupt(store.append_output(&id, StreamName::Stdout, 6, b"g").await);
    damage("UPDATE jobs SET stdout_len = 6 WHERE id = ?1");
    damage("UPDATE job_input SET env = '{' WHERE job_id = ?1");
    corrupt(store.queued(&id).await);
    damage("DELETE FROM job_input WHERE job_id = ?1");
    corrupt(store.queued(&id).await);
    damage("UPDATE output SET byte_offset = 4 WHERE job_id = ?1 AND byte_offset = 3");
    corrupt(store.read_output(&id, StreamName::Stdout, 0, 100).await);
    damage(
        "UPDATE output SET byte_offset = 3, data = 'text' WHERE job_id = ?1 AND byte_offset = 4",
    );
    corrupt(store.read_output(&id, StreamName::Stdout, 0, 100).await);
    // The store goes on working for other jobs.
    assert!(store.start(&fine, "n1", false).await.expect("start"));
}

#[test]
fn one_failing_operation_in_a_group_rolls_back_alone() {
    let dir = TempDir::new();
    drop(open(&dir));
    let mut db = raw(&dir);
    configure_writer(&db, BUSY_TIMEOUT).expect("configure");
    migrate(&mut db, &dir.0.join(FILE_NAME), |e| {
        StoreError::Open(e.to_string())
    })
    .expect("migrate");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let row = || JobRow::encode(&job("py")).expect("encode");
    let (r1, r2, r3) = (row(), row(), row());
    let (op1, a1) = write_op(
        Durability::Fsync,
        "t",
        Arc::clone(&clock),
        move |db, now| r1.insert(db, now),
    );
    // Writes, then fails: its write must not stay.
    let (op2, a2) = write_op(
        Durability::Fsync,
        "t",
        Arc::clone(&clock),
        move |db, now| {
            r2.insert(db, now)?;
            Err::<String, _>(StoreError::NoSuchJob("jfail".into()))
        },
    );
    let (op3, a3) = write_op(Durability::Deferred, "t", clock, move |db, now| {
        r3.insert(db, now)
    });
    let mut level = Durability::Deferred;
    let counters = Counters::default();
    commit_group(&db, &mut level, vec![op1, op2, op3], &counters);
    // The append-like (deferred) one commits apart, without an fsync.
    assert_eq!(
        counters.read(),
        WriterStats {
            commits: 2,
            fsync_commits: 1,
            operations: 3
        }
    );
    assert_eq!(
        level,
        Durability::Fsync,
        "a durable operation commits with FULL"
    );
    let id1 = a1.blocking_recv().expect("answer").expect("op1");
    assert!(matches!(
        a2.blocking_recv().expect("answer"),
        Err(StoreError::NoSuchJob(_))
    ));
    let id3 = a3.blocking_recv().expect("answer").expect("op3");
    let ids: Vec<String> = db
        .prepare("SELECT id FROM jobs ORDER BY seq")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("ids");
    // The deferred one committed first; the failed one left nothing.
    assert_eq!(ids, vec![id3, id1]);
    let inputs: i64 = db
        .query_row("SELECT count(*) FROM job_input", [], |r| r.get(0))
        .expect("count");
    assert_eq!(inputs, 2);

    // A group of appends only commits without an fsync.
    let (op, answer) = write_op(Durability::Deferred, "t", Arc::new(SystemClock), |_, _| {
        Ok(())
    });
    commit_group(&db, &mut level, vec![op], &counters);
    answer.blocking_recv().expect("answer").expect("op");
    assert_eq!(level, Durability::Deferred);
    let sync: i64 = db
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("synchronous");
    assert_eq!(sync, 1, "NORMAL");
}

#[test]
fn a_panicking_operation_rolls_back_alone_and_the_writer_goes_on() {
    let dir = TempDir::new();
    drop(open(&dir));
    let mut db = raw(&dir);
    configure_writer(&db, BUSY_TIMEOUT).expect("configure");
    migrate(&mut db, &dir.0.join(FILE_NAME), |e| {
        StoreError::Open(e.to_string())
    })
    .expect("migrate");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let (r1, r2) = (
        JobRow::encode(&job("py")).expect("encode"),
        JobRow::encode(&job("py")).expect("encode"),
    );
    let (op1, a1) = write_op(
        Durability::Fsync,
        "t",
        Arc::clone(&clock),
        move |db, now| -> Result<String, StoreError> {
            r1.insert(db, now)?;
            panic!("a bug in an operation")
        },
    );
    let (op2, a2) = write_op(Durability::Fsync, "t", clock, move |db, now| {
        r2.insert(db, now)
    });
    let counters = Counters::default();
    commit_group(&db, &mut Durability::Fsync, vec![op1, op2], &counters);
    assert!(
        a1.blocking_recv().is_err(),
        "its caller sees the store closed"
    );
    let id2 = a2.blocking_recv().expect("answer").expect("op2");
    let ids: Vec<String> = db
        .prepare("SELECT id FROM jobs")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("ids");
    assert_eq!(ids, vec![id2]);
}

/// Set for the child process of the SIGKILL test: its data directory.
const CRASH_DIR_ENV: &str = "WARMPOOL_STORE_CRASH_CHILD_DIR";

/// The child of `a_sigkill_never_loses_an_acknowledged_job_nor_runs_one_twice`:
/// stores and starts jobs as fast as it can, printing each acknowledged step,
/// until it is killed. Does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the SIGKILL test"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&dir), Arc::new(SystemClock)).expect("open");
    for n in 0u64.. {
        let id = store.insert(&job("py")).await.expect("insert");
        println!("queued {id}");
        if n % 2 == 0 {
            assert!(store.start(&id, "n1", true).await.expect("start"));
            println!("started {id}");
            store
                .append_output(&id, StreamName::Stdout, 0, b"out")
                .await
                .expect("append");
        }
    }
}

#[test]
fn a_sigkill_never_loses_an_acknowledged_job_nor_runs_one_twice() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TempDir::new();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sqlite::tests::crash_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DIR_ENV, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut queued = Vec::new();
    let mut started = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the child");
        if let Some(id) = line.strip_prefix("queued ") {
            queued.push(id.to_owned());
        } else if let Some(id) = line.strip_prefix("started ") {
            started.push(id.to_owned());
        }
        if started.len() == 200 {
            break;
        }
    }
    // SIGKILL, in the middle of whatever the child was doing.
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    assert_eq!(started.len(), 200, "the child stopped early");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // The lock went with the process: the directory opens at once.
        let store = open(&dir);
        let recovered = store.recover("n1", "killed").await.expect("recover");
        let requeued: HashSet<&String> = recovered.queued.iter().collect();
        for id in &started {
            assert!(
                !requeued.contains(id),
                "{id} was started and is queued again"
            );
            let record = store
                .get(id)
                .await
                .expect("get")
                .expect("a started job is stored");
            assert_eq!(record.state, JobState::Interrupted, "{id}");
        }
        let started: HashSet<&String> = started.iter().collect();
        for id in queued.iter().filter(|id| !started.contains(id)) {
            assert!(store.get(id).await.expect("get").is_some(), "{id} was lost");
        }
    });
}

/// What a warmpool before schema 3 wrote (the server's `store.rs`): jobs in
/// each state, input, output chunks, a delivery for version 2.
fn write_old_file(dir: &TempDir, version: i64) -> (Connection, [String; 3]) {
    fs::create_dir_all(&dir.0).expect("mkdir");
    let db = raw(dir);
    // As old warmpools opened it.
    db.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .expect("exclusive");
    db.pragma_update(None, "journal_mode", "WAL").expect("wal");
    db.execute_batch(V1).expect("v1");
    if version >= 2 {
        db.execute_batch(V2).expect("v2");
    }
    db.pragma_update(None, "application_id", APPLICATION_ID)
        .expect("application id");
    db.pragma_update(None, "user_version", version.min(2))
        .expect("version");
    let [queued, running, done] = [
        "j0000000000001aaaaaaaa",
        "j0000000000002bbbbbbbb",
        "j0000000000003cccccccc",
    ]
    .map(str::to_owned);
    db.execute(
        "INSERT INTO jobs (id, profile, state, args, timeout_ms, created_at)
         VALUES (?1, 'py', 'queued', '[\"echo\"]', 5000, 1)",
        params![queued],
    )
    .expect("queued");
    db.execute(
        "INSERT INTO job_input (job_id, env, stdin) VALUES (?1, '[[\"A\",\"1\"]]', x'6869')",
        params![queued],
    )
    .expect("input");
    db.execute(
        "INSERT INTO jobs (id, profile, state, args, warm, created_at, started_at)
         VALUES (?1, 'py', 'running', '[]', 1, 2, 3)",
        params![running],
    )
    .expect("running");
    db.execute(
        "INSERT INTO jobs (id, profile, state, args, warm, exit_code, created_at,
                           started_at, finished_at, truncated)
         VALUES (?1, 'go', 'succeeded', '[]', 0, 0, 3, 4, 5, 1)",
        params![done],
    )
    .expect("done");
    for (id, stream, data) in [
        (&running, 1, &b"hel"[..]),
        (&done, 1, b"x"),
        (&running, 2, b"e"),
        (&running, 1, b"lo "),
        (&running, 1, b"world"),
    ] {
        db.execute(
            "INSERT INTO output (job_id, stream, data) VALUES (?1, ?2, ?3)",
            params![id, stream, data],
        )
        .expect("output");
    }
    if version >= 2 {
        db.execute(
            "INSERT INTO deliveries (id, job_id, meta, received_at) VALUES ('d-1', ?1, '{}', 5)",
            params![done],
        )
        .expect("delivery");
    }
    if version >= 3 {
        // As a version 3 warmpool left it: migrated from 2 by that warmpool.
        db.execute_batch(V3).expect("v3");
        db.pragma_update(None, "user_version", 3).expect("version");
    }
    (db, [queued, running, done])
}

/// `crashed`: the old warmpool was killed: what it wrote is still in its WAL
/// (never checkpointed), and its `-shm` never existed (exclusive mode).
async fn check_migrated(version: i64, crashed: bool) {
    let dir = &TempDir::new();
    if crashed {
        let old = TempDir::new();
        let (db, ids) = write_old_file(&old, version);
        fs::create_dir_all(&dir.0).expect("mkdir");
        let wal = format!("{FILE_NAME}-wal");
        assert!(old.0.join(&wal).exists(), "the old file has a WAL");
        for name in [FILE_NAME, wal.as_str()] {
            fs::copy(old.0.join(name), dir.0.join(name)).expect("copy");
        }
        drop(db);
        check_migrated_files(dir, version, ids).await;
    } else {
        let (db, ids) = write_old_file(dir, version);
        drop(db);
        check_migrated_files(dir, version, ids).await;
    }
}

async fn check_migrated_files(dir: &TempDir, version: i64, ids: [String; 3]) {
    let [queued, running, done] = ids;
    let store = open(dir);
    let record = store.get(&running).await.expect("get").expect("running");
    assert_eq!(record.state, JobState::Running);
    assert_eq!((record.node, record.cancel_requested), (None, false));
    assert_eq!(record.output_len, [11, 1]);
    assert_eq!((record.created_ms, record.started_ms), (2, Some(3)));
    let read = |id: String, offset, max| {
        let store = &store;
        async move {
            store
                .read_output(&id, StreamName::Stdout, offset, max)
                .await
                .expect("read")
                .expect("known")
        }
    };
    assert_eq!(read(running.clone(), 0, 100).await, b"hello world");
    assert_eq!(read(running.clone(), 2, 5).await, b"llo w");
    assert_eq!(read(done.clone(), 0, 100).await, b"x");
    // Offsets carry on where the old chunks end.
    store
        .append_output(&running, StreamName::Stdout, 0, b"hello")
        .await
        .expect("retry");
    store
        .append_output(&running, StreamName::Stdout, 11, b"!")
        .await
        .expect("append");
    assert_eq!(read(running.clone(), 0, 100).await, b"hello world!");
    let record = store.get(&done).await.expect("get").expect("done");
    assert_eq!(
        (record.state, record.truncated, record.warm),
        (JobState::Succeeded, true, Some(false))
    );
    assert_eq!(record.finished_ms, Some(5));
    let input = store
        .queued(&queued)
        .await
        .expect("queued")
        .expect("queued");
    assert_eq!(input.job.env, vec![("A".to_string(), "1".to_string())]);
    assert_eq!(input.job.stdin.as_deref(), Some(&b"hi"[..]));
    if version >= 2 {
        let pending = store.unanswered_deliveries().await.expect("deliveries");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].job_id, done);
    }
    assert_eq!(
        store
            .insert_for_delivery("d-1", "{}", &job("bot"))
            .await
            .expect("insert")
            .is_some(),
        version < 2,
        "a delivery seen before the upgrade starts nothing"
    );
    // An old warmpool ran alone: its running jobs are any node's to recover.
    let recovered = store
        .recover("new-node", "restarted")
        .await
        .expect("recover");
    assert_eq!(recovered.interrupted, vec![running.clone()]);
    assert_eq!(recovered.queued[0], queued);
    // The cluster part works on the migrated file.
    assert!(store.nodes().await.expect("nodes").is_empty());
    store
        .join(&crate::conformance::beat("new-node"))
        .await
        .expect("join");
    assert_eq!(store.queued_count("py").await.expect("count"), 1);
    let claimed = store
        .claim_next("py", "new-node", false, true)
        .await
        .expect("claim")
        .expect("the old queued job");
    assert_eq!(
        (claimed.id.as_str(), claimed.job.stdin.as_deref()),
        (queued.as_str(), Some(&b"hi"[..]))
    );
    store
        .append_output(&queued, StreamName::Stdout, 0, b"new")
        .await
        .expect("append");
    drop(store);
    let version: i64 = raw(dir)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn a_version_1_file_is_migrated() {
    check_migrated(1, false).await;
}

#[tokio::test]
async fn a_version_2_file_is_migrated() {
    check_migrated(2, false).await;
}

#[tokio::test]
async fn a_version_3_file_is_migrated() {
    check_migrated(3, false).await;
}

#[tokio::test]
async fn a_version_2_file_left_by_a_killed_warmpool_is_migrated() {
    check_migrated(2, true).await;
}

fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One fsync of a small overwrite in `dir`, in ms (the floor of a durable commit).
fn fsync_ms(dir: &Path) -> f64 {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut file = fs::File::create(&path).expect("probe");
    let started = Instant::now();
    for _ in 0..50 {
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.write_all(&[0u8; 4096]).expect("write");
        file.sync_data().expect("fsync");
    }
    let _ = fs::remove_file(path);
    started.elapsed().as_secs_f64() * 1000.0 / 50.0
}

async fn measure(label: &str, dir: &Path) {
    let store = Arc::new(SqliteStore::open(dir, Arc::new(SystemClock)).expect("open"));
    println!("{label}: {}, fsync {:.2} ms", dir.display(), fsync_ms(dir));
    let rss_before = rss_kib();
    let tasks = 8;
    let per_task = 1_250;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    store.insert(&job("py")).await.expect("insert");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    let took = started.elapsed();
    let n = tasks * per_task;
    let stats = store.writer_stats();
    println!(
        "  inserts: {n} from {tasks} tasks in {:.2}s = {:.0}/s ({:.1} per commit)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        stats.operations as f64 / stats.commits.max(1) as f64
    );

    // One task at a time: one commit, one fsync per insert.
    let started = Instant::now();
    for _ in 0..500 {
        store.insert(&job("py")).await.expect("insert");
    }
    let took = started.elapsed();
    println!(
        "  inserts: 500 from 1 task in {:.2}s = {:.0}/s",
        took.as_secs_f64(),
        500.0 / took.as_secs_f64()
    );

    // A job's whole life: insert, start, 4 appends, finish.
    let jobs = 250;
    let before = store.writer_stats();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..jobs {
                    let id = store.insert(&job("py")).await.expect("insert");
                    store.start(&id, "n1", true).await.expect("start");
                    for k in 0..4u64 {
                        store
                            .append_output(&id, StreamName::Stdout, k * 32, &[b'x'; 32])
                            .await
                            .expect("append");
                    }
                    store.finish(&id, &exited(0)).await.expect("finish");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    let took = started.elapsed();
    let after = store.writer_stats();
    println!(
        "  whole jobs (insert, start, 4 appends, finish): {} from {tasks} tasks in {:.2}s = \
         {:.0} jobs/s ({:.1} operations per commit, {} of {} commits fsynced)",
        tasks * jobs,
        took.as_secs_f64(),
        (tasks * jobs) as f64 / took.as_secs_f64(),
        (after.operations - before.operations) as f64
            / (after.commits - before.commits).max(1) as f64,
        after.fsync_commits - before.fsync_commits,
        after.commits - before.commits,
    );

    // Reads beside the writer: `get` of known jobs from 8 tasks.
    let some: Vec<String> = store
        .list(&ListQuery {
            state: None,
            profile: None,
            limit: 1_000,
        })
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let some = Arc::new(some);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, some) = (Arc::clone(&store), Arc::clone(&some));
            tokio::spawn(async move {
                for id in some.iter().skip(t).step_by(tasks) {
                    store.get(id).await.expect("get").expect("stored");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    println!(
        "  gets: {} from {tasks} tasks = {:.0}/s",
        some.len(),
        some.len() as f64 / started.elapsed().as_secs_f64()
    );

    let all = ListQuery {
        state: None,
        profile: None,
        limit: usize::MAX,
    };
    let started = Instant::now();
    let stored = store.list(&all).await.expect("list").len();
    let list_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let recent = ListQuery { limit: 100, ..all };
    for _ in 0..100 {
        store.list(&recent).await.expect("list");
    }
    println!(
        "  list of all {stored} jobs {list_ms:.0} ms; list of 100: {:.2} ms",
        started.elapsed().as_secs_f64() * 10.0
    );
    println!(
        "  RSS: {rss_before} KiB at open, {} KiB with {stored} stored jobs; file {} KiB",
        rss_kib(),
        fs::metadata(store.path())
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    );
}

/// Inserts/s from 8 concurrent tasks, whole jobs/s, and the process's RSS with
/// over 10,000 stored jobs, on the temp dir's disk and on tmpfs (where an
/// fsync is free: the store's own cost). A measurement, not a check:
/// `cargo test -p warmpool-store --release -- --ignored --nocapture measure`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it by name with --release --nocapture"]
async fn measure_inserts_per_second_from_8_tasks() {
    let disk = TempDir::new();
    measure("disk", &disk.0).await;
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let tmpfs = TempDir(shm.join(format!("warmpool-store-measure-{}", std::process::id())));
        measure("tmpfs", &tmpfs.0).await;
    }
}

#[tokio::test]
async fn a_backup_taken_while_the_store_is_open_opens_as_a_store() {
    let (dir, copy) = (TempDir::new(), TempDir::new());
    let store = open(&dir);
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(store.insert(&job("py")).await.expect("insert"));
    }
    assert!(store.start(&ids[0], "n1", true).await.expect("start"));
    fs::create_dir_all(&copy.0).expect("mkdir");
    let dest = copy.0.join(FILE_NAME);
    let bytes = backup(&dir.0, &dest).expect("backup while open");
    assert!(bytes > 0);
    // A second backup to the same file is refused, and the first is kept.
    let again = backup(&dir.0, &dest).expect_err("dest exists");
    assert!(again.to_string().contains("new file"), "{again}");
    // The store keeps working; the copy is a store of its own with every job.
    store
        .insert(&job("py"))
        .await
        .expect("insert after the backup");
    drop(store);
    let restored = SqliteStore::open(&copy.0, Arc::new(SystemClock)).expect("open the copy");
    for id in &ids {
        assert!(
            restored.get(id).await.expect("get").is_some(),
            "{id} missing"
        );
    }
    let first = restored.get(&ids[0]).await.expect("get").expect("first");
    assert_eq!(first.state, JobState::Running);
    let missing = backup(&copy.0.join("nowhere"), &copy.0.join("x")).expect_err("no store");
    assert!(missing.to_string().contains("data_dir"), "{missing}");
}
