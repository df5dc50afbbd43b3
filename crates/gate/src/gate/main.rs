//! warmpool-gate: the entrypoint of every warmpool container.
//!
//! Std only, built by `crates/gate/build.rs` with `rustc -C target-feature=+crt-static`
//! into a static binary that runs in any Linux image of its architecture, `FROM scratch`
//! included. It says READY, waits for one job spec on stdin, runs the job as its child
//! in a process group of its own, acts as init (reaps every zombie, forwards signals to
//! the job's group), frames the job's stdout and stderr onto its own stdout, reports the
//! job's exit as the last frame, waits for the host to acknowledge by closing stdin,
//! and exits with the job's code (as tini does). It never runs a second job.
//! It also reports what only it can see: each signal it passes on (a `SIGNAL` frame,
//! so the host can tell signals it sent from those someone else sent) and whether
//! the kernel's OOM killer struck during the job (an `OOM` frame, from the cgroup's
//! counter read before READY and after the job).

#[allow(dead_code)]
#[path = "../protocol.rs"]
mod protocol;

#[allow(dead_code)]
#[path = "../cgroup.rs"]
mod cgroup;

use protocol::{
    exit_payload, frame_header, ExitStatus, JobSpec, FRAME_EXIT, FRAME_OOM, FRAME_READY,
    FRAME_SIGNAL, FRAME_STARTED, FRAME_START_FAILED, FRAME_STDERR, FRAME_STDOUT,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
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
    pub const F_GETFL: i32 = 3;
    pub const F_SETFL: i32 = 4;
    pub const O_NONBLOCK: i32 = 0o4000;
    pub const PR_SET_CHILD_SUBREAPER: i32 = 36;
    extern "C" {
        pub fn signal(signum: i32, handler: usize) -> usize;
        pub fn kill(pid: i32, sig: i32) -> i32;
        pub fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        pub fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
        pub fn read(fd: i32, buf: *mut u8, count: usize) -> isize;
        pub fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        pub fn fcntl(fd: i32, cmd: i32, ...) -> i32;
        pub fn __errno_location() -> *mut i32;
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
/// Write end of the pipe that carries each passed-on signal (one byte, its number)
/// from the handler to the pump, which reports it in a `SIGNAL` frame.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: i32) {
    // write(2) and kill(2) may change errno under the code this interrupts.
    let saved_errno = unsafe { *sys::__errno_location() };
    match STATE.load(Ordering::SeqCst) {
        // Parked with no job: a stop request means stop.
        PARKED => unsafe { sys::_exit(128 + sig) },
        STARTING => {
            PENDING_SIGNAL.store(sig, Ordering::SeqCst);
            note_signal(sig);
        }
        RUNNING => {
            // kill(2) is async-signal-safe; a negative pid addresses the whole group.
            let pgid = JOB_PGID.load(Ordering::SeqCst);
            if pgid > 0 {
                unsafe { sys::kill(-pgid, sig) };
            }
            note_signal(sig);
        }
        // The job has ended and its exit is being reported: nothing left to signal.
        _ => {}
    }
    unsafe { *sys::__errno_location() = saved_errno };
}

/// Tell the pump (async-signal-safe: one non-blocking write; a full pipe drops
/// the report, never blocks the handler).
fn note_signal(sig: i32) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = sig as u8;
        unsafe { sys::write(fd, &byte, 1) };
    }
}

fn main() {
    // The handler's way to the pump exists before the handler does.
    let signal_reports = match signal_pipe() {
        Ok(r) => r,
        Err(e) => die(EXIT_IO, &format!("cannot create a pipe: {e}")),
    };
    // As PID 1 a signal without a handler is ignored; install ours before anything.
    for sig in FORWARDED {
        unsafe { sys::signal(sig, on_signal as *const () as usize) };
    }
    // As PID 1 every orphan comes to us anyway; as a subreaper they do too when the
    // gate is not PID 1 (under another init, or in tests on the host).
    unsafe { sys::prctl(sys::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut out = FrameWriter::stdout();
    // Read before READY, off the hand-over's path; nothing runs here until the job.
    let oom_kills_before = read_oom_kills();
    let version = concat!("warmpool-gate/", env!("CARGO_PKG_VERSION_GATE"));
    if out.frame(FRAME_READY, version.as_bytes()).is_err() {
        die(EXIT_IO, "cannot write to stdout: is the container attached?");
    }

    let spec = match JobSpec::read_from(&mut io::stdin().lock()) {
        Ok(spec) => spec,
        Err(e) => die(EXIT_BAD_SPEC, &format!("{e}; starting nothing")),
    };
    STATE.store(STARTING, Ordering::SeqCst);
    let status = run(spec, &mut out, signal_reports.as_raw_fd());
    STATE.store(ENDED, Ordering::SeqCst);
    // What the host cannot see for itself, before the exit it waits for.
    report_signals(&mut out, signal_reports.as_raw_fd(), true);
    let oom_kills = cgroup::oom_kills_between(oom_kills_before, read_oom_kills());
    if let Some(kills) = oom_kills.filter(|k| *k > 0) {
        let kills = u32::try_from(kills).unwrap_or(u32::MAX);
        let _ = out.frame(FRAME_OOM, &kills.to_be_bytes());
    }
    if out.frame(FRAME_EXIT, &exit_payload(status)).is_ok() {
        // Let the host read everything before the container (and its stdout) ends.
        wait_for_stdin_eof(ACK_TIMEOUT_MS);
    }
    // Exiting as PID 1 ends the container, and with it anything the job left behind.
    std::process::exit(status.as_shell_code());
}

/// The pipe from the signal handler to the pump: both ends non-blocking (the
/// handler must never block; the pump reads what is there and goes on). Its read
/// end is returned; the write end stays open for the gate's life, in SIGNAL_PIPE.
fn signal_pipe() -> io::Result<io::PipeReader> {
    let (r, w) = io::pipe()?;
    for fd in [r.as_raw_fd(), w.as_raw_fd()] {
        let flags = unsafe { sys::fcntl(fd, sys::F_GETFL) };
        if flags < 0 || unsafe { sys::fcntl(fd, sys::F_SETFL, flags | sys::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    SIGNAL_PIPE.store(w.into_raw_fd(), Ordering::SeqCst);
    Ok(r)
}

/// A `SIGNAL` frame for each signal the handler passed on since the last call
/// (only taken off the pipe when `write` is false: the host is gone). False when
/// writing a frame failed.
fn report_signals(out: &mut FrameWriter, fd: RawFd, mut write: bool) -> bool {
    let mut buf = [0u8; 64];
    let mut ok = true;
    loop {
        let r = unsafe { sys::read(fd, buf.as_mut_ptr(), buf.len()) };
        if r <= 0 {
            // Empty (EAGAIN), interrupted or broken: what was there is taken.
            return ok;
        }
        for sig in &buf[..r as usize] {
            if write && out.frame(FRAME_SIGNAL, &i32::from(*sig).to_be_bytes()).is_err() {
                write = false;
                ok = false;
            }
        }
    }
}

/// The cgroup's OOM-kill count, if this container's cgroup shows one.
fn read_oom_kills() -> Option<u64> {
    cgroup::OOM_COUNTER_FILES
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| cgroup::parse_oom_kill(&text))
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
    // Slots in order (a removed one left empty) and where each key is: linear in
    // the spec's size, however many entries it has.
    let mut slots: Slots = Vec::with_capacity(spec_env.len() + 3);
    let mut at: HashMap<Vec<u8>, usize> = HashMap::with_capacity(spec_env.len() + 3);
    type Slots = Vec<Option<(Vec<u8>, Vec<u8>)>>;
    fn set(slots: &mut Slots, at: &mut HashMap<Vec<u8>, usize>, k: &[u8], v: &[u8]) {
        match at.get(k) {
            Some(&i) => slots[i] = Some((k.to_vec(), v.to_vec())),
            None => {
                at.insert(k.to_vec(), slots.len());
                slots.push(Some((k.to_vec(), v.to_vec())));
            }
        }
    }
    set(&mut slots, &mut at, b"PATH", DEFAULT_PATH.as_bytes());
    if let Some(h) = std::env::var_os("HOSTNAME") {
        set(&mut slots, &mut at, b"HOSTNAME", h.as_bytes());
    }
    let mut home_removed = false;
    for entry in spec_env {
        match entry.iter().position(|b| *b == b'=') {
            Some(eq) => set(&mut slots, &mut at, &entry[..eq], &entry[eq + 1..]),
            None => {
                if let Some(i) = at.remove(entry.as_slice()) {
                    slots[i] = None;
                }
                home_removed |= entry == b"HOME";
            }
        }
    }
    if !home_removed && !at.contains_key(b"HOME".as_slice()) {
        if let Some(h) = std::env::var_os("HOME") {
            set(&mut slots, &mut at, b"HOME", h.as_bytes());
        }
    }
    slots.into_iter().flatten().collect()
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

fn run(spec: JobSpec, out: &mut FrameWriter, signal_reports: RawFd) -> ExitStatus {
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
        signal_reports,
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
/// EOF there while the job runs means the host is gone. Signals passed on to the
/// job are reported as they come, between output frames.
fn pump(
    out: &mut FrameWriter,
    pgid: i32,
    stdout: RawFd,
    stderr: RawFd,
    wake: RawFd,
    signal_reports: RawFd,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut fds = [
        sys::PollFd { fd: stdout, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: stderr, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: wake, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: 0, events: sys::POLLIN, revents: 0 },
        sys::PollFd { fd: signal_reports, events: sys::POLLIN, revents: 0 },
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
        if fds[4].revents & sys::POLLIN != 0
            && !report_signals(out, signal_reports, !output_broken)
        {
            output_broken = true;
            host_gone(pgid);
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
