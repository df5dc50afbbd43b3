//! The run of one job this node took (stored as running on this node before
//! anything else happens, so a crash never runs it twice), as small named steps
//! driven by the core's transition function (`warmpool_core::lifecycle`):
//! prepare (pool, secrets, front-end env), claim a container (racing a cancel
//! and the shutdown), execute (the pool's one run path, a cancel turned into a
//! kill), conclude (output stored, end stored, followers and front ends told). Every decision about the job's state is the
//! core's; this file only carries out the actions it returns.

use crate::live::LiveJob;
use crate::lock;
use crate::service::{read_secret, Front, Service};
use crate::sink::JobSink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use warmpool_core::lifecycle::{transition, Action, Event, Finish, Phase, RunEnd};
use warmpool_core::{ExitStatus, Job, JobState};
use warmpool_exec::{Outcome, RunControl};
use warmpool_pool::{Claimed, Pool, PoolError};
use warmpool_store::{NewJob, QueuedJob, StoreError};

/// One job's run. Owns the job's phase: nothing else changes it.
pub(crate) struct JobRun {
    svc: Arc<Service>,
    id: String,
    live: Arc<LiveJob>,
    phase: Phase,
    claimed: Option<Claimed>,
    /// Some output could not be stored (the end says so).
    output_lost: bool,
    /// Where this run's time went (debug log at its end).
    phases: Vec<(&'static str, Duration)>,
}

/// What the job needs to run, gathered before it claims a container.
pub(crate) struct Prepared {
    pool: Pool,
    job: Job,
    secrets: Vec<String>,
}

impl JobRun {
    /// The run of a job taken from the shared queue (stored as running on this
    /// node), still without a container.
    pub(crate) fn taken(svc: Arc<Service>, id: String, live: Arc<LiveJob>) -> JobRun {
        JobRun {
            svc,
            id,
            live,
            phase: Phase::Taken,
            claimed: None,
            output_lost: false,
            phases: Vec::new(),
        }
    }

    /// The run of a job stored as running already, on the container it holds.
    pub(crate) fn started(
        svc: Arc<Service>,
        id: String,
        live: Arc<LiveJob>,
        claimed: Claimed,
    ) -> JobRun {
        JobRun {
            svc,
            id,
            live,
            phase: Phase::Running,
            claimed: Some(claimed),
            output_lost: false,
            phases: Vec::new(),
        }
    }

    /// Run a job that holds its container and is stored as running.
    pub(crate) async fn drive_started(mut self, prepared: Prepared) {
        let end = self.execute(prepared).await;
        let stopping = self.svc.stopping().is_cancelled();
        self.event(Event::Ended { run: end, stopping }).await;
    }

    /// Run a taken job to its stored end. `got_container` is told once the
    /// job holds a container or is over (the dispatcher counts jobs between).
    pub(crate) async fn drive(mut self, q: QueuedJob, got_container: impl FnOnce() + Send) {
        let prepared = match self.prepare(q).await {
            Ok(p) => p,
            Err(why) => {
                got_container();
                return self.event(Event::NotStarted(why)).await;
            }
        };
        let claimed = self.claim(&prepared.pool).await;
        got_container();
        match claimed {
            Ok(claimed) => self.claimed = Some(claimed),
            Err(event) => return self.event(event).await,
        }
        self.event(Event::Claimed).await;
        self.drive_started(prepared).await;
    }

    /// Apply an event to the phase: what the core says to do. `None` for an
    /// illegal event: a driver bug must not wedge the job, so it is logged and
    /// nothing is done.
    fn advance(&mut self, event: Event) -> Option<Action> {
        match transition(&self.phase, event) {
            Ok((next, action)) => {
                self.phase = next;
                Some(action)
            }
            Err(illegal) => {
                tracing::error!(job = %self.id, error = %illegal, "an illegal job transition");
                None
            }
        }
    }

    /// Apply an event and carry out what the core says to do.
    async fn event(&mut self, event: Event) {
        let Some(action) = self.advance(event) else {
            return;
        };
        match action {
            Action::Nothing => {}
            Action::Kill => {} // done by `execute`, which owns the run
            Action::Store(f) => self.conclude(f).await,
        }
    }

    async fn prepare(&mut self, q: QueuedJob) -> Result<Prepared, String> {
        let mut front = Front::default();
        if let Some(h) = self.svc.hooks() {
            h.before_start(&self.id, &mut front).await?;
        }
        prepared(&self.svc, q.job, front)
    }

    /// A container, or the event that ends the wait for one.
    async fn claim(&mut self, pool: &Pool) -> Result<Claimed, Event> {
        let claim = pool.claim();
        tokio::select! {
            // A cancel that came first (during `prepare`) is seen before the
            // claim is tried, so it never takes a parked container only for the
            // start to find the job cancelled and remove that container.
            biased;
            // A cancel drops the claim: a queued claim leaves the queue; a cold
            // park in flight finishes on its own and its container goes to the
            // pool (the pool's rule), so nothing is left half-created.
            _ = self.live.cancel.cancelled() => Err(Event::CancelRequested),
            got = claim => match got {
                Ok(c) => Ok(c),
                Err(PoolError::ShuttingDown { .. }) => Err(Event::Stopping),
                Err(e) => Err(Event::NotStarted(e.to_string())),
            },
        }
    }

    /// Hand the job over and follow it to its end; a cancel kills it.
    async fn execute(&mut self, p: Prepared) -> RunEnd {
        let Some(claimed) = self.claimed.take() else {
            return RunEnd::lost(ExitStatus::Code(125), "no container was claimed");
        };
        let (sink, pump) = JobSink::new(
            self.svc.store().clone(),
            self.id.clone(),
            self.live.clone(),
            &p.secrets,
        );
        let mut sink = sink;
        let (signals, rx) = mpsc::unbounded_channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let control = RunControl::with_signals(rx).with_cancel_flag(cancelled.clone());
        let began = std::time::Instant::now();
        let profile = p.pool.profile().profile.name.clone();
        let outcome = {
            let run = p.pool.run_claimed(claimed, p.job, &mut sink, control);
            tokio::pin!(run);
            let mut cancel_seen = false;
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = self.live.cancel.cancelled(), if !cancel_seen => {
                        cancel_seen = true;
                        // The run is borrowed here, so the kill is done here.
                        if let Some(Action::Kill) = self.advance(Event::CancelRequested) {
                            cancelled.store(true, Ordering::SeqCst);
                            let _ = signals.send(warmpool_runtime::Signal::Kill);
                        }
                    }
                }
            }
        };
        self.phases.push(("run", began.elapsed()));
        let drain = std::time::Instant::now();
        sink.finish().await;
        let stored = pump.drained().await;
        self.phases.push(("output stored", drain.elapsed()));
        let mut end = match outcome {
            Ok(run) => {
                let h = &self.svc.histograms;
                h.claim.observe(run.claim_time);
                if let Some(per) = h.claim_by_profile.get(&profile) {
                    per.observe(run.claim_time);
                }
                if let Some(f) = run.outcome.run.first_output {
                    h.first_output.observe(f);
                }
                h.duration.observe(run.outcome.run.exit);
                run_end(&run.outcome)
            }
            Err(e) => RunEnd::lost(ExitStatus::Code(125), e.to_string()),
        };
        if !stored {
            self.output_lost = true;
        }
        // Errors may quote the job's env: no secret leaves in them either.
        end.lost = end.lost.map(|e| redact_text(&e, &p.secrets));
        end.start_error = end.start_error.map(|e| redact_text(&e, &p.secrets));
        end
    }

    /// Store the job's end, then tell followers and front ends.
    async fn conclude(&mut self, mut f: Finish) {
        // Killed by this node's fencing, not by a cancel: if the end can still
        // be stored (the lease was not taken after all), it says so.
        if f.state == JobState::Cancelled {
            if let Some(why) = lock(&self.live.fenced).clone() {
                f = Finish::without_exit(
                    JobState::Interrupted,
                    format!("{why}; its container was killed"),
                );
            }
        }
        if self.output_lost {
            let note = "some of the job's output could not be stored";
            f.error = Some(match f.error.take() {
                Some(e) => format!("{e}; {note}"),
                None => note.to_string(),
            });
        }
        let state = f.state;
        let storing = std::time::Instant::now();
        // The end is known: a store that is away for a moment (a database
        // restart) gets it once it is back, within node_timeout; past that the
        // job is the orphan sweep's (interrupted), as before.
        let give_up = storing + self.svc.config.cluster.node_timeout;
        let mut wait = Duration::from_millis(100);
        let record = loop {
            match self.svc.store().finish(&self.id, &f).await {
                Ok(record) => {
                    // A kept input (retry_interrupted) left the store with it:
                    // scrub old copies soon.
                    if record.is_some() {
                        self.svc.input_wiped();
                    }
                    break record;
                }
                Err(e @ StoreError::Backend { .. })
                    if std::time::Instant::now() + wait < give_up =>
                {
                    tracing::warn!(job = %self.id, error = %e, retry_in_ms = wait.as_millis() as u64, "storing a job's end failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(job = %self.id, error = %e, "storing a job's end failed");
                    break None;
                }
            }
        };
        self.phases.push(("end stored", storing.elapsed()));
        tracing::debug!(job = %self.id, phases = ?self.phases, "job run");
        self.svc.ended(&self.id, state, record, &self.live).await;
    }
}

/// What the job needs to run: its pool, the secrets read now from the server's
/// environment or made by a front end (never stored), and the job as the gate
/// gets it: its own env, then a front end's, then the secrets (which nothing
/// overrides). The profile's `secret_env` names the front end withholds or
/// supplies itself are not read.
pub(crate) fn prepared(svc: &Service, job: NewJob, front: Front) -> Result<Prepared, String> {
    let name = &job.profile;
    let pool = svc
        .pools
        .get(name)
        .cloned()
        .ok_or_else(|| format!("no pool for profile \"{name}\""))?;
    let profile = pool.profile().profile.clone();
    let mut secrets = Vec::new();
    let mut env = job.env;
    env.extend(front.env);
    let made = |name: &String| front.secrets.iter().any(|(k, _)| k == name);
    for name in &profile.secret_env {
        if front.withhold.contains(name) || made(name) {
            continue;
        }
        let value = read_secret(name)?;
        secrets.push(value.clone());
        env.push((name.clone(), value));
    }
    for (name, value) in front.secrets {
        secrets.push(value.clone());
        env.push((name, value));
    }
    Ok(Prepared {
        pool,
        job: Job {
            args: job.args,
            env,
            unset: Vec::new(),
            stdin: job.stdin,
            timeout: job.timeout_ms.map(Duration::from_millis),
        },
        secrets,
    })
}

/// How the exec layer's outcome reads as the core's run end.
fn run_end(o: &Outcome) -> RunEnd {
    RunEnd {
        exit: o.exit,
        lost: o.lost.clone(),
        start_error: o.start_error.clone(),
        timed_out: o.timed_out,
        oom_killed: o.oom_killed,
        outside_signal: o.outside_signal,
        engine_lost: o.engine_lost,
        truncated: o.stdout_truncated || o.stderr_truncated,
    }
}

/// `text` with every secret replaced, for error messages.
pub(crate) fn redact_text(text: &str, secrets: &[String]) -> String {
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(|s| s.as_bytes())
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return text.to_string();
    }
    let out = warmpool_core::redact::redact_all(text.as_bytes(), &secrets);
    String::from_utf8_lossy(&out).into_owned()
}
