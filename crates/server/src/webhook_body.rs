//! A webhook body read as it arrives, cheaply for unauthenticated bytes: each
//! piece is hashed into the signature check at once; at most [`IN_MEMORY`]
//! bytes of it are kept in memory, the rest goes to a temporary file, and
//! nothing is parsed (or read back) before the signature holds. Bodies read at
//! once are bounded ([`Bodies`]) and each must arrive within [`BODY_TIMEOUT`].
//! So an attacker's large unsigned (or wrongly signed) posts cost a digest and
//! some disk for a moment, not memory, and signed deliveries still get a place.

use axum::body::Body;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use warmpool_github::signature::Verifier;

/// Bytes of one body kept in memory; the rest waits in a temporary file until
/// the signature is known.
pub const IN_MEMORY: usize = 256 * 1024;
/// Bodies read at once; a delivery beyond this waits for a place (its sender is
/// held by TCP's own flow control meanwhile).
pub const AT_ONCE: usize = 64;
/// A body must arrive within this: a slow sender gives its place back.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The places for bodies being read.
pub struct Bodies {
    places: Semaphore,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies {
            places: Semaphore::new(AT_ONCE),
        }
    }
}

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {0} bytes (GitHub sends at most 25 MB)")]
    TooLarge(u64),
    #[error("the body did not arrive within {0:?}")]
    TooSlow(Duration),
    #[error("reading the body failed: {0}")]
    Read(String),
    #[error("keeping the body until its signature is checked failed: {0}")]
    Spool(String),
}

/// A body read whole, hashed into its verifier; its bytes are read back only
/// once the caller has checked the signature.
pub struct Spooled {
    head: Vec<u8>,
    file: Option<SpoolFile>,
}

/// The temporary file holding the rest of a body; removed when dropped.
struct SpoolFile {
    path: PathBuf,
    file: tokio::fs::File,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spooled {
    /// The whole body (call only after the signature held).
    pub async fn into_bytes(self) -> Result<Vec<u8>, BodyError> {
        let Spooled { mut head, file } = self;
        if let Some(spool) = file {
            let rest = tokio::fs::read(&spool.path)
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
            head.extend_from_slice(&rest);
        }
        Ok(head)
    }
}

impl Bodies {
    /// Read `body` (at most `max` bytes), hashing every piece into `verifier`.
    pub async fn read(
        &self,
        body: Body,
        verifier: &mut Verifier,
        max: u64,
    ) -> Result<Spooled, BodyError> {
        let _place = self
            .places
            .acquire()
            .await
            .map_err(|e| BodyError::Read(e.to_string()))?;
        match tokio::time::timeout(BODY_TIMEOUT, read(body, verifier, max)).await {
            Ok(r) => r,
            Err(_) => Err(BodyError::TooSlow(BODY_TIMEOUT)),
        }
    }
}

async fn read(body: Body, verifier: &mut Verifier, max: u64) -> Result<Spooled, BodyError> {
    let mut stream = body.into_data_stream();
    let mut spooled = Spooled {
        head: Vec::new(),
        file: None,
    };
    let mut total: u64 = 0;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| BodyError::Read(e.to_string()))?;
        total += piece.len() as u64;
        if total > max {
            return Err(BodyError::TooLarge(max));
        }
        verifier.update(&piece);
        let room = IN_MEMORY.saturating_sub(spooled.head.len());
        let (keep, rest) = piece.split_at(room.min(piece.len()));
        spooled.head.extend_from_slice(keep);
        if rest.is_empty() {
            continue;
        }
        if spooled.file.is_none() {
            spooled.file = Some(spool_file().await?);
        }
        if let Some(spool) = spooled.file.as_mut() {
            spool
                .file
                .write_all(rest)
                .await
                .map_err(|e| BodyError::Spool(e.to_string()))?;
        }
    }
    if let Some(spool) = spooled.file.as_mut() {
        spool
            .file
            .flush()
            .await
            .map_err(|e| BodyError::Spool(e.to_string()))?;
    }
    Ok(spooled)
}

/// A new temporary file of this process's own (created, never opened twice).
async fn spool_file() -> Result<SpoolFile, BodyError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "warmpool-webhook-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| BodyError::Spool(format!("{}: {e}", path.display())))?;
    Ok(SpoolFile { path, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";
    /// The tests count this process's spool files: one at a time.
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn read_all(body: Vec<u8>, header: &str, max: u64) -> (Result<Vec<u8>, String>, bool) {
        let _one = ONE.lock().await;
        let bodies = Bodies::default();
        let mut v = Verifier::new(SECRET, Some(header)).unwrap();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
        let b = Body::from_stream(futures_util::stream::iter(chunks));
        match bodies.read(b, &mut v, max).await {
            Ok(spooled) => {
                let signed = v.finish().is_ok();
                (
                    spooled.into_bytes().await.map_err(|e| e.to_string()),
                    signed,
                )
            }
            Err(e) => (Err(e.to_string()), false),
        }
    }

    #[tokio::test]
    async fn a_large_body_is_spooled_and_read_back_whole() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let header = warmpool_github::sign(SECRET, &body);
        let (got, signed) = read_all(body.clone(), &header, 25 << 20).await;
        assert!(signed);
        assert_eq!(got.unwrap(), body);
    }

    #[tokio::test]
    async fn a_wrong_signature_is_seen_and_the_spool_is_gone() {
        let body = vec![7u8; 1_000_000];
        let header = warmpool_github::sign(b"other", &body);
        let (_, signed) = read_all(body, &header, 25 << 20).await;
        assert!(!signed);
        let _one = ONE.lock().await;
        assert_eq!(spool_files(), 0, "no spool file left behind");
    }

    #[tokio::test]
    async fn too_large_is_refused() {
        let body = vec![1u8; 2_000_000];
        let header = warmpool_github::sign(SECRET, &body);
        let (got, _) = read_all(body, &header, 1_000_000).await;
        assert!(got.unwrap_err().contains("larger than"));
    }

    fn spool_files() -> usize {
        let prefix = format!("warmpool-webhook-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    }
}
