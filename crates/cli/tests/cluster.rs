//! Several `warmpool serve` nodes on one PostgreSQL (a throwaway cluster the
//! test starts) and the real Docker engine: one shared queue, warm hits on
//! every node, and what a node's death, a database restart and a node cut
//! from the database do. Every job reports its run to a counter in the test
//! (an HTTP GET from inside its container), so "never twice" is counted, not
//! assumed.

mod common;

use common::server::{json, Server};
use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use warmpool_testkit::postgres::PgCluster;

/// One PostgreSQL for the file; each test gets its own database (the restart
/// test has a cluster of its own).
fn pg() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(PgCluster::start)
}

/// The tests of this file run one at a time: each starts several nodes, and a
/// 2-core machine running three suites' worth of them at once would miss
/// heartbeats for reasons that have nothing to do with the code.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts the runs of each job: jobs `wget` `/ran/<token>` from inside their
/// container (profile `net` shares the host's network).
#[derive(Clone)]
struct RunCounter {
    port: u16,
    runs: Arc<Mutex<HashMap<String, usize>>>,
}

impl RunCounter {
    fn start() -> RunCounter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let seen = runs.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(&conn).read_line(&mut line);
                    if let Some(token) = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|p| p.strip_prefix("/ran/"))
                    {
                        *seen.lock().unwrap().entry(token.to_string()).or_default() += 1;
                    }
                    let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                });
            }
        });
        RunCounter { port, runs }
    }

    fn runs(&self, token: &str) -> usize {
        self.runs.lock().unwrap().get(token).copied().unwrap_or(0)
    }

    /// A job body: report the run, sleep `secs`, print the token.
    fn job(&self, token: &str, secs: f64) -> String {
        format!(
            r#"{{"profile":"net","args":["sh","-c","wget -q -O /dev/null http://127.0.0.1:{}/ran/{token} && sleep {secs} && echo {token}"]}}"#,
            self.port
        )
    }
}

/// The TOML every node of a test shares.
fn node_config(store_url: &str, node_timeout: &str, extra: &str) -> String {
    format!(
        r#"min_idle = 1

[profiles.net]
image = "{BUSYBOX}"
network = "host"
min_idle = 2
max_containers = 6
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
{extra}

[store]
url = "{store_url}"

[cluster]
node_timeout = "{node_timeout}"
"#
    )
}

fn nodes(n: usize, config: &str) -> Vec<Server> {
    (0..n).map(|_| Server::start(config, &[])).collect()
}

/// Submit on `node`; the id, or `None` if the node did not accept it.
fn submit(node: &Server, body: &str) -> Option<String> {
    let (code, resp) = node.post("/v1/jobs", body);
    (code == 201).then(|| json(&resp)["id"].as_str().unwrap().to_string())
}

/// Wait until every job is final (read from `via`), bounded by `within`; the
/// final views by id.
fn wait_final(
    via: &Server,
    ids: &[String],
    within: Duration,
) -> BTreeMap<String, serde_json::Value> {
    let deadline = Instant::now() + within;
    let mut done = BTreeMap::new();
    while done.len() < ids.len() {
        for id in ids {
            if done.contains_key(id) {
                continue;
            }
            let (code, body) = via.get(&format!("/v1/jobs/{id}"));
            if code == 200 {
                let j = json(&body);
                if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                    done.insert(id.clone(), j);
                }
            }
        }
        if done.len() < ids.len() {
            assert!(
                Instant::now() < deadline,
                "{} of {} jobs not final within {within:?}: {:?}",
                ids.len() - done.len(),
                ids.len(),
                ids.iter()
                    .filter(|i| !done.contains_key(*i))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    done
}

/// Wait (bounded) until `node` has a container of `profile` parked.
fn wait_warm(node: &Server, profile: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = node.get("/v1/pools");
        let parked = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|p| {
                p["node"] == node.instance.as_str()
                    && p["profile"] == profile
                    && p["idle"].as_u64() > Some(0)
            });
        if parked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never parked a {profile} container: {body}",
            node.instance
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn token_of(body: &str) -> String {
    // The token is the last path segment of the wget URL.
    let at = body.find("/ran/").unwrap() + 5;
    body[at..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_burst_across_three_nodes_runs_each_job_once_with_warm_hits_on_every_node() {
    let _serial = serial();
    let url = pg().create_database(&unique("burst").replace('-', "_"));
    let counter = RunCounter::start();
    let cluster = nodes(3, &node_config(&url, "10s", ""));
    for n in &cluster {
        let (code, body) = n.get("/v1/nodes");
        assert_eq!(code, 200, "{body}");
        wait_warm(n, "net");
    }
    // Every node sees the three.
    let (_, body) = cluster[0].get("/v1/nodes");
    let seen: BTreeSet<String> = json(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["instance"].as_str().unwrap().to_string())
        .collect();
    for n in &cluster {
        assert!(seen.contains(&n.instance), "{} missing: {body}", n.instance);
    }
    // 60 jobs, round-robin, one submitter per node at once.
    let bodies: Vec<String> = (0..60)
        .map(|i| counter.job(&format!("b{i}x{}", unique("t")), 0.2))
        .collect();
    let accepted: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|k| {
                let node = &cluster[k];
                let mine: Vec<&String> = bodies.iter().skip(k).step_by(3).collect();
                s.spawn(move || {
                    mine.into_iter()
                        .map(|b| (submit(node, b).expect("accepted"), token_of(b)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let done = wait_final(&cluster[1], &ids, Duration::from_secs(120));
    let mut warm_on: BTreeSet<String> = BTreeSet::new();
    for (id, token) in &accepted {
        let j = &done[id];
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["stdout"].as_str().unwrap().trim(), token, "{j}");
        assert_eq!(
            counter.runs(token),
            1,
            "job {id} ran {} times",
            counter.runs(token)
        );
        if j["warm"] == true {
            warm_on.insert(j["node"].as_str().unwrap().to_string());
        }
    }
    for n in &cluster {
        assert!(
            warm_on.contains(&n.instance),
            "no warm hit on {}: warm on {warm_on:?}",
            n.instance
        );
    }
    // Pools of every node, from any node.
    let (_, pools) = cluster[2].get("/v1/pools");
    let pool_nodes: BTreeSet<String> = json(&pools)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pool_nodes.len(), 3, "{pools}");
}

#[test]
fn a_job_on_one_node_is_seen_followed_and_cancelled_from_another() {
    let _serial = serial();
    let url = pg().create_database(&unique("xnode").replace('-', "_"));
    let cluster = nodes(2, &node_config(&url, "10s", ""));
    let (a, b) = (&cluster[0], &cluster[1]);
    wait_warm(a, "bb");
    // Runs on a (warm there), watched and cancelled from b.
    let id = submit(
        a,
        r#"{"profile":"bb","args":["sh","-c","echo first; sleep 60"]}"#,
    )
    .unwrap();
    a.wait_state(&id, "running");
    let j = json(&b.get(&format!("/v1/jobs/{id}")).1);
    assert_eq!(j["node"], a.instance.as_str(), "{j}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = b.get(&format!("/v1/jobs/{id}/output?follow=false"));
        if out.contains("first") {
            break;
        }
        assert!(Instant::now() < deadline, "output never seen on b: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let (code, body) = b.post(&format!("/v1/jobs/{id}/cancel"), "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "cancelled", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the cancel took {:?}",
        started.elapsed()
    );
    // A queued job waited on from the other node: ?wait=true on b for a job b
    // cannot start (profile `net` has max_containers 6 everywhere; `bb` has room).
    let (code, body) = b.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["echo","waited"]}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["stdout"], "waited\n", "{body}");
}

#[test]
fn a_node_killed_mid_burst_leaves_no_job_behind_and_none_run_twice() {
    let _serial = serial();
    let url = pg().create_database(&unique("kill").replace('-', "_"));
    let counter = RunCounter::start();
    let timeout = Duration::from_secs(4);
    let mut cluster = nodes(3, &node_config(&url, "4s", ""));
    let mut accepted: Vec<(String, String)> = Vec::new();
    for i in 0..30 {
        let token = format!("k{i}x{}", unique("t"));
        if let Some(id) = submit(&cluster[i % 3], &counter.job(&token, 3.0)) {
            accepted.push((id, token));
        }
    }
    assert_eq!(accepted.len(), 30);
    // Some of the victim's jobs are running now.
    std::thread::sleep(Duration::from_millis(1500));
    let mut victim = cluster.remove(2);
    let victim_instance = victim.instance.clone();
    victim.signal(9);
    let killed_at = Instant::now();
    // What the victim was running when it died: final within node_timeout + 10 s.
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let running_there: Vec<String> = ids
        .iter()
        .filter(|id| {
            let j = json(&cluster[0].get(&format!("/v1/jobs/{id}")).1);
            j["node"] == victim_instance.as_str() && j["state"] == "running"
        })
        .cloned()
        .collect();
    assert!(
        !running_there.is_empty(),
        "the victim ran nothing when it was killed"
    );
    let bound = timeout + Duration::from_secs(10);
    wait_final(
        &cluster[0],
        &running_there,
        bound.saturating_sub(killed_at.elapsed()),
    );
    // Everything else (queued on the victim included) ends too.
    let done = wait_final(&cluster[0], &ids, Duration::from_secs(60));
    for (id, token) in &accepted {
        let j = &done[id];
        assert!(
            counter.runs(token) <= 1,
            "job {id} ran {} times",
            counter.runs(token)
        );
        match j["state"].as_str().unwrap() {
            "succeeded" => assert_eq!(counter.runs(token), 1, "{j}"),
            "interrupted" => {
                assert_eq!(j["node"], victim_instance.as_str(), "{j}");
                let error = j["error"].as_str().unwrap_or_default();
                assert!(error.contains(&victim_instance), "{error}");
            }
            other => panic!("job {id} ended {other}: {j}"),
        }
    }
    for id in &running_there {
        assert_eq!(done[id]["state"], "interrupted", "{}", done[id]);
    }
    // Its containers are gone (the gates saw their host go and exited).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !victim.containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers of the killed node left: {}",
            victim.containers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The others see it lost.
    let (_, body) = cluster[0].get("/v1/nodes");
    let lost = json(&body)
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["instance"] == victim_instance.as_str())
        .cloned()
        .unwrap();
    assert_eq!(lost["lost"], true, "{lost}");
    assert_eq!(lost["alive"], false, "{lost}");
    // One of the others counted the take-over.
    let taken_over: u64 = cluster
        .iter()
        .map(|n| {
            let (_, text) = n.get("/metrics");
            text.lines()
                .find_map(|l| l.strip_prefix("warmpool_nodes_taken_over_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(taken_over, 1, "the lost node was taken over once");
}

#[test]
fn a_database_restart_mid_burst_loses_no_accepted_job() {
    let _serial = serial();
    let mut pg = PgCluster::start();
    let url = pg.create_database("restart");
    let counter = RunCounter::start();
    let cluster = nodes(3, &node_config(&url, "20s", ""));
    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut refused = 0;
    for i in 0..45 {
        if i == 15 {
            pg.restart();
        }
        let token = format!("r{i}x{}", unique("t"));
        match submit(&cluster[i % 3], &counter.job(&token, 0.5)) {
            Some(id) => accepted.push((id, token)),
            None => refused += 1,
        }
    }
    assert!(
        accepted.len() >= 30,
        "only {} accepted, {refused} refused",
        accepted.len()
    );
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let done = wait_final(&cluster[0], &ids, Duration::from_secs(120));
    for (id, token) in &accepted {
        let j = &done[id];
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(counter.runs(token), 1, "{j}");
    }
}

/// Ids of `node`'s containers (on the host engine) running `needle`.
fn containers_running(node: &Server, needle: &str) -> Vec<String> {
    node.containers()
        .lines()
        .filter(|id| {
            std::process::Command::new("docker")
                .args(["top", id])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
                .unwrap_or(false)
        })
        .map(str::to_string)
        .collect()
}

/// A database of the test's own, and its URL through a TCP proxy the test can
/// cut or stall (the runtime serves the proxy).
struct Proxied {
    proxy: warmpool_testkit::proxy::TcpProxy,
    rt: tokio::runtime::Runtime,
    url: String,
    through_proxy: String,
}

fn proxied(tag: &str) -> Proxied {
    let url = pg().create_database(&unique(tag).replace('-', "_"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg_addr: std::net::SocketAddr = ([127, 0, 0, 1], pg().port()).into();
    let proxy = rt
        .block_on(warmpool_testkit::proxy::TcpProxy::start(pg_addr))
        .expect("proxy");
    let through_proxy = url.replace(&pg_addr.to_string(), &proxy.addr().to_string());
    assert_ne!(url, through_proxy, "the URL goes through the proxy");
    Proxied {
        proxy,
        rt,
        url,
        through_proxy,
    }
}

/// A `sleep 120` job submitted to warm `node`, once it runs in one of its
/// containers; its id.
fn long_job_running(node: &Server) -> String {
    wait_warm(node, "bb");
    let id = submit(
        node,
        r#"{"profile":"bb","args":["sh","-c","echo started; sleep 120"]}"#,
    )
    .unwrap();
    node.wait_state(&id, "running");
    let deadline = Instant::now() + Duration::from_secs(20);
    while containers_running(node, "sleep 120").len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the job never ran in one container of {}",
            node.instance
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    id
}

#[test]
fn a_node_cut_from_the_database_is_fenced_and_its_late_writes_refused() {
    let _serial = serial();
    let p = proxied("cut");
    let a = Server::start(&node_config(&p.url, "4s", ""), &[]);
    let c = Server::start(&node_config(&p.through_proxy, "4s", ""), &[]);
    let id = long_job_running(&c);
    let j = json(&a.get(&format!("/v1/jobs/{id}")).1);
    assert_eq!(j["node"], c.instance.as_str(), "{j}");

    p.rt.block_on(p.proxy.cut());
    // Another node takes the job over: interrupted, naming the lost node.
    let done = wait_final(&a, std::slice::from_ref(&id), Duration::from_secs(20));
    let j = &done[&id];
    assert_eq!(j["state"], "interrupted", "{j}");
    let error = j["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(&c.instance), "{error}");
    // The cut node killed the job's container itself, without the database.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !containers_running(&c, "sleep 120").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cut node's job container still runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Back online: it learns it was fenced; its late writes changed nothing.
    p.proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = a.get("/v1/nodes");
        let me = json(&body)
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["instance"] == c.instance.as_str())
            .cloned()
            .unwrap();
        if me["alive"] == true && me["generation"].as_i64() > Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut node never joined again: {me}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let j = json(&a.get(&format!("/v1/jobs/{id}")).1);
    assert_eq!(j["state"], "interrupted", "{j}");
    assert_eq!(j["error"].as_str().unwrap_or_default(), error, "{j}");
    // And it takes jobs again.
    let (code, body) = c.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["echo","back"]}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["stdout"], "back\n", "{body}");
}

#[test]
fn a_node_on_its_own_engine_serves_jobs_seen_and_cancelled_from_another() {
    let _serial = serial();
    let url = pg().create_database(&unique("engine").replace('-', "_"));
    ensure_images();
    let engine = warmpool_testkit::dockerd::Dockerd::start().expect("a second dockerd");
    engine.load_image(BUSYBOX).expect("load the test image");
    let a = Server::start(&node_config(&url, "10s", ""), &[]);
    let b = Server::start(
        &node_config(
            &url,
            "10s",
            &format!("\n[engine]\nhost = \"{}\"\n", engine.docker_host()),
        ),
        &[],
    );
    // b runs on its own engine: the host engine has none of its containers.
    wait_warm(&b, "bb");
    assert!(b.containers().is_empty(), "{}", b.containers());
    let (code, body) = b.post(
        "/v1/jobs?wait=true",
        r#"{"profile":"bb","args":["echo","on b"]}"#,
    );
    assert_eq!(code, 200, "{body}");
    let j = json(&body);
    assert_eq!(
        (j["stdout"].as_str(), j["node"].as_str()),
        (Some("on b\n"), Some(b.instance.as_str())),
        "{j}"
    );
    // A long job on b, followed and cancelled from a.
    let id = submit(
        &b,
        r#"{"profile":"bb","args":["sh","-c","echo going; sleep 120"]}"#,
    )
    .unwrap();
    b.wait_state(&id, "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a
        .get(&format!("/v1/jobs/{id}/output?follow=false"))
        .1
        .contains("going")
    {
        assert!(
            Instant::now() < deadline,
            "output of b's job never seen on a"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = a.post(&format!("/v1/jobs/{id}/cancel"), "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "cancelled", "{body}");
    // Nothing of the job is left on b's engine.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("docker")
            .args(["-H", &engine.docker_host(), "ps", "-q"])
            .output()
            .unwrap();
        let ids = String::from_utf8_lossy(&out.stdout).to_string();
        let busy = ids.lines().any(|c| {
            std::process::Command::new("docker")
                .args(["-H", &engine.docker_host(), "top", c])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("sleep 120"))
                .unwrap_or(false)
        });
        if !busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled job still runs on b's engine"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(b);
    drop(a);
}

#[test]
fn a_retry_interrupted_job_of_a_lost_node_runs_again_elsewhere_from_nothing() {
    let _serial = serial();
    let url = pg().create_database(&unique("retry").replace('-', "_"));
    let counter = RunCounter::start();
    let extra = format!(
        r#"
[profiles.retry]
image = "{BUSYBOX}"
network = "host"
min_idle = 1
retry_interrupted = true
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
"#
    );
    let mut cluster = nodes(2, &node_config(&url, "4s", &extra));
    for n in &cluster {
        wait_warm(n, "retry");
    }
    let token = format!("retry{}", unique("t").replace('-', ""));
    let body = format!(
        r#"{{"profile":"retry","env":{{"T":"{token}"}},"args":["sh","-c","echo partial-$T; wget -q -O /dev/null http://127.0.0.1:{}/ran/$T && sleep 4 && echo done-$T"]}}"#,
        counter.port
    );
    let id = submit(&cluster[0], &body).unwrap();
    cluster[0].wait_state(&id, "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.runs(&token) == 0 {
        assert!(Instant::now() < deadline, "the job never reported its run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let j = json(&cluster[0].get(&format!("/v1/jobs/{id}")).1);
    let runner = j["node"].as_str().unwrap().to_string();
    let at = cluster.iter().position(|n| n.instance == runner).unwrap();
    let mut victim = cluster.remove(at);
    victim.signal(9);
    let survivor = &cluster[0];
    let done = wait_final(survivor, std::slice::from_ref(&id), Duration::from_secs(40));
    let j = &done[&id];
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["node"], survivor.instance.as_str(), "{j}");
    // Run again from nothing: its first run's output is gone, its env kept.
    assert_eq!(
        j["stdout"].as_str().unwrap(),
        format!("partial-{token}\ndone-{token}\n"),
        "{j}"
    );
    assert_eq!(counter.runs(&token), 2, "ran once on each node");
}

/// A node whose database stops answering (no error, no reply: a partition)
/// kills its job before another node takes it over, however long its own
/// store calls hang.
#[test]
fn a_node_whose_database_stalls_kills_its_job_before_it_is_taken_over() {
    let _serial = serial();
    let p = proxied("stall");
    let a = Server::start(&node_config(&p.url, "4s", ""), &[]);
    let c = Server::start(&node_config(&p.through_proxy, "4s", ""), &[]);
    let id = long_job_running(&c);

    p.proxy.stall();
    let stalled = Instant::now();
    let done = wait_final(&a, std::slice::from_ref(&id), Duration::from_secs(20));
    assert_eq!(done[&id]["state"], "interrupted", "{}", done[&id]);
    let taken = stalled.elapsed();
    // Killed by its node before (or about when) the other took it over.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !containers_running(&c, "sleep 120").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stalled node's job still runs {:?} after it was taken over \
             ({taken:?} after the stall)",
            Instant::now() - stalled - taken
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p.proxy.restore();
}

/// A node alone whose database stalled past its lease kills its job, and
/// when the database answers again (nobody took the job over) ends it
/// `interrupted`, joins again and runs new jobs to their end.
#[test]
fn a_node_alone_regains_its_lease_after_a_stall() {
    let _serial = serial();
    let p = proxied("regain");
    let c = Server::start(&node_config(&p.through_proxy, "4s", ""), &[]);
    let id = long_job_running(&c);
    p.proxy.stall();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !containers_running(&c, "sleep 120").is_empty() {
        assert!(Instant::now() < deadline, "the job was never killed");
        std::thread::sleep(Duration::from_millis(100));
    }
    p.proxy.restore();
    let done = wait_final(&c, std::slice::from_ref(&id), Duration::from_secs(40));
    let j = &done[&id];
    assert_eq!(j["state"], "interrupted", "{j}");
    // Taking jobs again, and they end as they ran.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (code, body) = c.post(
            "/v1/jobs?wait=true",
            r#"{"profile":"bb","args":["echo","back"]}"#,
        );
        if code == 200 && json(&body)["state"] == "succeeded" {
            assert_eq!(json(&body)["stdout"], "back\n", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_job_stored_as_running_here_that_no_run_holds_is_ended() {
    let _serial = serial();
    let url = pg().create_database(&unique("orphan").replace('-', "_"));
    let node = Server::start(&node_config(&url, "3s", ""), &[]);
    // What a take whose commit answered with an error (though stored) leaves:
    // a job running on the node that no run of the node holds.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async {
        let store = warmpool_store::PgStore::connect(
            &url,
            std::sync::Arc::new(warmpool_store::SystemClock),
        )
        .await
        .expect("connect");
        let job = warmpool_store::NewJob {
            profile: "bb".into(),
            args: vec!["true".into()],
            ..Default::default()
        };
        warmpool_store::JobStore::insert_started(&store, &job, &node.instance, true)
            .await
            .expect("insert")
    });
    let done = wait_final(&node, std::slice::from_ref(&id), Duration::from_secs(30));
    let j = &done[&id];
    assert_eq!(j["state"], "interrupted", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap_or_default()
            .contains("lost track"),
        "{j}"
    );
}
