//! `warmpool submit`: one job through a running `warmpool serve`, its output on
//! ours as it comes, its exit code as ours; Ctrl-C cancels it. The client-side
//! twin of `warmpool run`; it prints nothing of its own unless something fails.

use super::client::{encode, Client, ServerArgs};
use super::logs::{follow, is_over};
use anyhow::Context;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::signal::unix::{signal, SignalKind};
use warmpool_server::api::JobView;

/// `timeout`'s exit code, for a job stopped at its timeout with no status of its own.
pub const EXIT_TIMED_OUT: u8 = 124;

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The server's profile to run the job with.
    #[arg(long, short = 'p')]
    profile: String,
    /// Job env: KEY=VALUE, or KEY to send this environment's value (nothing is
    /// sent when KEY is not set here).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Send this process's stdin (read to its end first, UTF-8) to the job.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the profile's job_timeout ("30s", "2m").
    #[arg(long)]
    timeout: Option<String>,
    /// Arguments replacing the image's CMD.
    #[arg(last = true)]
    args: Vec<String>,
}

/// `POST /v1/jobs` as we send it.
#[derive(Serialize)]
struct SubmitBody {
    profile: String,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let client = Client::from_args(&args.server)?;
    // `-e KEY` unset here would remove KEY from the job's env under `warmpool
    // run`; the API has no removal, so it is simply not sent.
    let (env, _unset) = super::run::parse_env(&args.env)?;
    let stdin = if args.interactive {
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buf)
            .await
            .context("reading stdin for the job")?;
        Some(String::from_utf8(buf).map_err(|_| {
            anyhow::anyhow!("-i: stdin is not UTF-8 text, and the API takes only text")
        })?)
    } else {
        None
    };
    let body = SubmitBody {
        profile: args.profile,
        env: env.into_iter().collect(),
        args: args.args,
        stdin,
        timeout: args.timeout,
    };
    // Installed before the job exists, so a Ctrl-C during the submission is not
    // lost: it is seen (and the job cancelled) as soon as the job has an id.
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let created: Created = client
        .post_json("/v1/jobs", Some(&body))
        .await
        .context("submitting the job")?;
    let id = created.id;

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let relay = async {
        tokio::try_join!(
            follow(&client, &id, "stdout", &mut stdout),
            follow(&client, &id, "stderr", &mut stderr),
        )
    };
    tokio::pin!(relay);
    let stopped = tokio::select! {
        r = &mut relay => {
            let (ended, _) = r?;
            let (code, why) = exit_status(&ended);
            if let Some(why) = why {
                eprintln!("warmpool: {why}");
            }
            return Ok(code);
        }
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    // Stopped by us: cancel the job, and relay what it writes while it stops
    // (the server answers the cancel once the job has ended). A second Ctrl-C
    // leaves at once.
    tokio::select! {
        _ = async { tokio::join!(cancel(&client, &id), relay) } => {}
        _ = int.recv() => {}
    }
    Ok(stopped)
}

/// Ask the server to cancel the job; say so only if that fails.
async fn cancel(client: &Client, id: &str) {
    let path = format!("/v1/jobs/{}/cancel", encode(id));
    match client
        .post_json::<serde_json::Value>(&path, None::<&()>)
        .await
    {
        Ok(_) => {}
        // It ended on its own meanwhile.
        Err(e) if e.status() == Some(StatusCode::CONFLICT) => {}
        Err(e) => eprintln!("warmpool: cancelling job {id}: {e}"),
    }
}

/// Our exit code for a job that is over, as `docker run` would give it: the job's
/// own code, 128+N for death by signal N, [`EXIT_TIMED_OUT`] for a timeout with
/// neither; else 125 and why, to print.
pub fn exit_status(job: &JobView) -> (u8, Option<String>) {
    // Never silent about a timeout: 143 alone does not say who stopped the job.
    if job.state == "timed_out" {
        let code = match (job.exit_code, job.signal) {
            (Some(code), _) => code.clamp(0, 255) as u8,
            (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
            (None, None) => EXIT_TIMED_OUT,
        };
        let why = format!(
            "job {} ran past its timeout (the profile's job_timeout, or --timeout) and was stopped",
            job.id
        );
        return (code, Some(why));
    }
    if let Some(code) = job.exit_code {
        return (code.clamp(0, 255) as u8, None);
    }
    if let Some(sig) = job.signal {
        return ((128 + sig).clamp(0, 255) as u8, None);
    }
    match job.state.as_str() {
        "succeeded" => (0, None),
        state => {
            let why = match &job.error {
                Some(e) => format!("job {} {}: {e}", job.id, state_words(state)),
                None if !is_over(state) => format!("job {} is still {state}", job.id),
                None => format!(
                    "job {} {} without an exit status",
                    job.id,
                    state_words(state)
                ),
            };
            (crate::EXIT_WARMPOOL_FAILED, Some(why))
        }
    }
}

fn state_words(state: &str) -> String {
    match state {
        "failed" => "failed".into(),
        "cancelled" => "was cancelled".into(),
        "interrupted" => "was interrupted (warmpool serve stopped while it ran)".into(),
        other => format!("ended {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        state: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
        error: Option<&str>,
    ) -> JobView {
        JobView {
            id: "j-1".into(),
            profile: "p".into(),
            state: state.into(),
            exit_code,
            signal,
            warm: Some(true),
            node: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_cut: false,
            stderr_cut: false,
            output_url: "/v1/jobs/j-1/output".into(),
            truncated: false,
            error: error.map(str::to_string),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn exit_codes_are_the_jobs_as_docker_run_gives_them() {
        assert_eq!(
            exit_status(&job("succeeded", Some(0), None, None)),
            (0, None)
        );
        assert_eq!(exit_status(&job("failed", Some(7), None, None)), (7, None));
        assert_eq!(
            exit_status(&job("failed", None, Some(9), None)),
            (137, None)
        );
        let timed_out = Some(
            "job j-1 ran past its timeout (the profile's job_timeout, or --timeout) and was stopped"
                .to_string(),
        );
        assert_eq!(
            exit_status(&job("timed_out", None, Some(15), None)),
            (143, timed_out.clone())
        );
        assert_eq!(
            exit_status(&job("timed_out", Some(3), None, None)),
            (3, timed_out.clone())
        );
        assert_eq!(
            exit_status(&job("timed_out", None, None, None)),
            (124, timed_out)
        );
        assert_eq!(exit_status(&job("failed", Some(300), None, None)).0, 255);
    }

    #[test]
    fn a_job_without_an_exit_is_a_warmpool_failure_that_says_why() {
        let (code, why) = exit_status(&job("failed", None, None, Some("image gone")));
        assert_eq!(code, 125);
        assert_eq!(why.unwrap(), "job j-1 failed: image gone");
        let (code, why) = exit_status(&job("cancelled", None, None, None));
        assert_eq!(code, 125);
        assert_eq!(why.unwrap(), "job j-1 was cancelled without an exit status");
        let (_, why) = exit_status(&job("interrupted", None, None, Some("lost in a restart")));
        assert!(why.unwrap().contains("lost in a restart"));
    }
}
