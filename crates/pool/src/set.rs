//! All the pools of one config, owned by one instance: started together after
//! sweeping what a previous life of the same instance left, stopped together.
//! The instance is taken (see [`crate::owner`]) before anything is swept.

use crate::owner::{OwnerError, Ownership};
use crate::pool::{sweep, Pool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use warmpool_core::Config;
use warmpool_exec::{ExecError, Executor};
use warmpool_runtime::{Runtime, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum PoolsError {
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error("removing the leftovers of instance \"{instance}\" failed: {source}")]
    Sweep {
        instance: String,
        #[source]
        source: RuntimeError,
    },
    #[error(transparent)]
    Profile(#[from] ExecError),
}

/// One pool per profile of a config, for the config's `[server] instance`.
pub struct Pools {
    pools: BTreeMap<String, Pool>,
    executor: Executor,
    instance: String,
    ownership: Ownership,
    /// Containers of an earlier life of this instance removed at start.
    pub swept: usize,
}

impl Pools {
    /// Remove this instance's leftovers (any state; never another instance's),
    /// resolve every profile's image (a missing one is an error naming the
    /// profile), and start every pool.
    pub async fn start(config: &Config, executor: Executor) -> Result<Pools, PoolsError> {
        let instance = config.server.instance.clone();
        let runtime: Arc<dyn Runtime> = executor.runtime().clone();
        let ownership =
            Ownership::claim(runtime.clone(), &instance, &config.server.data_dir).await?;
        let swept = match sweep(&runtime, &instance).await {
            Ok(n) => n,
            Err(source) => {
                ownership.release().await;
                return Err(PoolsError::Sweep {
                    instance: instance.clone(),
                    source,
                });
            }
        };
        if swept > 0 {
            tracing::info!(%instance, swept, "removed containers an earlier run of this instance left");
        }
        let mut resolved = Vec::new();
        for profile in config.profiles.values() {
            match executor.resolve(profile).await {
                Ok(r) => resolved.push(r),
                Err(e) => {
                    ownership.release().await;
                    return Err(e.into());
                }
            }
        }
        let pools = resolved
            .into_iter()
            .map(|r| {
                let name = r.profile.name.clone();
                (name, Pool::start(executor.clone(), r, &instance))
            })
            .collect();
        Ok(Pools {
            pools,
            executor,
            instance,
            ownership,
            swept,
        })
    }

    pub fn get(&self, profile: &str) -> Option<&Pool> {
        self.pools.get(profile)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Pool)> {
        self.pools.iter()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// This instance's hold on its name (whom it took over from, if anyone).
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// The engine the pools run on.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        self.executor.runtime()
    }

    /// Every pool at (or above) its `min_idle`?
    pub fn ready(&self) -> bool {
        self.pools
            .values()
            .all(|p| p.stats().idle >= p.profile().profile.min_idle)
    }

    /// Stop claiming everywhere, let running jobs finish within `grace`, kill the
    /// rest, and remove every container of this instance.
    pub async fn shutdown(&self, grace: Duration) {
        futures_util::future::join_all(self.pools.values().map(|p| p.shutdown(grace))).await;
        self.executor.drain().await;
        let runtime: Arc<dyn Runtime> = self.executor.runtime().clone();
        if let Err(e) = sweep(&runtime, &self.instance).await {
            tracing::warn!(instance = %self.instance, error = %e, "the last sweep failed");
        }
        self.ownership.release().await;
    }
}
