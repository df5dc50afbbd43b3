//! Reuse mode (`--reuse`) as a process on the host, where the gate is not PID 1:
//! the flow around the reset, which needs no container. The reset itself runs
//! only as PID 1 (tests/gate_engine.rs); here it must refuse, saying so.

mod common;

use common::{gate_dir, spec, stderr_of, stdout_of, Session};
use std::process::Command;
use std::time::{Duration, Instant};
use warmpool_gate::protocol::{ExitStatus, Frame};

fn gate(args: &[&str]) -> Session {
    let mut cmd = Command::new(gate_dir().join("gate"));
    cmd.args(args)
        .env("HOSTNAME", "gatetest")
        .env("HOME", "/home/gate");
    Session::start(cmd)
}

#[test]
fn not_as_pid_1_the_first_reset_fails_and_the_gate_exits() {
    let mut g = gate(&["--reuse"]);
    g.ready();
    // Stdin stays open: in reuse mode the gate does not wait for it after EXIT.
    let (frames, (ok, report)) = g.job(&spec(&["echo", "one"]));
    assert!(
        matches!(frames[0], Frame::Started(pid) if pid > 0),
        "{frames:?}"
    );
    assert_eq!(stdout_of(&frames), "one\n");
    assert_eq!(frames.last(), Some(&Frame::Exit(ExitStatus::Code(0))));
    assert!(!ok);
    assert!(report.starts_with("not PID 1"), "{report}");
    let (rest, stderr, code) = g.finish();
    assert!(rest.is_empty(), "nothing after a failed reset: {rest:?}");
    assert_eq!(code, Some(0), "a failed reset is no error of the gate's");
    assert!(stderr.contains("not PID 1"), "{stderr}");
}

#[test]
fn a_job_that_fails_to_start_is_reset_after_too() {
    let mut g = gate(&["--reuse"]);
    g.ready();
    let (frames, (ok, report)) = g.job(&spec(&["no-such-program-here"]));
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::StartFailed(m) if m.contains("not found"))),
        "{frames:?}"
    );
    assert!(stderr_of(&frames).contains("no-such-program-here"));
    assert_eq!(frames.last(), Some(&Frame::Exit(ExitStatus::Code(127))));
    assert!(!ok && report.starts_with("not PID 1"), "{report}");
    assert_eq!(g.finish().2, Some(0));
}

#[test]
fn stdin_closing_while_parked_ends_the_gate_quietly() {
    let mut g = gate(&["--reuse"]);
    g.ready();
    g.close_stdin();
    let (rest, stderr, code) = g.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, Some(0));
    assert_eq!(stderr, "", "quietly");
}

#[test]
fn a_spec_cut_short_while_parked_is_still_an_error() {
    let mut g = gate(&["--reuse"]);
    g.ready();
    let bytes = spec(&["true"]).encode();
    use std::io::Write;
    g.stdin
        .as_mut()
        .unwrap()
        .write_all(&bytes[..bytes.len() / 2])
        .unwrap();
    g.close_stdin();
    let (rest, stderr, code) = g.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("stdin closed before a complete job spec"),
        "{stderr}"
    );
}

#[test]
fn the_host_going_away_during_a_job_kills_it_and_ends_the_gate() {
    let mut g = gate(&["--reuse"]);
    g.ready();
    g.send(&spec(&["sh", "-c", "echo up; sleep 30; echo never"]));
    g.until(|f| matches!(f, Frame::Stdout(d) if d.starts_with(b"up")));
    let started = Instant::now();
    g.close_stdin();
    let (rest, stderr, code) = g.finish();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the job outlived its host"
    );
    assert_eq!(code, Some(137), "killed: {rest:?}");
    assert!(
        !rest
            .iter()
            .any(|f| matches!(f, Frame::Reset { .. } | Frame::Ready(_))),
        "no reset once the host is gone: {rest:?}"
    );
    assert!(!stdout_of(&rest).contains("never"));
    assert!(stderr.contains("host went away"), "{stderr}");
}

#[test]
fn a_stop_signal_while_parked_ends_the_gate_as_in_single_use() {
    let mut g = gate(&["--reuse"]);
    g.ready();
    unsafe { kill(g.child.id() as i32, 15) };
    let (rest, _, code) = g.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, Some(128 + 15));
}

#[test]
fn other_arguments_leave_the_gate_single_use() {
    // Only `--reuse` switches the mode: the gate waits for the acknowledgement
    // after EXIT and sends no RESET, as it always has.
    let mut g = gate(&["--reuse-not"]);
    g.ready();
    g.send(&spec(&["echo", "x"]));
    let frames = g.until(|f| matches!(f, Frame::Exit(_)));
    assert_eq!(stdout_of(&frames), "x\n");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        g.child.try_wait().unwrap().is_none(),
        "single use waits for stdin to close"
    );
    g.close_stdin();
    let (rest, _, code) = g.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(code, Some(0));
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
