//! Which job store a server opens: `WARMPOOL_STORE_URL` (or the file
//! `WARMPOOL_STORE_URL_FILE` names), else `[store] url`, else the embedded
//! SQLite file under `[server] data_dir`. A URL is never logged with its
//! password.

use anyhow::Context;
use std::sync::Arc;
use warmpool_core::Config;
use warmpool_store::postgres::redacted_url;
use warmpool_store::{JobStore, PgStore, SqliteStore, SystemClock};

/// The store URL in effect, if any (the environment first).
pub fn store_url(config: &Config) -> anyhow::Result<Option<String>> {
    if let Some(url) = std::env::var("WARMPOOL_STORE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Ok(Some(url));
    }
    if let Ok(path) = std::env::var("WARMPOOL_STORE_URL_FILE") {
        let url = std::fs::read_to_string(&path)
            .with_context(|| format!("reading WARMPOOL_STORE_URL_FILE ({path})"))?;
        let url = url.trim().to_string();
        if url.is_empty() {
            anyhow::bail!("WARMPOOL_STORE_URL_FILE ({path}) is empty");
        }
        return Ok(Some(url));
    }
    Ok(config.store.url.clone())
}

/// Open the store a server uses.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn JobStore>> {
    match store_url(config)? {
        None => {
            let dir = &config.server.data_dir;
            let store = SqliteStore::open(dir, Arc::new(SystemClock))
                .with_context(|| format!("opening the job store in {}", dir.display()))?;
            Ok(Arc::new(store))
        }
        Some(url) => {
            warmpool_core::config::check_store_url(&url)
                .map_err(|e| anyhow::anyhow!("WARMPOOL_STORE_URL or [store] {e}"))?;
            open_postgres(&url).await
        }
    }
}

/// A PostgreSQL store (its schema migrated at connect).
pub async fn open_postgres(url: &str) -> anyhow::Result<Arc<dyn JobStore>> {
    let store = PgStore::connect(url, Arc::new(SystemClock))
        .await
        .with_context(|| format!("opening the job store at {}", redacted_url(url)))?;
    Ok(Arc::new(store))
}
