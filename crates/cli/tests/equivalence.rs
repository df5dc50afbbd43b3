//! Warm path, cold path and plain `docker run --rm --init` give the same stdout,
//! stderr and exit status (HOSTNAME aside), against the real engine.
//!
//! Every case runs twice (`single_use::NAME`, `reuse::NAME`). On a reuse profile
//! (read-only root, `/tmp` on tmpfs, `reuse` above 1) the reference is `docker
//! run --rm --init --read-only --tmpfs /tmp`, and the warm run is the second job
//! of a container whose first was `common::dirty_job`: whatever that job left,
//! the reset must make the next job indistinguishable from a fresh `docker run`.
//! The cold run there is the first job of a fresh `--reuse` gate.
//!
//! Adapted on a reuse profile (the root filesystem is read-only, as it must be
//! for reuse): `image_with_user_and_workdir` writes in the image's WORKDIR
//! (/home/app, on the root filesystem): the write fails with EROFS, as under
//! `docker run --read-only`, and the case checks that it does.

mod common;

use common::*;
use warmpool_core::{Job, Profile};

/// The three runs of one job: docker run (the reference), warm (on a reused
/// container in reuse mode), cold.
async fn three_ways(
    e: &Engine,
    mode: Mode,
    p: &Profile,
    job: Job,
) -> (Captured, Captured, Captured, warmpool_exec::Outcome) {
    let (pc, jc) = (p.clone(), job.clone());
    let reference = tokio::task::spawn_blocking(move || docker_run(&pc, &jc))
        .await
        .unwrap();
    let (warm, warm_outcome) = run_in(e, mode, p, job.clone()).await;
    let (cold, _) = run_cold(e, p, job).await;
    (reference, warm, cold, warm_outcome)
}

/// Runs `job` three ways and asserts they agree; returns the reference result so
/// each test can also check it is what the job should print (a suite where all
/// three are equally broken must not pass).
async fn equivalent(mode: Mode, p: &Profile, job: Job) -> Captured {
    let e = engine();
    let (reference, warm, cold, _) = three_ways(&e, mode, p, job).await;
    let reference = reference.without_hostname();
    let warm_name = match mode {
        Mode::SingleUse => "warm path",
        Mode::Reuse => "reused container (its second job, after the dirty one)",
    };
    assert_eq!(
        warm.without_hostname(),
        reference,
        "{mode:?}: {warm_name} vs docker run"
    );
    assert_eq!(
        cold.without_hostname(),
        reference,
        "{mode:?}: cold path vs docker run"
    );
    assert_clean(&e, p).await;
    reference
}

in_both_modes!(
    env_dump,
    args_dump_without_a_shell,
    image_without_a_shell_env_id_cwd_and_default_cmd,
    working_dir_and_ids,
    image_with_user_and_workdir,
    image_with_entrypoint_and_cmd,
    image_with_cmd_only,
    stdin_echo,
    exit_codes,
    death_by_sigkill,
    stderr_apart_from_stdout,
    fifty_megabytes_of_output,
    orphans_are_reaped_like_docker_init,
    program_not_found_exit_code,
    writable_places_look_fresh,
);

async fn env_dump(mode: Mode) {
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.env = vec![
        ("GREETING".into(), "hi".into()),
        ("SHARED".into(), "profile".into()),
    ];
    // Sorted: `docker run` itself does not keep env order stable from run to run
    // (the order the gate gives is checked in the gate's own tests).
    let job = Job {
        args: vec!["sh".into(), "-c".into(), "env | sort".into()],
        env: vec![
            ("SHARED".into(), "job wins".into()),
            ("JOB_ONLY".into(), "with = and spaces".into()),
            ("PATH".into(), "/bin:/usr/bin".into()),
        ],
        ..Job::default()
    };
    let r = equivalent(mode, &p, job).await;
    let text = r.stdout_text();
    assert!(text.contains("GREETING=hi\n"), "{text}");
    assert!(text.contains("SHARED=job wins\n"), "{text}");
    assert!(text.contains("JOB_ONLY=with = and spaces\n"), "{text}");
    assert!(text.contains("PATH=/bin:/usr/bin\n"), "{text}");
    assert_eq!(r.code, 0);
}

async fn args_dump_without_a_shell(mode: Mode) {
    let p = mode.profile(NOSHELL);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&["args", "a", "b c", "", "d\"e", "$HOME"])).await;
    assert_eq!(r.stdout_text(), "a\nb c\n\nd\"e\n$HOME\n");
}

async fn image_without_a_shell_env_id_cwd_and_default_cmd(mode: Mode) {
    let p = mode.profile(NOSHELL);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&[])).await;
    assert_eq!(
        r.stdout_text(),
        "from\ncmd\n",
        "the image's CMD runs by default"
    );
    let r = equivalent(mode, &p, job(&["env"])).await;
    assert!(r.stdout_text().contains("HOME=/\n"), "{}", r.stdout_text());
    let r = equivalent(mode, &p, job(&["id"])).await;
    assert_eq!(r.stdout_text(), "uid=0 gid=0\n");
    let r = equivalent(mode, &p, job(&["cwd"])).await;
    assert_eq!(r.stdout_text(), "/\n");
}

async fn working_dir_and_ids(mode: Mode) {
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&["sh", "-c", "pwd; id"])).await;
    assert_eq!(
        r.stdout_text(),
        "/\nuid=0(root) gid=0(root) groups=0(root)\n"
    );
    let mut p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.workdir = Some("/tmp/work".into());
    p.user = Some("1000:1000".into());
    let r = equivalent(mode, &p, job(&["sh", "-c", "pwd; id -u; id -g"])).await;
    assert_eq!(r.stdout_text(), "/tmp/work\n1000\n1000\n");
}

async fn image_with_user_and_workdir(mode: Mode) {
    let p = mode.profile(USER);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&[])).await;
    assert_eq!(
        r.stdout_text(),
        "uid=1000(app) gid=1000(app) groups=1000(app)\n/home/app\n"
    );
    let r = equivalent(
        mode,
        &p,
        job(&[
            "sh",
            "-c",
            "echo $APP_MODE $HOME; touch mine && ls -n mine | cut -c1-30",
        ]),
    )
    .await;
    assert!(
        r.stdout_text().starts_with("test /home/app\n"),
        "{}",
        r.stdout_text()
    );
    match mode {
        Mode::SingleUse => assert_eq!(r.code, 0, "{r:?}"),
        // Adapted: /home/app is on the read-only root of a reuse profile.
        Mode::Reuse => {
            assert_eq!(r.stderr_text(), "touch: mine: Read-only file system\n");
            assert_eq!(r.code, 1);
        }
    }
}

async fn image_with_entrypoint_and_cmd(mode: Mode) {
    let p = mode.profile(ENTRY);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&[])).await;
    assert_eq!(r.stdout_text(), "entry: ep default args\n");
    let r = equivalent(mode, &p, job(&["given", "args"])).await;
    assert_eq!(r.stdout_text(), "entry: ep given args\n");
}

async fn image_with_cmd_only(mode: Mode) {
    let p = mode.profile(CMD_ONLY);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&[])).await;
    assert_eq!(r.stdout_text(), "hello from cmd\n");
    let r = equivalent(mode, &p, job(&["echo", "replaced"])).await;
    assert_eq!(r.stdout_text(), "replaced\n");
}

async fn stdin_echo(mode: Mode) {
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let input: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let job = Job {
        args: vec!["cat".into()],
        stdin: Some(input.clone()),
        ..Job::default()
    };
    let r = equivalent(mode, &p, job).await;
    assert_eq!(r.stdout, input);
}

async fn exit_codes(mode: Mode) {
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    for code in [0, 1, 42] {
        let r = equivalent(
            mode,
            &p,
            job(&["sh", "-c", &format!("echo before; exit {code}")]),
        )
        .await;
        assert_eq!(r.code, code);
        assert_eq!(r.stdout_text(), "before\n");
    }
}

async fn death_by_sigkill(mode: Mode) {
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let r = equivalent(mode, &p, job(&["sh", "-c", "echo dying; kill -9 $$"])).await;
    assert_eq!(r.code, 137);
    assert_eq!(r.stdout_text(), "dying\n");
}

async fn stderr_apart_from_stdout(mode: Mode) {
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let r = equivalent(
        mode,
        &p,
        job(&[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3",
        ]),
    )
    .await;
    assert_eq!(r.stdout_text(), "out1\nout2\n");
    assert_eq!(r.stderr_text(), "err1\nerr2\n");
    assert_eq!(r.code, 3);
}

async fn fifty_megabytes_of_output(mode: Mode) {
    const SIZE: usize = 50 * 1024 * 1024;
    let mut p = mode.profile(NOSHELL);
    let _cleanup = cleanup(&p);
    p.output_limit = 64 * 1024 * 1024;
    let e = engine();
    let (reference, warm, cold, wo) =
        three_ways(&e, mode, &p, job(&["flood", &SIZE.to_string()])).await;
    assert_eq!(reference.stdout.len(), SIZE);
    for (name, got) in [("warm", &warm), ("cold", &cold)] {
        let name = format!("{mode:?} {name}");
        assert_eq!(got.stdout.len(), SIZE, "{name}: length");
        assert!(
            got.stdout == reference.stdout,
            "{name}: content differs from docker run"
        );
        assert_eq!(got.code, reference.code, "{name}: exit");
        assert_eq!(got.stderr, reference.stderr, "{name}: stderr");
    }
    assert!(!wo.stdout_truncated);
    assert_clean(&e, &p).await;
}

async fn orphans_are_reaped_like_docker_init(mode: Mode) {
    // An orphaned child that exits becomes a zombie unless PID 1 reaps it.
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let script = "(sh -c 'sleep 0.1' &); sleep 0.6; ps -o stat,comm | grep -c '^Z' || true";
    let r = equivalent(mode, &p, job(&["sh", "-c", script])).await;
    assert_eq!(r.stdout_text(), "0\n", "no zombies");
}

async fn program_not_found_exit_code(mode: Mode) {
    // docker run and the gate word the error differently; the exit code is the contract.
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let e = engine();
    let (reference, warm, cold, wo) = three_ways(&e, mode, &p, job(&["no-such-program"])).await;
    assert_eq!(reference.code, 127);
    assert_eq!(warm.code, 127);
    assert_eq!(cold.code, 127);
    assert!(wo
        .start_error
        .as_deref()
        .unwrap_or("")
        .contains("not found"));
    assert!(warm.stderr_text().contains("no-such-program"));
    assert_clean(&e, &p).await;
}

/// Every place a job may write, as the job sees it (names, modes, owners,
/// types), the SysV objects and the processes besides the job's own: as in a
/// fresh `docker run`. On a reuse profile this is what the reset is for: the
/// dirty job changed all of it in the same container just before.
async fn writable_places_look_fresh(mode: Mode) {
    let p = mode.profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let script = "for d in /tmp /dev /dev/shm /dev/mqueue; do \
           find $d -xdev -exec stat -c '%n %a %u:%g %F %t:%T' {} +; done | sort; \
         echo sysv:; cat /proc/sysvipc/shm /proc/sysvipc/msg /proc/sysvipc/sem | grep -cv key; \
         echo sleeping: $(ps -o comm | grep -c sleep)";
    let r = equivalent(mode, &p, job(&["sh", "-c", script])).await;
    let text = r.stdout_text();
    assert!(text.contains("/tmp 1777 0:0 directory"), "{text}");
    assert!(
        text.contains("/dev/null 666 0:0 character special file 1:3"),
        "{text}"
    );
    assert!(text.ends_with("sysv:\n0\nsleeping: 0\n"), "{text}");
    assert_eq!(r.code, 0, "{r:?}");
}
