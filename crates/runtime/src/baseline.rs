//! The baselines warmpool is measured against, run through the Engine API as
//! the Docker CLI would: a one-shot `docker run --rm --init` and a `docker exec`
//! into a kept-alive container. Only `warmpool bench` uses these: each times one
//! run and owns no policy; the binary keeps only the argument handling.

use crate::{DockerRuntime, RuntimeError};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a baseline run may take to say anything before it counts as silent.
const FIRST_OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// What one baseline run took, from its first request to the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Until the first chunk of output; `None` if there was none.
    pub first_output: Option<Duration>,
    /// Until the exit was known.
    pub exit: Duration,
    /// The exit code the engine reported, if it did.
    pub exit_code: Option<i64>,
}

/// A `docker run --rm --init` of an image's command, as the bench runs it.
#[derive(Debug, Clone, Default)]
pub struct OneShot {
    /// The container's name; unique per run.
    pub name: String,
    pub image: String,
    /// The whole command (the image's entrypoint is replaced by it).
    pub argv: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub network: Option<String>,
    pub labels: HashMap<String, String>,
}

/// Run `spec` once, as `docker run --rm --init` does: create, attach, start, read,
/// wait for the exit (timed), then remove the container (untimed, as `--rm` does
/// after the exit is known). The container is removed on every path.
pub async fn docker_run(rt: &DockerRuntime, spec: &OneShot) -> Result<Timing, RuntimeError> {
    let docker = rt.client();
    let t0 = Instant::now();
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&spec.name)
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(spec.image.clone()),
                entrypoint: Some(vec![]),
                cmd: Some(spec.argv.clone()),
                env: Some(spec.env.clone()),
                user: spec.user.clone(),
                working_dir: spec.workdir.clone(),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                labels: Some(spec.labels.clone()),
                host_config: Some(HostConfig {
                    init: Some(true),
                    network_mode: spec.network.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| rt.err("docker run: create", e))?;
    let timed = async {
        let attached = docker
            .attach_container(
                &created.id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| rt.err("docker run: attach", e))?;
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| rt.err("docker run: start", e))?;
        let mut output = attached.output;
        let first = match tokio::time::timeout(FIRST_OUTPUT_TIMEOUT, output.next()).await {
            Ok(Some(Ok(_))) => Some(t0.elapsed()),
            _ => None,
        };
        let mut wait = docker.wait_container(
            &created.id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        let exit_code = match wait.next().await {
            Some(Ok(r)) => Some(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            _ => None,
        };
        Ok(Timing {
            first_output: first,
            exit: t0.elapsed(),
            exit_code,
        })
    }
    .await;
    let removed = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .map_err(|e| rt.err("docker run: remove", e));
    let timing = timed?;
    removed?;
    Ok(timing)
}

/// Run `argv` once in the running container `container`, as `docker exec` does:
/// create the exec, start it attached, read its output to the end, ask its exit.
pub async fn docker_exec(
    rt: &DockerRuntime,
    container: &str,
    argv: &[String],
    env: &[String],
) -> Result<Timing, RuntimeError> {
    let docker = rt.client();
    let t0 = Instant::now();
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(argv.to_vec()),
                env: Some(env.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| rt.err("docker exec: create", e))?;
    let mut first = None;
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None)
        .await
        .map_err(|e| rt.err("docker exec: start", e))?
    {
        while let Some(item) = output.next().await {
            if item.is_ok() && first.is_none() {
                first = Some(t0.elapsed());
            }
        }
    }
    let inspected = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| rt.err("docker exec: inspect", e))?;
    Ok(Timing {
        first_output: first,
        exit: t0.elapsed(),
        exit_code: inspected.exit_code,
    })
}
