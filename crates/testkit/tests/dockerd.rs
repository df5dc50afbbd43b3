//! Dockerd against the real thing: a second engine starts beside the host's,
//! takes an image from it, runs containers, keeps its images across a restart
//! and a crash (kill), and leaves nothing behind: not after a drop, not after a
//! kill, not after the test process itself is SIGKILLed (the watchdog). Needs
//! root, dockerd, the host engine and the test images (`tests/images/build.sh`,
//! built here when missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use warmpool_testkit::dockerd::Dockerd;

const BUSYBOX: &str = "warmpool-test/busybox:latest";

fn ensure_images() {
    // Built once per process; a failure fails every test with its reason.
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/images/build.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .map_err(|e| format!("run tests/images/build.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "building the test images failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
}

/// Whether the host has a `docker0` link (the host engine's bridge), which
/// a test engine must never remove.
fn host_docker0() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run(d: &Dockerd, args: &[&str]) -> String {
    let out = d.docker().args(args).output().expect("spawn docker");
    ok(&format!("docker {args:?} on {}", d.docker_host()), out)
}

fn images(d: &Dockerd) -> String {
    run(d, &["images", "--format", "{{.Repository}}:{{.Tag}}"])
}

/// What is left of an engine: processes naming its dir, mounts under it,
/// its cgroups, the dir itself.
fn leftovers(dir: &Path, cgroup: &str) -> Vec<String> {
    let mut left = Vec::new();
    let needle = format!("{}/", dir.display());
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                left.push(format!("process {name}: {cmd}"));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines() {
        if let Some(mp) = l.split(' ').nth(4) {
            if mp == dir.to_string_lossy() || mp.starts_with(&needle) {
                left.push(format!("mount {mp}"));
            }
        }
    }
    let mut cg_dirs = vec![PathBuf::from("/sys/fs/cgroup").join(cgroup)];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        cg_dirs.extend(rd.flatten().map(|e| e.path().join(cgroup)));
    }
    for c in cg_dirs {
        if c.exists() {
            left.push(format!("cgroup {}", c.display()));
        }
    }
    if dir.exists() {
        left.push(format!("dir {}", dir.display()));
    }
    left
}

/// The socket containerd (1.6, 1.7) gives the shim of container `id` of the
/// engine in `dir`: /run/containerd/s/<sha256 of "<containerd address>/moby/<id>">.
/// A SIGKILLed shim leaves it behind unless the cleanup removes it.
fn shim_socket(dir: &Path, id: &str) -> PathBuf {
    let key = format!("{}/run/containerd/containerd.sock/moby/{id}", dir.display());
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    {
        use std::io::Write;
        let mut stdin = c.stdin.take().expect("stdin");
        stdin.write_all(key.as_bytes()).expect("write");
    }
    let out = ok("sha256sum", c.wait_with_output().expect("sha256sum"));
    let hash = out.split_whitespace().next().expect("hash").to_string();
    PathBuf::from("/run/containerd/s").join(hash)
}

/// Pids of processes (not zombies) in the engine's cgroup parent.
fn container_pids(cgroup: &str) -> Vec<String> {
    let mut pids = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup/pids").join(cgroup)];
    stack.push(PathBuf::from("/sys/fs/cgroup").join(cgroup));
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        pids.extend(
            procs
                .split_whitespace()
                .filter(|p| {
                    let status = std::fs::read_to_string(format!("/proc/{p}/status"));
                    status.is_ok_and(|s| !s.contains("\nState:\tZ"))
                })
                .map(str::to_string),
        );
    }
    pids
}

#[test]
fn dockerd_moves_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Dockerd>();
}

#[test]
fn engine_runs_beside_the_host_and_survives_restart_and_kill() {
    ensure_images();
    let host_root = ok(
        "host docker info",
        Command::new("docker")
            .args(["info", "--format", "{{.DockerRootDir}}"])
            .output()
            .expect("docker"),
    );

    let docker0 = host_docker0();
    let mut d = Dockerd::start().expect("start dockerd");
    assert_eq!(host_docker0(), docker0, "the host's docker0 changed");
    assert!(d.socket_path().as_os_str().len() < 100);
    assert_eq!(
        d.docker_host(),
        format!("unix://{}", d.socket_path().display())
    );
    let info = run(&d, &["info", "--format", "{{.Driver}} {{.DockerRootDir}}"]);
    let mut f = info.split(' ');
    let (driver, root) = (f.next(), f.next());
    assert_eq!(driver, Some(d.storage_driver()));
    assert_eq!(root.map(PathBuf::from), Some(d.data_root()));
    assert_ne!(root, Some(host_root.as_str()), "-H reached the host engine");
    assert!(d.is_running());
    assert!(d.pid().is_some());

    // A second engine at the same time: its own, and both work.
    let e = Dockerd::start().expect("start a second dockerd");
    assert_ne!(e.dir(), d.dir());

    assert_eq!(images(&d), "");
    d.load_image(BUSYBOX).expect("load image");
    e.load_image(BUSYBOX).expect("load image into the second");
    assert_eq!(images(&d), BUSYBOX);
    assert!(d.load_image("warmpool-test/no-such-image:x").is_err());

    let hi = run(&d, &["run", "--rm", BUSYBOX, "/bin/busybox", "echo", "hi"]);
    assert_eq!(hi, "hi");
    let hi = run(&e, &["run", "--rm", BUSYBOX, "/bin/busybox", "echo", "hi"]);
    assert_eq!(hi, "hi");
    // The containers live in the engine's cgroup parent.
    let cg = run(&d, &["run", "--rm", BUSYBOX, "cat", "/proc/self/cgroup"]);
    assert!(cg.contains(&format!("/{}/", d.cgroup_parent())), "{cg}");

    // A container left running, then a graceful restart: the image stays.
    let long = run(&d, &["run", "-d", BUSYBOX, "sleep", "1000"]);
    assert_eq!(container_pids(d.cgroup_parent()).len(), 1);
    let t = Instant::now();
    d.restart().expect("restart");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(images(&d), BUSYBOX);
    let state = run(&d, &["inspect", "--format", "{{.State.Running}}", &long]);
    assert_eq!(state, "false");
    assert_eq!(run(&d, &["run", "--rm", BUSYBOX, "echo", "again"]), "again");

    // A crash with a container running: everything of the engine dies at once,
    // nothing stays mounted; the second engine and the host's are untouched.
    let crashed = run(&d, &["run", "-d", BUSYBOX, "sleep", "1000"]);
    let crashed_sock = shim_socket(d.dir(), &crashed);
    assert!(crashed_sock.exists(), "{}", crashed_sock.display());
    assert_eq!(container_pids(d.cgroup_parent()).len(), 1);
    let pid = d.pid().expect("pid");
    d.kill().expect("kill");
    assert!(!d.is_running());
    // kill reaped dockerd: its pid is gone (not a zombie).
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(container_pids(d.cgroup_parent()).is_empty());
    let left: Vec<String> = leftovers(d.dir(), d.cgroup_parent())
        .into_iter()
        .filter(|l| !l.starts_with("dir ") && !l.starts_with("cgroup "))
        .collect();
    assert!(left.is_empty(), "after kill: {left:?}");
    assert!(!crashed_sock.exists(), "the shim's socket is left");
    assert!(d
        .docker()
        .arg("info")
        .stderr(Stdio::null())
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true));
    assert_eq!(run(&e, &["run", "--rm", BUSYBOX, "echo", "still"]), "still");
    ok(
        "host docker info after",
        Command::new("docker").arg("info").output().expect("docker"),
    );

    // Back after the crash, images kept.
    d.restart().expect("restart after kill");
    assert_eq!(images(&d), BUSYBOX);
    assert_eq!(run(&d, &["run", "--rm", BUSYBOX, "echo", "up"]), "up");
    d.stop().expect("stop");
    d.stop().expect("stop twice");
    assert!(!d.is_running());

    // Drop: nothing left, with a container running on the other one.
    let running = run(&e, &["run", "-d", BUSYBOX, "sleep", "1000"]);
    let running_sock = shim_socket(e.dir(), &running);
    assert!(running_sock.exists(), "{}", running_sock.display());
    let (d_dir, d_cg) = (d.dir().to_path_buf(), d.cgroup_parent().to_string());
    let (e_dir, e_cg) = (e.dir().to_path_buf(), e.cgroup_parent().to_string());
    drop(d);
    drop(e);
    assert_eq!(leftovers(&d_dir, &d_cg), Vec::<String>::new());
    assert_eq!(leftovers(&e_dir, &e_cg), Vec::<String>::new());
    assert!(!running_sock.exists(), "the shim's socket is left");
    assert_eq!(host_docker0(), docker0, "the host's docker0 changed");
}

/// vfs, the fallback where overlay2 cannot run, works; a driver that cannot
/// start fails `start` with dockerd's own words and leaves nothing.
#[test]
fn storage_drivers() {
    ensure_images();
    let d = Dockerd::start_with_storage_driver("vfs").expect("start with vfs");
    assert_eq!(d.storage_driver(), "vfs");
    assert_eq!(run(&d, &["info", "--format", "{{.Driver}}"]), "vfs");
    d.load_image(BUSYBOX).expect("load");
    assert_eq!(run(&d, &["run", "--rm", BUSYBOX, "echo", "vfs"]), "vfs");
    let (dir, cg) = (d.dir().to_path_buf(), d.cgroup_parent().to_string());
    drop(d);
    assert_eq!(leftovers(&dir, &cg), Vec::<String>::new());

    let err =
        Dockerd::start_with_storage_driver("no-such-driver").expect_err("a bogus driver starts");
    let msg = format!("{err:#}");
    assert!(msg.contains("no-such-driver"), "{msg}");
    assert!(msg.contains("dockerd log"), "{msg}");
}

/// The watchdog: the helper below, run as a child test process, starts an
/// engine with a running container and waits; SIGKILLing it (no Drop runs)
/// must still leave nothing behind.
#[test]
fn nothing_left_when_the_test_process_is_sigkilled() {
    ensure_images();
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "watchdog_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WPD_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    // The helper prints "ready <dir> <cgroup>" once its container runs (after
    // the harness's "test watchdog_helper ... " on the same line). Read on a
    // thread, so a helper that hangs fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("ready ") {
                let _ = tx.send(line[i + "ready ".len()..].to_string());
                break;
            }
        }
    });
    let ready = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper never got ready: {e}");
        }
    };
    let mut f = ready.split(' ');
    let dir = PathBuf::from(f.next().expect("dir"));
    let cgroup = f.next().expect("cgroup").to_string();
    let sock = shim_socket(&dir, f.next().expect("container id"));
    assert!(sock.exists(), "{}", sock.display());
    assert!(dir.exists());
    assert_eq!(container_pids(&cgroup).len(), 1);

    child.kill().expect("SIGKILL the helper");
    child.wait().expect("wait helper");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = leftovers(&dir, &cgroup);
        if left.is_empty() && !sock.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after SIGKILL: {left:?}, shim socket left: {}",
            sock.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "helper of nothing_left_when_the_test_process_is_sigkilled"]
fn watchdog_helper() {
    if std::env::var_os("WPD_HELPER").is_none() {
        return;
    }
    let d = Dockerd::start().expect("start");
    d.load_image(BUSYBOX).expect("load");
    let id = run(&d, &["run", "-d", BUSYBOX, "sleep", "1000"]);
    println!("ready {} {} {id}", d.dir().display(), d.cgroup_parent());
    std::thread::sleep(Duration::from_secs(600));
    drop(d);
}
