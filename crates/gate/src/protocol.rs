//! The gate protocol: the bytes exchanged between warmpool and the gate over the
//! container's attach stream. Pure framing, std only: this file is compiled both
//! into the host crates and into the static gate binary, so it must not use any
//! crate and must not do I/O beyond the `Read` it is handed.
//!
//! Host -> gate (the container's stdin), exactly once:
//!
//! ```text
//! "WPGS" | version: u16 BE | body length: u32 BE | body
//! body = argv: list | env: list | cwd: bytes | stdin flag: u8 (0 = /dev/null, 1 = bytes) | stdin: bytes
//! list = count: u32 BE, then count x bytes;  bytes = length: u32 BE, then the bytes
//! ```
//!
//! Gate -> host (the container's stdout), a sequence of frames:
//!
//! ```text
//! kind: u8 | length: u32 BE | payload
//! ```
//!
//! `READY` first (payload: the gate's version string); once the job's process
//! exists, `STARTED` (payload: its pid, i32 BE) or else one `START_FAILED`
//! (payload: a message); any number of `STDOUT`/`STDERR` chunks and `SIGNAL`
//! frames (payload: signal number, i32 BE: one per signal the gate received and
//! passed on to the job, as it happens, so the host learns of a signal it did not
//! send even if the container dies next); at most one `OOM` (payload: u32 BE, how
//! many processes the kernel's OOM killer killed in the container's cgroup while
//! the job ran; sent only when that count rose) just before `EXIT`; `EXIT` last
//! (payload: 0 + exit code i32 BE, or 1 + signal number i32 BE). After `EXIT`
//! the gate waits (bounded) for the host to close its stdin, so the host has
//! read everything before the container ends; stdin closing *during* a job
//! means the host is gone, and the gate kills the job.
//! The gate's own diagnostics go to the container's stderr, never into frames.
//!
//! **Reuse mode** (version 3). Started with the single argument `--reuse` (the
//! host sets the entrypoint to `[GATE_PATH, "--reuse"]`), the gate serves one job
//! after another; without it, everything above holds unchanged. The flow:
//!
//! ```text
//! READY -> spec -> (STARTED | START_FAILED) ... frames ... (OOM) EXIT
//!       -> RESET(0, report) -> READY -> spec -> ... (same as above)
//!       -> RESET(1, why) and the gate exits 0
//! ```
//!
//! After `EXIT` the gate does not wait for stdin to close: it resets the
//! container at once and sends `RESET` (payload: one status byte, 0 = the reset
//! is done and checked and the gate takes another job, 1 = it failed and the
//! gate exits; then a UTF-8 report: on success what was checked and cleaned,
//! on failure why). After `RESET(0, ..)` comes `READY` with the same payload as
//! the first, and the gate waits for the next spec. Stdin closing while it
//! waits for a spec (parked) makes it exit 0 quietly; stdin closing during a
//! job still means the host is gone (the job is killed and the gate exits, no
//! reset). A stop signal while parked exits the gate as in single-use mode.
//! The reset (see docs/reuse.md): no process but the gate is left (the gate
//! must be PID 1), every read-write tmpfs/mqueue mount is back to what it held
//! before the first READY (a read-write mount of any other type means the
//! container cannot be reset), no SysV IPC object is left, the gate's working
//! directory is where it started, and the gate holds nothing of the last job.

use std::fmt;
use std::io::Read;

/// The gate's one argument for reuse mode: the host sets the container's
/// entrypoint to `[GATE_PATH, REUSE_ARG]`. Any other arguments are ignored.
pub const REUSE_ARG: &str = "--reuse";
/// Magic that opens a job spec.
pub const SPEC_MAGIC: [u8; 4] = *b"WPGS";
/// Version of the protocol this file speaks: the spec encoding and the set of
/// frames. Bump it with any change to either, so a host and a gate of different
/// builds refuse each other at the spec instead of misreading a frame.
/// 2: `SIGNAL` and `OOM` frames. 3: reuse mode and the `RESET` frame.
pub const PROTOCOL_VERSION: u16 = 3;
/// Largest spec body the gate accepts (argv + env + stdin bytes).
pub const MAX_SPEC_BODY: u32 = 256 * 1024 * 1024;
/// Largest payload of one gate frame the host accepts.
pub const MAX_FRAME_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Length of a gate frame header: kind (1) + length (4).
pub const FRAME_HEADER_LEN: usize = 5;

pub const FRAME_READY: u8 = 1;
pub const FRAME_STARTED: u8 = 2;
pub const FRAME_STDOUT: u8 = 3;
pub const FRAME_STDERR: u8 = 4;
pub const FRAME_START_FAILED: u8 = 5;
pub const FRAME_EXIT: u8 = 6;
pub const FRAME_SIGNAL: u8 = 7;
pub const FRAME_OOM: u8 = 8;
/// Reuse mode only: the reset after a job; payload = status byte (0 = done and
/// checked, another job may come; 1 = failed, the gate exits) + UTF-8 report.
pub const FRAME_RESET: u8 = 9;
/// Status bytes of a `RESET` frame.
pub const RESET_OK: u8 = 0;
pub const RESET_FAILED: u8 = 1;

/// What a job is, as far as the gate is concerned: everything is already
/// resolved by the host (argv, the complete environment, working directory).
#[derive(Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// argv[0] is looked up in the job's PATH when it has no '/'.
    pub argv: Vec<Vec<u8>>,
    /// "KEY=VALUE" entries in order; a bare "KEY" removes KEY (as `docker run -e
    /// KEY` for an unset KEY). The gate starts from Docker's defaults (PATH,
    /// HOSTNAME), replaces, appends or removes these, and keeps HOME if unset.
    pub env: Vec<Vec<u8>>,
    /// Empty means: stay in the container's working directory.
    pub cwd: Vec<u8>,
    /// `None`: the job's stdin is /dev/null. `Some`: these bytes, then EOF.
    pub stdin: Option<Vec<u8>>,
}

// Env values may be secrets: never print them.
impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .env
            .iter()
            .map(|e| {
                let key = e.split(|b| *b == b'=').next().unwrap_or(&[]);
                String::from_utf8_lossy(key).into_owned()
            })
            .collect();
        f.debug_struct("JobSpec")
            .field(
                "argv",
                &self
                    .argv
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>(),
            )
            .field("env_keys", &keys)
            .field("cwd", &String::from_utf8_lossy(&self.cwd))
            .field("stdin_len", &self.stdin.as_ref().map(|s| s.len()))
            .finish()
    }
}

/// Why a spec could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum SpecError {
    /// The stream ended before a complete spec arrived (`got` bytes of `phase`).
    Eof {
        phase: &'static str,
    },
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    TooLarge(u32),
    Malformed(&'static str),
    Io(String),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Eof { phase } => write!(
                f,
                "stdin closed before a complete job spec arrived (while reading the {phase})"
            ),
            SpecError::BadMagic(m) => write!(
                f,
                "stdin does not start with a warmpool job spec (got bytes {m:02x?}, want \"WPGS\")"
            ),
            SpecError::UnsupportedVersion(v) => write!(
                f,
                "job spec version {v} is not supported by this gate (it speaks version {PROTOCOL_VERSION}); \
                 warmpool and its gate must come from the same build"
            ),
            SpecError::TooLarge(n) => write!(
                f,
                "job spec of {n} bytes is larger than the limit of {MAX_SPEC_BODY} bytes"
            ),
            SpecError::Malformed(what) => write!(f, "malformed job spec: {what}"),
            SpecError::Io(e) => write!(f, "reading the job spec failed: {e}"),
        }
    }
}

impl std::error::Error for SpecError {}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl JobSpec {
    /// Length of the encoded body, without encoding it (the limit is checked on
    /// the host before anything is created for a job).
    pub fn body_len(&self) -> u64 {
        let list = |l: &Vec<Vec<u8>>| 4 + l.iter().map(|i| 4 + i.len() as u64).sum::<u64>();
        list(&self.argv)
            + list(&self.env)
            + 4
            + self.cwd.len() as u64
            + 1
            + 4
            + self.stdin.as_ref().map_or(0, |s| s.len() as u64)
    }

    /// The complete spec message: header and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for list in [&self.argv, &self.env] {
            body.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for item in list.iter() {
                put_bytes(&mut body, item);
            }
        }
        put_bytes(&mut body, &self.cwd);
        match &self.stdin {
            None => {
                body.push(0);
                put_bytes(&mut body, &[]);
            }
            Some(bytes) => {
                body.push(1);
                put_bytes(&mut body, bytes);
            }
        }
        let mut out = Vec::with_capacity(10 + body.len());
        out.extend_from_slice(&SPEC_MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Read exactly one spec from `r`; reads nothing past its end.
    pub fn read_from(r: &mut impl Read) -> Result<JobSpec, SpecError> {
        let mut header = [0u8; 10];
        read_exact(r, &mut header, "header")?;
        let magic = [header[0], header[1], header[2], header[3]];
        if magic != SPEC_MAGIC {
            return Err(SpecError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([header[4], header[5]]);
        if version != PROTOCOL_VERSION {
            return Err(SpecError::UnsupportedVersion(version));
        }
        let len = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
        if len > MAX_SPEC_BODY {
            return Err(SpecError::TooLarge(len));
        }
        let mut body = vec![0u8; len as usize];
        let spec = read_exact(r, &mut body, "body").and_then(|()| Self::decode_body(&body));
        // The body holds the job's env (secrets) and stdin: the gate keeps no
        // copy of them once the job is over, so this one goes at once.
        wipe(&mut body);
        spec
    }

    fn decode_body(body: &[u8]) -> Result<JobSpec, SpecError> {
        let mut cur = Cursor { buf: body, pos: 0 };
        let argv = cur.list("argv")?;
        if argv.is_empty() {
            return Err(SpecError::Malformed("argv is empty: nothing to run"));
        }
        if argv.iter().any(|a| a.contains(&0)) {
            return Err(SpecError::Malformed("an argv entry contains a NUL byte"));
        }
        let env = cur.list("env")?;
        for e in &env {
            if e.contains(&0) {
                return Err(SpecError::Malformed("an env entry contains a NUL byte"));
            }
            if e.is_empty() || e[0] == b'=' {
                return Err(SpecError::Malformed(
                    "an env entry has no name (want KEY=VALUE or KEY)",
                ));
            }
        }
        let cwd = cur.bytes("cwd")?;
        if cwd.contains(&0) {
            return Err(SpecError::Malformed("cwd contains a NUL byte"));
        }
        let flag = cur.u8("stdin flag")?;
        let stdin_bytes = cur.bytes("stdin")?;
        let stdin = match flag {
            0 if stdin_bytes.is_empty() => None,
            0 => {
                return Err(SpecError::Malformed(
                    "stdin bytes given with the /dev/null flag",
                ))
            }
            1 => Some(stdin_bytes),
            _ => return Err(SpecError::Malformed("unknown stdin flag")),
        };
        if cur.pos != body.len() {
            return Err(SpecError::Malformed("trailing bytes after the spec body"));
        }
        Ok(JobSpec {
            argv,
            env,
            cwd,
            stdin,
        })
    }
}

/// Overwrite `buf` with zeros in a way the compiler may not leave out (the
/// buffer is about to be freed, which would otherwise make the writes dead).
pub fn wipe(buf: &mut [u8]) {
    // SAFETY: the whole slice is valid for writes of u8.
    unsafe { wipe_raw(buf.as_mut_ptr(), buf.len()) };
}

/// `wipe` over a Vec's whole allocation (spare capacity included: it may hold
/// bytes from before a `clear` or `truncate`), leaving it empty.
pub fn wipe_vec(v: &mut Vec<u8>) {
    v.clear();
    // SAFETY: the allocation holds `capacity` bytes; u8 has no invalid values.
    unsafe { wipe_raw(v.as_mut_ptr(), v.capacity()) };
}

/// Volatile zero writes over `len` bytes at `p`: a word at a time where aligned
/// (a spec may be hundreds of MiB), a byte at a time at the edges.
unsafe fn wipe_raw(p: *mut u8, len: usize) {
    const W: usize = std::mem::size_of::<usize>();
    let mut i = 0;
    while i < len && !(p as usize + i).is_multiple_of(W) {
        std::ptr::write_volatile(p.add(i), 0);
        i += 1;
    }
    while i + W <= len {
        std::ptr::write_volatile(p.add(i) as *mut usize, 0);
        i += W;
    }
    while i < len {
        std::ptr::write_volatile(p.add(i), 0);
        i += 1;
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], phase: &'static str) -> Result<(), SpecError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Err(SpecError::Eof { phase }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SpecError::Io(e.to_string())),
        }
    }
    Ok(())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], SpecError> {
        let _ = what;
        if self.buf.len() - self.pos < n {
            return Err(SpecError::Malformed(
                "a length points past the end of the body",
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SpecError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, SpecError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, SpecError> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    fn list(&mut self, what: &'static str) -> Result<Vec<Vec<u8>>, SpecError> {
        let n = self.u32(what)? as usize;
        // Each entry needs at least its 4-byte length: refuse counts the body cannot hold.
        if n > (self.buf.len() - self.pos) / 4 {
            return Err(SpecError::Malformed("a list count is larger than the body"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.bytes(what)?);
        }
        Ok(out)
    }
}

/// How the job ended, as the gate saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention (and `docker run`'s): 128 + N for a signal.
    pub fn as_shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// One frame from the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Ready(String),
    Started(i32),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    StartFailed(String),
    Exit(ExitStatus),
    /// The gate received this signal while the job was starting or running, and
    /// passed it on to the job (a job that then failed to start got none).
    Signal(i32),
    /// The kernel's OOM killer killed this many processes of the job's container
    /// while the job ran.
    Oom(u32),
    /// Reuse mode: the gate reset the container after a job. `ok`: the reset
    /// was done and checked and another job may come (a `READY` follows);
    /// otherwise the gate exits. `report`: what was checked and cleaned, or why
    /// the reset failed.
    Reset {
        ok: bool,
        report: String,
    },
}

/// Header bytes of a frame with a payload of `len` bytes.
pub fn frame_header(kind: u8, len: usize) -> [u8; FRAME_HEADER_LEN] {
    let l = (len as u32).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// The payload of an `EXIT` frame.
pub fn exit_payload(status: ExitStatus) -> [u8; 5] {
    let (tag, v) = match status {
        ExitStatus::Code(c) => (0u8, c),
        ExitStatus::Signal(s) => (1u8, s),
    };
    let b = v.to_be_bytes();
    [tag, b[0], b[1], b[2], b[3]]
}

/// The payload of a `RESET` frame: status byte, then the report.
pub fn reset_payload(ok: bool, report: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + report.len());
    p.push(if ok { RESET_OK } else { RESET_FAILED });
    p.extend_from_slice(report.as_bytes());
    p
}

/// A frame encoded whole (header and payload); used by tests and the gate.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let (kind, payload): (u8, Vec<u8>) = match frame {
        Frame::Ready(v) => (FRAME_READY, v.as_bytes().to_vec()),
        Frame::Started(pid) => (FRAME_STARTED, pid.to_be_bytes().to_vec()),
        Frame::Stdout(b) => (FRAME_STDOUT, b.clone()),
        Frame::Stderr(b) => (FRAME_STDERR, b.clone()),
        Frame::StartFailed(m) => (FRAME_START_FAILED, m.as_bytes().to_vec()),
        Frame::Exit(s) => (FRAME_EXIT, exit_payload(*s).to_vec()),
        Frame::Signal(sig) => (FRAME_SIGNAL, sig.to_be_bytes().to_vec()),
        Frame::Oom(kills) => (FRAME_OOM, kills.to_be_bytes().to_vec()),
        Frame::Reset { ok, report } => (FRAME_RESET, reset_payload(*ok, report)),
    };
    let mut out = frame_header(kind, payload.len()).to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Why the gate's output could not be understood.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    UnknownKind(u8),
    TooLarge(u32),
    BadExit,
    /// A `SIGNAL` or `OOM` frame whose payload is not 4 bytes.
    BadNumber(u8),
    /// A `RESET` frame without a status byte, or with an unknown one.
    BadReset,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownKind(k) => write!(f, "the gate sent a frame of unknown kind {k}"),
            FrameError::TooLarge(n) => write!(
                f,
                "the gate sent a frame of {n} bytes, over the limit of {MAX_FRAME_PAYLOAD}"
            ),
            FrameError::BadExit => write!(f, "the gate sent a malformed exit or started frame"),
            FrameError::BadNumber(k) => write!(
                f,
                "the gate sent a frame of kind {k} whose payload is not a 4-byte number"
            ),
            FrameError::BadReset => write!(
                f,
                "the gate sent a reset frame without a valid status byte (want 0 or 1)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reassembles frames from chunks that may split or merge them arbitrarily.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes held: those pending, and consumed ones not yet compacted away.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        // Compact before growing so the buffer stays about one frame large.
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let kind = avail[0];
        let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]);
        if len > MAX_FRAME_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if !(FRAME_READY..=FRAME_RESET).contains(&kind) {
            return Err(FrameError::UnknownKind(kind));
        }
        let total = FRAME_HEADER_LEN + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let payload = &avail[FRAME_HEADER_LEN..total];
        let frame = match kind {
            FRAME_READY => Frame::Ready(String::from_utf8_lossy(payload).into_owned()),
            FRAME_STARTED => match <[u8; 4]>::try_from(payload) {
                Ok(b) => Frame::Started(i32::from_be_bytes(b)),
                Err(_) => return Err(FrameError::BadExit),
            },
            FRAME_STDOUT => Frame::Stdout(payload.to_vec()),
            FRAME_STDERR => Frame::Stderr(payload.to_vec()),
            FRAME_START_FAILED => Frame::StartFailed(String::from_utf8_lossy(payload).into_owned()),
            FRAME_SIGNAL => match <[u8; 4]>::try_from(payload) {
                Ok(b) => Frame::Signal(i32::from_be_bytes(b)),
                Err(_) => return Err(FrameError::BadNumber(kind)),
            },
            FRAME_OOM => match <[u8; 4]>::try_from(payload) {
                Ok(b) => Frame::Oom(u32::from_be_bytes(b)),
                Err(_) => return Err(FrameError::BadNumber(kind)),
            },
            FRAME_RESET => match payload.split_first() {
                Some((&RESET_OK, report)) => Frame::Reset {
                    ok: true,
                    report: String::from_utf8_lossy(report).into_owned(),
                },
                Some((&RESET_FAILED, report)) => Frame::Reset {
                    ok: false,
                    report: String::from_utf8_lossy(report).into_owned(),
                },
                _ => return Err(FrameError::BadReset),
            },
            _ => {
                if payload.len() != 5 {
                    return Err(FrameError::BadExit);
                }
                let v = i32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
                match payload[0] {
                    0 => Frame::Exit(ExitStatus::Code(v)),
                    1 => Frame::Exit(ExitStatus::Signal(v)),
                    _ => return Err(FrameError::BadExit),
                }
            }
        };
        self.start += total;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut dec = FrameDecoder::new();
        dec.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame()? {
            out.push(f);
        }
        assert_eq!(dec.pending(), 0);
        Ok(out)
    }

    #[test]
    fn reset_frames_round_trip() {
        let frames = vec![
            Frame::Reset {
                ok: true,
                report: "processes: 2 killed, none left; /tmp: 3 entries removed".into(),
            },
            Frame::Reset {
                ok: false,
                report: String::new(),
            },
            Frame::Reset {
                ok: false,
                report: "not PID 1".into(),
            },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(encode_frame).collect();
        // Split anywhere: one byte at a time.
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            dec.push(&[*b]);
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn reset_frame_layout_is_status_byte_then_report() {
        let bytes = encode_frame(&Frame::Reset {
            ok: true,
            report: "ok".into(),
        });
        assert_eq!(bytes, [FRAME_RESET, 0, 0, 0, 3, RESET_OK, b'o', b'k']);
        let bytes = encode_frame(&Frame::Reset {
            ok: false,
            report: "x".into(),
        });
        assert_eq!(bytes, [9, 0, 0, 0, 2, 1, b'x']);
        assert_eq!(reset_payload(false, "why"), b"\x01why");
    }

    #[test]
    fn malformed_reset_frames_are_refused() {
        // No status byte at all.
        assert_eq!(
            decode_all(&[FRAME_RESET, 0, 0, 0, 0]),
            Err(FrameError::BadReset)
        );
        // An unknown status byte.
        assert_eq!(
            decode_all(&[FRAME_RESET, 0, 0, 0, 2, 2, b'x']),
            Err(FrameError::BadReset)
        );
        // A report that is not UTF-8 is shown lossily, not refused.
        assert_eq!(
            decode_all(&[FRAME_RESET, 0, 0, 0, 2, 1, 0xff]).unwrap(),
            [Frame::Reset {
                ok: false,
                report: "\u{fffd}".into()
            }]
        );
        // Kind 10 does not exist (yet).
        assert_eq!(
            decode_all(&[10, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(10))
        );
    }

    #[test]
    fn version_3_specs_round_trip_and_older_ones_are_refused() {
        assert_eq!(PROTOCOL_VERSION, 3);
        let s = JobSpec {
            argv: vec![b"true".to_vec()],
            env: vec![b"SECRET=x".to_vec()],
            cwd: Vec::new(),
            stdin: Some(b"in".to_vec()),
        };
        let mut bytes = s.encode();
        assert_eq!(&bytes[4..6], &[0, 3]);
        assert_eq!(JobSpec::read_from(&mut &bytes[..]).unwrap(), s);
        bytes[5] = 2;
        assert_eq!(
            JobSpec::read_from(&mut &bytes[..]),
            Err(SpecError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn wiping_zeroes_contents_and_spare_capacity() {
        let mut a = *b"secret";
        wipe(&mut a);
        assert_eq!(a, [0; 6]);
        // Unaligned starts and ends.
        let mut b = [7u8; 37];
        wipe(&mut b[3..34]);
        assert_eq!(&b[..3], &[7, 7, 7]);
        assert!(b[3..34].iter().all(|x| *x == 0));
        assert_eq!(&b[34..], &[7, 7, 7]);
        let mut v = b"a secret value, longer than a few words".to_vec();
        v.truncate(3);
        let p = v.as_ptr();
        let cap = v.capacity();
        wipe_vec(&mut v);
        assert!(v.is_empty());
        assert_eq!(v.capacity(), cap);
        // SAFETY: still the same allocation, `cap` bytes, all written by wipe_vec.
        let all = unsafe { std::slice::from_raw_parts(p, cap) };
        assert!(all.iter().all(|b| *b == 0));
    }
}
