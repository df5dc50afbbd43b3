//! A `warmpool serve` of a test's own: the real binary on a free loopback port,
//! with one profile `bb` (busybox) plus what the test adds (or profiles of the
//! test's own); killed, with every container it made, when dropped.

use super::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_warmpool");

pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    pub cfg: PathBuf,
    pub dir: PathBuf,
    pub label: String,
    pub instance: String,
    pub token: Option<String>,
    pub env: Vec<(String, String)>,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    pub fn start(extra: &str, env: &[(&str, &str)]) -> Server {
        Server::start_with("", extra, env)
    }

    /// [`Server::start`] with keys of its own in `[server]`.
    pub fn start_with(server: &str, extra: &str, env: &[(&str, &str)]) -> Server {
        let bb = format!(
            "[profiles.bb]\nimage = \"{BUSYBOX}\"\nnetwork = \"none\"\nlabels = {{ \"{TEST_LABEL}\" = \"@LABEL@\" }}\n{extra}"
        );
        Server::start_profiles(server, &bb, env)
    }

    /// A server with keys of its own in `[server]` and only the profiles in
    /// `profiles` (TOML), no `bb`: "@LABEL@" stands for this server's test
    /// label, which every profile must carry.
    pub fn start_profiles(server: &str, profiles: &str, env: &[(&str, &str)]) -> Server {
        ensure_images();
        let label = unique("srv");
        let profiles = profiles.replace("@LABEL@", &label);
        let instance = unique("srvinst");
        let dir = std::env::temp_dir().join(&label);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let cfg = dir.join("warmpool.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
instance = "{instance}"
shutdown_grace = "5s"
{server}

{profiles}
"#,
                data = dir.join("data").display()
            ),
        )
        .unwrap();
        let token = env
            .iter()
            .find(|(k, _)| *k == "WARMPOOL_API_TOKEN")
            .map(|(_, v)| v.to_string());
        let mut s = Server {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            cfg,
            dir,
            label,
            instance,
            token,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", self.cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.get("/healthz").0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not come up:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-S",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "60",
        ]);
        if let Some(t) = &self.token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        cmd.args(args).arg(format!("{}{path}", self.base));
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A GET's status and exact body bytes.
    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let file = self.dir.join(unique("body"));
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-S", "-w", "%{http_code}", "--max-time", "60", "-o"])
            .arg(&file);
        if let Some(t) = &self.token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd.arg(format!("{}{path}", self.base)).output().unwrap();
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let body = std::fs::read(&file).unwrap_or_default();
        let _ = std::fs::remove_file(&file);
        (code, body)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[], path)
    }

    pub fn post(&self, path: &str, json: &str) -> (u16, String) {
        self.curl(
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                json,
            ],
            path,
        )
    }

    pub fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe { kill(child.id() as i32, sig) };
        child.wait().unwrap()
    }

    /// Wait (bounded) until the job is in `state`.
    pub fn wait_state(&self, id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = json(&self.get(&format!("/v1/jobs/{id}")).1);
            if j["state"] == state {
                return;
            }
            assert!(Instant::now() < deadline, "job never {state}: {j}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ids of this server's containers (any state). A `docker ps` that
    /// fails is tried again, then panics with its error: an empty answer always
    /// means none.
    pub fn containers(&self) -> String {
        let filter = format!("label=warmpool.instance={}", self.instance);
        let mut last = String::new();
        for _ in 0..3 {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("docker ps --filter {filter} failed: {last}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(CleanupGuard(self.label.clone()));
        // A killed server leaves its instance's marker (see warmpool_pool::owner).
        let _ = Command::new("docker")
            .args([
                "volume",
                "rm",
                "-f",
                &format!("warmpool-owner-{}", self.instance),
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

extern "C" {
    pub fn kill(pid: i32, sig: i32) -> i32;
}
