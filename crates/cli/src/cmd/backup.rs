//! `warmpool backup`: an online copy of the embedded job store (SQLite under
//! `[server] data_dir`), safe while `warmpool serve` runs on it. A PostgreSQL
//! store is backed up with PostgreSQL's own tools.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The server's configuration file (for `[server] data_dir`).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// The new file to write the copy to; it must not exist.
    #[arg(long)]
    to: PathBuf,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<u8> {
    let config = super::load_config(&args.config)?;
    if let Some(url) = super::store::store_url(&config)? {
        anyhow::bail!(
            "the job store is PostgreSQL ({}): back it up with pg_dump, not warmpool backup",
            warmpool_store::postgres::redacted_url(&url)
        );
    }
    let (dir, to) = (config.server.data_dir.clone(), args.to.clone());
    let bytes = tokio::task::spawn_blocking(move || warmpool_store::sqlite::backup(&dir, &to))
        .await
        .context("the backup task failed")??;
    println!(
        "backed up {} to {} ({bytes} bytes)",
        config
            .server
            .data_dir
            .join(warmpool_store::sqlite::FILE_NAME)
            .display(),
        args.to.display()
    );
    Ok(0)
}
