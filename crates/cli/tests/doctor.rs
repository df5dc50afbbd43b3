//! `warmpool doctor` against the real engine, for each failure an operator
//! meets on a first day: no access to the engine's socket, a missing or
//! unreadable secret, a data directory that cannot be made, and a bot profile
//! whose image is not a warmpool agent image. Each FAIL names the fix.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
const AGENT: &str = "warmpool-test/agent:latest";

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config in a directory of its own: `[server]` keys, then `rest`.
fn config(server: &str, rest: &str) -> (Dir, PathBuf, String) {
    ensure_images();
    let label = unique("doctor");
    let dir = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("warmpool.toml");
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n{server}\n{}",
        dir.join("data").display(),
        rest.replace("@LABEL@", &label)
    );
    std::fs::write(&cfg, text).unwrap();
    (Dir(dir), cfg, label)
}

/// Run doctor on `cfg` with only `env` of the secrets set; exit code and stdout.
fn doctor(cfg: &Path, env: &[(&str, &str)], prefix: &[&str]) -> (i32, String) {
    let mut cmd = if prefix.is_empty() {
        Command::new(BIN)
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(BIN);
        c
    };
    cmd.args(["doctor", "--config", cfg.to_str().unwrap()]);
    for name in [
        "DOCKER_HOST",
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_WEBHOOK_SECRET_FILE",
        "GITHUB_TOKEN",
        "GITHUB_TOKEN_FILE",
        "DOCTOR_API_KEY",
        "DOCTOR_API_KEY_FILE",
        "GITHUB_APP_PRIVATE_KEY_FILE",
    ] {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

fn bot_config(image: &str) -> (Dir, PathBuf, String) {
    config(
        "",
        &format!(
            r#"
[github]
bot_username = "warmpool-bot"
profile = "agent"

[profiles.agent]
image = "{image}"
network = "none"
secret_env = ["GITHUB_TOKEN", "DOCTOR_API_KEY"]
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
"#
        ),
    )
}

#[test]
fn a_user_without_access_to_the_socket_is_told_about_the_docker_group() {
    let (_dir, cfg, _) = config("", &format!("[profiles.bb]\nimage = \"{BUSYBOX}\"\n"));
    // As `nobody`, outside the socket's group (root is never refused by file modes).
    let (code, out) = doctor(
        &cfg,
        &[],
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  engine: permission denied on /var/run/docker.sock")
            && out.contains("add the user to the `")
            && out.contains("or run warmpool as root"),
        "{out}"
    );
    assert!(
        !out.contains("start it"),
        "no advice to start dockerd:\n{out}"
    );
}

#[test]
fn missing_and_unreadable_secrets_fail_naming_the_variable_or_file() {
    let (dir, cfg, label) = bot_config(AGENT);
    let _cleanup = CleanupGuard(label);
    let missing_file = dir.0.join("no-such-token");
    let (code, out) = doctor(
        &cfg,
        &[("GITHUB_TOKEN_FILE", missing_file.to_str().unwrap())],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    for part in [
        "FAIL  secret GITHUB_WEBHOOK_SECRET ([github] webhook signatures) is not set: set GITHUB_WEBHOOK_SECRET or GITHUB_WEBHOOK_SECRET_FILE".to_string(),
        format!("FAIL  secret GITHUB_TOKEN ([github] API calls, secret_env of profile agent): cannot read the file {} (GITHUB_TOKEN_FILE)", missing_file.display()),
        "FAIL  secret DOCTOR_API_KEY (secret_env of profile agent) is not set".to_string(),
    ] {
        assert!(out.contains(&part), "no {part:?} in:\n{out}");
    }
    // Each set, in one form or the other: all pass, and the agent image does.
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let (code, out) = doctor(
        &cfg,
        &[
            ("GITHUB_WEBHOOK_SECRET", "s3cret"),
            ("GITHUB_TOKEN_FILE", token_file.to_str().unwrap()),
            ("DOCTOR_API_KEY", "k"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok    secret GITHUB_WEBHOOK_SECRET is set"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ok    secret GITHUB_TOKEN is read from {}",
            token_file.display()
        )),
        "{out}"
    );
    assert!(out.contains("ok    profile agent: image"), "{out}");
}

#[test]
fn the_bot_profile_refuses_an_image_that_is_not_a_warmpool_agent() {
    // busybox stands in for claude-hub's image: a fine image, another contract.
    let (_dir, cfg, label) = bot_config(BUSYBOX);
    let _cleanup = CleanupGuard(label);
    let (code, out) = doctor(
        &cfg,
        &[
            ("GITHUB_WEBHOOK_SECRET", "s"),
            ("GITHUB_TOKEN", "t"),
            ("DOCTOR_API_KEY", "k"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("FAIL  profile agent: image {BUSYBOX} is not a warmpool agent image (no label io.warmpool.agent=1)"))
            && out.contains("docker build -t warmpool-agent:latest images/claude-code"),
        "{out}"
    );
}

#[test]
fn a_data_dir_that_cannot_be_made_fails_naming_the_key() {
    let (dir, cfg, _) = config("", &format!("[profiles.bb]\nimage = \"{BUSYBOX}\"\n"));
    // data_dir under a regular file: no user can make it.
    let file = dir.0.join("a-file");
    std::fs::write(&file, "").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &dir.0.join("data").display().to_string(),
        &file.join("data").display().to_string(),
    );
    std::fs::write(&cfg, text).unwrap();
    let (code, out) = doctor(&cfg, &[], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  [server] data_dir {}: {} is not a directory; make it writable by the user warmpool runs as, or set [server] data_dir",
            file.join("data").display(),
            file.display()
        )),
        "{out}"
    );
}

#[test]
fn with_a_github_app_the_key_is_checked_and_no_github_token_is_needed() {
    let (dir, cfg, label) = bot_config(AGENT);
    let _cleanup = CleanupGuard(label);
    let key = dir.0.join("app.pem");
    let _ = Command::new("bash")
        .arg(repo_root().join("tests/need.sh"))
        .arg("openssl")
        .status();
    let made = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "profile = \"agent\"\n",
        &format!(
            "profile = \"agent\"\napp_id = 4242\nprivate_key_file = \"{}\"\n",
            key.display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let env = [("GITHUB_WEBHOOK_SECRET", "s"), ("DOCTOR_API_KEY", "k")];
    // The key reads and signs: no GITHUB_TOKEN asked for, the profile's included.
    let (code, out) = doctor(&cfg, &env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok    [github] GitHub App 4242: private key {} reads and signs",
            key.display()
        )),
        "{out}"
    );
    assert!(!out.contains("GITHUB_TOKEN ("), "{out}");
    // A key that is not one: a FAIL naming the file and the fix, never its content.
    std::fs::write(
        &key,
        "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let (code, out) = doctor(&cfg, &env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  [github] GitHub App 4242")
            && out.contains(&key.display().to_string())
            && out.contains("private_key_file"),
        "{out}"
    );
    assert!(
        !out.contains("bm90IGEga2V5"),
        "the key's text shown:\n{out}"
    );
    // GITHUB_APP_PRIVATE_KEY_FILE names a file that is not there.
    let gone = dir.0.join("gone.pem");
    let mut env_gone = env.to_vec();
    env_gone.push(("GITHUB_APP_PRIVATE_KEY_FILE", gone.to_str().unwrap()));
    let (code, out) = doctor(&cfg, &env_gone, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&gone.display().to_string()), "{out}");
}
