//! The one way to read a job's output as it grows, for the raw, chunked and SSE
//! answers alike: pieces in order from byte 0 (or any offset), read from the
//! job's live tail or, for anything older, from the store, so a follower that
//! falls behind catches up instead of losing bytes; the end comes only after
//! the job's end is stored. It reads; it never changes a job.

use crate::live::{LiveJob, Progress, Read};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warmpool_store::{JobRecord, JobStore, StoreError, StreamName};

/// Bytes read at once.
const READ_MAX: usize = 64 * 1024;
/// How often a job this node does not run is looked at again.
const POLL_OTHER: Duration = Duration::from_millis(250);

/// What a follower reads next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Output {
        stream: StreamName,
        offset: u64,
        data: Bytes,
    },
    /// The job is over (its end stored) and every byte was read.
    End(Box<JobRecord>),
}

/// Follows one job's streams.
pub struct Follower {
    store: Arc<dyn JobStore>,
    id: String,
    live: Option<(Arc<LiveJob>, watch::Receiver<Progress>)>,
    /// Streams wanted (stdout, stderr).
    wanted: [bool; 2],
    offsets: [u64; 2],
    /// Stop at the lengths seen at the start instead of waiting for more.
    snapshot: Option<[u64; 2]>,
    stopping: CancellationToken,
    done: bool,
}

impl Follower {
    pub(crate) fn new(
        store: Arc<dyn JobStore>,
        id: String,
        live: Option<Arc<LiveJob>>,
        wanted: [bool; 2],
        stopping: CancellationToken,
    ) -> Follower {
        Follower {
            store,
            id,
            live: live.map(|l| {
                let rx = l.subscribe();
                (l, rx)
            }),
            wanted,
            offsets: [0, 0],
            snapshot: None,
            stopping,
            done: false,
        }
    }

    /// Read only what is there now, then end (no waiting for more).
    pub(crate) fn once(mut self, lengths: [u64; 2]) -> Follower {
        self.snapshot = Some(lengths);
        self
    }

    /// The next piece; `None` after the end (or when the service stops).
    pub async fn next(&mut self) -> Result<Option<Piece>, StoreError> {
        loop {
            if self.done {
                return Ok(None);
            }
            // What is there to read, and is the job over?
            let (lengths, ended) = match (&self.snapshot, &self.live) {
                (Some(l), _) => (*l, true),
                (None, Some((_, rx))) => {
                    let p = *rx.borrow();
                    (p.len, p.ended.is_some())
                }
                (None, None) => match self.store.get(&self.id).await? {
                    Some(r) => (r.output_len, r.state.is_final()),
                    None => {
                        self.done = true;
                        return Ok(None);
                    }
                },
            };
            for stream in StreamName::BOTH {
                let i = stream.index();
                if !self.wanted[i] || self.offsets[i] >= lengths[i] {
                    continue;
                }
                let max = READ_MAX.min((lengths[i] - self.offsets[i]) as usize);
                let data = self.read(stream, self.offsets[i], max).await?;
                if data.is_empty() {
                    continue;
                }
                let offset = self.offsets[i];
                self.offsets[i] += data.len() as u64;
                return Ok(Some(Piece::Output {
                    stream,
                    offset,
                    data: Bytes::from(data),
                }));
            }
            if ended {
                if self.snapshot.is_some() {
                    self.done = true;
                    return Ok(None);
                }
                // The stored record has the final lengths: anything not read yet
                // is read (from the store) before the end.
                let Some(record) = self.store.get(&self.id).await? else {
                    self.done = true;
                    return Ok(None);
                };
                let behind = StreamName::BOTH.iter().any(|s| {
                    self.wanted[s.index()] && self.offsets[s.index()] < record.output_len[s.index()]
                });
                if behind {
                    self.live = None;
                    continue;
                }
                if record.state.is_final() {
                    self.done = true;
                    return Ok(Some(Piece::End(Box::new(record))));
                }
                if self.live.is_some() {
                    // The run is over but its end could not be stored (the run
                    // logged why): no `end` to give, and nothing will change
                    // any more (this follower holds the job's progress itself,
                    // so waiting on it would never return).
                    self.done = true;
                    return Ok(None);
                }
            }
            self.wait().await;
            if self.stopping.is_cancelled() {
                self.done = true;
                return Ok(None);
            }
        }
    }

    async fn read(
        &self,
        stream: StreamName,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some((live, _)) = &self.live {
            if let Read::Here(bytes) = live.read(stream, offset, max) {
                return Ok(bytes);
            }
        }
        Ok(self
            .store
            .read_output(&self.id, stream, offset, max)
            .await?
            .unwrap_or_default())
    }

    /// Until something changes: the job's progress, or (for a job run elsewhere)
    /// a while.
    async fn wait(&mut self) {
        match &mut self.live {
            Some((_, rx)) => {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The job's run let go of it: the store has the rest.
                            self.live = None;
                        }
                    }
                    _ = self.stopping.cancelled() => {}
                }
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(POLL_OTHER) => {}
                    _ = self.stopping.cancelled() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warmpool_store::{JobState, NewJob, SqliteStore, SystemClock};

    #[tokio::test]
    async fn a_run_whose_end_could_not_be_stored_does_not_hang_its_follower() {
        let dir = std::env::temp_dir().join(format!(
            "warmpool-follow-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let store: Arc<dyn JobStore> =
            Arc::new(SqliteStore::open(&dir, Arc::new(SystemClock)).expect("store"));
        let id = store
            .insert_started(&NewJob::default(), "node", true)
            .await
            .expect("insert");
        let live = Arc::new(LiveJob::new());
        live.append(StreamName::Stdout, b"out");
        // The run ended, but storing its end failed: the store says running.
        live.end(JobState::Succeeded, None);
        let mut f = Follower::new(
            store.clone(),
            id,
            Some(live),
            [true, true],
            CancellationToken::new(),
        );
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let mut pieces = Vec::new();
            while let Some(p) = f.next().await.expect("next") {
                pieces.push(p);
            }
            pieces
        })
        .await
        .expect("the follower hung");
        assert!(matches!(&read[..], [Piece::Output { data, .. }] if data.as_ref() == b"out"));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
