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
    Beat, CancelOutcome, Delivery, Finish, JobRecord, JobState, JobStore, ListQuery, NewJob,
    NodeBeat, NodeRecord, QueuedJob, StoreError, StoreEvent, StreamName, TakenOver,
};

/// Opens one backend's storage for one test case.
pub trait Harness: Send + Sync + 'static {
    type Store: JobStore;

    /// The store over this harness's storage: empty at the first call, the same
    /// data at a later call once the previous store has been dropped (a restart).
    fn open(&self, clock: Arc<ManualClock>) -> impl Future<Output = Self::Store> + Send;

    /// A second store on the same storage while the store of `open` is open,
    /// as another node sharing it would have it (its own `join`, its own
    /// events). The cases that play two joined nodes use it.
    fn open_second(&self, clock: Arc<ManualClock>) -> impl Future<Output = Self::Store> + Send;
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
            claim_next_takes_the_oldest_queued_job_of_its_profile,
            claims_from_two_nodes_at_once_never_share_a_job,
            queued_count_counts_a_profiles_queued_jobs,
            expire_queued_fails_old_queued_jobs_of_the_profile_by_the_clock,
            nodes_join_beat_and_are_declared_lost_once,
            take_over_interrupts_or_requeues_a_lost_nodes_running_jobs,
            a_nodes_writes_are_fenced_once_its_lease_is_gone,
            a_claim_committed_after_its_node_was_lost_is_taken_over_too,
            events_follow_queueing_cancels_and_ends,
            cancels_requested_lists_a_nodes_running_jobs_with_a_cancel,
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

// ---- The shared queue and the nodes. ----

/// What node `node` says of itself.
pub fn beat(node: &str) -> NodeBeat {
    NodeBeat {
        node: node.into(),
        address: format!("http://{node}:8080"),
        pools: r#"{"py":{"idle":1}}"#.into(),
    }
}

/// Two stores on one storage, as two nodes have it, with one clock.
async fn open_two<H: Harness>(h: &H) -> (H::Store, H::Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let first = h.open(Arc::clone(&clock)).await;
    let second = h.open_second(Arc::clone(&clock)).await;
    (first, second, clock)
}

async fn claim<S: JobStore>(store: &S, profile: &str, node: &str, keep: bool) -> Option<String> {
    store
        .claim_next(profile, node, false, keep)
        .await
        .expect("claim")
        .map(|q| q.id)
}

async fn join<S: JobStore>(store: &S, node: &str) {
    store.join(&beat(node)).await.expect("join");
}

async fn heartbeat<S: JobStore>(store: &S, node: &str) -> Beat {
    store.heartbeat(&beat(node)).await.expect("heartbeat")
}

fn is_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>, id: &str) -> bool {
    match result {
        Err(StoreError::Fenced { id: fenced }) => {
            assert_eq!(fenced, id);
            true
        }
        _ => false,
    }
}

/// The next event that is not a `Resync`, waiting up to 5 s (a backend may
/// deliver its own events through the database, after the call returned).
async fn next_event(events: &mut tokio::sync::broadcast::Receiver<StoreEvent>) -> StoreEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Ok(StoreEvent::Resync)) => continue,
            Ok(Ok(event)) => return event,
            Ok(Err(e)) => panic!("events: {e}"),
            Err(_) => panic!("no event within 5 s"),
        }
    }
}

/// The next `n` events, in any order, sorted for comparison.
async fn next_events(
    events: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    n: usize,
) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(format!("{:?}", next_event(events).await));
    }
    got.sort();
    got
}

fn sorted(events: &[StoreEvent]) -> Vec<String> {
    let mut all: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    all.sort();
    all
}

pub async fn claim_next_takes_the_oldest_queued_job_of_its_profile<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let first = NewJob {
        stdin: Some(b"first input".to_vec()),
        env: vec![("TOKEN".into(), "s3cret".into())],
        ..job("py")
    };
    // All in one millisecond: creation order decides.
    let a = insert(&store, &first).await;
    let other = insert(&store, &job("node")).await;
    let started = insert(&store, &job("py")).await;
    let cancelled = insert(&store, &job("py")).await;
    let e = store
        .insert_for_delivery("d-1", "{}", &job("py"))
        .await
        .expect("insert")
        .expect("new delivery");
    assert!(store.start(&started, "n0", true).await.expect("start"));
    assert_eq!(
        store.request_cancel(&cancelled).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    clock.advance(Duration::from_secs(2));

    let claimed = store
        .claim_next("py", "n1", true, false)
        .await
        .expect("claim")
        .expect("a queued job");
    assert_eq!(
        claimed,
        QueuedJob {
            id: a.clone(),
            job: first
        }
    );
    let record = get(&store, &a).await;
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.node.as_deref(), Some("n1"));
    assert_eq!(record.warm, Some(true));
    assert_eq!(record.started_ms, Some(clock.now_ms()));
    assert_eq!(record.created_ms, clock.now_ms() - 2_000);
    assert_eq!(store.queued(&a).await.expect("queued"), None);
    // Claimed is started: once only.
    assert!(!store.start(&a, "n2", false).await.expect("start"));

    // Running and cancelled jobs are skipped, as are other profiles.
    let claimed = store
        .claim_next("py", "n2", false, true)
        .await
        .expect("claim")
        .expect("a queued job");
    assert_eq!((claimed.id.as_str(), claimed.job), (e.as_str(), job("py")));
    assert_eq!(get(&store, &e).await.warm, Some(false));
    assert_eq!(get(&store, &e).await.node.as_deref(), Some("n2"));
    assert_eq!(claim(&store, "py", "n1", false).await, None);
    assert_eq!(claim(&store, "go", "n1", false).await, None);
    assert_eq!(state(&store, &started).await, JobState::Running);
    assert_eq!(get(&store, &started).await.node.as_deref(), Some("n0"));
    assert_eq!(state(&store, &cancelled).await, JobState::Cancelled);
    assert_eq!(claim(&store, "node", "n1", false).await, Some(other));
    // A job queued later is claimed next; a claimed job ends as any started one.
    let later = insert(&store, &job("py")).await;
    assert_eq!(claim(&store, "py", "n1", false).await, Some(later.clone()));
    assert!(store
        .finish(&later, &exited(0))
        .await
        .expect("finish")
        .is_some());
    let recovered = store.recover("n2", "restarted").await.expect("recover");
    assert_eq!(recovered.interrupted, vec![e]);
    assert!(recovered.queued.is_empty());
}

/// Eight tasks on two stores (two nodes, joined) claim 60 jobs at once: every
/// job is claimed, once, by the node its record names.
pub async fn claims_from_two_nodes_at_once_never_share_a_job<H: Harness>(h: H) {
    let (one, two, _) = open_two(&h).await;
    join(&one, "node-one").await;
    join(&two, "node-two").await;
    let mut all = Vec::new();
    for n in 0..60 {
        let profile = if n % 3 == 0 { "other" } else { "py" };
        all.push((insert(&one, &job(profile)).await, profile));
    }
    let stores = [(Arc::new(one), "node-one"), (Arc::new(two), "node-two")];
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, node) = &stores[t % 2];
        let (store, node) = (Arc::clone(store), *node);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for profile in ["py", "other"] {
                while let Some(q) = store
                    .claim_next(profile, node, false, t % 4 < 2)
                    .await
                    .expect("claim")
                {
                    assert_eq!(q.job.profile, profile);
                    mine.push((q.id, node));
                }
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.expect("task"));
    }
    let unique: HashSet<&String> = claimed.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), claimed.len(), "a job was claimed twice");
    assert_eq!(claimed.len(), all.len(), "every job is claimed");
    for (id, node) in &claimed {
        let record = get(&*stores[0].0, id).await;
        assert_eq!(record.state, JobState::Running);
        assert_eq!(record.node.as_deref(), Some(*node));
    }
    for (store, _) in &stores {
        assert_eq!(store.queued_count("py").await.expect("count"), 0);
    }
}

pub async fn queued_count_counts_a_profiles_queued_jobs<H: Harness>(h: H) {
    let (store, _) = open(&h).await;
    assert_eq!(store.queued_count("py").await.expect("count"), 0);
    let mut py = Vec::new();
    for _ in 0..4 {
        py.push(insert(&store, &job("py")).await);
    }
    insert(&store, &job("node")).await;
    assert_eq!(store.queued_count("py").await.expect("count"), 4);
    assert_eq!(store.queued_count("node").await.expect("count"), 1);
    assert_eq!(store.queued_count("go").await.expect("count"), 0);
    assert!(store.start(&py[0], "n1", false).await.expect("start"));
    store.request_cancel(&py[1]).await.expect("cancel");
    assert!(store
        .finish(&py[2], &exited(1))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(store.queued_count("py").await.expect("count"), 1);
    assert_eq!(claim(&store, "py", "n1", false).await, Some(py[3].clone()));
    assert_eq!(store.queued_count("py").await.expect("count"), 0);
    assert_eq!(store.queued_count("node").await.expect("count"), 1);
}

pub async fn expire_queued_fails_old_queued_jobs_of_the_profile_by_the_clock<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let minute = Duration::from_secs(60);
    let old = insert(
        &store,
        &NewJob {
            stdin: Some(b"in".to_vec()),
            ..job("py")
        },
    )
    .await;
    let other = insert(&store, &job("node")).await;
    let running = insert(&store, &job("py")).await;
    assert!(store.start(&running, "n1", false).await.expect("start"));
    clock.advance(Duration::from_secs(10));
    let young = insert(&store, &job("py")).await;

    // Created exactly `max_wait` ago counts (as with prune); a millisecond less does not.
    clock.advance(Duration::from_secs(50) - Duration::from_millis(1));
    let expire = || store.expire_queued("py", minute, "waited too long for a container");
    assert!(expire().await.expect("expire").is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(expire().await.expect("expire"), vec![old.clone()]);
    let record = get(&store, &old).await;
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(
        record.error.as_deref(),
        Some("waited too long for a container")
    );
    assert_eq!(record.finished_ms, Some(clock.now_ms()));
    assert_eq!((record.exit_code, record.node.as_deref()), (None, None));
    assert_eq!(store.queued(&old).await.expect("queued"), None);
    // Once: a final job never changes.
    assert!(expire().await.expect("expire").is_empty());
    assert_eq!(get(&store, &old).await, record);
    assert_eq!(state(&store, &young).await, JobState::Queued);
    assert_eq!(state(&store, &other).await, JobState::Queued);
    assert_eq!(state(&store, &running).await, JobState::Running);

    clock.advance(Duration::from_secs(10));
    assert_eq!(expire().await.expect("expire"), vec![young]);
    assert_eq!(
        store
            .expire_queued("node", minute, "late")
            .await
            .expect("expire"),
        vec![other]
    );
    assert_eq!(state(&store, &running).await, JobState::Running);
}

/// Two stores play nodes "alpha" and "beta" on one storage.
pub async fn nodes_join_beat_and_are_declared_lost_once<H: Harness>(h: H) {
    let (alpha, beta, clock) = open_two(&h).await;
    // No lease before a join.
    assert_eq!(heartbeat(&alpha, "alpha").await, Beat::Fenced);
    assert!(alpha.nodes().await.expect("nodes").is_empty());
    let t0 = clock.now_ms();
    join(&beta, "beta").await;
    join(&alpha, "alpha").await;
    let record = |node: &str, generation, joined_ms, last_seen_ms, lost| NodeRecord {
        node: node.into(),
        address: format!("http://{node}:8080"),
        pools: beat(node).pools,
        generation,
        joined_ms,
        last_seen_ms,
        lost,
    };
    assert_eq!(
        beta.nodes().await.expect("nodes"),
        vec![
            record("alpha", 1, t0, t0, false),
            record("beta", 1, t0, t0, false)
        ]
    );

    // A heartbeat renews the lease and stores what the node says.
    clock.advance(Duration::from_secs(10));
    let busy = NodeBeat {
        pools: r#"{"py":{"idle":0}}"#.into(),
        address: "http://alpha:9090".into(),
        ..beat("alpha")
    };
    assert_eq!(alpha.heartbeat(&busy).await.expect("beat"), Beat::Alive);
    let nodes = beta.nodes().await.expect("nodes");
    assert_eq!(
        nodes[0],
        NodeRecord {
            address: busy.address.clone(),
            pools: busy.pools.clone(),
            last_seen_ms: t0 + 10_000,
            ..record("alpha", 1, t0, t0, false)
        }
    );

    // Not seen for exactly the timeout counts; the caller is never taken over.
    let timeout = Duration::from_secs(30);
    clock.advance(timeout - Duration::from_millis(1));
    assert_eq!(heartbeat(&beta, "beta").await, Beat::Alive);
    assert!(beta
        .take_over("beta", timeout, &[])
        .await
        .expect("take over")
        .is_empty());
    assert!(alpha
        .take_over("alpha", Duration::from_secs(60), &[])
        .await
        .expect("take over")
        .is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        beta.take_over("beta", timeout, &[])
            .await
            .expect("take over"),
        vec![TakenOver {
            node: "alpha".into(),
            ..TakenOver::default()
        }]
    );
    // Once, whoever asks.
    assert!(beta
        .take_over("beta", timeout, &[])
        .await
        .expect("take over")
        .is_empty());
    assert!(beta
        .take_over("gamma", timeout, &[])
        .await
        .expect("take over")
        .is_empty());
    let nodes = beta.nodes().await.expect("nodes");
    assert!(nodes[0].lost && !nodes[1].lost, "{nodes:?}");
    assert_eq!(nodes[0].generation, 1);
    assert_eq!(heartbeat(&alpha, "alpha").await, Beat::Fenced);
    assert_eq!(
        beta.nodes().await.expect("nodes")[0].last_seen_ms,
        t0 + 10_000,
        "a fenced heartbeat renews nothing"
    );

    // Joining again: a new generation and lease.
    clock.advance(Duration::from_secs(5));
    join(&alpha, "alpha").await;
    let now = clock.now_ms();
    assert_eq!(
        alpha.nodes().await.expect("nodes")[0],
        record("alpha", 2, now, now, false)
    );
    assert_eq!(heartbeat(&alpha, "alpha").await, Beat::Alive);
    // A store beats only for the node it joined as.
    assert_eq!(heartbeat(&alpha, "beta").await, Beat::Fenced);
    // A newer join of the same name (another store) fences the older one.
    join(&beta, "alpha").await;
    assert_eq!(beta.nodes().await.expect("nodes")[0].generation, 3);
    assert_eq!(heartbeat(&alpha, "alpha").await, Beat::Fenced);
    assert_eq!(heartbeat(&beta, "alpha").await, Beat::Alive);
}

/// Node "node-alpha" (the first store) is lost; "node-beta" (the second)
/// takes over, requeueing the profile "bot".
pub async fn take_over_interrupts_or_requeues_a_lost_nodes_running_jobs<H: Harness>(h: H) {
    let (alpha, beta, clock) = open_two(&h).await;
    join(&alpha, "node-alpha").await;
    join(&beta, "node-beta").await;
    let kept = NewJob {
        stdin: Some(b"kept input".to_vec()),
        env: vec![("TOKEN".into(), "t0k3n".into())],
        ..job("bot")
    };
    let plain = insert(&alpha, &job("py")).await;
    let requeued = insert(&alpha, &kept).await;
    let not_kept = insert(&alpha, &kept).await;
    let other_profile = insert(&alpha, &job("py")).await;
    let cancelled = insert(&alpha, &kept).await;
    let theirs = insert(&alpha, &job("py")).await;
    let done = insert(&alpha, &job("py")).await;
    let queued = insert(&alpha, &job("bot")).await;
    let a = "node-alpha";
    assert_eq!(claim(&alpha, "py", a, false).await, Some(plain.clone()));
    assert_eq!(claim(&alpha, "bot", a, true).await, Some(requeued.clone()));
    assert_eq!(claim(&alpha, "bot", a, false).await, Some(not_kept.clone()));
    assert_eq!(
        claim(&alpha, "py", a, true).await,
        Some(other_profile.clone())
    );
    assert_eq!(claim(&alpha, "bot", a, true).await, Some(cancelled.clone()));
    assert!(beta.start(&theirs, "node-beta", true).await.expect("start"));
    assert!(alpha.start(&done, a, true).await.expect("start"));
    assert!(alpha
        .finish(&done, &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(
        beta.request_cancel(&cancelled).await.expect("cancel"),
        CancelOutcome::Requested
    );
    for id in [&plain, &requeued] {
        alpha
            .append_output(id, StreamName::Stdout, 0, b"partial")
            .await
            .expect("append");
        alpha
            .append_output(id, StreamName::Stderr, 0, b"warning")
            .await
            .expect("append");
    }
    // A restart of another node leaves the kept input alone.
    let recovered = beta
        .recover("node-gamma", "restarted")
        .await
        .expect("recover");
    assert!(recovered.interrupted.is_empty());
    let before = [
        get(&beta, &theirs).await,
        get(&beta, &done).await,
        get(&beta, &queued).await,
    ];

    clock.advance(Duration::from_secs(31));
    assert_eq!(heartbeat(&beta, "node-beta").await, Beat::Alive);
    let requeue = vec!["bot".to_string()];
    let taken = beta
        .take_over("node-beta", Duration::from_secs(30), &requeue)
        .await
        .expect("take over");
    assert_eq!(
        taken,
        vec![TakenOver {
            node: a.into(),
            interrupted: vec![
                plain.clone(),
                not_kept.clone(),
                other_profile.clone(),
                cancelled.clone()
            ],
            requeued: vec![requeued.clone()],
        }]
    );
    assert!(beta
        .take_over("node-beta", Duration::from_secs(30), &requeue)
        .await
        .expect("again")
        .is_empty());

    for id in [&plain, &not_kept, &other_profile, &cancelled] {
        let record = get(&beta, id).await;
        assert_eq!(record.state, JobState::Interrupted, "{id}");
        let error = record.error.unwrap_or_default();
        assert!(error.contains("node-alpha"), "{error}");
        assert_eq!(record.finished_ms, Some(clock.now_ms()));
        assert_eq!(record.node.as_deref(), Some(a));
        assert_eq!(beta.queued(id).await.expect("queued"), None);
    }
    assert_eq!(output(&beta, &plain, StreamName::Stdout).await, b"partial");

    // Queued again from nothing, with its input.
    let record = get(&beta, &requeued).await;
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(
        (
            record.node,
            record.warm,
            record.started_ms,
            record.finished_ms
        ),
        (None, None, None, None)
    );
    assert_eq!((record.error, record.exit_code), (None, None));
    assert_eq!(record.output_len, [0, 0]);
    assert!(!record.cancel_requested);
    for stream in StreamName::BOTH {
        assert!(output(&beta, &requeued, stream).await.is_empty());
    }
    assert_eq!(
        beta.queued(&requeued).await.expect("queued").map(|q| q.job),
        Some(kept.clone())
    );
    assert_eq!(beta.queued_count("bot").await.expect("count"), 2);
    assert_eq!(
        [
            get(&beta, &theirs).await,
            get(&beta, &done).await,
            get(&beta, &queued).await
        ],
        before
    );

    // The next claim runs it (first in line: it was queued first) with its input.
    let claimed = beta
        .claim_next("bot", "node-beta", true, true)
        .await
        .expect("claim")
        .expect("queued");
    assert_eq!(
        claimed,
        QueuedJob {
            id: requeued.clone(),
            job: kept
        }
    );
    beta.append_output(&requeued, StreamName::Stdout, 0, b"again")
        .await
        .expect("append");
    assert_eq!(output(&beta, &requeued, StreamName::Stdout).await, b"again");
    assert_eq!(
        get(&beta, &requeued).await.node.as_deref(),
        Some("node-beta")
    );
}

/// A node declared lost that claims before it learns it (and then dies: it
/// never joins again) leaves no job running for ever: the next take-over ends it.
pub async fn a_claim_committed_after_its_node_was_lost_is_taken_over_too<H: Harness>(h: H) {
    let (alpha, beta, clock) = open_two(&h).await;
    join(&alpha, "alpha").await;
    join(&beta, "beta").await;
    clock.advance(Duration::from_secs(31));
    assert_eq!(heartbeat(&beta, "beta").await, Beat::Alive);
    let taken = beta
        .take_over("beta", Duration::from_secs(30), &[])
        .await
        .expect("take over");
    assert_eq!(taken.len(), 1);
    // Nothing more to take.
    assert!(beta
        .take_over("beta", Duration::from_secs(30), &[])
        .await
        .expect("again")
        .is_empty());
    // Alpha, not knowing, takes a job; then it is gone for good.
    let late = insert(&beta, &job("py")).await;
    assert_eq!(
        claim(&alpha, "py", "alpha", false).await,
        Some(late.clone())
    );
    drop(alpha);
    assert_eq!(state(&beta, &late).await, JobState::Running);
    let taken = beta
        .take_over("beta", Duration::from_secs(30), &[])
        .await
        .expect("take over the late claim");
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].node, "alpha");
    assert_eq!(taken[0].interrupted, vec![late.clone()]);
    let record = get(&beta, &late).await;
    assert_eq!(record.state, JobState::Interrupted);
    assert!(
        record.error.as_deref().is_some_and(|e| e.contains("alpha")),
        "{record:?}"
    );
    // And once only.
    assert!(beta
        .take_over("beta", Duration::from_secs(30), &[])
        .await
        .expect("again")
        .is_empty());
}

/// The first store plays "alpha", the second "beta".
pub async fn a_nodes_writes_are_fenced_once_its_lease_is_gone<H: Harness>(h: H) {
    let (alpha, beta, clock) = open_two(&h).await;
    let a = "alpha";
    join(&alpha, a).await;
    join(&beta, "beta").await;
    let claimed = insert(&alpha, &job("py")).await;
    let started = insert(&alpha, &job("py")).await;
    let kept = insert(&alpha, &job("bot")).await;
    let free = insert(&alpha, &job("go")).await;
    assert_eq!(claim(&alpha, "py", a, false).await, Some(claimed.clone()));
    assert!(alpha.start(&started, a, false).await.expect("start"));
    assert_eq!(claim(&alpha, "bot", a, true).await, Some(kept.clone()));
    let inserted = alpha
        .insert_started(&job("py"), a, true)
        .await
        .expect("insert started");
    let alphas = [claimed.clone(), started.clone(), inserted.clone()];
    for id in &alphas {
        alpha
            .append_output(id, StreamName::Stdout, 0, b"x")
            .await
            .expect("append");
    }
    // Another joined node cannot write alpha's jobs.
    assert!(is_fenced(
        beta.append_output(&claimed, StreamName::Stdout, 1, b"y")
            .await,
        &claimed
    ));
    assert!(is_fenced(beta.finish(&claimed, &exited(0)).await, &claimed));
    assert_eq!(state(&beta, &claimed).await, JobState::Running);
    assert_eq!(output(&beta, &claimed, StreamName::Stdout).await, b"x");

    clock.advance(Duration::from_secs(31));
    assert_eq!(heartbeat(&beta, "beta").await, Beat::Alive);
    let taken = beta
        .take_over("beta", Duration::from_secs(30), &["bot".to_string()])
        .await
        .expect("take over");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].requeued, vec![kept.clone()]);

    // Alpha (not knowing yet) writes nothing more: not its jobs, not the one
    // queued again, not even a queued job.
    for id in &alphas {
        let before = get(&beta, id).await;
        assert!(is_fenced(
            alpha
                .append_output(id, StreamName::Stdout, 1, b"late")
                .await,
            id
        ));
        assert!(is_fenced(alpha.finish(id, &exited(0)).await, id));
        assert_eq!(get(&beta, id).await, before);
        assert_eq!(before.state, JobState::Interrupted);
        assert_eq!(output(&beta, id, StreamName::Stdout).await, b"x");
    }
    assert!(is_fenced(
        alpha
            .append_output(&kept, StreamName::Stdout, 0, b"late")
            .await,
        &kept
    ));
    assert!(is_fenced(alpha.finish(&kept, &exited(0)).await, &kept));
    assert!(is_fenced(alpha.finish(&free, &exited(0)).await, &free));
    assert_eq!(state(&beta, &kept).await, JobState::Queued);
    assert_eq!(get(&beta, &kept).await.output_len, [0, 0]);
    assert_eq!(state(&beta, &free).await, JobState::Queued);

    // A claim alpha makes before it learns it was lost is fenced too, and
    // ended by its next join.
    let orphan = insert(&beta, &job("late")).await;
    assert_eq!(claim(&alpha, "late", a, false).await, Some(orphan.clone()));
    assert!(is_fenced(alpha.finish(&orphan, &exited(0)).await, &orphan));
    assert_eq!(state(&beta, &orphan).await, JobState::Running);

    // Joined again, alpha still cannot write its jobs of the old generation
    // (its old runs may still be flushing), nor the one queued again.
    assert_eq!(heartbeat(&alpha, a).await, Beat::Fenced);
    join(&alpha, a).await;
    for id in &alphas {
        assert!(is_fenced(
            alpha
                .append_output(id, StreamName::Stdout, 1, b"late")
                .await,
            id
        ));
        assert!(is_fenced(alpha.finish(id, &exited(0)).await, id));
    }
    assert!(is_fenced(
        alpha
            .append_output(&kept, StreamName::Stdout, 0, b"late")
            .await,
        &kept
    ));
    assert!(is_fenced(alpha.finish(&kept, &exited(0)).await, &kept));
    assert_eq!(state(&beta, &kept).await, JobState::Queued);
    assert_eq!(get(&beta, &kept).await.output_len, [0, 0]);
    assert_eq!(state(&beta, &orphan).await, JobState::Interrupted);

    // Beta runs the requeued job; alpha cannot touch it.
    assert_eq!(claim(&beta, "bot", "beta", true).await, Some(kept.clone()));
    beta.append_output(&kept, StreamName::Stdout, 0, b"b")
        .await
        .expect("append");
    assert!(is_fenced(
        alpha
            .append_output(&kept, StreamName::Stdout, 1, b"a")
            .await,
        &kept
    ));
    assert!(is_fenced(alpha.finish(&kept, &exited(0)).await, &kept));
    assert_eq!(claim(&alpha, "go", a, false).await, Some(free.clone()));
    alpha
        .append_output(&free, StreamName::Stdout, 0, b"ok")
        .await
        .expect("append");
    assert!(alpha
        .finish(&free, &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(output(&beta, &free, StreamName::Stdout).await, b"ok");
    // Another join (a newer generation) fences the jobs of the one before,
    // and ends them: nothing could end them any more.
    let newer = insert(&alpha, &job("go")).await;
    assert_eq!(claim(&alpha, "go", a, false).await, Some(newer.clone()));
    let other_node = alpha
        .insert_started(&job("go"), "not-joined", false)
        .await
        .expect("insert started");
    join(&alpha, a).await;
    assert!(is_fenced(alpha.finish(&newer, &exited(0)).await, &newer));
    let record = get(&beta, &newer).await;
    assert_eq!(record.state, JobState::Interrupted);
    assert!(record.error.unwrap_or_default().contains("alpha"));
    assert_eq!(state(&beta, &other_node).await, JobState::Running);
    assert_eq!(
        state(&beta, &kept).await,
        JobState::Running,
        "another node's"
    );
    let record = beta
        .finish(&kept, &exited(0))
        .await
        .expect("finish")
        .expect("it was running");
    assert_eq!(record.state, JobState::Succeeded);
}

pub async fn events_follow_queueing_cancels_and_ends<H: Harness>(h: H) {
    let (store, clock) = open(&h).await;
    let mut events = store.events();
    let queued = |profile: &str| StoreEvent::Queued {
        profile: profile.into(),
    };
    let ended = |id: &String| StoreEvent::Ended { id: id.clone() };

    let a = insert(&store, &job("py")).await;
    assert_eq!(next_event(&mut events).await, queued("py"));
    let bot = store
        .insert_for_delivery("d-1", "{}", &job("bot"))
        .await
        .expect("insert")
        .expect("new");
    assert_eq!(next_event(&mut events).await, queued("bot"));
    // Nothing for a seen delivery, a claim, a start, output or a started job.
    assert_eq!(
        store
            .insert_for_delivery("d-1", "{}", &job("bot"))
            .await
            .expect("again"),
        None
    );
    assert_eq!(claim(&store, "py", "n1", false).await, Some(a.clone()));
    store
        .append_output(&a, StreamName::Stdout, 0, b"out")
        .await
        .expect("append");
    let started = store
        .insert_started(&job("py"), "n2", false)
        .await
        .expect("insert started");
    assert_eq!(
        store.request_cancel(&a).await.expect("cancel"),
        CancelOutcome::Requested
    );
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::CancelRequested {
            id: a.clone(),
            node: "n1".into()
        }
    );
    assert!(store
        .finish(&a, &Finish::without_exit(JobState::Cancelled, "cancelled"))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(next_event(&mut events).await, ended(&a));
    // A second finish and a cancel of an ended job send nothing.
    assert!(store
        .finish(&a, &exited(0))
        .await
        .expect("finish")
        .is_none());
    store.request_cancel(&a).await.expect("cancel");
    assert_eq!(
        store.request_cancel(&bot).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(next_event(&mut events).await, ended(&bot));

    // Another subscriber sees what comes after it subscribed.
    let mut late = store.events();
    let old = insert(&store, &job("py")).await;
    assert_eq!(next_event(&mut events).await, queued("py"));
    assert_eq!(next_event(&mut late).await, queued("py"));
    clock.advance(Duration::from_secs(60));
    let expired = store
        .expire_queued("py", Duration::from_secs(30), "too long")
        .await
        .expect("expire");
    assert_eq!(expired, vec![old.clone()]);
    assert_eq!(next_event(&mut events).await, ended(&old));
    assert_eq!(next_event(&mut late).await, ended(&old));

    // A take-over: an end for the interrupted job, a queueing for the requeued.
    join(&store, "alpha").await;
    let gone = insert(&store, &job("py")).await;
    let again = insert(&store, &job("bot")).await;
    assert_eq!(
        next_events(&mut events, 2).await,
        sorted(&[queued("py"), queued("bot")])
    );
    assert_eq!(claim(&store, "py", "alpha", true).await, Some(gone.clone()));
    assert_eq!(
        claim(&store, "bot", "alpha", true).await,
        Some(again.clone())
    );
    clock.advance(Duration::from_secs(60));
    let taken = store
        .take_over("beta", Duration::from_secs(30), &["bot".to_string()])
        .await
        .expect("take over");
    assert_eq!(taken.len(), 1);
    assert_eq!(
        next_events(&mut events, 2).await,
        sorted(&[ended(&gone), queued("bot")])
    );
    // A restart's interrupted jobs end too.
    let recovered = store.recover("n2", "restarted").await.expect("recover");
    assert_eq!(recovered.interrupted, vec![started.clone()]);
    assert_eq!(next_event(&mut events).await, ended(&started));
}

pub async fn cancels_requested_lists_a_nodes_running_jobs_with_a_cancel<H: Harness>(h: H) {
    let (store, _) = open(&h).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(insert(&store, &job("py")).await);
    }
    for (id, node) in ids.iter().zip(["a", "a", "b", "a"]) {
        assert!(store.start(id, node, false).await.expect("start"));
    }
    for id in [&ids[3], &ids[0], &ids[2], &ids[4]] {
        store.request_cancel(id).await.expect("cancel");
    }
    let cancels = |node: &'static str| store.cancels_requested(node);
    assert_eq!(
        cancels("a").await.expect("cancels"),
        vec![ids[0].clone(), ids[3].clone()]
    );
    assert_eq!(cancels("b").await.expect("cancels"), vec![ids[2].clone()]);
    assert!(cancels("c").await.expect("cancels").is_empty());
    assert!(store
        .finish(&ids[0], &exited(0))
        .await
        .expect("finish")
        .is_some());
    assert_eq!(cancels("a").await.expect("cancels"), vec![ids[3].clone()]);
    assert_eq!(state(&store, &ids[4]).await, JobState::Cancelled);
}
