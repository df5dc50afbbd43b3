//! `warmpool logs ID`: a job's stored output, or (`--follow`) its output as it is
//! written until the job ends. Also owns following a stream to its end, which
//! `submit` shares; it never changes a job.

use super::client::{encode, Client, ServerArgs};
use anyhow::Context;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use warmpool_server::api::JobView;
use warmpool_store::JobState;

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The job's id (as `warmpool jobs` lists it).
    id: String,
    /// Keep printing the output as the job writes it, until the job ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Which stream: each goes to ours of the same name. `both` prints stdout then
    /// stderr, or both as they come with --follow.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    stream: Which,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Stdout,
    Stderr,
    Both,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<u8> {
    let client = Client::from_args(&args.server)?;
    let id = args.id.as_str();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let want_out = args.stream != Which::Stderr;
    let want_err = args.stream != Which::Stdout;
    if args.follow {
        let out = async {
            if want_out {
                follow(&client, id, "stdout", &mut stdout).await?;
            }
            anyhow::Ok(())
        };
        let err = async {
            if want_err {
                follow(&client, id, "stderr", &mut stderr).await?;
            }
            anyhow::Ok(())
        };
        tokio::try_join!(out, err)?;
    } else {
        if want_out {
            copy(&client, &output_path(id, "stdout", false), 0, &mut stdout).await?;
        }
        if want_err {
            copy(&client, &output_path(id, "stderr", false), 0, &mut stderr).await?;
        }
    }
    Ok(0)
}

/// `/v1/jobs/{id}`.
pub fn job_path(id: &str) -> String {
    format!("/v1/jobs/{}", encode(id))
}

/// `/v1/jobs/{id}/output?stream=..[&follow=true]`.
fn output_path(id: &str, stream: &str, follow: bool) -> String {
    format!(
        "/v1/jobs/{}/output?stream={stream}{}",
        encode(id),
        if follow { "&follow=true" } else { "" }
    )
}

/// Whether a job in this state is over. A state this client does not know is
/// taken as over, so a newer server cannot keep it following forever.
pub fn is_over(state: &str) -> bool {
    JobState::parse(state).is_none_or(JobState::is_final)
}

/// Copies one stream of a job to `out` as the job writes it, until the job is
/// over and the whole stream is copied; the job as it ended.
///
/// A follow request alone can come up short: the server ends the stream of a
/// follower that falls behind (a slow `out`), and a job not yet running has no
/// live stream to follow. So when a follow ends the job's state decides: still
/// on, follow again past what was copied; over, copy whatever the stored stream
/// holds past it (the stored output is the whole truth).
pub async fn follow<W: AsyncWrite + Unpin>(
    client: &Client,
    id: &str,
    stream: &str,
    out: &mut W,
) -> anyhow::Result<JobView> {
    let mut copied = 0;
    loop {
        let started = Instant::now();
        let before = copied;
        copied = copy(client, &output_path(id, stream, true), copied, out).await?;
        let job: JobView = client
            .get_json(&job_path(id))
            .await
            .with_context(|| format!("reading job {id}"))?;
        if is_over(&job.state) {
            copy(client, &output_path(id, stream, false), copied, out).await?;
            return Ok(job);
        }
        tracing::debug!(id, stream, state = %job.state, copied, "the follow ended early; following again");
        // Not running yet (queued): do not ask again in a tight loop.
        if copied == before && started.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Copies the body of `path` to `out` past its first `skip` bytes (already
/// copied); how far into the stream `out` now is.
async fn copy<W: AsyncWrite + Unpin>(
    client: &Client,
    path: &str,
    skip: u64,
    out: &mut W,
) -> anyhow::Result<u64> {
    let mut body = client.get_stream(path).await?;
    let mut at = 0u64;
    while let Some(chunk) = body.chunk().await? {
        let end = at + chunk.len() as u64;
        if end > skip {
            let from = usize::try_from(skip.saturating_sub(at)).unwrap_or(chunk.len());
            out.write_all(&chunk[from..])
                .await
                .context("writing the job's output")?;
            out.flush().await.context("writing the job's output")?;
        }
        at = end;
    }
    Ok(at.max(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_states_are_followed_and_others_are_over() {
        assert!(!is_over("queued"));
        assert!(!is_over("running"));
        for s in [
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "interrupted",
        ] {
            assert!(is_over(s), "{s}");
        }
        assert!(is_over("from_a_newer_server"));
    }

    #[test]
    fn paths_encode_the_id() {
        assert_eq!(
            output_path("j-1/x", "stderr", true),
            "/v1/jobs/j-1%2Fx/output?stream=stderr&follow=true"
        );
        assert_eq!(job_path("j 1"), "/v1/jobs/j%201");
    }
}
