//! One instance, one owner, against the real engine: a second `warmpool serve`
//! with an instance name in use refuses (saying who holds it and where) and
//! leaves the first one's running job alone; a SIGKILLed owner is taken over;
//! two data directories on one host get different default instance names.

mod common;

use common::server::*;
use common::*;
use std::process::Command;
use std::time::Instant;

#[test]
fn a_second_server_with_the_instance_refuses_and_the_first_keeps_its_job() {
    let mut first = Server::start("", &[]);
    let (code, body) = first.post("/v1/jobs", r#"{"profile":"bb","args":["sleep","60"]}"#);
    assert_eq!(code, 201, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    first.wait_state(&id, "running");
    let containers_before = first.containers();

    // Same instance name, its own port and data directory: shares only the engine.
    let text = std::fs::read_to_string(&first.cfg).unwrap();
    let port = free_port();
    let second_dir = first.dir.join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let text = text
        .replace(
            &first.base.replace("http://", ""),
            &format!("127.0.0.1:{port}"),
        )
        .replace(
            &first.dir.join("data").display().to_string(),
            &second_dir.join("data").display().to_string(),
        );
    let cfg2 = second_dir.join("warmpool.toml");
    std::fs::write(&cfg2, text).unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["serve", "--config", cfg2.to_str().unwrap()])
        .output()
        .unwrap();
    println!("the second server refused after {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    let pid = first.child.as_ref().unwrap().id();
    for part in [
        format!("instance \"{}\" is in use on this engine", first.instance),
        format!("warmpool pid {pid} "),
        format!("(data_dir {}", first.dir.join("data").display()),
        "it is running".to_string(),
        format!("docker volume rm warmpool-owner-{}", first.instance),
    ] {
        assert!(stderr.contains(&part), "no {part:?} in:\n{stderr}");
    }
    // Nothing of the first was swept: its job still runs, in the same containers.
    let job = json(&first.get(&format!("/v1/jobs/{id}")).1);
    assert_eq!(job["state"], "running", "{job}");
    let containers_after = first.containers();
    for c in containers_before.lines() {
        assert!(
            containers_after.lines().any(|a| a == c),
            "container {c} of the first server is gone: {containers_after}\nthe first server's log:\n{}",
            first.log()
        );
    }
    let (code, body) = first.post(&format!("/v1/jobs/{id}/cancel"), "");
    assert_eq!(code, 200, "{body}");

    // The first dies without a word (SIGKILL): the next one takes over at once.
    first.signal(9);
    let started = Instant::now();
    first.spawn();
    println!("the next server took over after {:?}", started.elapsed());
    let log = first.log();
    assert!(
        log.contains("taking over the instance from an owner that is gone")
            && log.contains(&format!("pid {pid} has exited")),
        "{log}"
    );
    assert_eq!(first.get("/healthz").0, 200);
}

/// The instance `warmpool doctor` reports for a config.
fn doctor_instance(cfg: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["doctor", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ok    instance ")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no instance line in:\n{stdout}"))
        .to_string()
}

#[test]
fn two_data_dirs_on_one_host_get_their_own_default_instance() {
    let dir = std::env::temp_dir().join(unique("owner-default"));
    let mut names = Vec::new();
    for sub in ["a", "b", "a"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = d.join("warmpool.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\ndata_dir = \"{}\"\n[profiles.bb]\nimage = \"{BUSYBOX}\"\nmin_idle = 0\n",
                d.join("data").display()
            ),
        )
        .unwrap();
        names.push(doctor_instance(&cfg));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("default instances: {names:?}");
    assert_ne!(names[0], names[1], "two data_dirs, two names");
    assert_eq!(names[0], names[2], "one data_dir, one name every time");
}
