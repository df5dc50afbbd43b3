//! Events between nodes: `NOTIFY` on one channel, sent by the transaction that
//! made the change (so only on its commit), and one listener connection per
//! store that turns notifications into [`StoreEvent`]s on a broadcast channel.
//! The listener reconnects with back-off and sends `Resync` after each
//! (re)connect: events sent while it was away are lost.

use std::time::Duration;

use futures_util::stream::poll_fn;
use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::pool::{describe, Failure};
use crate::StoreEvent;

/// The channel every node listens on.
pub(super) const CHANNEL: &str = "warmpool_events";

/// Receivers lagging by more than this many events get `Lagged` (then re-check).
pub(super) const CAPACITY: usize = 1024;

/// The longest wait between two reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An event as a notification payload: small text, tab-separated.
pub(super) fn payload(event: &StoreEvent) -> String {
    match event {
        StoreEvent::Queued { profile } => format!("q\t{profile}"),
        StoreEvent::CancelRequested { id, node } => format!("c\t{node}\t{id}"),
        StoreEvent::Ended { id } => format!("e\t{id}"),
        StoreEvent::Resync => "r".to_owned(),
    }
}

/// The event in a payload; `None` for one this build does not know.
pub(super) fn parse(payload: &str) -> Option<StoreEvent> {
    let mut parts = payload.splitn(3, '\t');
    match (parts.next()?, parts.next(), parts.next()) {
        ("q", Some(profile), None) => Some(StoreEvent::Queued {
            profile: profile.to_owned(),
        }),
        ("c", Some(node), Some(id)) => Some(StoreEvent::CancelRequested {
            id: id.to_owned(),
            node: node.to_owned(),
        }),
        ("e", Some(id), None) => Some(StoreEvent::Ended { id: id.to_owned() }),
        ("r", None, None) => Some(StoreEvent::Resync),
        _ => None,
    }
}

/// Queues `event` for the commit of the transaction on `client`.
pub(super) async fn notify(client: &Client, event: &StoreEvent) -> Result<(), Failure> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload(event)])
        .await?;
    Ok(())
}

/// The listener: runs until aborted (the store's drop). `listening` is true
/// while it listens.
pub(super) async fn listen(
    config: Config,
    events: broadcast::Sender<StoreEvent>,
    listening: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = listen_once(&config, &events, &listening).await;
        listening.send_replace(false);
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => tracing::warn!(
                error = %describe(&e),
                "the job store's event listener lost PostgreSQL; reconnecting"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: LISTEN, `Resync`, then notifications until it ends.
/// `Ok` if it ended after having listened.
async fn listen_once(
    config: &Config,
    events: &broadcast::Sender<StoreEvent>,
    listening: &watch::Sender<bool>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = poll_fn(move |cx| connection.poll_message(cx));
    // The connection is driven by polling `messages`: drive it while LISTEN runs.
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    loop {
        tokio::select! {
            done = &mut listen => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(message)) => forward(message, events),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    let _ = events.send(StoreEvent::Resync);
    listening.send_replace(true);
    while let Some(message) = messages.next().await {
        forward(message?, events);
    }
    Ok(())
}

fn forward(message: AsyncMessage, events: &broadcast::Sender<StoreEvent>) {
    if let AsyncMessage::Notification(n) = message {
        if n.channel() == CHANNEL {
            match parse(n.payload()) {
                // No receiver is not an error: nobody waits on anything.
                Some(event) => drop(events.send(event)),
                None => tracing::debug!(payload = n.payload(), "unknown store event"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let events = [
            StoreEvent::Queued {
                profile: "py".into(),
            },
            StoreEvent::CancelRequested {
                id: "j1".into(),
                node: "node-a".into(),
            },
            StoreEvent::Ended { id: "j2".into() },
            StoreEvent::Resync,
        ];
        for event in events {
            assert_eq!(parse(&payload(&event)), Some(event));
        }
        assert_eq!(parse("x\ty"), None);
        assert_eq!(parse("q"), None);
        assert_eq!(parse(""), None);
    }
}
