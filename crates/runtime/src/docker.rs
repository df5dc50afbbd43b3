//! The Docker Engine API implementation of [`Runtime`], through bollard.
//!
//! The gate reaches containers through a named volume (`warmpool-gate-<digest>`),
//! filled once per engine by an archive upload into a short-lived helper container
//! and mounted read-only at `/.warmpool` in every container. Unlike an upload into
//! each container, this works for read-only root filesystems and costs nothing per
//! container; like it, it works against a remote engine.
//!
//! Containers log to the `none` driver: warmpool reads the output itself through
//! the attach stream, so the engine keeps no second copy of it (and no copy of
//! anything a job prints about its secrets).

mod translate;

use crate::{
    Attachment, ContainerInfo, ContainerSpec, ContainerState, EngineEvent, EngineInfo, EventStream,
    ImageConfig, Marker, Output, Runtime, RuntimeError, Signal,
};
use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, VolumeCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ContainerArchiveInfoOptionsBuilder,
    CreateContainerOptionsBuilder, EventsOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use warmpool_core::labels::{self, unique_suffix};
use warmpool_gate::{GATE_BINARY, GATE_DIGEST, GATE_DIR, GATE_PATH};

/// Engines (by endpoint) whose gate volume this process has filled.
static FILLED_GATE_VOLUMES: std::sync::LazyLock<tokio::sync::Mutex<HashSet<String>>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(HashSet::new()));

/// A failure to connect at all (no socket, refused, no permission), as opposed to
/// an engine that answered with an error.
fn is_connect_error(e: &BollardError) -> bool {
    if matches!(e, BollardError::SocketNotFoundError(_)) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | NotFound | PermissionDenied | AddrNotAvailable
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Docker through its Engine API.
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
}

impl DockerRuntime {
    /// Connect to `host` (`unix://...`, `tcp://...`), or else DOCKER_HOST, or else the
    /// local socket. Nothing is sent until the first call.
    pub fn connect(host: Option<&str>) -> Result<DockerRuntime, RuntimeError> {
        let endpoint = host
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        // bollard's defaults: a pinned API version is dropped from paths by bollard
        // 0.21 anyway (#736), so the engine answers in its own version.
        let docker =
            Docker::connect_with_host(&endpoint).map_err(|e| RuntimeError::Unreachable {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?;
        Ok(DockerRuntime { docker, endpoint })
    }

    /// The bollard client, for the baselines measured beside warmpool
    /// (`crate::baseline`); never handed out of this crate.
    pub(crate) fn client(&self) -> &Docker {
        &self.docker
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn err(&self, action: &str, e: BollardError) -> RuntimeError {
        if is_connect_error(&e) {
            return RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            };
        }
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => RuntimeError::NotFound {
                action: action.to_string(),
                message,
            },
            BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine {
                action: action.to_string(),
                message,
            },
            other => RuntimeError::Engine {
                action: action.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// The gate volume for this build of the gate, filled once per engine and
    /// process. Fills are serialized process-wide: a fill rewrites the gate file,
    /// which must not happen under a container that is starting it.
    async fn gate_volume(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let name = format!("warmpool-gate-{GATE_DIGEST}");
        let mut filled = FILLED_GATE_VOLUMES.lock().await;
        if !filled.contains(&self.endpoint) {
            self.fill_gate_volume(spec, &name).await?;
            filled.insert(self.endpoint.clone());
        }
        Ok(name)
    }

    /// Forget that the gate volume is filled (it was found empty or gone), so the
    /// next container creation fills it again.
    async fn forget_gate_volume(&self) {
        FILLED_GATE_VOLUMES.lock().await.remove(&self.endpoint);
    }

    async fn fill_gate_volume(&self, spec: &ContainerSpec, name: &str) -> Result<(), RuntimeError> {
        let volume_labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::GATE.to_string(), GATE_DIGEST.to_string()),
        ]);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(volume_labels),
                ..Default::default()
            })
            .await
            .map_err(|e| self.err("create the gate volume", e))?;

        // A helper that is never started: it only gives the archive API a way in. It
        // carries the labels of the containers it prepares, so it is found as theirs.
        let mut helper_labels = spec.labels.clone();
        helper_labels.insert(labels::ROLE.to_string(), "gate-fill".to_string());
        let helper_name = format!("warmpool-gate-fill-{}", unique_suffix());
        let helper = self
            .docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&helper_name)
                        .build(),
                ),
                ContainerCreateBody {
                    image: Some(spec.image.clone()),
                    entrypoint: Some(vec![GATE_PATH.to_string()]),
                    labels: Some(helper_labels),
                    network_disabled: Some(true),
                    host_config: Some(HostConfig {
                        mounts: Some(vec![Mount {
                            target: Some(GATE_DIR.to_string()),
                            source: Some(name.to_string()),
                            typ: Some(MountType::VOLUME),
                            read_only: Some(false),
                            ..Default::default()
                        }]),
                        log_config: Some(none_logging()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err("create the gate-fill helper container", e))?;
        let result = self.upload_gate_if_missing(&helper.id).await;
        let removed = self.remove(&helper.id).await;
        result?;
        removed?;
        Ok(())
    }

    async fn upload_gate_if_missing(&self, helper: &str) -> Result<(), RuntimeError> {
        let stat = self
            .docker
            .get_container_archive_info(
                helper,
                Some(
                    ContainerArchiveInfoOptionsBuilder::default()
                        .path(GATE_PATH)
                        .build(),
                ),
            )
            .await;
        if let Ok(stat) = stat {
            if stat.size == GATE_BINARY.len() as i64 {
                return Ok(());
            }
        }
        let mut tar = tar::Builder::new(Vec::with_capacity(GATE_BINARY.len() + 2048));
        let mut header = tar::Header::new_gnu();
        header.set_size(GATE_BINARY.len() as u64);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        tar.append_data(&mut header, "gate", GATE_BINARY)
            .and_then(|_| tar.finish())
            .map_err(|e| RuntimeError::Engine {
                action: "build the gate archive".into(),
                message: e.to_string(),
            })?;
        let archive = tar.into_inner().map_err(|e| RuntimeError::Engine {
            action: "build the gate archive".into(),
            message: e.to_string(),
        })?;
        self.docker
            .upload_to_container(
                helper,
                Some(
                    UploadToContainerOptionsBuilder::default()
                        .path(GATE_DIR)
                        .build(),
                ),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| self.err("upload the gate into its volume", e))
    }
}

/// The `since` of an events subscription made at `now`: a second earlier (room for
/// an engine clock a little behind ours), as Unix seconds with nanoseconds.
fn events_since(now: std::time::SystemTime) -> String {
    let at = now
        .checked_sub(std::time::Duration::from_secs(1))
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
}

fn none_logging() -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some("none".to_string()),
        config: None,
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        let v = self.docker.version().await.map_err(|e| {
            match self.err("ask the engine its version", e) {
                // Any failure of the first call means: not reachable as configured.
                RuntimeError::Engine { message, .. } => RuntimeError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message,
                },
                other => other,
            }
        })?;
        let api_version = v.api_version.unwrap_or_default();
        let (major, minor) = translate::OLDEST_TESTED_API;
        let too_old = (!translate::api_at_least(&api_version, translate::OLDEST_TESTED_API))
            .then(|| {
                format!("the engine's API is older than {major}.{minor}, the oldest warmpool is tested with; upgrade Docker")
            });
        Ok(EngineInfo {
            version: v.version.unwrap_or_default(),
            api_version,
            os: v.os.unwrap_or_default(),
            arch: translate::arch_from_docker(&v.arch.unwrap_or_default()),
            too_old,
        })
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageConfig>, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => {
                let c = img.config.unwrap_or_default();
                Ok(Some(ImageConfig {
                    id: img.id.unwrap_or_default(),
                    entrypoint: c.entrypoint.unwrap_or_default(),
                    cmd: c.cmd.unwrap_or_default(),
                    env: c.env.unwrap_or_default(),
                    workdir: c.working_dir.unwrap_or_default(),
                    user: c.user.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                }))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.err(&format!("inspect image {reference}"), e)),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let volume = self.gate_volume(spec).await?;
        let mut mounts = vec![Mount {
            target: Some(GATE_DIR.to_string()),
            source: Some(volume),
            typ: Some(MountType::VOLUME),
            read_only: Some(true),
            ..Default::default()
        }];
        // Never writable: what a job wrote there would outlive it (config.rs refuses rw).
        mounts.extend(spec.ro_binds.iter().map(|(source, target)| Mount {
            target: Some(target.clone()),
            source: Some(source.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }));
        let host_config = HostConfig {
            mounts: Some(mounts),
            log_config: Some(none_logging()),
            // The gate is init: it reaps and forwards signals, as `--init` would.
            init: Some(false),
            // As `docker run --rm`: once the gate exits the engine removes the
            // container, so nothing is left even if warmpool itself dies (the gate
            // exits when its stdin, warmpool's attach, goes away).
            auto_remove: Some(true),
            memory: spec.memory.map(|m| m as i64),
            nano_cpus: spec.nano_cpus,
            pids_limit: spec.pids_limit,
            network_mode: spec.network.clone(),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone()),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            runtime: spec.runtime.clone(),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(
                std::iter::once(GATE_PATH.to_string())
                    .chain(spec.gate_args.iter().cloned())
                    .collect(),
            ),
            env: Some(spec.env.clone()),
            user: spec.user.clone(),
            working_dir: spec.workdir.clone(),
            labels: Some(spec.labels.clone()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&spec.name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(|e| self.err(&format!("create a container of {}", spec.image), e))?;
        Ok(created.id)
    }

    async fn attach(&self, id: &str) -> Result<Attachment, RuntimeError> {
        let attached = self
            .docker
            .attach_container(
                id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .logs(false)
                        .build(),
                ),
            )
            .await
            .map_err(|e| self.err("attach to the container", e))?;
        let endpoint = self.endpoint.clone();
        let output = attached
            .output
            .filter_map(move |item| {
                let endpoint = endpoint.clone();
                async move {
                    match item {
                        Ok(bollard::container::LogOutput::StdOut { message }) => {
                            Some(Ok(Output::Stdout(message)))
                        }
                        Ok(bollard::container::LogOutput::StdErr { message }) => {
                            Some(Ok(Output::Stderr(message)))
                        }
                        // Without a TTY, everything is stdout or stderr.
                        Ok(bollard::container::LogOutput::Console { message }) => {
                            Some(Ok(Output::Stdout(message)))
                        }
                        Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                        Err(e) => Some(Err(RuntimeError::Unreachable {
                            endpoint,
                            message: format!("attach stream broke: {e}"),
                        })),
                    }
                }
            })
            .boxed();
        Ok(Attachment {
            output,
            input: attached.input,
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let result = self.docker.start_container(id, None).await;
        if let Err(BollardError::DockerResponseServerError { message, .. }) = &result {
            // The gate volume was emptied or removed behind our back: fill it again
            // for the next container.
            if message.contains(GATE_PATH) {
                self.forget_gate_volume().await;
            }
        }
        result.map_err(|e| self.err("start the container", e))
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.docker
            .kill_container(
                id,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal(translate::signal_to_docker(signal))
                        .build(),
                ),
            )
            .await
            .map_err(|e| self.err(&format!("send {signal} to the container"), e))
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let mut stream = self.docker.wait_container(
            id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.err("wait for the container", e)),
            None => Err(RuntimeError::Engine {
                action: "wait for the container".into(),
                message: "the engine closed the wait without a status".into(),
            }),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // Already being removed (auto-remove after the gate exited): wait until it
            // is gone, so "removed" means gone for the caller too.
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => {
                let mut gone = self.docker.wait_container(
                    id,
                    Some(
                        WaitContainerOptionsBuilder::default()
                            .condition("removed")
                            .build(),
                    ),
                );
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), gone.next()).await;
                Ok(())
            }
            Err(e) => Err(self.err("remove the container", e)),
        }
    }

    async fn mark(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<Marker, RuntimeError> {
        // Docker's volume create returns the existing volume (with its own labels)
        // when the name is taken: the compare-and-set a marker needs.
        let volume = self
            .docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(&format!("create the marker volume {name}"), e))?;
        Ok(Marker {
            labels: volume.labels,
            created: volume.created_at.unwrap_or_default(),
        })
    }

    async fn unmark(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.err(&format!("remove the marker volume {name}"), e)),
        }
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| self.err("list containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                image_id: c.image_id.unwrap_or_default(),
                state: c
                    .state
                    .map(|s| translate::container_state(s.as_ref()))
                    .unwrap_or(ContainerState::Unknown),
                labels: c.labels.unwrap_or_default(),
            })
            .collect())
    }

    async fn events(&self, labels: &[(&str, &str)]) -> Result<EventStream, RuntimeError> {
        // Two subscriptions: the engine ANDs filters of different keys, so one
        // filter set cannot ask for "our containers, or any image".
        let containers: HashMap<String, Vec<String>> = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ),
        ]);
        let images: HashMap<String, Vec<String>> =
            HashMap::from([("type".to_string(), vec!["image".to_string()])]);
        let endpoint = self.endpoint.clone();
        let convert = move |item: Result<bollard::models::EventMessage, BollardError>| {
            let endpoint = endpoint.clone();
            async move {
                match item {
                    Ok(msg) => {
                        let action = msg.action.unwrap_or_default();
                        let actor = msg.actor.unwrap_or_default();
                        let id = actor.id.unwrap_or_default();
                        let attributes = actor.attributes.unwrap_or_default();
                        match msg.typ {
                            Some(bollard::models::EventMessageTypeEnum::CONTAINER) => {
                                let action = translate::container_action(&action, &attributes);
                                Some(Ok(EngineEvent::Container { id, action }))
                            }
                            Some(bollard::models::EventMessageTypeEnum::IMAGE) => {
                                let name = attributes.get("name").cloned().unwrap_or(id);
                                let action = translate::image_action(&action);
                                Some(Ok(EngineEvent::Image { name, action }))
                            }
                            _ => None,
                        }
                    }
                    Err(e) => Some(Err(RuntimeError::Unreachable {
                        endpoint,
                        message: format!("the event stream broke: {e}"),
                    })),
                }
            }
        };
        // bollard sends the request on the stream's first poll, not here: ask for
        // the events since a moment before this call, so nothing that happens
        // between the call and that poll is lost (an event may come twice).
        let since = events_since(std::time::SystemTime::now());
        let a = self
            .docker
            .events(Some(
                EventsOptionsBuilder::default()
                    .since(&since)
                    .filters(&containers)
                    .build(),
            ))
            .filter_map(convert.clone());
        let b = self
            .docker
            .events(Some(
                EventsOptionsBuilder::default()
                    .since(&since)
                    .filters(&images)
                    .build(),
            ))
            .filter_map(convert);
        Ok(futures_util::stream::select(a, b).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_since_is_a_second_back_in_engine_format() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_001, 5);
        assert_eq!(events_since(now), "1700000000.000000005");
    }
}
