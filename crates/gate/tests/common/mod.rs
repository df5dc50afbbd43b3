//! What the reuse-mode tests share: the gate binary on disk, and a session with a
//! gate (on the host or in a container) driven through its stdin and stdout.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use warmpool_gate::protocol::{Frame, FrameDecoder, JobSpec};
use warmpool_gate::GATE_BINARY;

/// A directory holding only the gate, as `gate` (mounted into containers as is).
pub fn gate_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("warmpool-gate-reuse-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("gate");
        std::fs::write(&path, GATE_BINARY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
}

pub fn spec(argv: &[&str]) -> JobSpec {
    JobSpec {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![b"PATH=/usr/bin:/bin".to_vec()],
        cwd: Vec::new(),
        stdin: None,
    }
}

/// A running gate, fed specs on its stdin, read frame by frame on its stdout.
pub struct Session {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    out: ChildStdout,
    dec: FrameDecoder,
}

impl Session {
    pub fn start(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gate");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("piped stdout");
        Session {
            child,
            stdin,
            out,
            dec: FrameDecoder::new(),
        }
    }

    /// The next frame, or None at the end of the gate's output.
    pub fn next(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(f) = self.dec.next_frame().expect("well-formed frames") {
                return Some(f);
            }
            let n = self.out.read(&mut buf).expect("read the gate's stdout");
            if n == 0 {
                assert_eq!(self.dec.pending(), 0, "a frame cut short");
                return None;
            }
            self.dec.push(&buf[..n]);
        }
    }

    /// Frames up to and including the first that `last` accepts (panics at the
    /// end of output before it).
    pub fn until(&mut self, last: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next() {
                Some(f) => {
                    let done = last(&f);
                    frames.push(f);
                    if done {
                        return frames;
                    }
                }
                None => panic!("the gate's output ended; got {frames:?}"),
            }
        }
    }

    pub fn ready(&mut self) {
        let f = self.next();
        assert!(
            matches!(&f, Some(Frame::Ready(v)) if v.starts_with("warmpool-gate/")),
            "want READY, got {f:?}"
        );
    }

    pub fn send(&mut self, spec: &JobSpec) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(&spec.encode()).expect("write the spec");
        stdin.flush().expect("flush the spec");
    }

    /// Run one job: its frames up to EXIT, then the RESET that follows.
    pub fn job(&mut self, spec: &JobSpec) -> (Vec<Frame>, (bool, String)) {
        self.send(spec);
        let frames = self.until(|f| matches!(f, Frame::Exit(_)));
        match self.next() {
            Some(Frame::Reset { ok, report }) => (frames, (ok, report)),
            other => panic!("want RESET after EXIT, got {other:?} after {frames:?}"),
        }
    }

    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Wait for the gate to end: its remaining frames, stderr and exit code.
    pub fn finish(mut self) -> (Vec<Frame>, String, Option<i32>) {
        let mut rest = Vec::new();
        while let Some(f) = self.next() {
            rest.push(f);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().expect("wait for the gate");
        (rest, err, status.code())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout_of(frames: &[Frame]) -> String {
    let bytes: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Stdout(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn stderr_of(frames: &[Frame]) -> String {
    let bytes: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Stderr(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
