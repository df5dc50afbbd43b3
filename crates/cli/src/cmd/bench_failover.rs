//! `warmpool bench --failover`: how long a node's death leaves its jobs open.
//! Two `warmpool serve` nodes (this binary, with the config's profile, on a
//! shared PostgreSQL store) start; `--jobs` long jobs run on node B (warm);
//! B is SIGKILLed; the time until node A shows each of B's jobs in a final
//! state is measured, against `[cluster] node_timeout`. Both nodes' containers
//! go (B's gates see their host go; A shuts down normally).

use anyhow::{bail, Context};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::Client;

#[derive(Serialize)]
pub struct FailoverFigures {
    pub jobs: usize,
    pub node_timeout_ms: f64,
    /// From B's SIGKILL to each of its jobs' final state, read from A.
    pub final_p50_ms: f64,
    pub final_max_ms: f64,
    pub states: Vec<String>,
}

/// A `warmpool serve` child, killed when dropped.
struct Node {
    child: Child,
    client: Client,
    instance: String,
}

impl Node {
    /// SIGTERM, as an operator stops it: its jobs end, its containers go.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The user's config, made into one node's: its own instance, port and data
/// directory, the shared store, no bot, and enough containers parked.
fn node_config(
    base: &toml::Table,
    profile: &str,
    instance: &str,
    port: u16,
    dir: &Path,
    url: &str,
    jobs: usize,
) -> anyhow::Result<String> {
    let mut t = base.clone();
    t.remove("github");
    let mut server = toml::Table::new();
    server.insert("instance".into(), instance.into());
    server.insert("listen".into(), format!("127.0.0.1:{port}").into());
    server.insert(
        "data_dir".into(),
        dir.join(instance).display().to_string().into(),
    );
    t.insert("server".into(), server.into());
    let mut store = toml::Table::new();
    store.insert("url".into(), url.into());
    t.insert("store".into(), store.into());
    let profiles = t
        .get_mut("profiles")
        .and_then(|p| p.as_table_mut())
        .context("the config has no [profiles]")?;
    profiles.retain(|name, _| name == profile);
    let p = profiles
        .get_mut(profile)
        .and_then(|p| p.as_table_mut())
        .with_context(|| format!("no profile \"{profile}\""))?;
    let n = i64::try_from(jobs).unwrap_or(i64::MAX);
    p.insert("min_idle".into(), n.into());
    p.insert("max_idle".into(), n.into());
    p.insert("max_containers".into(), (n + 1).into());
    Ok(toml::to_string(&t)?)
}

async fn start_node(config: String, dir: &Path, instance: &str, port: u16) -> anyhow::Result<Node> {
    let path = dir.join(format!("{instance}.toml"));
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join(format!("{instance}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("WARMPOOL_STORE_URL")
        .env_remove("WARMPOOL_STORE_URL_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting a node")?;
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None)?;
    let node = Node {
        child,
        client,
        instance: instance.to_string(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while node
        .client
        .get_json::<serde_json::Value>("/v1/nodes")
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("node {instance} did not come up; see {}", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(node)
}

/// Wait until `node` has `n` containers parked.
async fn wait_parked(node: &Node, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pools: Vec<warmpool_server::api::PoolView> = node.client.get_json("/v1/pools").await?;
        let idle: usize = pools
            .iter()
            .filter(|p| p.node == node.instance)
            .map(|p| p.idle)
            .sum();
        if idle >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {} parked {idle} of {n} containers", node.instance);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn measure(
    config_path: &Path,
    profile: &str,
    url: &str,
    args: &[String],
    jobs: usize,
) -> anyhow::Result<FailoverFigures> {
    let text = std::fs::read_to_string(config_path)?;
    let base: toml::Table = text.parse().context("the config is not TOML")?;
    let config = super::load_config(config_path)?;
    let node_timeout = config.cluster.node_timeout;
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "warmpool-bench-failover-{}",
        warmpool_core::labels::unique_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    let suffix = warmpool_core::labels::unique_suffix();
    let (a_name, b_name) = (
        format!("bench-fo-a-{suffix}"),
        format!("bench-fo-b-{suffix}"),
    );
    let (a_port, b_port) = (free_port()?, free_port()?);
    let a_cfg = node_config(&base, profile, &a_name, a_port, &dir, url, 1)?;
    let b_cfg = node_config(&base, profile, &b_name, b_port, &dir, url, jobs)?;
    let a = start_node(a_cfg, &dir, &a_name, a_port).await?;
    let mut b = start_node(b_cfg, &dir, &b_name, b_port).await?;
    wait_parked(&b, jobs).await?;
    let mut ids = Vec::new();
    for _ in 0..jobs {
        let body = serde_json::json!({"profile": profile, "args": args});
        let r: serde_json::Value = b.client.post_json("/v1/jobs", Some(&body)).await?;
        ids.push(r["id"].as_str().context("no id")?.to_string());
    }
    // All running on B before it dies.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let j: serde_json::Value = a.client.get_json(&format!("/v1/jobs/{id}")).await?;
            if j["state"] == "running" && j["node"] == b.instance.as_str() {
                break;
            }
            if j["state"] != "running" && j["state"] != "queued" {
                bail!("job {id} ended before the kill: {j}");
            }
            if Instant::now() > deadline {
                bail!("job {id} never ran on node B: {j}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    b.child.kill().context("SIGKILL node B")?;
    let killed = Instant::now();
    let _ = b.child.wait();
    let mut took = Vec::new();
    let mut states = Vec::new();
    let mut open: Vec<&String> = ids.iter().collect();
    let deadline = killed + node_timeout + Duration::from_secs(60);
    while !open.is_empty() {
        let mut still = Vec::new();
        for id in open {
            let j: serde_json::Value = a.client.get_json(&format!("/v1/jobs/{id}")).await?;
            match j["state"].as_str() {
                Some("running" | "queued") => still.push(id),
                Some(s) => {
                    took.push(killed.elapsed().as_secs_f64() * 1000.0);
                    states.push(s.to_string());
                }
                None => bail!("job {id}: {j}"),
            }
        }
        open = still;
        if Instant::now() > deadline {
            bail!(
                "{} jobs still open {:?} after the kill",
                open.len(),
                killed.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop();
    // What B was creating when it died (a park in flight) stays `Created`:
    // removed here, as B's next start would sweep it.
    let (runtime, _) = super::connect(&config)?;
    let runtime: std::sync::Arc<dyn warmpool_runtime::Runtime> = runtime;
    if let Err(e) = warmpool_pool::sweep(&runtime, &b_name).await {
        tracing::warn!(error = %e, "removing the killed node's containers failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let p = |q: f64| super::bench::percentile(&took, q);
    Ok(FailoverFigures {
        jobs,
        node_timeout_ms: node_timeout.as_secs_f64() * 1000.0,
        final_p50_ms: p(50.0),
        final_max_ms: took.iter().copied().fold(0.0, f64::max),
        states,
    })
}
