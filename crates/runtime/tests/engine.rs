//! The Docker backend's translations against the real engine: a container's
//! listed states and its events (start, kill with its signal, die with its exit
//! code, destroy) arrive as warmpool's enums. Needs the engine and the test
//! images (`tests/images/build.sh`, built here when missing).

use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use warmpool_runtime::{
    ContainerAction, ContainerSpec, ContainerState, DockerRuntime, EngineEvent, Runtime, Signal,
};

use warmpool_testkit::labelled::{ensure_images, unique, Cleanup, BUSYBOX, TEST_LABEL};

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
