//! The Docker backend's translations against the real engine: a container's
//! listed states and its events (start, kill with its signal, die with its exit
//! code, destroy) arrive as warmpool's enums. Needs the engine and the test
//! images (`tests/images/build.sh`, built here when missing).

use futures_util::StreamExt;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;
use warmpool_runtime::{
    ContainerAction, ContainerSpec, ContainerState, DockerRuntime, EngineEvent, Runtime, Signal,
};

const BUSYBOX: &str = "warmpool-test/busybox:latest";
const TEST_LABEL: &str = "warmpool-test-run";

fn ensure_images() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/images/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run tests/images/build.sh");
    assert!(
        out.status.success(),
        "building the test images failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Removes every container carrying this test's label when dropped, so a failed
/// assertion leaves nothing behind.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={TEST_LABEL}={}", self.0);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

async fn state_of(rt: &DockerRuntime, run: &str, id: &str) -> Option<ContainerState> {
    let list = rt.list(&[(TEST_LABEL, run)]).await.expect("list");
    list.into_iter().find(|c| c.id == id).map(|c| c.state)
}

#[tokio::test]
async fn states_and_events_arrive_as_enums() {
    ensure_images();
    let run = unique("runtime-vocab");
    let _cleanup = Cleanup(run.clone());
    let rt = DockerRuntime::connect(None).expect("connect");
    let mut events = rt
        .events(&[(TEST_LABEL, run.as_str())])
        .await
        .expect("subscribe to events");

    let spec = ContainerSpec {
        name: unique("warmpool-runtime-vocab"),
        image: BUSYBOX.to_string(),
        labels: HashMap::from([(TEST_LABEL.to_string(), run.clone())]),
        network: Some("none".to_string()),
        ..ContainerSpec::default()
    };
    let id = rt.create(&spec).await.expect("create");
    assert_eq!(
        state_of(&rt, &run, &id).await,
        Some(ContainerState::Created)
    );
    // Nothing attaches: the gate waits on its open stdin, so it stays running
    // until it is killed.
    rt.start(&id).await.expect("start");
    assert_eq!(
        state_of(&rt, &run, &id).await,
        Some(ContainerState::Running)
    );
    rt.kill(&id, Signal::Kill).await.expect("kill");

    let mut seen = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            if let EngineEvent::Container { id: of, action } = event.expect("event") {
                if of == id {
                    seen.push(action);
                    if action == ContainerAction::Destroy {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(collected.is_ok(), "no destroy within 30 s; saw {seen:?}");
    for expected in [
        ContainerAction::Create,
        ContainerAction::Start,
        ContainerAction::Kill {
            signal: Some(Signal::Kill),
        },
        ContainerAction::Die {
            exit_code: Some(137),
        },
        ContainerAction::Destroy,
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
    }
    // Auto-removed once it died.
    assert_eq!(state_of(&rt, &run, &id).await, None);
}
