//! warmpool-gate: the entrypoint of every warmpool container.
//!
//! Std only, built by `crates/gate/build.rs` with `rustc -C target-feature=+crt-static`
//! into a static binary that runs in any Linux image of its architecture, `FROM scratch`
//! included. It says READY, waits for one job spec on stdin, runs the job as its child
//! in a process group of its own, acts as init (reaps every zombie, forwards signals to
//! the job's group), frames the job's stdout and stderr onto its own stdout, reports the
//! job's exit as the last frame, waits for the host to acknowledge by closing stdin,
//! and exits with the job's code (as tini does). It never runs a second job.

#[allow(dead_code)]
#[path = "../protocol.rs"]
mod protocol;

use protocol::{
    exit_payload, frame_header, ExitStatus, JobSpec, FRAME_EXIT, FRAME_READY,
    FRAME_STARTED, FRAME_START_FAILED, FRAME_STDERR, FRAME_STDOUT,
};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

// The few libc calls std does not wrap. The constants below are the same on every
// Linux architecture warmpool targets (x86_64, aarch64).
mod sys {
    #[repr(C)]
    pub struct PollFd {
        pub fd: i32,
        pub events: i16,
        pub revents: i16,
    }
    pub const POLLIN: i16 = 0x1;
    pub const POLLERR: i16 = 0x8;
    pub const POLLHUP: i16 = 0x10;
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGQUIT: i32 = 3;
    pub const SIGKILL: i32 = 9;
    pub const SIGUSR1: i32 = 10;
    pub const SIGUSR2: i32 = 12;
    pub const SIGTERM: i32 = 15;
    pub const EINTR: i32 = 4;
    pub const PR_SET_CHILD_SUBREAPER: i32 = 36;
    extern "C" {
        pub fn signal(signum: i32, handler: usize) -> usize;
        pub fn kill(pid: i32, sig: i32) -> i32;
        pub fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        pub fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
        pub fn read(fd: i32, buf: *mut u8, count: usize) -> isize;
        pub fn _exit(code: i32) -> !;
        pub fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
}

/// Docker's default PATH, which `docker run` puts first in every container's env.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit codes of the gate itself, when no job ran.
const EXIT_BAD_SPEC: i32 = 2;
const EXIT_IO: i32 = 3;
/// How long to wait, after the exit frame, for the host to close stdin.
const ACK_TIMEOUT_MS: i32 = 60_000;
/// Signals the gate passes on to the job's process group (as `docker run` proxies).
const FORWARDED: [i32; 6] = [
    sys::SIGHUP,
    sys::SIGINT,
    sys::SIGQUIT,
    sys::SIGUSR1,
    sys::SIGUSR2,
    sys::SIGTERM,
];

// Where the gate is, for the signal handler (which may only touch atomics).
const PARKED: i32 = 0;
const STARTING: i32 = 1;
const RUNNING: i32 = 2;
const ENDED: i32 = 3;
static STATE: AtomicI32 = AtomicI32::new(PARKED);
/// Process group of the job (its leader's pid) once it runs.
static JOB_PGID: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived while the job was being started, delivered once it runs.
static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    match STATE.load(Ordering::SeqCst) {
        // Parked with no job: a stop request means stop.
        PARKED => unsafe { sys::_exit(128 + sig) },
        STARTING => PENDING_SIGNAL.store(sig, Ordering::SeqCst),
        RUNNING => {
            // kill(2) is async-signal-safe; a negative pid addresses the whole group.
            let pgid = JOB_PGID.load(Ordering::SeqCst);
            if pgid > 0 {
                unsafe { sys::kill(-pgid, sig) };
            }
        }
        // The job has ended and its exit is being reported: nothing left to signal.
        _ => {}
    }
}

fn main() {
    // As PID 1 a signal without a handler is ignored; install ours before anything.
    for sig in FORWARDED {
        unsafe { sys::signal(sig, on_signal as *const () as usize) };
    }
    // As PID 1 every orphan comes to us anyway; as a subreaper they do too when the
    // gate is not PID 1 (under another init, or in tests on the host).
    unsafe { sys::prctl(sys::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut out = FrameWriter::stdout();
    let version = concat!("warmpool-gate/", env!("CARGO_PKG_VERSION_GATE"));
    if out.frame(FRAME_READY, version.as_bytes()).is_err() {
        die(EXIT_IO, "cannot write to stdout: is the container attached?");
    }

    let spec = match JobSpec::read_from(&mut io::stdin().lock()) {
        Ok(spec) => spec,
        Err(e) => die(EXIT_BAD_SPEC, &format!("{e}; starting nothing")),
    };
    STATE.store(STARTING, Ordering::SeqCst);
    let status = run(spec, &mut out);
    STATE.store(ENDED, Ordering::SeqCst);
    if out.frame(FRAME_EXIT, &exit_payload(status)).is_ok() {
        // Let the host read everything before the container (and its stdout) ends.
        wait_for_stdin_eof(ACK_TIMEOUT_MS);
    }
    // Exiting as PID 1 ends the container, and with it anything the job left behind.
    std::process::exit(status.as_shell_code());
}

fn die(code: i32, msg: &str) -> ! {
    let _ = writeln!(io::stderr(), "warmpool-gate: {msg}");
    std::process::exit(code);
}

/// Unbuffered frames on fd 1: one write per frame so output is never held back.
struct FrameWriter {
    fd: std::mem::ManuallyDrop<File>,
    buf: Vec<u8>,
}

impl FrameWriter {
    fn stdout() -> Self {
        FrameWriter {
            // SAFETY: fd 1 is open for the gate's whole life; ManuallyDrop never closes it.
            fd: std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) }),
            buf: Vec::with_capacity(70 * 1024),
        }
    }
    fn frame(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&frame_header(kind, payload.len()));
        self.buf.extend_from_slice(payload);
        self.fd.write_all(&self.buf)
    }
}

/// Read fd 0 until EOF, or until `timeout_ms` passes without it.
fn wait_for_stdin_eof(timeout_ms: i32) {
    let mut fds = [sys::PollFd {
        fd: 0,
        events: sys::POLLIN,
        revents: 0,
    }];
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { sys::poll(fds.as_mut_ptr(), 1, timeout_ms) };
        if n == 0 {
            return;
        }
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(sys::EINTR) {
                continue;
            }
            return;
        }
        let r = unsafe { sys::read(0, buf.as_mut_ptr(), buf.len()) };
        if r <= 0 {
            return;
        }
    }
}

/// The environment `docker run` would give the job: Docker's PATH and HOSTNAME first,
/// the spec's entries replacing, appending or (a bare KEY) removing, and HOME (which
/// the runtime derives from the user) kept at the end when the spec does not set it.
fn job_env(spec_env: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"PATH".to_vec(), DEFAULT_PATH.into())];
    if let Some(h) = std::env::var_os("HOSTNAME") {
        env.push((b"HOSTNAME".to_vec(), h.as_bytes().to_vec()));
    }
    let mut home_removed = false;
    for entry in spec_env {
        match entry.iter().position(|b| *b == b'=') {
            Some(eq) => {
                let (k, v) = (&entry[..eq], &entry[eq + 1..]);
                match env.iter_mut().find(|(key, _)| key == k) {
                    Some(slot) => slot.1 = v.to_vec(),
                    None => env.push((k.to_vec(), v.to_vec())),
                }
            }
            None => {
                env.retain(|(key, _)| key != entry);
                home_removed |= entry == b"HOME";
            }
        }
    }
    if !home_removed && !env.iter().any(|(k, _)| k == b"HOME") {
        if let Some(h) = std::env::var_os("HOME") {
            env.push((b"HOME".to_vec(), h.as_bytes().to_vec()));
        }
    }
    env
}

/// Resolve argv[0] the way runc does: a name without '/' is searched in the job's PATH.
fn resolve(program: &[u8], env: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let name = String::from_utf8_lossy(program);
    if program.contains(&b'/') {
        return Ok(program.to_vec());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == b"PATH")
        .map(|(_, v)| v.as_slice())
        .unwrap_or(b"");
    if !path.is_empty() {
        for dir in path.split(|b| *b == b':') {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut candidate = dir.to_vec();
            candidate.push(b'/');
            candidate.extend_from_slice(program);
            if let Ok(meta) = std::fs::metadata(OsStr::from_bytes(&candidate)) {
                use std::os::unix::fs::PermissionsExt;
                if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
            }
        }
    }
    Err(format!("exec: \"{name}\": executable file not found in $PATH"))
}

fn run(spec: JobSpec, out: &mut FrameWriter) -> ExitStatus {
    let env = job_env(&spec.env);
    let program = match resolve(&spec.argv[0], &env) {
        Ok(p) => p,
        Err(msg) => return start_failed(out, &msg, 127),
    };
    let mut cmd = Command::new(OsStr::from_bytes(&program));
    cmd.arg0(OsStr::from_bytes(&spec.argv[0]));
    cmd.args(spec.argv[1..].iter().map(|a| OsStr::from_bytes(a)));
    // Command's own env API sorts the variables; `docker run` keeps their order. So
    // the gate rewrites its own environment in order (it is single-threaded here)
    // and the child inherits it as it is.
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    for (k, v) in &env {
        std::env::set_var(OsStr::from_bytes(k), OsStr::from_bytes(v));
    }
    if !spec.cwd.is_empty() {
        cmd.current_dir(OsStr::from_bytes(&spec.cwd));
    }
    cmd.process_group(0);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let msg = format!("exec: \"{}\": {e}", String::from_utf8_lossy(&spec.argv[0]));
            return start_failed(out, &msg, code);
        }
    };
    let pid = child.id() as i32;
    JOB_PGID.store(pid, Ordering::SeqCst);
    STATE.store(RUNNING, Ordering::SeqCst);
    let pending = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
    if pending != 0 {
        unsafe { sys::kill(-pid, pending) };
    }
    if out.frame(FRAME_STARTED, &pid.to_be_bytes()).is_err() {
        host_gone(pid);
    }

    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), spec.stdin) {
        // A job that never reads its stdin must not block the gate: write from a thread.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (o, e),
        _ => die(EXIT_IO, "the job's output pipes were not created"),
    };

    // The reaper: waits for every child (as init must) and tells the pump when the
    // job itself has ended, through a pipe the pump polls alongside the output.
    let (mut wake_r, wake_w) = match io::pipe() {
        Ok(p) => p,
        Err(e) => die(EXIT_IO, &format!("cannot create a pipe: {e}")),
    };
    let status_cell = Arc::new(AtomicI32::new(-1));
    let cell = status_cell.clone();
    std::thread::spawn(move || reap(pid, cell, wake_w));

    pump(
        out,
        pid,
        stdout.as_raw_fd(),
        stderr.as_raw_fd(),
        wake_r.as_raw_fd(),
    );
    // The pump returns once the job has ended (or it was killed because the host
    // went away); the reaper has stored its status before waking the pump.
    let mut byte = [0u8; 1];
    let _ = wake_r.read(&mut byte);
    decode_wait_status(status_cell.load(Ordering::SeqCst))
}

fn start_failed(out: &mut FrameWriter, msg: &str, code: i32) -> ExitStatus {
    let line = format!("warmpool-gate: {msg}\n");
    let _ = out.frame(FRAME_STDERR, line.as_bytes());
    let _ = out.frame(FRAME_START_FAILED, msg.as_bytes());
    ExitStatus::Code(code)
}

/// The host is gone (stdin closed, or stdout broken): nobody will read the job's
/// output or exit, and nobody else will stop it. End it now.
fn host_gone(pgid: i32) {
    let _ = writeln!(
        io::stderr(),
        "warmpool-gate: the host went away during the job; killing it"
    );
    unsafe { sys::kill(-pgid, sys::SIGKILL) };
}

fn reap(job: i32, status_cell: Arc<AtomicI32>, mut wake: io::PipeWriter) {
    loop {
        let mut status = 0i32;
        let pid = unsafe { sys::waitpid(-1, &mut status, 0) };
        if pid == job {
            status_cell.store(status, Ordering::SeqCst);
            STATE.store(ENDED, Ordering::SeqCst);
            let _ = wake.write_all(&[1]);
        } else if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(sys::EINTR) {
            // No children left: wait for new orphans without spinning.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn decode_wait_status(status: i32) -> ExitStatus {
    let sig = status & 0x7f;
    if sig == 0 {
        ExitStatus::Code((status >> 8) & 0xff)
    } else {
        ExitStatus::Signal(sig)
    }
}

/// Copy the job's output into frames until the job has ended and its pipes are
/// drained. Backpressure is natural: while the host does not read, our write blocks
/// and so does the job. Memory stays at one 64 KiB buffer. Stdin is watched too:
/// EOF there while the job runs means the host is gone.
fn pump(out: &mut FrameWriter, pgid: i32, stdout: RawFd, stderr: RawFd, wake: RawFd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut fds = [
        sys::PollFd { fd: stdout, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: stderr, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: wake, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: 0, events: sys::POLLIN, revents: 0 },
    ];
    let mut job_ended = false;
    let mut drain_rounds = 0u32;
    let mut output_broken = false;
    loop {
        let open = fds[0].fd >= 0 || fds[1].fd >= 0;
        if !open && job_ended {
            return;
        }
        if job_ended {
            // Bounded: a background process flooding inherited pipes cannot hold us.
            drain_rounds += 1;
            if drain_rounds > 256 {
                return;
            }
        }
        // Once the job has ended, take only what is already in the pipes: a background
        // process that inherited them must not keep a finished job alive.
        let timeout = if job_ended { 0 } else { -1 };
        let n = unsafe { sys::poll(fds.as_mut_ptr(), fds.len() as u64, timeout) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(sys::EINTR) {
                continue;
            }
            die(EXIT_IO, "poll failed");
        }
        if n == 0 && job_ended {
            return;
        }
        for (i, kind) in [(0usize, FRAME_STDOUT), (1usize, FRAME_STDERR)] {
            if fds[i].fd < 0
                || fds[i].revents & (sys::POLLIN | sys::POLLHUP | sys::POLLERR) == 0
            {
                continue;
            }
            let r = unsafe { sys::read(fds[i].fd, buf.as_mut_ptr(), buf.len()) };
            if r == 0 {
                fds[i].fd = -1;
            } else if r > 0 {
                if !output_broken && out.frame(kind, &buf[..r as usize]).is_err() {
                    // The host is gone; keep draining so the job is not blocked on a
                    // full pipe while it is being killed.
                    output_broken = true;
                    host_gone(pgid);
                }
            } else if io::Error::last_os_error().raw_os_error() != Some(sys::EINTR) {
                fds[i].fd = -1;
            }
        }
        if fds[2].fd >= 0 && fds[2].revents & (sys::POLLIN | sys::POLLHUP) != 0 {
            job_ended = true;
            fds[2].fd = -1;
        }
        if fds[3].fd >= 0 && fds[3].revents & (sys::POLLIN | sys::POLLHUP | sys::POLLERR) != 0 {
            let mut scratch = [0u8; 512];
            let r = unsafe { sys::read(0, scratch.as_mut_ptr(), scratch.len()) };
            if r <= 0 {
                fds[3].fd = -1;
                if !job_ended {
                    host_gone(pgid);
                }
            }
        }
    }
}
