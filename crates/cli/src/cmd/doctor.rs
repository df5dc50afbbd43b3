//! `warmpool doctor`: is everything in place for each profile? Says what is wrong
//! and how to fix it.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DoctorArgs {
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
    let (runtime, executor) = match super::connect(&config) {
        Ok(pair) => pair,
        Err(e) => {
            println!("FAIL  engine: {e:#}");
            println!("      check DOCKER_HOST or [engine] host in the config");
            return Ok(1);
        }
    };
    let mut failed = 0;
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
