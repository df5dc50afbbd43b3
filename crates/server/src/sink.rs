//! Where a service job's output goes: redacted over each whole stream (a secret
//! split across writes, chunks or the output cap never shows, nor a prefix of
//! it), then into the job's live tail for followers and, in order, into the
//! store by a pump task of its own, so the job never waits on a disk commit
//! unless the store falls far behind. Knows nothing of HTTP or of job states.

use crate::live::LiveJob;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use warmpool_core::redact::Redactor;
use warmpool_exec::{OutputSink, StreamKind};
use warmpool_store::{JobStore, StreamName};

/// Chunks on their way to the store; when full, the job's output waits.
const PUMP_DEPTH: usize = 64;

fn name(kind: StreamKind) -> StreamName {
    match kind {
        StreamKind::Stdout => StreamName::Stdout,
        StreamKind::Stderr => StreamName::Stderr,
    }
}

struct Piece {
    stream: StreamName,
    offset: u64,
    data: Bytes,
}

/// The sink of one job's run.
pub struct JobSink {
    live: Arc<LiveJob>,
    redactors: Option<[Redactor; 2]>,
    /// Bytes emitted per stream (after redaction).
    offsets: [u64; 2],
    pump: mpsc::Sender<Piece>,
    failed: Arc<AtomicBool>,
}

/// The pump's end: awaited before the job's end is stored.
pub struct Pump {
    task: tokio::task::JoinHandle<()>,
    failed: Arc<AtomicBool>,
}

impl Pump {
    /// Wait until every chunk is stored (or failed); `false` if any failed.
    pub async fn drained(self) -> bool {
        let _ = self.task.await;
        !self.failed.load(Ordering::SeqCst)
    }
}

impl JobSink {
    /// A sink for job `id` whose output must never show any of `secrets`.
    pub fn new(
        store: Arc<dyn JobStore>,
        id: String,
        live: Arc<LiveJob>,
        secrets: &[String],
    ) -> (JobSink, Pump) {
        let (tx, rx) = mpsc::channel(PUMP_DEPTH);
        let failed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(pump(store, id, live.clone(), rx, failed.clone()));
        let secrets: Vec<&[u8]> = secrets
            .iter()
            .map(|s| s.as_bytes())
            .filter(|s| !s.is_empty())
            .collect();
        let redactors =
            (!secrets.is_empty()).then(|| [Redactor::new(&secrets), Redactor::new(&secrets)]);
        (
            JobSink {
                live,
                redactors,
                offsets: [0, 0],
                pump: tx,
                failed: failed.clone(),
            },
            Pump { task, failed },
        )
    }

    async fn emit(&mut self, stream: StreamName, data: Vec<u8>) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let i = stream.index();
        let offset = self.offsets[i];
        self.offsets[i] += data.len() as u64;
        self.live.append(stream, &data);
        self.pump
            .send(Piece {
                stream,
                offset,
                data: Bytes::from(data),
            })
            .await
            .map_err(|_| std::io::Error::other("the output pump stopped"))
    }

    /// The end of both streams: what the redactors still hold goes out (a held
    /// secret prefix of 4+ bytes as `[redacted]`). Dropping the sink after this
    /// lets the pump finish.
    pub async fn finish(mut self) {
        for stream in StreamName::BOTH {
            let mut out = Vec::new();
            if let Some(r) = &mut self.redactors {
                r[stream.index()].finish(&mut out);
            }
            if self.emit(stream, out).await.is_err() {
                self.failed.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl OutputSink for JobSink {
    async fn write(&mut self, kind: StreamKind, data: &[u8]) -> std::io::Result<()> {
        let stream = name(kind);
        let out = match &mut self.redactors {
            Some(r) => {
                let mut out = Vec::with_capacity(data.len());
                r[stream.index()].push(data, &mut out);
                out
            }
            None => data.to_vec(),
        };
        self.emit(stream, out).await
    }

    async fn cut(&mut self, kind: StreamKind, limit: u64) -> std::io::Result<()> {
        let stream = name(kind);
        let mut out = Vec::new();
        if let Some(r) = &mut self.redactors {
            // The stream ends here: a secret cut by the cap shows no prefix.
            r[stream.index()].finish(&mut out);
        }
        out.extend_from_slice(warmpool_exec::cut_marker(kind, limit).as_bytes());
        self.emit(stream, out).await
    }
}

/// Stores the chunks in order, joining those that wait side by side, and tells
/// the live tail what is stored.
async fn pump(
    store: Arc<dyn JobStore>,
    id: String,
    live: Arc<LiveJob>,
    mut rx: mpsc::Receiver<Piece>,
    failed: Arc<AtomicBool>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < PUMP_DEPTH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        for (stream, offset, data) in coalesce(batch) {
            let end = offset + data.len() as u64;
            match store.append_output(&id, stream, offset, &data).await {
                Ok(()) => live.stored(stream, end),
                Err(e) => {
                    // Kept in memory for live followers; the job's end says so.
                    if !failed.swap(true, Ordering::SeqCst) {
                        tracing::error!(job = %id, error = %e, "storing a job's output failed");
                    }
                }
            }
        }
    }
}

/// Adjacent pieces of one stream become one append.
fn coalesce(batch: Vec<Piece>) -> Vec<(StreamName, u64, Vec<u8>)> {
    let mut out: Vec<(StreamName, u64, Vec<u8>)> = Vec::new();
    for p in batch {
        match out.last_mut() {
            Some((s, off, data)) if *s == p.stream && *off + data.len() as u64 == p.offset => {
                data.extend_from_slice(&p.data)
            }
            _ => out.push((p.stream, p.offset, p.data.to_vec())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(stream: StreamName, offset: u64, data: &[u8]) -> Piece {
        Piece {
            stream,
            offset,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn adjacent_pieces_of_a_stream_are_joined() {
        let out = coalesce(vec![
            piece(StreamName::Stdout, 0, b"ab"),
            piece(StreamName::Stdout, 2, b"cd"),
            piece(StreamName::Stderr, 0, b"x"),
            piece(StreamName::Stdout, 4, b"e"),
        ]);
        assert_eq!(
            out,
            vec![
                (StreamName::Stdout, 0, b"abcd".to_vec()),
                (StreamName::Stderr, 0, b"x".to_vec()),
                (StreamName::Stdout, 4, b"e".to_vec()),
            ]
        );
    }
}
