//! The gate binary as a process on the host: spec handling, exit reporting,
//! signal forwarding and reaping, without any container engine in the way.

mod common;

use common::{gate_dir, spec, stderr_of, stdout_of};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use warmpool_gate::protocol::{encode_frame, ExitStatus, Frame, FrameDecoder, JobSpec};

fn start_gate() -> Child {
    Command::new(gate_dir().join("gate"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOSTNAME", "gatetest")
        .env("HOME", "/home/gate")
        .spawn()
        .unwrap()
}

/// Everything the gate said, decoded, plus its stderr and exit code.
struct Transcript {
    frames: Vec<Frame>,
    stderr: String,
    code: Option<i32>,
}

impl Transcript {
    fn stdout(&self) -> Vec<u8> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Stdout(d) => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
    fn stderr_frames(&self) -> String {
        stderr_of(&self.frames)
    }
    fn exit(&self) -> Option<ExitStatus> {
        match self.frames.last() {
            Some(Frame::Exit(s)) => Some(*s),
            _ => None,
        }
    }
}

/// Read frames until EXIT (or EOF), then acknowledge by closing stdin, as the host
/// does, and collect the rest.
fn finish(mut child: Child) -> Transcript {
    let stdin = child.stdin.take();
    let mut out = child.stdout.take().unwrap();
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut buf = [0u8; 65536];
    'read: loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
        while let Some(f) = dec.next_frame().unwrap() {
            let last = matches!(f, Frame::Exit(_));
            frames.push(f);
            if last {
                break 'read;
            }
        }
    }
    drop(stdin);
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the exit frame");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(dec.pending(), 0, "trailing bytes after the last frame");
    Transcript {
        frames,
        stderr: err,
        code: status.code(),
    }
}

/// Hand the gate a spec and keep its stdin open until the exit frame, as the host does.
fn run_spec(spec: &JobSpec) -> Transcript {
    let mut child = start_gate();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&spec.encode())
        .unwrap();
    finish(child)
}

#[test]
fn says_ready_first_and_exit_last() {
    let t = run_spec(&spec(&["echo", "hello", "world"]));
    assert!(matches!(&t.frames[0], Frame::Ready(v) if v.starts_with("warmpool-gate/")));
    assert_eq!(t.stdout(), b"hello world\n");
    assert_eq!(t.exit(), Some(ExitStatus::Code(0)));
    assert_eq!(t.code, Some(0));
    assert!(matches!(t.frames[1], Frame::Started(pid) if pid > 0));
}

#[test]
fn reports_exit_codes_and_signals() {
    for code in [0, 1, 42] {
        let t = run_spec(&spec(&["sh", "-c", &format!("exit {code}")]));
        assert_eq!(t.exit(), Some(ExitStatus::Code(code)));
        assert_eq!(t.code, Some(code), "the gate exits with the job's code");
    }
    let t = run_spec(&spec(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(t.exit(), Some(ExitStatus::Signal(9)));
    assert_eq!(t.code, Some(137), "128 + signal, as tini");
}

#[test]
fn env_is_ordered_as_docker_run_gives_it() {
    let mut s = spec(&["env"]);
    s.env = vec![
        b"GREETING=hi".to_vec(),
        b"JOB=1".to_vec(),
        b"PATH=/usr/bin:/bin".to_vec(),
    ];
    let t = run_spec(&s);
    assert_eq!(
        String::from_utf8(t.stdout()).unwrap(),
        "PATH=/usr/bin:/bin\nHOSTNAME=gatetest\nGREETING=hi\nJOB=1\nHOME=/home/gate\n"
    );
}

#[test]
fn stdin_bytes_and_cwd_reach_the_job() {
    let mut s = spec(&["sh", "-c", "pwd; cat"]);
    s.cwd = b"/tmp".to_vec();
    s.stdin = Some(b"line one\nline two\n".to_vec());
    let t = run_spec(&s);
    assert_eq!(t.stdout(), b"/tmp\nline one\nline two\n");
    // Without stdin bytes the job reads /dev/null: EOF at once.
    let t = run_spec(&spec(&["sh", "-c", "cat; echo done"]));
    assert_eq!(t.stdout(), b"done\n");
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let t = run_spec(&spec(&["sh", "-c", "echo out; echo err >&2"]));
    assert_eq!(t.stdout(), b"out\n");
    assert_eq!(t.stderr_frames(), "err\n");
}

#[test]
fn missing_program_is_127_with_a_message() {
    let t = run_spec(&spec(&["no-such-program-here"]));
    assert_eq!(t.exit(), Some(ExitStatus::Code(127)));
    assert!(t
        .frames
        .iter()
        .any(|f| matches!(f, Frame::StartFailed(m) if m.contains("not found"))));
    assert!(t.stderr_frames().contains("no-such-program-here"));
}

#[test]
fn eof_before_a_spec_starts_nothing() {
    let mut child = start_gate();
    drop(child.stdin.take());
    let t = finish(child);
    assert_eq!(t.code, Some(2));
    assert!(
        t.stderr.contains("stdin closed before a complete job spec"),
        "{}",
        t.stderr
    );
    assert!(t.stderr.contains("starting nothing"));
    assert_eq!(t.frames.len(), 1, "only READY: {:?}", t.frames);
}

#[test]
fn malformed_specs_start_nothing() {
    let mut good = spec(&["touch", "/tmp/warmpool-gate-must-not-exist"]).encode();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "does not start with a warmpool job spec",
        ),
        (
            {
                let mut b = good.clone();
                b[5] = 9;
                b
            },
            "version 9",
        ),
        (
            {
                let mut b = good.clone();
                b[6] = 0xff;
                b
            },
            "larger than the limit",
        ),
        (
            {
                let mut b = good.clone();
                b.truncate(20);
                b
            },
            "stdin closed",
        ),
        (
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 5] = 7;
                b
            },
            "unknown stdin flag",
        ),
        (spec(&[]).encode(), "argv is empty"),
        (
            {
                let mut s = spec(&["true"]);
                s.env = vec![b"=v".to_vec()];
                s.encode()
            },
            "has no name",
        ),
    ];
    for (bytes, want) in cases {
        let mut child = start_gate();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&bytes).unwrap();
        drop(stdin);
        let t = finish(child);
        assert_eq!(t.code, Some(2), "{want}: {}", t.stderr);
        assert!(t.stderr.contains(want), "want {want:?} in {:?}", t.stderr);
        assert!(t.exit().is_none());
    }
    good.clear();
    assert!(!std::path::Path::new("/tmp/warmpool-gate-must-not-exist").exists());
}

#[test]
fn sigterm_goes_to_the_jobs_process_group() {
    let mut child = start_gate();
    let mut stdin = child.stdin.take().unwrap();
    // The job and its own child both trap TERM: the whole group must get it.
    let script = "trap 'echo parent got TERM; wait; exit 7' TERM; \
                  sh -c 'trap \"echo child got TERM; exit 0\" TERM; echo ready; while :; do sleep 0.05; done' & \
                  wait";
    stdin
        .write_all(&spec(&["sh", "-c", script]).encode())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let mut frames = Vec::new();
    // Wait until the job says it is ready, then signal the gate.
    'wait: loop {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "gate ended early");
        dec.push(&buf[..n]);
        while let Some(f) = dec.next_frame().unwrap() {
            let ready = matches!(&f, Frame::Stdout(d) if d.windows(5).any(|w| w == b"ready"));
            frames.push(f);
            if ready {
                break 'wait;
            }
        }
    }
    // "ready" comes after both traps are set (the parent's before it starts the
    // child, the child's before it prints): the signal can go now.
    unsafe { kill(child.id() as i32, 15) };
    'rest: loop {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the gate ended without an exit frame");
        dec.push(&buf[..n]);
        while let Some(f) = dec.next_frame().unwrap() {
            let last = matches!(f, Frame::Exit(_));
            frames.push(f);
            if last {
                break 'rest;
            }
        }
    }
    drop(stdin);
    child.wait().unwrap();
    let text = stdout_of(&frames);
    assert!(text.contains("child got TERM"), "{text}");
    assert!(text.contains("parent got TERM"), "{text}");
    assert_eq!(frames.last(), Some(&Frame::Exit(ExitStatus::Code(7))));
    // The host learns of the signal it did not send, once, before the exit.
    let signals: Vec<&Frame> = frames
        .iter()
        .filter(|f| matches!(f, Frame::Signal(_)))
        .collect();
    assert_eq!(signals, [&Frame::Signal(15)], "{frames:?}");
}

#[test]
fn each_signal_passed_on_is_reported_before_the_exit() {
    let mut child = start_gate();
    let mut stdin = child.stdin.take().unwrap();
    // Counts what it gets; ends after the third, so every report precedes EXIT.
    let script = "n=0; trap 'n=$((n+1)); echo got $n' USR1 HUP; echo ready; \
                  while [ $n -lt 3 ]; do sleep 0.05; done; exit 3";
    stdin
        .write_all(&spec(&["sh", "-c", script]).encode())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let mut frames = Vec::new();
    let mut sent = 0;
    let signals = [10, 1, 10];
    'read: loop {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the gate ended without an exit frame");
        dec.push(&buf[..n]);
        while let Some(f) = dec.next_frame().unwrap() {
            // One signal at a time, each once the job has said it handled the last.
            let next = match &f {
                Frame::Stdout(d) => d
                    .windows(5)
                    .any(|w| w == b"ready" || w.starts_with(b"got ")),
                _ => false,
            };
            let last = matches!(f, Frame::Exit(_));
            frames.push(f);
            if last {
                break 'read;
            }
            if next && sent < signals.len() {
                unsafe { kill(child.id() as i32, signals[sent]) };
                sent += 1;
            }
        }
    }
    drop(stdin);
    child.wait().unwrap();
    let reported: Vec<i32> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Signal(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(reported, signals, "{frames:?}");
    assert_eq!(frames.last(), Some(&Frame::Exit(ExitStatus::Code(3))));
}

#[test]
fn a_job_without_signals_or_oom_gets_neither_frame() {
    let t = run_spec(&spec(&["sh", "-c", "echo quiet"]));
    assert!(
        !t.frames
            .iter()
            .any(|f| matches!(f, Frame::Signal(_) | Frame::Oom(_))),
        "{:?}",
        t.frames
    );
}

#[test]
fn an_orphan_holding_the_pipes_does_not_hold_the_job() {
    // The inner sleep is orphaned (its parent exits at once) and keeps the output
    // pipes open; the job's end must still end the run, long before the sleep ends.
    // (Reaping itself is checked in a container, where the gate is PID 1.)
    let started = std::time::Instant::now();
    let t = run_spec(&spec(&["sh", "-c", "(sleep 8 &) ; echo done"]));
    assert_eq!(t.stdout(), b"done\n");
    assert_eq!(t.exit(), Some(ExitStatus::Code(0)));
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "the orphan held the gate"
    );
}

#[test]
fn the_host_going_away_kills_the_job() {
    let mut child = start_gate();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&spec(&["sh", "-c", "echo up; sleep 30; echo never"]).encode())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("up") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    let started = std::time::Instant::now();
    drop(stdin); // the host's attach is gone
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the job outlived its host"
    );
    assert_eq!(status.code(), Some(137), "killed");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("host went away"), "{err}");
    assert!(!String::from_utf8_lossy(&rest).contains("never"));
}

#[test]
fn the_gate_waits_for_the_host_to_read_the_exit() {
    let mut child = start_gate();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&spec(&["true"]).encode())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let mut got_exit = false;
    while !got_exit {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0);
        dec.push(&buf[..n]);
        while let Some(f) = dec.next_frame().unwrap() {
            got_exit |= matches!(f, Frame::Exit(_));
        }
    }
    // After the exit frame the gate's only reads are of its stdin, waiting for
    // the host to close it. Send it a few bytes and wait until it has read them
    // (its read count, /proc/<pid>/io): it is in that wait, not gone.
    let pid = child.id();
    let read_so_far = || -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("rchar in /proc/<pid>/io")
    };
    let before = read_so_far();
    let ping = b"not an ack";
    child.stdin.as_mut().unwrap().write_all(ping).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before the acknowledgement"
        );
        if read_so_far() >= before + ping.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gate never read its stdin after the exit frame"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the acknowledgement"
    );
    drop(child.stdin.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn unset_entries_remove_variables() {
    let mut s = spec(&["env"]);
    s.env = vec![
        b"PATH=/usr/bin:/bin".to_vec(),
        b"HOSTNAME".to_vec(),
        b"A=1".to_vec(),
    ];
    let t = run_spec(&s);
    assert_eq!(
        String::from_utf8(t.stdout()).unwrap(),
        "PATH=/usr/bin:/bin\nA=1\nHOME=/home/gate\n"
    );
}

#[test]
fn large_output_arrives_whole_and_in_order() {
    let t = run_spec(&spec(&["sh", "-c", "seq 1 200000"]));
    let expected: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(t.stdout()).unwrap(), expected);
}

#[test]
fn frame_encoding_round_trips() {
    let frames = vec![
        Frame::Ready("warmpool-gate/9".into()),
        Frame::Started(42),
        Frame::Stdout(b"a".to_vec()),
        Frame::Stderr(vec![0, 255, 10]),
        Frame::StartFailed("nope".into()),
        Frame::Signal(15),
        Frame::Oom(2),
        Frame::Exit(ExitStatus::Signal(9)),
    ];
    let bytes: Vec<u8> = frames.iter().flat_map(encode_frame).collect();
    // Deliver one byte at a time: frames split anywhere must reassemble.
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for b in bytes {
        dec.push(&[b]);
        while let Some(f) = dec.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
    let mut dec = FrameDecoder::new();
    dec.push(&[42, 0, 0, 0, 0]);
    assert!(dec.next_frame().is_err(), "unknown kinds are refused");
    for kind in [7u8, 8] {
        let mut dec = FrameDecoder::new();
        dec.push(&[kind, 0, 0, 0, 2, 0, 15]);
        assert_eq!(
            dec.next_frame(),
            Err(warmpool_gate::protocol::FrameError::BadNumber(kind)),
            "a SIGNAL or OOM payload is 4 bytes"
        );
    }
}

#[test]
fn the_oom_kill_counter_is_read_from_either_cgroup_version() {
    use warmpool_gate::cgroup::{oom_kills_between, parse_oom_kill};
    // cgroup v1 memory.oom_control
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(parse_oom_kill(v1), Some(3));
    // cgroup v2 memory.events
    let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
    assert_eq!(parse_oom_kill(v2), Some(1));
    // Kernels before 4.13 have no counter; garbage is no count.
    assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    assert_eq!(parse_oom_kill("oom_kill many\n"), None);
    assert_eq!(parse_oom_kill("oom_kill 1 2\n"), None);
    assert_eq!(parse_oom_kill(""), None);
    assert_eq!(oom_kills_between(Some(1), Some(3)), Some(2));
    assert_eq!(oom_kills_between(Some(3), Some(3)), Some(0));
    assert_eq!(
        oom_kills_between(Some(3), Some(1)),
        Some(0),
        "reset: no claim"
    );
    assert_eq!(oom_kills_between(None, Some(3)), None, "no file: no claim");
    assert_eq!(oom_kills_between(Some(3), None), None);
}

#[test]
fn spec_round_trips_and_refuses_garbage() {
    let s = JobSpec {
        argv: vec![b"a".to_vec(), b"b c".to_vec()],
        env: vec![b"K=V=W".to_vec()],
        cwd: b"/x".to_vec(),
        stdin: Some(vec![0, 1, 2]),
    };
    let bytes = s.encode();
    assert_eq!(JobSpec::read_from(&mut &bytes[..]).unwrap(), s);
    // Every truncation is an error, never a panic.
    for cut in 0..bytes.len() {
        assert!(JobSpec::read_from(&mut &bytes[..cut]).is_err());
    }
    // A huge list count in a small body is refused, not allocated.
    let mut evil = bytes.clone();
    evil[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(JobSpec::read_from(&mut &evil[..]).is_err());
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
