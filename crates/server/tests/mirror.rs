//! The mirror keeper against real git: a generated repository of over 100 MB
//! of history (tests/bench/gen-repo.sh) behind a local git smart-HTTP server
//! that demands the token (warmpool-testkit's GitServer). Readers cloning with
//! the mirror while it is updated again and again must always find a whole,
//! connected repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmpool_github::RepoName;
use warmpool_server::mirror::{credential_helper_env, Mirrors, PersonalToken};
use warmpool_testkit::git_http::GitServer;

fn generated() -> PathBuf {
    warmpool_testkit::git_http::generated_repo().to_path_buf()
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git")
}

fn out(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A commit on main of the bare `repo` with a new file of `kb` KiB: its sha.
fn push_commit(repo: &Path, n: usize, kb: usize) -> String {
    let body: String = (0..kb * 16).map(|i| format!("{n:08} {i:055}\n")).collect();
    let stream = format!(
        "commit refs/heads/main\ncommitter t <t@example.com> {} +0000\ndata 7\nupdate\nfrom refs/heads/main^0\nM 100644 inline update_{n}.txt\ndata {}\n{body}\ndone\n",
        1_800_000_000 + n,
        body.len()
    );
    let mut c = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    use std::io::Write;
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("write");
    assert!(c.wait().expect("fast-import").success());
    out(git(repo, &["rev-parse", "refs/heads/main"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_always_see_a_whole_mirror_while_it_is_updated() {
    let generated = generated();
    let tmp = std::env::temp_dir().join(format!(
        "warmpool-mirror-race-{}",
        warmpool_core::labels::unique_suffix()
    ));
    let served_root = tmp.join("served");
    let served = served_root.join("octo/big.git");
    warmpool_testkit::git_http::bare_copy(&generated, &served).expect("a bare copy to serve");
    let token = format!("tok-{}", warmpool_core::labels::unique_suffix());
    let server =
        GitServer::start(&served_root, "127.0.0.1".parse().expect("ip"), &token).expect("server");
    let mirrors = Mirrors::open(
        &tmp.join("mirrors"),
        &server.url,
        Duration::from_secs(3600),
        Arc::new(PersonalToken(token.clone())),
    )
    .expect("open");
    let repo = RepoName::parse("octo/big").expect("name");
    let mirror = mirrors.path(&repo);

    let wait_at = |sha: &str| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !(mirror.join("HEAD").is_file()
            && git(&mirror, &["rev-parse", "refs/heads/main"])
                .stdout
                .starts_with(sha.as_bytes()))
        {
            assert!(
                Instant::now() < deadline,
                "the mirror never reached {sha}: {:?}",
                mirrors.stats()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let started = Instant::now();
    mirrors.request(&repo);
    let head = out(git(&served, &["rev-parse", "HEAD"]));
    tokio::task::block_in_place(|| wait_at(&head));
    println!("mirror made in {:?}", started.elapsed());
    assert!(!std::fs::read_to_string(mirror.join("config"))
        .expect("config")
        .contains(&token));

    // Readers: clone with the mirror, then check the clone is whole
    // (connectivity through the borrowed objects) and its HEAD is a commit.
    let stop = Arc::new(AtomicBool::new(false));
    let (clones, broken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (stop, clones, broken) = (stop.clone(), clones.clone(), broken.clone());
        let (mirror, url, token, tmp) = (
            mirror.clone(),
            format!("{}/octo/big.git", server.url),
            token.clone(),
            tmp.clone(),
        );
        let helper = credential_helper_env(&server.url);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let dir = tmp.join(format!("reader-{n}"));
                let cloned = Command::new("git")
                    .args(["clone", "--quiet", "--no-checkout", "--reference-if-able"])
                    .arg(&mirror)
                    .arg(&url)
                    .arg(&dir)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .env("GITHUB_TOKEN", &token)
                    .envs(helper.clone())
                    .output()
                    .expect("git clone");
                let whole = cloned.status.success()
                    && git(&dir, &["fsck", "--connectivity-only", "--no-dangling"])
                        .status
                        .success()
                    && git(&dir, &["cat-file", "-e", "HEAD^{commit}"])
                        .status
                        .success();
                if whole {
                    clones.fetch_add(1, Ordering::Relaxed);
                } else {
                    broken.fetch_add(1, Ordering::Relaxed);
                    eprintln!("reader {n}: {}", String::from_utf8_lossy(&cloned.stderr));
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        })
    };

    // Every process's argv, sampled while git runs: the token is in none.
    let (argv_seen, argv_leaks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, seen, leaks, token) = (
            stop.clone(),
            argv_seen.clone(),
            argv_leaks.clone(),
            token.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Ok(argv) = std::fs::read(p.path().join("cmdline")) else {
                        continue;
                    };
                    let argv = String::from_utf8_lossy(&argv);
                    if argv.starts_with("git") || argv.contains("/git\0") {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    if argv.contains(&token) {
                        leaks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Updates while readers clone: each new commit asked for twice (the
    // second request coalesces into the running update or follows it).
    let rounds = 12;
    for n in 0..rounds {
        let sha = push_commit(&served, n, 256);
        mirrors.request(&repo);
        mirrors.request(&repo);
        tokio::task::block_in_place(|| wait_at(&sha));
    }
    // At least one whole clone after the last update, then stop.
    let seen = clones.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while clones.load(Ordering::Relaxed) <= seen {
            assert!(Instant::now() < deadline, "no reader finished");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    sampler.join().expect("sampler");
    // Let the coalesced updates settle before counting them.
    let stats = mirrors.stats();
    println!(
        "{rounds} updates under readers: {} whole clones, {} broken; keeper: {stats:?}",
        clones.load(Ordering::Relaxed),
        broken.load(Ordering::Relaxed)
    );
    println!(
        "argv of git processes sampled {} times, the token in {}",
        argv_seen.load(Ordering::Relaxed),
        argv_leaks.load(Ordering::Relaxed)
    );
    assert!(
        argv_seen.load(Ordering::Relaxed) > 0,
        "no git process was sampled"
    );
    assert_eq!(
        argv_leaks.load(Ordering::Relaxed),
        0,
        "the token in an argv"
    );
    assert_eq!(
        broken.load(Ordering::Relaxed),
        0,
        "a reader saw a broken mirror"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.created, 1, "{stats:?}");
    assert!(
        stats.updated >= rounds as u64 && stats.updated <= 2 * rounds as u64,
        "one update per request at most, coalesced: {stats:?}"
    );
    // The token went to git only through the helper: the server saw Basic auth.
    assert!(server
        .requests()
        .iter()
        .all(|r| !r.path.contains(&token) && !r.query.contains(&token)));
    let _ = std::fs::remove_dir_all(&tmp);
}
