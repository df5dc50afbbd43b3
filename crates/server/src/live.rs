//! What this node holds in memory about a job it owns, from acceptance to its
//! stored end: the cancel token, each stream's recent output (everything not yet
//! stored, plus a short window behind it) and the job's progress. Followers read
//! here first and from the store for anything older; nothing is ever dropped.
//! It decides nothing about the job's life (that is `run` with the core's rules).

use crate::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warmpool_store::{JobRecord, JobState, StreamName};

/// Stored bytes kept in memory behind the newest, for followers a little behind.
const WINDOW: u64 = 64 * 1024;

/// A job's progress as followers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written so far, per stream (stdout, stderr).
    pub len: [u64; 2],
    /// The job's final state, once its end is stored.
    pub ended: Option<JobState>,
}

/// The bytes `[start, start + buf.len())` of one stream.
#[derive(Default)]
struct Tail {
    start: u64,
    buf: VecDeque<u8>,
}

/// Where a follower finds the bytes it asks for.
pub enum Read {
    /// In memory: these bytes (possibly empty: nothing new yet).
    Here(Vec<u8>),
    /// Older than what memory keeps: read them from the store (they are stored).
    Store,
}

pub struct LiveJob {
    /// Cancelled when a cancel of this job is stored; the job's run acts on it.
    pub cancel: CancellationToken,
    tails: [Mutex<Tail>; 2],
    progress: watch::Sender<Progress>,
    /// The job as its end was stored (what a waiter answers with).
    ended: Mutex<Option<JobRecord>>,
    /// Why this node killed the job itself (its lease was gone), if it did:
    /// its end is then `interrupted`, not a cancel nobody asked for.
    pub fenced: Mutex<Option<String>>,
}

impl Default for LiveJob {
    fn default() -> Self {
        LiveJob::new()
    }
}

impl LiveJob {
    pub fn new() -> LiveJob {
        LiveJob {
            cancel: CancellationToken::new(),
            tails: [Mutex::default(), Mutex::default()],
            progress: watch::Sender::new(Progress::default()),
            ended: Mutex::new(None),
            fenced: Mutex::new(None),
        }
    }

    /// New output of `stream` (already redacted), at the stream's end.
    pub fn append(&self, stream: StreamName, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        lock(&self.tails[stream.index()]).buf.extend(data);
        self.progress
            .send_modify(|p| p.len[stream.index()] += data.len() as u64);
    }

    /// Bytes of `stream` below `upto` are in the store: memory may let go of
    /// them, but for a short window.
    pub fn stored(&self, stream: StreamName, upto: u64) {
        let mut t = lock(&self.tails[stream.index()]);
        let end = t.start + t.buf.len() as u64;
        let keep_from = upto.min(end.saturating_sub(WINDOW));
        if keep_from > t.start {
            let n = (keep_from - t.start) as usize;
            t.buf.drain(..n);
            t.start = keep_from;
        }
    }

    /// Up to `max` bytes of `stream` from `offset`.
    pub fn read(&self, stream: StreamName, offset: u64, max: usize) -> Read {
        let t = lock(&self.tails[stream.index()]);
        if offset < t.start {
            return Read::Store;
        }
        let from = (offset - t.start) as usize;
        let (a, b) = t.buf.as_slices();
        let mut out = Vec::new();
        let mut skip = from;
        for part in [a, b] {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let take = (part.len() - skip).min(max - out.len());
            out.extend_from_slice(&part[skip..skip + take]);
            skip = 0;
            if out.len() == max {
                break;
            }
        }
        Read::Here(out)
    }

    /// The job's end is stored (as `record`, when the store answered with it):
    /// followers and waiters finish.
    pub fn end(&self, state: JobState, record: Option<JobRecord>) {
        *lock(&self.ended) = record;
        self.progress.send_modify(|p| p.ended = Some(state));
    }

    /// The job as its end was stored, and the first `max` bytes of each
    /// stream if memory still holds them; `None` otherwise (then the store
    /// has them).
    pub fn ended_view(&self, max: usize) -> Option<(JobRecord, [Vec<u8>; 2])> {
        let record = lock(&self.ended).clone()?;
        let mut output = [Vec::new(), Vec::new()];
        for stream in StreamName::BOTH {
            let len = usize::try_from(record.output_len[stream.index()])
                .ok()?
                .min(max);
            match self.read(stream, 0, len) {
                Read::Here(bytes) if bytes.len() == len => output[stream.index()] = bytes,
                _ => return None,
            }
        }
        Some((record, output))
    }

    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Bytes held in memory now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.tails.iter().map(|t| lock(t).buf.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(r: Read) -> Vec<u8> {
        match r {
            Read::Here(v) => v,
            Read::Store => panic!("expected bytes in memory"),
        }
    }

    #[test]
    fn appended_bytes_are_read_back_until_stored_and_past_the_window() {
        let live = LiveJob::new();
        live.append(StreamName::Stdout, b"hello ");
        live.append(StreamName::Stdout, b"world");
        live.append(StreamName::Stderr, b"e");
        assert_eq!(here(live.read(StreamName::Stdout, 0, 100)), b"hello world");
        assert_eq!(here(live.read(StreamName::Stdout, 6, 3)), b"wor");
        assert_eq!(here(live.read(StreamName::Stdout, 11, 3)), b"");
        assert_eq!(live.subscribe().borrow().len, [11, 1]);
        // Stored, but within the window: still here.
        live.stored(StreamName::Stdout, 11);
        assert_eq!(here(live.read(StreamName::Stdout, 0, 5)), b"hello");
        // A lot more, stored: the oldest go to the store.
        let big = vec![b'x'; 2 * WINDOW as usize];
        live.append(StreamName::Stdout, &big);
        live.stored(StreamName::Stdout, 11 + big.len() as u64);
        assert!(matches!(live.read(StreamName::Stdout, 0, 5), Read::Store));
        assert_eq!(live.held(), WINDOW as usize + 1);
        let end = 11 + big.len() as u64;
        assert_eq!(here(live.read(StreamName::Stdout, end - 2, 10)), b"xx");
    }

    #[test]
    fn unstored_bytes_are_never_let_go() {
        let live = LiveJob::new();
        let big = vec![b'y'; 3 * WINDOW as usize];
        live.append(StreamName::Stderr, &big);
        live.stored(StreamName::Stderr, 10);
        assert_eq!(here(live.read(StreamName::Stderr, 10, 4)), b"yyyy");
        assert!(matches!(live.read(StreamName::Stderr, 9, 4), Read::Store));
    }

    #[test]
    fn reads_across_the_ring_seam() {
        let live = LiveJob::new();
        live.append(StreamName::Stdout, &vec![b'a'; WINDOW as usize + 10]);
        live.stored(StreamName::Stdout, WINDOW as usize as u64 + 10);
        live.append(StreamName::Stdout, b"bcd");
        let start = 10u64;
        let got = here(live.read(StreamName::Stdout, start + WINDOW - 2, 10));
        assert_eq!(got, b"aabcd");
    }

    #[tokio::test]
    async fn followers_see_the_end() {
        let live = LiveJob::new();
        let mut rx = live.subscribe();
        live.end(JobState::Succeeded, None);
        rx.changed().await.expect("changed");
        assert_eq!(rx.borrow().ended, Some(JobState::Succeeded));
    }
}
