//! `warmpool bench --http`: the end-to-end figure. A service runs in this
//! process on 127.0.0.1 with two copies of the profile, one keeping a container
//! parked (`min_idle = 1`) and one keeping none (`min_idle = 0`), and times
//! `POST /v1/jobs?wait=true` for a trivial job on each, over one keep-alive
//! connection, in one run. Beside them, the same job handed straight to the warm
//! pool (no HTTP, no store, as plain `warmpool bench` times it): the difference of
//! the medians is what the service adds. Every timed job starts on a quiet engine:
//! the warm pool back at its idle target and the used containers removed.

use anyhow::{bail, Context};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use warmpool_core::{Config, Job, Profile};
use warmpool_exec::{Executor, OutputSink, RunControl, StreamKind};
use warmpool_pool::Pools;
use warmpool_server::Service;
use warmpool_store::{JobStore, SqliteStore, SystemClock};

#[derive(Serialize)]
pub struct HttpFigures {
    pub jobs: usize,
    pub warm_p50_ms: f64,
    pub warm_p99_ms: f64,
    pub cold_p50_ms: f64,
    pub cold_p99_ms: f64,
    pub cold_over_warm: f64,
    /// The same job on the warm pool without the service: hand-over to exit.
    pub direct_warm_exit_p50_ms: f64,
    pub direct_warm_exit_p99_ms: f64,
    /// `warm_p50_ms - direct_warm_exit_p50_ms`: what HTTP and the store add.
    pub service_overhead_p50_ms: f64,
    /// The warm job on a second service whose store is PostgreSQL
    /// (`--store-url`), timed in the same rounds.
    pub postgres_warm_p50_ms: Option<f64>,
    pub postgres_warm_p99_ms: Option<f64>,
    pub goals: Vec<(String, bool)>,
}

/// Drops a job's output: only its end is timed.
struct Discard;

impl OutputSink for Discard {
    async fn write(&mut self, _: StreamKind, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// A minimal HTTP/1.1 client over one kept-alive connection: enough to time
/// requests without a client library's own overhead in the figure.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        Ok(Conn {
            reader: BufReader::new(TcpStream::connect(addr).await?),
        })
    }

    pub(crate) async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes()).await?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().context("content-length")?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn variant(p: &Profile, name: &str, keep: usize) -> Profile {
    let mut v = p.clone();
    v.name = name.to_string();
    v.min_idle = keep;
    v.max_idle = keep;
    v.max_containers = v.max_containers.max(keep + 1);
    v
}

/// A service of the bench's own on `store`, serving on 127.0.0.1.
pub(crate) struct Served {
    pub(crate) svc: Arc<Service>,
    pub(crate) pools: Arc<Pools>,
    pub(crate) conn: Conn,
    pub(crate) addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub(crate) async fn start(
        config: Arc<Config>,
        store: Arc<dyn JobStore>,
        executor: &Executor,
    ) -> anyhow::Result<Served> {
        let pools = Arc::new(Pools::start(&config, executor.clone()).await?);
        let svc = Service::new(config, store, pools.clone());
        svc.begin().await?;
        svc.start_checkpoints();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(warmpool_server::serve(
            listener,
            svc.clone(),
            None,
            None,
            async move { stopped.cancelled().await },
        ));
        let conn = Conn::connect(addr).await?;
        Ok(Served {
            svc,
            pools,
            conn,
            addr,
            stop,
            server,
        })
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
        self.svc.shutdown(Duration::from_secs(10)).await;
    }
}

pub async fn measure(
    profile: &Profile,
    executor: &Executor,
    args: &[String],
    jobs: usize,
    store_url: Option<&str>,
) -> anyhow::Result<HttpFigures> {
    let dir = std::env::temp_dir().join(format!(
        "warmpool-bench-http-{}",
        warmpool_core::labels::unique_suffix()
    ));
    let mut config = Config::default();
    config.server.instance = format!("bench-http-{}", warmpool_core::labels::unique_suffix());
    config.server.data_dir = dir.clone();
    for (name, keep) in [("warm", 1), ("cold", 0)] {
        config
            .profiles
            .insert(name.to_string(), variant(profile, name, keep));
    }
    let config = Arc::new(config);
    let store = SqliteStore::open(&dir, Arc::new(SystemClock))
        .context("opening a job store for the bench")?;
    let mut main = Served::start(config.clone(), Arc::new(store), executor).await?;
    // Beside it, the same warm profile on a service whose store is PostgreSQL.
    let mut pg = match store_url {
        Some(url) => {
            let mut pg_config = Config::default();
            pg_config.server.instance =
                format!("bench-http-pg-{}", warmpool_core::labels::unique_suffix());
            pg_config
                .profiles
                .insert("warm".to_string(), variant(profile, "warm", 1));
            let store = super::store::open_postgres(url).await?;
            match Served::start(Arc::new(pg_config), store, executor).await {
                Ok(s) => Some(s),
                Err(e) => {
                    main.stop().await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let pools = main.pools.clone();
    let result = async {
        let body_for = |p: &str| serde_json::json!({"profile": p, "args": args}).to_string();
        let warm_pool = pools.get("warm").context("warm pool")?;
        let pg_pool = pg.as_ref().and_then(|s| s.pools.get("warm").cloned());
        // Before each timed job: the warm pools parked again and the used
        // containers removed, so no background engine work overlaps the figure.
        let quiet = || async {
            for pool in std::iter::once(warm_pool).chain(pg_pool.as_ref()) {
                if !pool.wait_idle(1, Duration::from_secs(60)).await {
                    bail!(
                        "the warm pool did not park a container: {:?}",
                        pool.stats().last_error
                    );
                }
            }
            executor.drain().await;
            anyhow::Ok(())
        };
        let (mut warm, mut cold, mut direct, mut pg_warm) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..jobs {
            quiet().await?;
            let job = Job {
                args: args.to_vec(),
                ..Job::default()
            };
            let t0 = Instant::now();
            let r = warm_pool
                .run(job, &mut Discard, RunControl::default())
                .await?;
            let took = t0.elapsed();
            if !r.hit || r.outcome.exit_code() != 0 {
                bail!(
                    "direct warm job: hit {}, exit code {}",
                    r.hit,
                    r.outcome.exit_code()
                );
            }
            direct.push(took.as_secs_f64() * 1000.0);
            for (name, samples) in [("warm", &mut warm), ("cold", &mut cold)] {
                quiet().await?;
                let t0 = Instant::now();
                let (status, body) = main
                    .conn
                    .post("/v1/jobs?wait=true", &body_for(name))
                    .await?;
                let took = t0.elapsed();
                if status != 200 || !body.contains("\"state\":\"succeeded\"") {
                    bail!("{name} job: HTTP {status}: {body}");
                }
                samples.push(took.as_secs_f64() * 1000.0);
            }
            if let Some(pg) = pg.as_mut() {
                quiet().await?;
                let t0 = Instant::now();
                let (status, body) = pg
                    .conn
                    .post("/v1/jobs?wait=true", &body_for("warm"))
                    .await?;
                let took = t0.elapsed();
                if status != 200 || !body.contains("\"state\":\"succeeded\"") {
                    bail!("warm job on PostgreSQL: HTTP {status}: {body}");
                }
                pg_warm.push(took.as_secs_f64() * 1000.0);
            }
        }
        let p = |v: &[f64], q: f64| super::bench::percentile(v, q);
        let (w50, w99, c50, c99) = (
            p(&warm, 50.0),
            p(&warm, 99.0),
            p(&cold, 50.0),
            p(&cold, 99.0),
        );
        let (d50, d99) = (p(&direct, 50.0), p(&direct, 99.0));
        let overhead = w50 - d50;
        Ok(HttpFigures {
            jobs,
            warm_p50_ms: w50,
            warm_p99_ms: w99,
            cold_p50_ms: c50,
            cold_p99_ms: c99,
            cold_over_warm: c50 / w50,
            direct_warm_exit_p50_ms: d50,
            direct_warm_exit_p99_ms: d99,
            service_overhead_p50_ms: overhead,
            postgres_warm_p50_ms: (!pg_warm.is_empty()).then(|| p(&pg_warm, 50.0)),
            postgres_warm_p99_ms: (!pg_warm.is_empty()).then(|| p(&pg_warm, 99.0)),
            goals: vec![
                (format!("warm p50 {w50:.2} ms <= 10 ms"), w50 <= 10.0),
                (
                    format!("cold p50 / warm p50 = {:.1} >= 20", c50 / w50),
                    c50 / w50 >= 20.0,
                ),
                (
                    format!("service overhead p50 {overhead:.2} ms <= 1 ms"),
                    overhead <= 1.0,
                ),
            ],
        })
    }
    .await;
    main.stop().await;
    if let Some(pg) = pg {
        pg.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|mut f: HttpFigures| {
        if let Some(pg50) = f.postgres_warm_p50_ms {
            let extra = pg50 - f.warm_p50_ms;
            f.goals.push((
                format!(
                    "PostgreSQL warm p50 {pg50:.2} ms - SQLite {:.2} ms = {extra:+.2} ms <= +2 ms",
                    f.warm_p50_ms
                ),
                extra <= 2.0,
            ));
        }
        f
    })
}
