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
//!
//! With the argument `--reuse` it serves one job after another instead (protocol
//! version 3, see protocol.rs): after each job's `EXIT` it resets the container
//! and proves the reset (`RESET` frame), then says READY again; a reset it cannot
//! do or prove ends the gate, and so the container. What the reset covers: no
//! process but the gate survives (it must be PID 1), every writable tmpfs and
//! mqueue mount holds exactly what it held before the first READY (recorded
//! then; a writable mount of any other kind makes the container unresettable),
//! no SysV IPC object is left, the gate's working directory is where it began,
//! and the gate keeps nothing of the job: the job's environment is built apart
//! and handed to execve(2) in the child only, and every buffer that held the
//! spec, the environment or the job's output is zeroed. In reuse mode the gate
//! is not dumpable, so a later job cannot read its memory through /proc/1.
//! The pure part of the reset (mountinfo, SysV lists, tree differences) is in
//! reset.rs, tested on the host.

#[allow(dead_code)]
#[path = "../protocol.rs"]
mod protocol;

#[allow(dead_code)]
#[path = "../cgroup.rs"]
mod cgroup;

#[allow(dead_code)]
#[path = "../reset.rs"]
mod reset;

use protocol::{
    exit_payload, frame_header, reset_payload, wipe, wipe_vec, ExitStatus, JobSpec, SpecError,
    REUSE_ARG,
    FRAME_EXIT, FRAME_OOM, FRAME_READY, FRAME_RESET, FRAME_SIGNAL, FRAME_STARTED,
    FRAME_START_FAILED, FRAME_STDERR, FRAME_STDOUT,
};
use reset::{Entry, Fix, Kind, MountClass, Tree};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    pub const PR_SET_DUMPABLE: i32 = 4;
    pub const EPERM: i32 = 1;
    pub const ESRCH: i32 = 3;
    pub const EBADF: i32 = 9;
    pub const ENOTSUP: i32 = 95;
    pub const IPC_RMID: i32 = 0;
    pub const P_ALL: i32 = 0;
    pub const WEXITED: i32 = 4;
    pub const WNOHANG: i32 = 1;
    pub const WNOWAIT: i32 = 0x0100_0000;
    /// siginfo_t (128 bytes); for SIGCHLD the pid is the first field of the
    /// union, at byte 16 on the 64-bit targets.
    #[repr(C, align(8))]
    pub struct SigInfo {
        pub head: [i32; 4],
        pub pid: i32,
        pub rest: [u8; 108],
    }
    extern "C" {
        pub fn signal(signum: i32, handler: usize) -> usize;
        pub fn kill(pid: i32, sig: i32) -> i32;
        pub fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        pub fn waitid(idtype: i32, id: u32, info: *mut SigInfo, options: i32) -> i32;
        pub fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
        pub fn read(fd: i32, buf: *mut u8, count: usize) -> isize;
        pub fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        pub fn fcntl(fd: i32, cmd: i32, ...) -> i32;
        pub fn __errno_location() -> *mut i32;
        pub fn _exit(code: i32) -> !;
        pub fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
        pub fn execve(path: *const u8, argv: *const *const u8, envp: *const *const u8) -> i32;
        pub fn shmctl(id: i32, cmd: i32, buf: *mut u8) -> i32;
        pub fn msgctl(id: i32, cmd: i32, buf: *mut u8) -> i32;
        pub fn semctl(id: i32, num: i32, cmd: i32, ...) -> i32;
        pub fn llistxattr(path: *const u8, list: *mut u8, size: usize) -> isize;
        pub fn lgetxattr(path: *const u8, name: *const u8, value: *mut u8, size: usize) -> isize;
        pub fn lsetxattr(
            path: *const u8,
            name: *const u8,
            value: *const u8,
            size: usize,
            flags: i32,
        ) -> i32;
        pub fn lremovexattr(path: *const u8, name: *const u8) -> i32;
    }
}

/// Docker's default PATH, which `docker run` puts first in every container's env.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit codes of the gate itself, when no job ran.
const EXIT_BAD_SPEC: i32 = 2;
const EXIT_IO: i32 = 3;
/// How long to wait, after the exit frame, for the host to close stdin.
const ACK_TIMEOUT_MS: i32 = 60_000;
/// How long the reset waits for the last job's processes to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most entries the reset records or walks in one mount.
const MAX_TREE_ENTRIES: usize = 1_000_000;
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
    let reuse = std::env::args_os().nth(1).is_some_and(|a| a == REUSE_ARG);
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
    if reuse {
        // A later job may run as the same uid: it must not read what the gate
        // held of an earlier one through /proc/1/mem, /proc/1/environ or ptrace.
        unsafe { sys::prctl(sys::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    }
    let mut gate = Gate {
        out: FrameWriter::stdout(),
        reaper: Reaper::start(),
        signal_reports: signal_reports.as_raw_fd(),
    };
    if reuse {
        serve(gate)
    }
    // Read before READY, off the hand-over's path; nothing runs here until the job.
    let oom_kills_before = read_oom_kills();
    if gate.out.frame(FRAME_READY, GATE_VERSION.as_bytes()).is_err() {
        die(EXIT_IO, "cannot write to stdout: is the container attached?");
    }

    let spec = match JobSpec::read_from(&mut Fd0::default()) {
        Ok(spec) => spec,
        Err(e) => die(EXIT_BAD_SPEC, &format!("{e}; starting nothing")),
    };
    let job = gate.job(spec, oom_kills_before);
    if job.exit_sent {
        // Let the host read everything before the container (and its stdout) ends.
        wait_for_stdin_eof(ACK_TIMEOUT_MS);
    }
    // Exiting as PID 1 ends the container, and with it anything the job left behind.
    std::process::exit(job.status.as_shell_code());
}

const GATE_VERSION: &str = concat!("warmpool-gate/", env!("CARGO_PKG_VERSION_GATE"));

/// Reuse mode: READY, a job, its reset, READY again, ... until the host closes
/// stdin while the gate is parked, or a reset fails.
fn serve(mut gate: Gate) -> ! {
    // Recorded before the first READY: what the reset brings the container back to.
    let mut resetter = Resetter::record();
    loop {
        STATE.store(PARKED, Ordering::SeqCst);
        let oom_kills_before = read_oom_kills();
        if gate.out.frame(FRAME_READY, GATE_VERSION.as_bytes()).is_err() {
            die(EXIT_IO, "cannot write to stdout: is the container attached?");
        }
        let mut stdin = Fd0::default();
        let spec = match JobSpec::read_from(&mut stdin) {
            Ok(spec) => spec,
            // The host is done with this container: nothing to say.
            Err(SpecError::Eof { .. }) if stdin.read == 0 => std::process::exit(0),
            Err(e) => die(EXIT_BAD_SPEC, &format!("{e}; starting nothing")),
        };
        let job = gate.job(spec, oom_kills_before);
        if job.host_gone || !job.exit_sent {
            // Nobody will send another job; the engine removes the container.
            std::process::exit(job.status.as_shell_code());
        }
        // A stop signal from here on ends the gate, as when parked.
        STATE.store(PARKED, Ordering::SeqCst);
        let result = resetter.reset(job.stdin_writer);
        gate.out.wipe();
        match result {
            Ok(report) => {
                if gate.out.frame(FRAME_RESET, &reset_payload(true, &report)).is_err() {
                    std::process::exit(0);
                }
            }
            Err(why) => {
                let _ = writeln!(io::stderr(), "warmpool-gate: the reset failed: {why}");
                let _ = gate.out.frame(FRAME_RESET, &reset_payload(false, &why));
                std::process::exit(0);
            }
        }
    }
}

/// What lives as long as the gate: its output, its one reaper, and the pipe from
/// the signal handler.
struct Gate {
    out: FrameWriter,
    reaper: Reaper,
    signal_reports: RawFd,
}

/// How a job went, for what comes after its `EXIT` frame.
struct JobEnd {
    status: ExitStatus,
    /// The `EXIT` frame was written.
    exit_sent: bool,
    /// Stdin closed or stdout broke during the job: the host is gone.
    host_gone: bool,
    /// The thread writing the job's stdin, if there was any (it ends once the
    /// job's processes are gone, having zeroed its copy).
    stdin_writer: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    /// Run one job and report it, up to and including its `EXIT` frame; the spec
    /// and every buffer that held anything of the job are zeroed before this returns.
    fn job(&mut self, mut spec: JobSpec, oom_kills_before: Option<u64>) -> JobEnd {
        PENDING_SIGNAL.store(0, Ordering::SeqCst);
        JOB_PGID.store(0, Ordering::SeqCst);
        STATE.store(STARTING, Ordering::SeqCst);
        let mut end = run(&mut spec, self);
        STATE.store(ENDED, Ordering::SeqCst);
        // What the host cannot see for itself, before the exit it waits for.
        report_signals(&mut self.out, self.signal_reports, true);
        let oom_kills = cgroup::oom_kills_between(oom_kills_before, read_oom_kills());
        if let Some(kills) = oom_kills.filter(|k| *k > 0) {
            let kills = u32::try_from(kills).unwrap_or(u32::MAX);
            let _ = self.out.frame(FRAME_OOM, &kills.to_be_bytes());
        }
        end.exit_sent = self
            .out
            .frame(FRAME_EXIT, &exit_payload(end.status))
            .is_ok();
        // After the exit is out, so the host does not wait for this.
        wipe_spec(&mut spec);
        self.out.wipe();
        end
    }
}

fn wipe_spec(spec: &mut JobSpec) {
    for item in spec.argv.iter_mut().chain(spec.env.iter_mut()) {
        wipe_vec(item);
    }
    wipe_vec(&mut spec.cwd);
    if let Some(stdin) = spec.stdin.as_mut() {
        wipe_vec(stdin);
    }
}

/// Unbuffered reads of fd 0: the spec is read with nothing read ahead (the pump
/// and the next spec read the same fd) and no copy left in a buffer of std's.
#[derive(Default)]
struct Fd0 {
    /// Bytes read so far: none at EOF means the host closed stdin between jobs.
    read: u64,
}

impl Read for Fd0 {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = unsafe { sys::read(0, buf.as_mut_ptr(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // No stdin at all reads as an empty one, as std's Stdin has it.
            if e.raw_os_error() == Some(sys::EBADF) {
                return Ok(0);
            }
            return Err(e);
        }
        self.read += r as u64;
        Ok(r as usize)
    }
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
    /// Zero what the last frames left in the buffer (the job's output).
    fn wipe(&mut self) {
        wipe_vec(&mut self.buf);
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
            Some(&i) => {
                wipe_slot(&mut slots[i]);
                slots[i] = Some((k.to_vec(), v.to_vec()));
            }
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
                    wipe_slot(&mut slots[i]);
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

/// Values may be secrets: a slot's bytes are zeroed before it is dropped.
fn wipe_slot(slot: &mut Option<(Vec<u8>, Vec<u8>)>) {
    if let Some((k, v)) = slot.as_mut() {
        wipe_vec(k);
        wipe_vec(v);
    }
}

/// NUL-terminated strings and the null-terminated array of pointers to them
/// that execve(2) takes. The strings are zeroed on drop.
struct CStrings {
    strings: Vec<Vec<u8>>,
    ptrs: Vec<*const u8>,
}

impl CStrings {
    fn new(items: impl Iterator<Item = Vec<u8>>) -> CStrings {
        let strings: Vec<Vec<u8>> = items.collect();
        let mut ptrs: Vec<*const u8> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStrings { strings, ptrs }
    }
}

impl Drop for CStrings {
    fn drop(&mut self) {
        for s in &mut self.strings {
            wipe_vec(s);
        }
    }
}

/// `parts` concatenated and NUL-terminated, in one allocation of exactly that
/// size (growing would leave a copy behind in freed memory).
fn c_bytes(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
    for p in parts {
        v.extend_from_slice(p);
    }
    v.push(0);
    v
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

fn run(spec: &mut JobSpec, gate: &mut Gate) -> JobEnd {
    let out = &mut gate.out;
    let ended = |status| JobEnd {
        status,
        exit_sent: false,
        host_gone: false,
        stdin_writer: None,
    };
    let mut env = job_env(&spec.env);
    let program = resolve(&spec.argv[0], &env);
    // The job's environment exists only here, in the order `docker run` gives it,
    // and reaches the job through execve(2) in the child: the gate's own
    // environment never holds the job's values (Command's env API would sort
    // them; rewriting the gate's own environment would keep them, and would hand
    // a later job an earlier job's HOSTNAME or HOME).
    let envp = CStrings::new(env.iter().map(|(k, v)| c_bytes(&[k, b"=", v])));
    for slot in &mut env {
        wipe_vec(&mut slot.0);
        wipe_vec(&mut slot.1);
    }
    drop(env);
    let program = match program {
        Ok(p) => p,
        Err(msg) => return ended(start_failed(out, &msg, 127)),
    };
    let argv = CStrings::new(spec.argv.iter().map(|a| c_bytes(&[a])));
    let path = c_bytes(&[&program]);
    let mut cmd = Command::new(OsStr::from_bytes(&program));
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
    // In the child, after std has set up its stdio, working directory, process
    // group and signal state: execve with the job's argv and envp (addresses
    // valid in the forked copy of this memory; nothing is allocated there). It
    // returns only on failure, and std reports that errno to spawn() as it would
    // its own exec's. Unlike execvp it never retries an ENOEXEC file with
    // /bin/sh: a file that is not an executable fails as runc's exec fails.
    let exec = ExecAddrs {
        path: path.as_ptr() as usize,
        argv: argv.ptrs.as_ptr() as usize,
        envp: envp.ptrs.as_ptr() as usize,
    };
    unsafe {
        cmd.pre_exec(move || {
            sys::execve(
                exec.path as *const u8,
                exec.argv as *const *const u8,
                exec.envp as *const *const u8,
            );
            Err(io::Error::last_os_error())
        })
    };

    // The reaper matches the job's pid under this lock, so it cannot miss a job
    // that ends before its pid is stored.
    let mut reaped = gate.reaper.lock();
    let spawned = cmd.spawn();
    drop(cmd);
    drop(envp);
    drop(argv);
    let mut path = path;
    wipe_vec(&mut path);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            drop(reaped);
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let msg = format!("exec: \"{}\": {e}", String::from_utf8_lossy(&spec.argv[0]));
            return ended(start_failed(out, &msg, code));
        }
    };
    let pid = child.id() as i32;
    reaped.job = pid;
    reaped.status = None;
    reaped.spawns += 1;
    drop(reaped);
    gate.reaper.spawned();
    JOB_PGID.store(pid, Ordering::SeqCst);
    STATE.store(RUNNING, Ordering::SeqCst);
    let pending = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
    if pending != 0 {
        unsafe { sys::kill(-pid, pending) };
    }
    let mut host_gone = false;
    if out.frame(FRAME_STARTED, &pid.to_be_bytes()).is_err() {
        host_gone = true;
        kill_job(pid);
    }

    let mut stdin_writer = None;
    if let (Some(mut stdin), Some(mut bytes)) = (child.stdin.take(), spec.stdin.take()) {
        // A job that never reads its stdin must not block the gate: write from a
        // thread, which zeroes its copy once written (or once the job is gone).
        stdin_writer = Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
            drop(stdin);
            wipe_vec(&mut bytes);
        }));
    }
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (o, e),
        _ => die(EXIT_IO, "the job's output pipes were not created"),
    };

    host_gone |= pump(
        out,
        pid,
        stdout.as_raw_fd(),
        stderr.as_raw_fd(),
        gate.reaper.wake.as_raw_fd(),
        gate.signal_reports,
    );
    // The pump returns once the job has ended (or it was killed because the host
    // went away); the reaper has stored its status before waking the pump.
    let mut byte = [0u8; 1];
    let _ = gate.reaper.wake.read(&mut byte);
    let status = gate.reaper.lock().status.take().unwrap_or(0);
    JobEnd {
        status: decode_wait_status(status),
        exit_sent: false,
        host_gone,
        stdin_writer,
    }
}

/// Where the child's execve finds its arguments (plain addresses, so the closure
/// std runs in the child is Send and Sync).
#[derive(Clone, Copy)]
struct ExecAddrs {
    path: usize,
    argv: usize,
    envp: usize,
}

fn start_failed(out: &mut FrameWriter, msg: &str, code: i32) -> ExitStatus {
    let line = format!("warmpool-gate: {msg}\n");
    let _ = out.frame(FRAME_STDERR, line.as_bytes());
    let _ = out.frame(FRAME_START_FAILED, msg.as_bytes());
    ExitStatus::Code(code)
}

/// The host is gone (stdin closed, or stdout broken): nobody will read the job's
/// output or exit, and nobody else will stop it. End it now.
fn kill_job(pgid: i32) {
    let _ = writeln!(
        io::stderr(),
        "warmpool-gate: the host went away during the job; killing it"
    );
    unsafe { sys::kill(-pgid, sys::SIGKILL) };
}

/// The one reaper, for the gate's life: it waits for every child (as init must)
/// and, when the current job's process ends, stores its status and wakes the
/// pump through a pipe the pump polls alongside the output.
struct Reaper {
    shared: Arc<(Mutex<Reaped>, Condvar)>,
    wake: io::PipeReader,
}

/// The current job as the reaper sees it.
#[derive(Default)]
struct Reaped {
    /// The job's pid while it runs (0: no job).
    job: i32,
    /// Its wait status, once it has ended.
    status: Option<i32>,
    /// Jobs spawned so far: a reaper that found no child waits for the next
    /// (told at once, not at its next look).
    spawns: u64,
}

impl Reaper {
    fn start() -> Reaper {
        let (wake, wake_w) = match io::pipe() {
            Ok(p) => p,
            Err(e) => die(EXIT_IO, &format!("cannot create a pipe: {e}")),
        };
        let shared = Arc::new((Mutex::new(Reaped::default()), Condvar::new()));
        let cell = shared.clone();
        std::thread::spawn(move || reap(cell, wake_w));
        Reaper { shared, wake }
    }
    fn lock(&self) -> MutexGuard<'_, Reaped> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// A job was spawned (and counted in `spawns`): wake a reaper waiting for one.
    fn spawned(&self) {
        self.shared.1.notify_one();
    }
}

fn reap(shared: Arc<(Mutex<Reaped>, Condvar)>, mut wake: io::PipeWriter) {
    let (cell, spawned) = &*shared;
    let lock = || cell.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let spawns = lock().spawns;
        // Learn which child has ended without reaping it yet, then reap it under
        // the lock: while the gate spawns a job it holds that lock, and std's spawn
        // reaps a child whose exec failed itself (and aborts if someone else did).
        let mut info = sys::SigInfo {
            head: [0; 4],
            pid: 0,
            rest: [0; 108],
        };
        let r = unsafe { sys::waitid(sys::P_ALL, 0, &mut info, sys::WEXITED | sys::WNOWAIT) };
        if r < 0 || info.pid <= 0 {
            if r == 0 || io::Error::last_os_error().raw_os_error() != Some(sys::EINTR) {
                // No children: wait for the next job (woken as it is spawned,
                // so its end is seen at once), or look again for orphans a
                // `docker exec` left, without spinning.
                let reaped = lock();
                if reaped.spawns == spawns {
                    let _ = spawned.wait_timeout(reaped, Duration::from_millis(50));
                }
            }
            continue;
        }
        let mut job = lock();
        let mut status = 0i32;
        let pid = unsafe { sys::waitpid(info.pid, &mut status, sys::WNOHANG) };
        if pid > 0 && pid == job.job {
            job.job = 0;
            job.status = Some(status);
            STATE.store(ENDED, Ordering::SeqCst);
            let _ = wake.write_all(&[1]);
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
/// job are reported as they come, between output frames. True when the host
/// went away during the job (stdin closed, or stdout broke).
fn pump(
    out: &mut FrameWriter,
    pgid: i32,
    stdout: RawFd,
    stderr: RawFd,
    wake: RawFd,
    signal_reports: RawFd,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut host_gone = false;
    pump_into(
        &mut buf,
        &mut host_gone,
        out,
        pgid,
        [stdout, stderr, wake, signal_reports],
    );
    // It held the job's output.
    wipe(&mut buf);
    host_gone
}

fn pump_into(
    buf: &mut [u8],
    host_gone: &mut bool,
    out: &mut FrameWriter,
    pgid: i32,
    [stdout, stderr, wake, signal_reports]: [RawFd; 4],
) {
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
                    *host_gone = true;
                    kill_job(pgid);
                }
            } else if io::Error::last_os_error().raw_os_error() != Some(sys::EINTR) {
                fds[i].fd = -1;
            }
        }
        if fds[4].revents & sys::POLLIN != 0
            && !report_signals(out, signal_reports, !output_broken)
        {
            output_broken = true;
            *host_gone = true;
            kill_job(pgid);
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
                    *host_gone = true;
                    kill_job(pgid);
                }
            }
        }
    }
}

/// The reset between jobs (reuse mode): what was recorded before the first READY
/// and how the container is brought back to it, each step checked.
struct Resetter {
    /// The gate's working directory at start.
    cwd: Option<PathBuf>,
    /// Each writable tmpfs/mqueue directory mount and its tree at start.
    trees: Vec<(PathBuf, Tree)>,
    /// Why the container cannot be reset at all (a writable mount of another
    /// kind, or the record could not be made); the first reset fails with it.
    refused: Vec<String>,
}

impl Resetter {
    /// Record what the reset restores. Only as PID 1: elsewhere the reset fails at
    /// its first step anyway, and the gate must not walk a host's /tmp and /dev.
    fn record() -> Resetter {
        let mut r = Resetter {
            cwd: std::env::current_dir().ok(),
            trees: Vec::new(),
            refused: Vec::new(),
        };
        if std::process::id() != 1 {
            return r;
        }
        let text = match std::fs::read("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => {
                r.refused
                    .push(format!("cannot read /proc/self/mountinfo: {e}"));
                return r;
            }
        };
        // SysV IPC and POSIX queues are the IPC namespace's: the reset removes
        // them all, so that namespace must be the container's own. The host's
        // is refused outright; one holding objects before any job ran is shared
        // (a fresh namespace has none).
        match std::fs::read_link("/proc/self/ns/ipc") {
            Ok(link) if reset::is_initial_ipc_ns(&link.to_string_lossy()) => {
                r.refused.push(
                    "the container shares the host's IPC namespace (--ipc host)".into(),
                );
            }
            Ok(_) => {}
            Err(e) => r
                .refused
                .push(format!("cannot read /proc/self/ns/ipc: {e}")),
        }
        for kind in ["shm", "msg", "sem"] {
            let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
            let ids = reset::parse_sysvipc_ids(&text);
            if !ids.is_empty() {
                r.refused.push(format!(
                    "SysV {kind} objects {ids:?} exist before the first job: the IPC \
                     namespace is shared (--ipc host or container:...)"
                ));
            }
        }
        // A mount point listed twice shows only its last mount.
        let mut mounts = reset::parse_mountinfo(&text);
        let mut seen = HashSet::new();
        mounts.reverse();
        mounts.retain(|m| seen.insert(m.mount_point.clone()));
        mounts.reverse();
        for m in mounts {
            let class = reset::classify(&m);
            if class == MountClass::Skip {
                continue;
            }
            let path = PathBuf::from(OsStr::from_bytes(&m.mount_point));
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    r.refused
                        .push(format!("cannot stat the mount {}: {e}", path.display()));
                    continue;
                }
            };
            let why = match (class, meta.is_dir()) {
                (MountClass::Tree, true) => match walk(&path) {
                    Ok(tree) => {
                        r.trees.push((path, tree));
                        continue;
                    }
                    Err(e) => format!("cannot record {} ({}): {e}", path.display(), m.fstype),
                },
                // A device bound over a masked path (/proc/kcore and friends) holds
                // no state of a job's.
                (MountClass::Tree, false) => continue,
                (_, false) if !meta.is_file() => continue,
                // A regular file bound in writable (a file volume; /etc/hosts and
                // friends when the root is writable too) keeps what a job writes.
                (_, false) => format!(
                    "{} is a read-write {} file mount, which the gate cannot reset",
                    path.display(),
                    m.fstype
                ),
                (_, true) if m.fstype.starts_with("cgroup") => format!(
                    "{} is a read-write {} mount (a writable cgroup), which the gate cannot reset",
                    path.display(),
                    m.fstype
                ),
                (_, true) => format!(
                    "{} is a read-write {} mount (a writable root filesystem, bind mount or \
                     volume), which the gate cannot reset",
                    path.display(),
                    m.fstype
                ),
            };
            r.refused.push(why);
        }
        r
    }

    /// Bring the container back to what was recorded, and check it; the report
    /// says what was done, the error why it could not be.
    fn reset(
        &mut self,
        stdin_writer: Option<std::thread::JoinHandle<()>>,
    ) -> Result<String, String> {
        let mut report = Vec::new();
        // 1. No process of the last job survives.
        if std::process::id() != 1 {
            return Err(
                "not PID 1: the gate cannot see or end every process of the last job".into(),
            );
        }
        if !self.refused.is_empty() {
            return Err(format!(
                "the container cannot be reset: {}",
                self.refused.join("; ")
            ));
        }
        let killed = kill_all()?;
        report.push(format!("processes: {killed} killed, none left"));
        if let Some(w) = stdin_writer {
            // Its pipe's reader is gone: it has ended or ends now, its copy zeroed.
            let _ = w.join();
        }
        // 2. Writable places: back to the record.
        for (root, snap) in &self.trees {
            report.push(restore_tree(root, snap)?);
        }
        // 3. SysV IPC.
        report.push(remove_sysvipc()?);
        // 4. The working directory.
        if let Some(cwd) = &self.cwd {
            if std::env::current_dir().ok().as_ref() != Some(cwd) {
                std::env::set_current_dir(cwd)
                    .map_err(|e| format!("cannot return to {}: {e}", cwd.display()))?;
                if std::env::current_dir().ok().as_ref() != Some(cwd) {
                    return Err(format!("the working directory is not {}", cwd.display()));
                }
            }
            report.push(format!("cwd: {}", cwd.display()));
        }
        // 5. The job's spec, environment, stdin and output were zeroed as the job
        // ended (Gate::job), the stdin writer's copy just above.
        report.push("job state zeroed".into());
        Ok(report.join("; "))
    }
}

/// The pids /proc lists, but 1.
fn other_pids() -> Result<Vec<i32>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    let mut pids = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| format!("cannot list /proc: {e}"))?;
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            if pid != 1 {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

/// Step 1: SIGKILL to every process but the gate (kill(-1) from PID 1 reaches all
/// of the namespace) until /proc lists none; the reaper reaps them. Fails on a
/// process the gate may not signal, or one still there after KILL_TIMEOUT.
fn kill_all() -> Result<usize, String> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    let mut seen = HashSet::new();
    loop {
        let pids = other_pids()?;
        if pids.is_empty() {
            return Ok(seen.len());
        }
        for &pid in &pids {
            seen.insert(pid);
            if unsafe { sys::kill(pid, 0) } != 0
                && io::Error::last_os_error().raw_os_error() == Some(sys::EPERM)
            {
                let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("Uid:"))
                            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
                    })
                    .unwrap_or_else(|| "?".into());
                return Err(format!(
                    "process {pid} (uid {uid}) is left and the gate may not signal it"
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "processes still there {} s after SIGKILL: {pids:?}",
                KILL_TIMEOUT.as_secs()
            ));
        }
        if unsafe { sys::kill(-1, sys::SIGKILL) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(sys::ESRCH) {
                return Err(format!("kill(-1, SIGKILL) failed: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A mount's tree as it is now: every entry, not following symlinks and not
/// entering other mounts (recorded as `Kind::Mount`).
fn walk(root: &Path) -> io::Result<Tree> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(root)?;
    let dev = meta.dev();
    let mut tree = Tree::new();
    let mut todo = vec![(root.to_path_buf(), Vec::new())];
    tree.insert(Vec::new(), entry_of(root, &meta)?);
    while let Some((dir, rel)) = todo.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if let Some(e) = tree.get_mut(&rel) {
                    e.unreadable = true;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        for item in listing {
            let item = item?;
            let path = item.path();
            let name = item.file_name();
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.dev() != dev {
                tree.insert(child, Entry::mount());
                continue;
            }
            let e = entry_of(&path, &meta)?;
            if e.kind == Kind::Dir {
                todo.push((path, child.clone()));
            }
            tree.insert(child, e);
            if tree.len() > MAX_TREE_ENTRIES {
                return Err(io::Error::other(format!(
                    "more than {MAX_TREE_ENTRIES} entries"
                )));
            }
        }
    }
    Ok(tree)
}

fn entry_of(path: &Path, m: &std::fs::Metadata) -> io::Result<Entry> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let t = m.file_type();
    let kind = if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else if t.is_symlink() {
        Kind::Symlink(std::fs::read_link(path)?.into_os_string().into_vec())
    } else if t.is_char_device() {
        Kind::CharDev
    } else if t.is_block_device() {
        Kind::BlockDev
    } else if t.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    Ok(Entry {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        unreadable: false,
        xattrs: read_xattrs(path)?,
    })
}

/// The extended attributes of `path` (not following a symlink) that the gate can
/// see, sorted by name; none where the filesystem has none (mqueue).
fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = c_bytes(&[path.as_os_str().as_bytes()]);
    // Sizes can change between the calls only if something else writes them:
    // no job process is left while the gate reads (or it is the record, before
    // the first job). Still, a size that grew is an error, not a short read.
    let n = unsafe { sys::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(sys::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; n as usize];
    let n = unsafe { sys::llistxattr(p.as_ptr(), names.as_mut_ptr(), names.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = c_bytes(&[name]);
        let len = unsafe { sys::lgetxattr(p.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; len as usize];
        let got = unsafe {
            sys::lgetxattr(p.as_ptr(), cname.as_ptr(), value.as_mut_ptr(), value.len())
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(got as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Make `path`'s extended attributes exactly `want`.
fn set_xattrs(path: &Path, want: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let p = c_bytes(&[path.as_os_str().as_bytes()]);
    for (name, _) in read_xattrs(path)? {
        if !want.iter().any(|(w, _)| *w == name) {
            let cname = c_bytes(&[&name]);
            if unsafe { sys::lremovexattr(p.as_ptr(), cname.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    for (name, value) in want {
        let cname = c_bytes(&[name]);
        let r = unsafe {
            sys::lsetxattr(p.as_ptr(), cname.as_ptr(), value.as_ptr(), value.len(), 0)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

use std::os::unix::ffi::OsStringExt;

/// Step 2 for one mount: remove what is new, put back what changed and can be
/// put back (a few rounds: a directory made unreadable is listed once its mode
/// is back), then walk again and require the record.
fn restore_tree(root: &Path, snap: &Tree) -> Result<String, String> {
    let shown = root.display().to_string();
    let at = |rel: &[u8]| reset::display_path(root.as_os_str().as_bytes(), rel);
    let mut removed = 0usize;
    let mut restored = 0usize;
    for _round in 0..3 {
        let now = walk(root).map_err(|e| format!("cannot walk {shown}: {e}"))?;
        let fixes = reset::diff(snap, &now);
        if fixes.is_empty() {
            break;
        }
        for fix in fixes {
            let res = match &fix {
                Fix::Remove(rel) => {
                    removed += 1;
                    remove_entry(&join(root, rel))
                }
                Fix::Mkdir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    restored += 1;
                    let p = join(root, path);
                    std::fs::create_dir(&p)
                        .and_then(|()| std::os::unix::fs::lchown(&p, Some(*uid), Some(*gid)))
                        .and_then(|()| set_mode(&p, *mode))
                }
                Fix::Symlink {
                    path,
                    target,
                    uid,
                    gid,
                } => {
                    restored += 1;
                    let p = join(root, path);
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)
                        .and_then(|()| std::os::unix::fs::lchown(&p, Some(*uid), Some(*gid)))
                }
                Fix::Chown { path, uid, gid } => {
                    restored += 1;
                    std::os::unix::fs::lchown(join(root, path), Some(*uid), Some(*gid))
                }
                Fix::Chmod { path, mode } => {
                    restored += 1;
                    set_mode(&join(root, path), *mode)
                }
                Fix::Xattrs { path, want } => {
                    restored += 1;
                    set_xattrs(&join(root, path), want)
                }
                Fix::Unfixable { path, why } => {
                    return Err(format!("{}: {why}", at(path)));
                }
            };
            res.map_err(|e| format!("{}: cannot {}: {e}", at(fix_path(&fix)), fix_verb(&fix)))?;
        }
    }
    // The proof: the tree as it is now is the record.
    let now = walk(root).map_err(|e| format!("cannot walk {shown}: {e}"))?;
    if let Some(fix) = reset::diff(snap, &now).first() {
        return Err(format!(
            "{} still differs from the record after the reset ({})",
            at(fix_path(fix)),
            fix_verb(fix)
        ));
    }
    Ok(if removed + restored > 0 {
        let mut parts = Vec::new();
        if removed > 0 {
            parts.push(format!(
                "{removed} {} removed",
                if removed == 1 { "entry" } else { "entries" }
            ));
        }
        if restored > 0 {
            parts.push(format!("{restored} restored"));
        }
        format!("{shown}: {}", parts.join(", "))
    } else if snap.len() == 1 {
        format!("{shown}: empty")
    } else {
        format!("{shown}: as at start")
    })
}

fn fix_path(fix: &Fix) -> &[u8] {
    match fix {
        Fix::Remove(p) => p,
        Fix::Mkdir { path, .. }
        | Fix::Symlink { path, .. }
        | Fix::Chown { path, .. }
        | Fix::Chmod { path, .. }
        | Fix::Xattrs { path, .. }
        | Fix::Unfixable { path, .. } => path,
    }
}

fn fix_verb(fix: &Fix) -> &'static str {
    match fix {
        Fix::Remove(_) => "remove it",
        Fix::Mkdir { .. } => "re-create the directory",
        Fix::Symlink { .. } => "re-create the symlink",
        Fix::Chown { .. } => "restore its owner",
        Fix::Chmod { .. } => "restore its mode",
        Fix::Xattrs { .. } => "restore its extended attributes",
        Fix::Unfixable { .. } => "restore it",
    }
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// chmod of a path the caller knows is no symlink (no job process is left to
/// swap it for one).
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Remove an entry and everything under it, never following a symlink. A
/// directory the gate may not list or enter is made 0700 first.
fn remove_entry(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path)?;
    std::fs::remove_dir_all(path)
}

/// chmod 0700 every directory at and under `path` (not following symlinks).
fn open_up(path: &Path) -> io::Result<()> {
    let mut todo = vec![path.to_path_buf()];
    while let Some(dir) = todo.pop() {
        set_mode(&dir, 0o700)?;
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            if item.file_type()?.is_dir() {
                todo.push(item.path());
            }
        }
    }
    Ok(())
}

/// Step 3: remove every SysV shared memory segment, message queue and semaphore
/// set of the container's IPC namespace, then check none is left.
fn remove_sysvipc() -> Result<String, String> {
    type Rmid = fn(i32) -> i32;
    let kinds: [(&str, Rmid); 3] = [
        ("shm", |id| unsafe {
            sys::shmctl(id, sys::IPC_RMID, std::ptr::null_mut())
        }),
        ("msg", |id| unsafe {
            sys::msgctl(id, sys::IPC_RMID, std::ptr::null_mut())
        }),
        ("sem", |id| unsafe { sys::semctl(id, 0, sys::IPC_RMID) }),
    ];
    let mut counts = Vec::new();
    for (name, rmid) in kinds {
        let file = format!("/proc/sysvipc/{name}");
        let list = || match std::fs::read_to_string(&file) {
            Ok(t) => Ok(reset::parse_sysvipc_ids(&t)),
            // A kernel without SysV IPC has none to leave behind.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read {file}: {e}")),
        };
        let ids = list()?;
        // An object gone in between is what the step wants; the list after says.
        let mut failure = None;
        for &id in &ids {
            if rmid(id) != 0 {
                failure = Some(io::Error::last_os_error());
            }
        }
        let left = list()?;
        if !left.is_empty() {
            let why = failure.map_or_else(|| "still listed".to_string(), |e| e.to_string());
            return Err(format!("SysV {name} {left:?} cannot be removed: {why}"));
        }
        counts.push(format!("{} {name}", ids.len()));
    }
    Ok(format!("sysvipc: {} removed", counts.join(", ")))
}
