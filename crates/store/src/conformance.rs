//! The conformance suite: what every [`JobStore`] backend must do, written once
//! against the trait only (no SQL, no files), with time driven by a
//! [`ManualClock`]. A backend runs it through [`conformance_tests!`](crate::conformance_tests) and a
//! [`Harness`] that opens its storage; backend-specific checks (damaged rows,
//! files on disk) stay with the backend.
//!
//! These are tests: they panic with a message when the backend is wrong.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use warmpool_core::lifecycle::CANCELLED_QUEUED_ERROR;

use crate::clock::{Clock, ManualClock};
use crate::{
    CancelOutcome, Delivery, Finish, JobRecord, JobState, JobStore, ListQuery, NewJob, QueuedJob,
    StoreError, StreamName,
};

/// Opens one backend's storage for one test case.
pub trait Harness: Send + Sync + 'static {
    type Store: JobStore;

    /// The store over this harness's storage: empty at the first call, the same
    /// data at a later call once the previous store has been dropped (a restart).
    fn open(&self, clock: Arc<ManualClock>) -> impl Future<Output = Self::Store> + Send;
}

/// Stamps out one `#[tokio::test]` per case for a backend: `$harness` is an
/// expression giving a fresh [`Harness`] (evaluated once per case).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            insert_then_get_round_trips,
            empty_stdin_stays_apart_from_no_stdin,
            list_filters_newest_first_with_a_limit,
            start_only_from_queued_and_once,
            a_job_inserted_started_runs_at_once_without_its_input,
            finish_only_from_open_states_and_never_twice,
            request_cancel_in_each_state,
            output_offsets_and_ranges,
            re_append_at_a_stored_offset_stores_nothing,
            deliveries_are_deduplicated_and_answered,
            recover_touches_only_its_own_nodes_running_jobs,
            prune_goes_by_the_clock_and_spares_open_jobs,
            concurrent_use_from_many_tasks,
            a_started_job_is_never_queued_again_after_a_reopen,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($harness).await;
            }
        )*
    };
}

/// A job with an env value and a timeout.
pub fn job(profile: &str) -> NewJob {
    NewJob {
        profile: profile.into(),
        args: vec!["echo".into(), "hi there".into()],
        env: vec![("A".into(), "1".into())],
        stdin: None,
        timeout_ms: Some(5_000),
    }
}

/// How a job that exited with `code` ends.
pub fn exited(code: i32) -> Finish {
    Finish {
        state: if code == 0 {
            JobState::Succeeded
        } else {
            JobState::Failed
        },
        exit_code: Some(code),
        signal: None,
        error: None,
        truncated: false,
    }
}

async fn open<H: Harness>(h: &H) -> (H::Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (h.open(Arc::clone(&clock)).await, clock)
}

async fn insert<S: JobStore>(store: &S, job: &NewJob) -> String {
    store.insert(job).await.expect("insert")
}

async fn get<S: JobStore>(store: &S, id: &str) -> JobRecord {
    store
        .get(id)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("job {id} is stored"))
}

async fn state<S: JobStore>(store: &S, id: &str) -> JobState {
    get(store, id).await.state
}

async fn output<S: JobStore>(store: &S, id: &str, stream: StreamName) -> Vec<u8> {
    store
        .read_output(id, stream, 0, usize::MAX)
        .await
        .expect("read output")
        .unwrap_or_else(|| panic!("job {id} is stored"))
}

fn query(state: Option<JobState>, profile: Option<&str>, limit: usize) -> ListQuery {
    ListQuery {
        state,
        profile: profile.map(str::to_owned),
        limit,
    }
}

async fn ids<S: JobStore>(store: &S, q: ListQuery) -> Vec<String> {
    let records = store.list(&q).await.expect("list");
    records.into_iter().map(|r| r.id).collect()
}

pub async fn insert_then_get_round_trips<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let new = NewJob {
        stdin: Some(b"input".to_vec()),
        ..job("py")
    };
    let id = insert(&store, &new).await;
    assert!(id.starts_with('j') && id.len() == 22, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");

    let record = get(&store, &id).await;
    let expected = JobRecord {
        id: id.clone(),
        profile: "py".into(),
        state: JobState::Queued,
        args: new.args.clone(),
        timeout_ms: Some(5_000),
        warm: None,
        exit_code: None,
        signal: None,
        truncated: false,
        error: None,
        node: None,
        cancel_requested: false,
        output_len: [0, 0],
        created_ms: clock.now_ms(),
        started_ms: None,
        finished_ms: None,
    };
    assert_eq!(record, expected);

    let queued = store.queued(&id).await.expect("queued");
    assert_eq!(
        queued,
        Some(QueuedJob {
            id: id.clone(),
            job: new
        })
    );
    assert_eq!(store.get("jnope").await.expect("get"), None);
    assert_eq!(store.queued("jnope").await.expect("queued"), None);
    // A job with no timeout, args or env.
    let bare = insert(
        &store,
        &NewJob {
            profile: "py".into(),
            ..NewJob::default()
        },
    )
    .await;
    let record = get(&store, &bare).await;
    assert_eq!((record.timeout_ms, record.args.len()), (None, 0));
    assert_ne!(bare, id);
    // Scrubbing changes nothing that can be read.
    store.scrub().await.expect("scrub");
    assert_eq!(get(&store, &bare).await, record);
}

pub async fn empty_stdin_stays_apart_from_no_stdin<H: Harness>(h: H) {
    let (store, _) = open(&h).await;
    let empty = insert(
        &store,
        &NewJob {
            stdin: Some(Vec::new()),
            env: Vec::new(),
            ..job("py")
        },
    )
    .await;
    let none = insert(&store, &job("py")).await;
    let stdin = |q: Option<QueuedJob>| q.expect("queued").job.stdin;
    assert_eq!(
        stdin(store.queued(&empty).await.expect("queued")),
        Some(Vec::new())
    );
    assert_eq!(stdin(store.queued(&none).await.expect("queued")), None);
}

pub async fn list_filters_newest_first_with_a_limit<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    // All in the same millisecond: creation order, not the clock, decides.
    let a = insert(&store, &job("py")).await;
    let b = insert(&store, &job("node")).await;
    let c = insert(&store, &job("py")).await;
    let d = insert(&store, &job("py")).await;
    clock.advance(Duration::from_millis(1));
    let e = insert(&store, &job("py")).await;
    assert!(store.start(&c, "n1", false).await.expect("start"));
    assert!(store
        .finish(&e, &exited(0))
        .await
        .expect("finish")
        .is_some());

    assert_eq!(
        ids(&store, query(None, None, 10)).await,
        vec![e.clone(), d.clone(), c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        ids(&store, query(None, None, 2)).await,
        vec![e.clone(), d.clone()]
    );
    assert_eq!(
        ids(&store, query(None, Some("py"), 10)).await,
        vec![e.clone(), d.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        ids(&store, query(Some(JobState::Queued), Some("py"), 10)).await,
        vec![d.clone(), a.clone()]
    );
    assert_eq!(
        ids(&store, query(Some(JobState::Queued), None, 1)).await,
        vec![d.clone()]
    );
    assert_eq!(
        ids(&store, query(Some(JobState::Running), None, 10)).await,
        vec![c.clone()]
    );
    assert_eq!(
        ids(&store, query(Some(JobState::Succeeded), Some("py"), 10)).await,
        vec![e]
    );
    assert!(ids(&store, query(None, Some("go"), 10)).await.is_empty());
    assert!(ids(&store, query(Some(JobState::TimedOut), None, 10))
        .await
        .is_empty());
    assert!(ids(&store, query(None, None, 0)).await.is_empty());
    // Records in a list are the records `get` gives.
    let listed = store.list(&query(None, None, 10)).await.expect("list");
    for record in listed {
        assert_eq!(record, get(&store, &record.id).await);
    }
}

pub async fn start_only_from_queued_and_once<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let id = insert(
        &store,
        &NewJob {
            stdin: Some(b"secret input".to_vec()),
            ..job("py")
        },
    )
    .await;
    clock.advance(Duration::from_secs(3));
    assert!(store.start(&id, "node-a", true).await.expect("start"));
    // Its input is gone with the start.
    assert_eq!(store.queued(&id).await.expect("queued"), None);
    let record = get(&store, &id).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.node.as_deref(), Some("node-a"));
    assert_eq!(record.warm, Some(true));
    assert_eq!(record.started_ms, Some(clock.now_ms()));
    assert_eq!(record.created_ms, clock.now_ms() - 3_000);
    assert_eq!(record.finished_ms, None);

    // Once only, on any node.
    assert!(!store.start(&id, "node-a", true).await.expect("start again"));
    assert!(!store
        .start(&id, "node-b", false)
        .await
        .expect("start again"));
    assert_eq!(get(&store, &id).await.node.as_deref(), Some("node-a"));

    // Never from a final state.
    let cancelled = insert(&store, &job("py")).await;
    assert_eq!(
        store.request_cancel(&cancelled).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert!(!store
        .start(&cancelled, "node-a", false)
        .await
        .expect("start"));
    assert_eq!(state(&store, &cancelled).await, JobState::Cancelled);
    assert_eq!(get(&store, &cancelled).await.node, None);

    let failed = insert(&store, &job("py")).await;
    assert!(store
        .finish(&failed, &exited(1))
        .await
        .expect("finish")
        .is_some());
    assert!(!store.start(&failed, "node-a", false).await.expect("start"));
    assert!(!store.start("jnope", "node-a", false).await.expect("start"));

    // A cold start is stored as such.
    let cold = insert(&store, &job("py")).await;
    assert!(store.start(&cold, "node-b", false).await.expect("start"));
    assert_eq!(get(&store, &cold).await.warm, Some(false));
}

pub async fn a_job_inserted_started_runs_at_once_without_its_input<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let id = store
        .insert_started(
            &NewJob {
                stdin: Some(b"secret input".to_vec()),
                ..job("py")
            },
            "node-a",
            true,
        )
        .await
        .expect("insert started");
    let record = get(&store, &id).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.node.as_deref(), Some("node-a"));
    assert_eq!(record.warm, Some(true));
    assert_eq!(record.started_ms, Some(clock.now_ms()));
    assert_eq!(record.created_ms, clock.now_ms());
    assert_eq!(record.args, job("py").args);
    // Never queued: no input, no second start, not recovered as queued.
    assert_eq!(store.queued(&id).await.expect("queued"), None);
    assert!(!store.start(&id, "node-a", true).await.expect("start"));
    assert_eq!(
        store.request_cancel(&id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let recovered = store.recover("node-b", "lost").await.expect("recover");
    assert!(!recovered.queued.contains(&id));
    assert_eq!(
        state(&store, &id).await,
        JobState::Running,
        "another node's job"
    );
    assert!(store
        .finish(&id, &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(state(&store, &id).await, JobState::Succeeded);
}

pub async fn finish_only_from_open_states_and_never_twice<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let id = insert(&store, &job("py")).await;
    assert!(store.start(&id, "n1", false).await.expect("start"));
    clock.advance(Duration::from_secs(5));
    let timed_out = Finish {
        state: JobState::TimedOut,
        exit_code: Some(143),
        signal: Some(15),
        error: Some("timed out after 5s".into()),
        truncated: true,
    };
    let ended = store
        .finish(&id, &timed_out)
        .await
        .expect("finish")
        .expect("it was open");
    // The record it answers with is the one stored.
    assert_eq!(ended, get(&store, &id).await);
    assert_eq!(ended.state, JobState::TimedOut);
    let record = get(&store, &id).await;
    assert_eq!(record.state, JobState::TimedOut);
    assert_eq!((record.exit_code, record.signal), (Some(143), Some(15)));
    assert_eq!(record.error.as_deref(), Some("timed out after 5s"));
    assert!(record.truncated);
    assert_eq!(record.finished_ms, Some(clock.now_ms()));
    assert_eq!(record.node.as_deref(), Some("n1"));

    // A final job never changes: not by a second finish, nor a cancel.
    clock.advance(Duration::from_secs(1));
    assert!(store
        .finish(&id, &exited(0))
        .await
        .expect("finish again")
        .is_none());
    assert_eq!(
        store.request_cancel(&id).await.expect("cancel"),
        CancelOutcome::AlreadyEnded(JobState::TimedOut)
    );
    assert_eq!(get(&store, &id).await, record);

    // A queued job can end without starting (e.g. its container failed); its
    // input goes with it.
    let never = insert(&store, &job("py")).await;
    let failed = Finish::without_exit(JobState::Failed, "image gone");
    assert!(store
        .finish(&never, &failed)
        .await
        .expect("finish")
        .is_some());
    assert_eq!(store.queued(&never).await.expect("queued"), None);
    let record = get(&store, &never).await;
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.error.as_deref(), Some("image gone"));
    assert_eq!((record.exit_code, record.signal), (None, None));
    assert_eq!(
        (record.started_ms, record.warm, record.node),
        (None, None, None)
    );
    assert!(!record.truncated);

    // Every final state can be stored; open ones are refused before anything.
    for state in JobState::ALL {
        let id = insert(&store, &job("py")).await;
        let end = Finish::without_exit(state, "why");
        if state.is_final() {
            assert!(
                store.finish(&id, &end).await.expect("finish").is_some(),
                "{state}"
            );
            assert_eq!(self::state(&store, &id).await, state);
        } else {
            match store.finish(&id, &end).await {
                Err(StoreError::NotFinal(s)) => assert_eq!(s, state),
                other => panic!("finish as {state}: {other:?}"),
            }
            assert_eq!(self::state(&store, &id).await, JobState::Queued);
            assert!(store.queued(&id).await.expect("queued").is_some());
        }
    }
    assert!(store
        .finish("jnope", &exited(1))
        .await
        .expect("finish")
        .is_none());
}

pub async fn request_cancel_in_each_state<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;

    // Queued: cancelled at once, input wiped, never starts.
    let queued = insert(&store, &job("py")).await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store.request_cancel(&queued).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    let record = get(&store, &queued).await;
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.error.as_deref(), Some(CANCELLED_QUEUED_ERROR));
    assert_eq!(record.finished_ms, Some(clock.now_ms()));
    assert!(!record.cancel_requested);
    assert_eq!(store.queued(&queued).await.expect("queued"), None);
    assert!(!store.start(&queued, "n1", true).await.expect("start"));
    assert_eq!(
        store.request_cancel(&queued).await.expect("cancel twice"),
        CancelOutcome::AlreadyEnded(JobState::Cancelled)
    );

    // Running: recorded for the node running it; the job stays running until
    // that node stores how it ended (its own exit, if it came first).
    let running = insert(&store, &job("py")).await;
    assert!(store.start(&running, "n1", true).await.expect("start"));
    assert!(!get(&store, &running).await.cancel_requested);
    assert_eq!(
        store.request_cancel(&running).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let record = get(&store, &running).await;
    assert_eq!(record.state, JobState::Running);
    assert!(record.cancel_requested);
    assert_eq!(record.finished_ms, None);
    assert_eq!(
        store.request_cancel(&running).await.expect("cancel twice"),
        CancelOutcome::Requested
    );
    assert!(store
        .finish(&running, &exited(0))
        .await
        .expect("finish")
        .is_some());
    let record = get(&store, &running).await;
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.exit_code, Some(0));
    assert_eq!(
        store.request_cancel(&running).await.expect("cancel ended"),
        CancelOutcome::AlreadyEnded(JobState::Succeeded)
    );

    // Ended, in each final state: nothing changes.
    for state in JobState::ALL.into_iter().filter(|s| s.is_final()) {
        let id = insert(&store, &job("py")).await;
        assert!(store
            .finish(&id, &Finish::without_exit(state, "ended"))
            .await
            .expect("finish")
            .is_some());
        let before = get(&store, &id).await;
        assert_eq!(
            store.request_cancel(&id).await.expect("cancel"),
            CancelOutcome::AlreadyEnded(state)
        );
        assert_eq!(get(&store, &id).await, before);
    }

    assert_eq!(
        store.request_cancel("jnope").await.expect("cancel"),
        CancelOutcome::NotFound
    );
}

pub async fn output_offsets_and_ranges<H: Harness>(h: H) {
    let (store, _) = open(&h).await;
    let id = insert(&store, &job("py")).await;
    let other = insert(&store, &job("py")).await;
    assert!(store.start(&id, "n1", false).await.expect("start"));
    let append = |stream, offset: u64, data: &'static [u8]| {
        let store = &store;
        let id = id.clone();
        async move {
            store
                .append_output(&id, stream, offset, data)
                .await
                .expect("append")
        }
    };
    append(StreamName::Stdout, 0, b"one ").await;
    append(StreamName::Stderr, 0, b"err1 ").await;
    store
        .append_output(&other, StreamName::Stdout, 0, b"x")
        .await
        .expect("append");
    append(StreamName::Stdout, 4, b"").await;
    append(StreamName::Stdout, 4, b"two ").await;
    append(StreamName::Stdout, 8, b"three").await;
    append(StreamName::Stderr, 5, b"err2").await;

    assert_eq!(
        output(&store, &id, StreamName::Stdout).await,
        b"one two three"
    );
    assert_eq!(output(&store, &id, StreamName::Stderr).await, b"err1 err2");
    assert_eq!(output(&store, &other, StreamName::Stdout).await, b"x");
    assert_eq!(output(&store, &other, StreamName::Stderr).await, b"");
    assert_eq!(get(&store, &id).await.output_len, [13, 9]);
    assert_eq!(get(&store, &other).await.output_len, [1, 0]);

    // Every range of stdout, across chunk boundaries and past the end.
    let whole = b"one two three";
    for offset in 0..=whole.len() + 2 {
        for max in 0..=whole.len() + 2 {
            let read = store
                .read_output(&id, StreamName::Stdout, offset as u64, max)
                .await
                .expect("read")
                .expect("known job");
            let from = offset.min(whole.len());
            let to = (offset + max).min(whole.len());
            assert_eq!(read, &whole[from..to], "offset {offset}, max {max}");
        }
    }
    let far = store
        .read_output(&id, StreamName::Stdout, u64::MAX, usize::MAX)
        .await
        .expect("read");
    assert_eq!(far, Some(Vec::new()));
    assert_eq!(
        store
            .read_output("jnope", StreamName::Stdout, 0, 10)
            .await
            .expect("read"),
        None
    );
    match store
        .append_output("jnope", StreamName::Stdout, 0, b"x")
        .await
    {
        Err(StoreError::NoSuchJob(id)) => assert_eq!(id, "jnope"),
        other => panic!("append to an unknown job: {other:?}"),
    }

    // Output stays readable after the job's end.
    assert!(store
        .finish(&id, &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(output(&store, &id, StreamName::Stdout).await, whole);
    // Binary output is kept byte for byte.
    let bytes: Vec<u8> = (0..=255u8).collect();
    let binary = insert(&store, &job("py")).await;
    store
        .append_output(&binary, StreamName::Stdout, 0, &bytes)
        .await
        .expect("append");
    assert_eq!(output(&store, &binary, StreamName::Stdout).await, bytes);
}

pub async fn re_append_at_a_stored_offset_stores_nothing<H: Harness>(h: H) {
    let (store, _) = open(&h).await;
    let id = insert(&store, &job("py")).await;
    assert!(store.start(&id, "n1", false).await.expect("start"));
    let out = StreamName::Stdout;
    store
        .append_output(&id, out, 0, b"abc")
        .await
        .expect("append");
    store
        .append_output(&id, out, 3, b"def")
        .await
        .expect("append");
    // Retried appends, whole or partly stored: nothing new.
    store
        .append_output(&id, out, 0, b"abc")
        .await
        .expect("retry");
    store
        .append_output(&id, out, 3, b"def")
        .await
        .expect("retry");
    store
        .append_output(&id, out, 0, b"XYZ")
        .await
        .expect("retry");
    store.append_output(&id, out, 2, b"c").await.expect("retry");
    assert_eq!(output(&store, &id, out).await, b"abcdef");
    assert_eq!(get(&store, &id).await.output_len, [6, 0]);
    // A retry that carries more than was stored adds only what is new.
    store
        .append_output(&id, out, 3, b"defgh")
        .await
        .expect("append");
    assert_eq!(output(&store, &id, out).await, b"abcdefgh");
    assert_eq!(get(&store, &id).await.output_len, [8, 0]);
    // A gap is refused and stores nothing.
    assert!(store.append_output(&id, out, 10, b"zz").await.is_err());
    assert_eq!(output(&store, &id, out).await, b"abcdefgh");
    // The other stream counts on its own.
    store
        .append_output(&id, StreamName::Stderr, 0, b"e")
        .await
        .expect("append");
    assert_eq!(get(&store, &id).await.output_len, [8, 1]);
}

pub async fn deliveries_are_deduplicated_and_answered<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let bot_job = NewJob {
        profile: "claude".into(),
        ..job("claude")
    };
    let first = store
        .insert_for_delivery("d-1", r#"{"pr":1}"#, &bot_job)
        .await
        .expect("insert")
        .expect("a new delivery");
    assert_eq!(
        store
            .insert_for_delivery("d-1", r#"{"pr":1}"#, &bot_job)
            .await
            .expect("again"),
        None
    );
    clock.advance(Duration::from_millis(10));
    let second = store
        .insert_for_delivery("d-2", "{}", &bot_job)
        .await
        .expect("insert")
        .expect("a new delivery");
    // The delivery's job is an ordinary queued job.
    assert_eq!(
        store.queued(&first).await.expect("queued").map(|q| q.job),
        Some(bot_job.clone())
    );
    assert_eq!(
        ids(&store, query(None, None, 10)).await,
        vec![second.clone(), first.clone()]
    );

    assert_eq!(
        store.unanswered_deliveries().await.expect("deliveries"),
        vec![
            Delivery {
                id: "d-1".into(),
                job_id: first.clone(),
                meta: r#"{"pr":1}"#.into(),
            },
            Delivery {
                id: "d-2".into(),
                job_id: second.clone(),
                meta: "{}".into(),
            },
        ]
    );
    store.mark_answered("d-1").await.expect("answer");
    store.mark_answered("d-1").await.expect("answer twice");
    store
        .mark_answered("d-unknown")
        .await
        .expect("answer unknown");
    let left = store.unanswered_deliveries().await.expect("deliveries");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, "d-2");
    // An answered delivery is still seen: it starts nothing again.
    assert_eq!(
        store
            .insert_for_delivery("d-1", "{}", &bot_job)
            .await
            .expect("again"),
        None
    );
    assert_eq!(ids(&store, query(None, None, 10)).await.len(), 2);
}

pub async fn recover_touches_only_its_own_nodes_running_jobs<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let first = insert(&store, &job("py")).await;
    let mine = insert(&store, &job("py")).await;
    let theirs = insert(&store, &job("py")).await;
    clock.advance(Duration::from_millis(1));
    let second = insert(&store, &job("py")).await;
    let done = insert(&store, &job("py")).await;
    let third = insert(&store, &job("py")).await;
    assert!(store.start(&mine, "a", true).await.expect("start"));
    assert!(store.start(&theirs, "b", true).await.expect("start"));
    assert!(store.start(&done, "a", false).await.expect("start"));
    assert!(store
        .finish(&done, &exited(0))
        .await
        .expect("finish")
        .is_some());
    store
        .append_output(&mine, StreamName::Stdout, 0, b"partial")
        .await
        .expect("append");
    let done_before = get(&store, &done).await;
    let theirs_before = get(&store, &theirs).await;

    clock.advance(Duration::from_secs(60));
    let recovered = store.recover("a", "restarted").await.expect("recover");
    assert_eq!(recovered.interrupted, vec![mine.clone()]);
    assert_eq!(
        recovered.queued,
        vec![first.clone(), second.clone(), third.clone()]
    );

    let record = get(&store, &mine).await;
    assert_eq!(record.state, JobState::Interrupted);
    assert_eq!(record.error.as_deref(), Some("restarted"));
    assert_eq!(record.finished_ms, Some(clock.now_ms()));
    assert_eq!(output(&store, &mine, StreamName::Stdout).await, b"partial");
    assert_eq!(get(&store, &theirs).await, theirs_before);
    assert_eq!(get(&store, &done).await, done_before);
    // Queued jobs keep their input, to be run.
    assert_eq!(
        store.queued(&first).await.expect("queued").map(|q| q.job),
        Some(job("py"))
    );

    // Again: nothing left to interrupt; the other node's job is its own.
    let again = store
        .recover("a", "restarted")
        .await
        .expect("recover again");
    assert!(again.interrupted.is_empty());
    assert_eq!(again.queued, vec![first.clone(), second, third]);
    let theirs_recovered = store.recover("b", "b restarted").await.expect("recover b");
    assert_eq!(theirs_recovered.interrupted, vec![theirs.clone()]);
    assert_eq!(state(&store, &theirs).await, JobState::Interrupted);
}

pub async fn prune_goes_by_the_clock_and_spares_open_jobs<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let hour = Duration::from_secs(3600);
    let old = insert(&store, &job("py")).await;
    let recent = insert(&store, &job("py")).await;
    let queued = insert(&store, &job("py")).await;
    let running = insert(&store, &job("py")).await;
    let delivered = store
        .insert_for_delivery("d-old", "{}", &job("bot"))
        .await
        .expect("insert")
        .expect("new delivery");
    for id in [&old, &recent, &running, &delivered] {
        assert!(store.start(id, "n1", false).await.expect("start"));
        store
            .append_output(id, StreamName::Stdout, 0, b"out")
            .await
            .expect("append");
    }
    assert!(store
        .finish(&old, &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert!(store
        .finish(&delivered, &exited(0))
        .await
        .expect("finish")
        .is_some());

    // Ended exactly an hour ago counts as older than an hour; a millisecond
    // less does not.
    clock.advance(hour - Duration::from_millis(1));
    assert_eq!(store.prune(hour).await.expect("prune"), 0);
    assert!(store.get(&old).await.expect("get").is_some());
    clock.advance(Duration::from_millis(1));
    assert!(store
        .finish(&recent, &exited(1))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(store.prune(hour).await.expect("prune"), 2);
    assert_eq!(store.get(&old).await.expect("get"), None);
    assert_eq!(store.get(&delivered).await.expect("get"), None);
    assert_eq!(
        store
            .read_output(&old, StreamName::Stdout, 0, 100)
            .await
            .expect("read"),
        None
    );
    assert!(store
        .unanswered_deliveries()
        .await
        .expect("deliveries")
        .is_empty());
    assert_eq!(state(&store, &recent).await, JobState::Failed);

    // Everything ended goes with a zero age; open jobs never do, however old.
    clock.advance(100 * hour);
    assert_eq!(store.prune(Duration::ZERO).await.expect("prune"), 1);
    assert_eq!(store.get(&recent).await.expect("get"), None);
    assert_eq!(state(&store, &queued).await, JobState::Queued);
    assert!(store.queued(&queued).await.expect("queued").is_some());
    assert_eq!(state(&store, &running).await, JobState::Running);
    assert_eq!(output(&store, &running, StreamName::Stdout).await, b"out");
    assert_eq!(store.prune(Duration::ZERO).await.expect("prune"), 0);
    // A pruned delivery id is forgotten with its job.
    assert!(store
        .insert_for_delivery("d-old", "{}", &job("bot"))
        .await
        .expect("insert")
        .is_some());
}

pub async fn concurrent_use_from_many_tasks<H: Harness>(h: H) {
    let (store, _) = open(&h).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut jobs = Vec::new();
                for n in 0..20 {
                    let id = store.insert(&job(&format!("p{t}"))).await.expect("insert");
                    assert!(store.start(&id, "n1", n % 2 == 0).await.expect("start"));
                    let mut offset = 0;
                    let mut expected = String::new();
                    for chunk in 0..5 {
                        let data = format!("{t}-{n}-{chunk};");
                        store
                            .append_output(&id, StreamName::Stdout, offset, data.as_bytes())
                            .await
                            .expect("append");
                        offset += data.len() as u64;
                        expected.push_str(&data);
                    }
                    assert!(store
                        .finish(&id, &exited(0))
                        .await
                        .expect("finish")
                        .is_some());
                    store.list(&query(None, None, 5)).await.expect("list");
                    jobs.push((id, expected));
                }
                jobs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    assert_eq!(all.len(), 160);
    let unique: HashSet<&String> = all.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), 160, "ids are unique");
    for (id, expected) in &all {
        let record = get(&*store, id).await;
        assert_eq!(record.state, JobState::Succeeded);
        assert_eq!(record.output_len[0], expected.len() as u64);
        assert_eq!(
            output(&*store, id, StreamName::Stdout).await,
            expected.as_bytes()
        );
    }
    assert_eq!(ids(&*store, query(None, None, 1000)).await.len(), 160);
}

pub async fn a_started_job_is_never_queued_again_after_a_reopen<H: Harness>(h: H) {
    let clock = Arc::new(ManualClock::new());
    let (queued, started, ended, cancelled, delivered) = {
        let store = h.open(Arc::clone(&clock)).await;
        let queued = insert(&store, &job("py")).await;
        let started = insert(&store, &job("py")).await;
        let ended = insert(&store, &job("py")).await;
        let cancelled = insert(&store, &job("py")).await;
        let delivered = store
            .insert_for_delivery("d-1", "{}", &job("bot"))
            .await
            .expect("insert")
            .expect("new delivery");
        assert!(store.start(&started, "a", true).await.expect("start"));
        store
            .append_output(&started, StreamName::Stdout, 0, b"before the crash")
            .await
            .expect("append");
        assert!(store.start(&ended, "a", true).await.expect("start"));
        assert!(store
            .finish(&ended, &exited(3))
            .await
            .expect("finish")
            .is_some());
        assert_eq!(
            store.request_cancel(&cancelled).await.expect("cancel"),
            CancelOutcome::Cancelled
        );
        (queued, started, ended, cancelled, delivered)
    };

    let store = h.open(Arc::clone(&clock)).await;
    let recovered = store.recover("a", "restarted").await.expect("recover");
    assert_eq!(recovered.queued, vec![queued.clone(), delivered]);
    assert_eq!(recovered.interrupted, vec![started.clone()]);
    assert_eq!(state(&store, &started).await, JobState::Interrupted);
    assert!(!store.start(&started, "a", true).await.expect("start"));
    assert_eq!(
        output(&store, &started, StreamName::Stdout).await,
        b"before the crash"
    );
    let record = get(&store, &ended).await;
    assert_eq!(
        (record.state, record.exit_code),
        (JobState::Failed, Some(3))
    );
    assert_eq!(state(&store, &cancelled).await, JobState::Cancelled);
    assert_eq!(
        store.queued(&queued).await.expect("queued").map(|q| q.job),
        Some(job("py"))
    );
    assert_eq!(
        store
            .insert_for_delivery("d-1", "{}", &job("bot"))
            .await
            .expect("again"),
        None
    );
    // And once more, with a different node name: still nothing runs twice.
    drop(store);
    let store = h.open(clock).await;
    let recovered = store.recover("b", "restarted").await.expect("recover");
    assert!(!recovered.queued.contains(&started));
    assert!(recovered.interrupted.is_empty());
}
