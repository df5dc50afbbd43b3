//! Events between nodes: what one store commits reaches the other's
//! `events()` over LISTEN/NOTIFY.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::Receiver;
use warmpool_store::conformance::{exited, job};
use warmpool_store::{JobStore, ManualClock, PgStore, StoreEvent};

use super::{connect, fresh_database};

/// The next event, waiting at most 10 s (`Resync` included).
pub async fn any_event(rx: &mut Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the event channel is open")
}

/// The next event other than `Resync` (sent when the listener connects).
pub async fn next_event(rx: &mut Receiver<StoreEvent>) -> StoreEvent {
    loop {
        match any_event(rx).await {
            StoreEvent::Resync => continue,
            event => return event,
        }
    }
}

/// Waits until the store's listener listens.
pub async fn until_listening(store: &PgStore) {
    assert!(
        store.until_listening(Duration::from_secs(10)).await,
        "the listener listens within 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_node_reach_the_other() {
    let url = fresh_database();
    let clock = Arc::new(ManualClock::new());
    let a = connect(&url, &clock).await;
    let b = connect(&url, &clock).await;
    let mut rx = b.events();
    let mut own = a.events();
    until_listening(&a).await;
    until_listening(&b).await;

    let queued = a.insert(&job("py")).await.expect("insert");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Queued {
            profile: "py".into()
        }
    );
    assert!(a.start(&queued, "node-a", true).await.expect("start"));
    a.request_cancel(&queued).await.expect("cancel");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::CancelRequested {
            id: queued.clone(),
            node: "node-a".into()
        }
    );
    a.finish(&queued, &exited(0)).await.expect("finish");
    assert_eq!(next_event(&mut rx).await, StoreEvent::Ended { id: queued });
    // A delivery's job is queued too; a cancelled queued job has ended.
    let delivered = a
        .insert_for_delivery("d-1", "{}", &job("bot"))
        .await
        .expect("insert")
        .expect("new");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Queued {
            profile: "bot".into()
        }
    );
    a.request_cancel(&delivered).await.expect("cancel");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Ended { id: delivered }
    );
    // Its own events too, through the same channel, in commit order.
    a.insert(&job("go")).await.expect("insert");
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut own).await;
        if event
            == (StoreEvent::Queued {
                profile: "go".into(),
            })
        {
            break;
        }
        seen.push(event);
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        seen[0],
        StoreEvent::Queued {
            profile: "py".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_for_what_did_not_happen() {
    let url = fresh_database();
    let clock = Arc::new(ManualClock::new());
    let a = connect(&url, &clock).await;
    let mut rx = a.events();
    until_listening(&a).await;
    let id = a.insert(&job("py")).await.expect("insert");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Queued {
            profile: "py".into()
        }
    );
    a.finish(&id, &exited(1)).await.expect("finish");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Ended { id: id.clone() }
    );
    // Ended already, unknown, a gap refused: no event.
    assert!(a.finish(&id, &exited(0)).await.expect("finish").is_none());
    assert!(a
        .finish("jnope", &exited(0))
        .await
        .expect("finish")
        .is_none());
    assert!(a
        .append_output(&id, warmpool_store::StreamName::Stdout, 5, b"gap")
        .await
        .is_err());
    let marker = a.insert(&job("marker")).await.expect("insert");
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::Queued {
            profile: "marker".into()
        },
        "the next event is the marker's ({marker})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stores_own_events_come_at_once_and_once() {
    let url = fresh_database();
    let clock = Arc::new(ManualClock::new());
    let a = connect(&url, &clock).await;
    let b = connect(&url, &clock).await;
    let mut rx = a.events();
    // Its own change is there when the call returns, not later.
    let id = a.insert(&job("py")).await.expect("insert");
    assert_eq!(
        rx.try_recv().ok(),
        Some(StoreEvent::Queued {
            profile: "py".into()
        })
    );
    a.finish(&id, &exited(0)).await.expect("finish");
    assert_eq!(rx.try_recv().ok(), Some(StoreEvent::Ended { id }));
    // And only once: the next event is the other store's, not an echo.
    b.insert(&job("marker")).await.expect("insert");
    assert_eq!(
        any_event(&mut rx).await,
        StoreEvent::Queued {
            profile: "marker".into()
        }
    );
}
