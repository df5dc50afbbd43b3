//! Events between nodes: `NOTIFY` on one channel, sent by the transaction that
//! made the change (so only on its commit), and one listener connection per
//! store that turns other stores' notifications into [`StoreEvent`]s on a
//! broadcast channel. A store's own events go to that channel when their
//! commit returns (at once, as the embedded backend does).
//! The listener reconnects with back-off and sends `Resync` after each
//! (re)connect: events sent while it was away are lost.

use std::ops::Deref;
use std::sync::{Mutex, PoisonError};
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

/// A transaction's connection, with the events it sends: they go to other
/// stores by `NOTIFY` at its commit, and to this store's receivers once the
/// commit returned (the listener skips this store's own notifications, by the
/// sender token that starts each payload).
pub(super) struct Tx<'a> {
    client: &'a Client,
    token: &'a str,
    sent: Mutex<Vec<StoreEvent>>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(client: &'a Client, token: &'a str) -> Tx<'a> {
        Tx {
            client,
            token,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// The events sent in this transaction, in order.
    pub(super) fn take_sent(&self) -> Vec<StoreEvent> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Deref for Tx<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

/// A store's token: 16 hex digits, new at every connect.
pub(super) fn new_token() -> String {
    let id = crate::ids::new_id(0);
    // The random part of a job id, twice (two draws).
    let again = crate::ids::new_id(0);
    format!("{}{}", &id[14..], &again[14..])
}

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

/// Sends `event` at the commit of the transaction on `tx`.
pub(super) async fn notify(tx: &Tx<'_>, event: &StoreEvent) -> Result<(), Failure> {
    let text = format!("{}\t{}", tx.token, payload(event));
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &text])
        .await?;
    tx.sent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(event.clone());
    Ok(())
}

/// The listener: runs until aborted (the store's drop). `listening` is true
/// while it listens.
pub(super) async fn listen(
    config: Config,
    token: String,
    events: broadcast::Sender<StoreEvent>,
    listening: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = listen_once(&config, &token, &events, &listening).await;
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
    token: &str,
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
                Some(Ok(message)) => forward(message, token, events),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    let _ = events.send(StoreEvent::Resync);
    listening.send_replace(true);
    while let Some(message) = messages.next().await {
        forward(message?, token, events);
    }
    Ok(())
}

fn forward(message: AsyncMessage, token: &str, events: &broadcast::Sender<StoreEvent>) {
    if let AsyncMessage::Notification(n) = message {
        if n.channel() == CHANNEL {
            let Some((sender, payload)) = n.payload().split_once('\t') else {
                return;
            };
            if sender == token {
                return; // sent to this store's receivers at its commit
            }
            match parse(payload) {
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
