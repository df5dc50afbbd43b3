//! `warmpool doctor`: is everything in place for each profile? Says what is wrong
//! and how to fix it: the config, the instance and its data directory, the
//! secrets the config needs, the engine (and access to its socket), each
//! profile's image (the bot's must be a warmpool agent image) and its gate.

use super::doctor_host::{self, AGENT_LABEL};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// The config file to check (TOML).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<u8> {
    let config = match super::load_config(&args.config) {
        Ok(c) => {
            println!(
                "ok    config {} ({} profiles)",
                args.config.display(),
                c.profiles.len()
            );
            c
        }
        Err(e) => {
            println!("FAIL  config: {e:#}");
            return Ok(1);
        }
    };
    let mut failed = 0;
    println!(
        "ok    instance {} (data_dir {})",
        config.server.instance,
        config.server.data_dir.display()
    );
    match doctor_host::data_dir_writable(&config.server.data_dir) {
        Ok(line) => println!("ok    {line}"),
        Err(e) => {
            println!("FAIL  {e}");
            failed += 1;
        }
    }
    let app = match &config.github {
        Some(g) => match app_key(g) {
            Ok(None) => false,
            Ok(Some(line)) => {
                println!("ok    {line}");
                true
            }
            Err(e) => {
                println!("FAIL  {e}");
                failed += 1;
                true
            }
        },
        None => false,
    };
    for (name, needed_for) in secrets_needed(&config, app) {
        match doctor_host::secret(&name, &needed_for) {
            Ok(line) => println!("ok    {line}"),
            Err(e) => {
                println!("FAIL  {e}");
                failed += 1;
            }
        }
    }
    let (runtime, executor) = match super::connect(&config) {
        Ok(pair) => pair,
        Err(e) => {
            println!("FAIL  engine: {e:#}");
            println!("      check DOCKER_HOST or [engine] host in the config");
            return Ok(1);
        }
    };
    match warmpool_runtime::Runtime::info(runtime.as_ref()).await {
        Ok(info) => {
            let api_ok = info.too_old.is_none();
            println!(
                "{}engine at {}: Docker {} (API {}, {}/{})",
                if api_ok { "ok    " } else { "WARN  " },
                runtime.endpoint(),
                info.version,
                info.api_version,
                info.os,
                info.arch
            );
            // The gate is built for this build's architecture; the engine must run it.
            if info.arch != std::env::consts::ARCH {
                println!(
                    "FAIL  the engine runs {} but this warmpool's gate is built for {}; build warmpool for {} (cargo build --target ...)",
                    info.arch,
                    std::env::consts::ARCH,
                    info.arch
                );
                failed += 1;
            }
            if let Some(why) = &info.too_old {
                println!("      {why}");
            }
        }
        Err(e) => {
            if let Some(denied) = doctor_host::socket_denied(runtime.endpoint()) {
                println!("FAIL  engine: {denied}");
                return Ok(1);
            }
            println!("FAIL  engine: {e}");
            println!("      start it (`sudo systemctl start docker` or `sudo dockerd &`), or set DOCKER_HOST / [engine] host");
            return Ok(1);
        }
    }
    for (name, profile) in &config.profiles {
        let resolved = match executor.resolve(profile).await {
            Ok(r) => r,
            Err(e) => {
                println!("FAIL  profile {name}: {e}");
                failed += 1;
                continue;
            }
        };
        let bot_profile = config.github.as_ref().map(|g| g.profile.as_str());
        if bot_profile == Some(name.as_str())
            && resolved.image.labels.get(AGENT_LABEL).map(String::as_str) != Some("1")
        {
            println!(
                "FAIL  profile {name}: image {} is not a warmpool agent image (no label {AGENT_LABEL}=1), \
                 so the [github] bot cannot run in it (an image of another project under the same tag, \
                 such as claude-hub's claudecode:latest, has another contract); build images/claude-code \
                 (`docker build -t warmpool-agent:latest images/claude-code`) and set image = \"warmpool-agent:latest\"",
                profile.image
            );
            failed += 1;
            continue;
        }
        let image_id = resolved.image.id.clone();
        match executor.park(resolved).await {
            Ok(parked) => {
                println!(
                    "ok    profile {name}: image {} ({}), gate ready in {:.0} ms",
                    profile.image,
                    image_id.get(..19).unwrap_or(&image_id),
                    parked.park_timings().total.as_secs_f64() * 1000.0
                );
                drop(parked);
            }
            Err(e) => {
                println!("FAIL  profile {name}: {e}");
                println!("      the image must run a static Linux binary of this machine's architecture; check `runtime`, `user`, `read_only` and `tmpfs` of the profile");
                failed += 1;
            }
        }
    }
    executor.drain().await;
    Ok(if failed == 0 { 0 } else { 1 })
}

/// The secrets the config needs from warmpool's environment, with what for:
/// the bot's (when `[github]` is set) and every profile's `secret_env`.
fn secrets_needed(config: &warmpool_core::Config, app: bool) -> Vec<(String, String)> {
    let mut needed: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, what: String| match needed.iter_mut().find(|(n, _)| n == name) {
        Some((_, w)) => {
            w.push_str(", ");
            w.push_str(&what);
        }
        None => needed.push((name.to_string(), what)),
    };
    if config.github.is_some() {
        add(
            "GITHUB_WEBHOOK_SECRET",
            "[github] webhook signatures".into(),
        );
        if !app {
            add("GITHUB_TOKEN", "[github] API calls".into());
        }
    }
    let bot_profile = config.github.as_ref().map(|g| g.profile.as_str());
    for (name, profile) in &config.profiles {
        for secret in &profile.secret_env {
            // With the App, the bot hands its jobs a GITHUB_TOKEN of their own.
            if app && secret == "GITHUB_TOKEN" && bot_profile == Some(name.as_str()) {
                continue;
            }
            add(secret, format!("secret_env of profile {name}"));
        }
    }
    needed
}

/// With `[github] app_id`: the App's private key (`private_key_file`, or
/// `GITHUB_APP_PRIVATE_KEY_FILE`) is readable and an RSA key that signs.
/// `Ok(None)`: no App (a personal token).
fn app_key(g: &warmpool_core::config::GithubConfig) -> Result<Option<String>, String> {
    let env_file = std::env::var("GITHUB_APP_PRIVATE_KEY_FILE").ok();
    let Some((app_id, file)) = g.app_auth(env_file.as_deref())? else {
        return Ok(None);
    };
    let api = warmpool_github::GitHubClient::with_base_url(&g.api_url, "unused")
        .map_err(|e| e.to_string())?;
    warmpool_github::App::from_key_file(app_id, std::path::Path::new(&file), api).map_err(|e| {
        format!("[github] GitHub App {app_id}: {e}; download a new private key from the App's settings page and point private_key_file (or GITHUB_APP_PRIVATE_KEY_FILE) at it")
    })?;
    Ok(Some(format!(
        "[github] GitHub App {app_id}: private key {file} reads and signs (GITHUB_TOKEN not needed)"
    )))
}
