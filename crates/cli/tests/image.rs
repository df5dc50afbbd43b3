//! warmpool's own container image (images/warmpool, FROM scratch with the static
//! binary): built by its script, run with the engine's socket mounted as an
//! operator would, it serves a job over HTTP, and a `docker stop` leaves none of
//! its containers behind.

mod common;

use common::server::free_port;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// The image under test: built by images/warmpool/build.sh (incremental after
/// the first build) under a tag of its own.
fn build_image() -> String {
    let tag = "warmpool-test/warmpool:local";
    let out = Command::new("bash")
        .arg(repo_root().join("images/warmpool/build.sh"))
        .env("WARMPOOL_IMAGE", tag)
        .output()
        .expect("run images/warmpool/build.sh");
    assert!(
        out.status.success(),
        "building warmpool's image failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tag.to_string()
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Removes the warmpool container (and the jobs' containers, by label) at the end.
struct Running {
    name: String,
    _jobs: CleanupGuard,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "60", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_warmpool_image_serves_a_job_through_the_mounted_socket() {
    ensure_images();
    let image = build_image();
    // The image is FROM scratch: the binary, an empty root, nothing else.
    let (ok, history) = docker(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}} {{.Config.Entrypoint}}",
        &image,
    ]);
    assert!(ok, "{history}");
    assert!(history.contains("[/usr/local/bin/warmpool]"), "{history}");

    let label = unique("img");
    let instance = unique("imginst");
    let token = unique("tok");
    let dir = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("warmpool.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "0.0.0.0:7070"
data_dir = "/var/lib/warmpool"
instance = "{instance}"
shutdown_grace = "5s"

[profiles.bb]
image = "{BUSYBOX}"
network = "none"
min_idle = 1
labels = {{ "{TEST_LABEL}" = "{label}" }}
"#
        ),
    )
    .unwrap();
    // The token as a secret file, the way Compose and systemd hand secrets over.
    let token_file = dir.join("api_token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = free_port();
    let name = unique("warmpool-img");
    let running = Running {
        name: name.clone(),
        _jobs: CleanupGuard(label.clone()),
    };
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{TEST_LABEL}={label}"),
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/etc/warmpool/warmpool.toml:ro", config.display()),
        "-p",
        &format!("127.0.0.1:{port}:7070"),
        "-v",
        &format!("{}:/run/secrets/api_token:ro", token_file.display()),
        "-e",
        "WARMPOOL_API_TOKEN_FILE=/run/secrets/api_token",
        &image,
    ]);
    assert!(ok, "docker run: {out}");
    let base = format!("http://127.0.0.1:{port}");
    let auth = format!("Authorization: Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = curl(&["-H", &auth, &format!("{base}/readyz")]);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            docker(&["logs", &name]).1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"profile":"bb","args":["sh","-c","echo served from the image; exit 4"]}"#,
        &format!("{base}/v1/jobs?wait=true"),
    ]);
    assert_eq!(code, 200, "{body}\n{}", docker(&["logs", &name]).1);
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["stdout"], "served from the image\n", "{job}");
    assert_eq!(job["exit_code"], 4, "{job}");
    // Without the token: refused.
    let (code, _) = curl(&[&format!("{base}/v1/jobs")]);
    assert_eq!(code, 401);
    // SIGTERM (docker stop): the server removes its containers and exits 0.
    let (ok, out) = docker(&["stop", "-t", "30", &name]);
    assert!(ok, "{out}");
    let (_, code) = docker(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.trim(), "0", "{}", docker(&["logs", &name]).1);
    let (_, left) = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=warmpool.instance={instance}"),
    ]);
    assert!(left.trim().is_empty(), "containers left: {left}");
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
}
