//! `spec`: what the gate reads from the container's stdin before anything
//! else, [`JobSpec::read_from`] (crates/gate/src/protocol.rs), and the
//! gate's other outside input, the cgroup OOM counter's text.
//!
//! Properties:
//! - the bytes as a spec: the same answer whatever sizes the reads come in;
//!   a spec that is read is the canonical encoding of what was read
//!   (`encode()` gives back exactly the bytes consumed, `body_len()` agrees)
//!   and nothing past its end is consumed;
//! - the bytes as a [`JobSpec`] (via `arbitrary`): `encode` then `read_from`
//!   gives it back exactly when it is valid (argv not empty, no NUL, env
//!   entries named), and a `Malformed` error otherwise;
//! - the bytes as `memory.events` text: [`parse_oom_kill`] finds the number of
//!   an `oom_kill N` line, or nothing.

use crate::Mix;
use arbitrary::Unstructured;
use std::io::Read;
use warmpool_gate::cgroup::parse_oom_kill;
use warmpool_gate::protocol::{JobSpec, SpecError};

/// A reader that hands out at most a few bytes a read, and an `Interrupted`
/// now and then, as a pipe may.
struct Trickle<'a> {
    data: &'a [u8],
    mix: Mix,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.mix.next().is_multiple_of(11) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = self.mix.size(9).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

pub fn run(data: &[u8]) {
    read_raw(data);
    roundtrip(data);
    cgroup(data);
}

fn read_raw(data: &[u8]) {
    let mut whole = data;
    let got = JobSpec::read_from(&mut whole);
    let consumed = data.len() - whole.len();
    let mut trickle = Trickle {
        data,
        mix: Mix::new(data),
    };
    let trickled = JobSpec::read_from(&mut trickle);
    assert_eq!(got, trickled, "the answer depends on how the reads split");
    match got {
        Ok(spec) => {
            let encoded = spec.encode();
            assert_eq!(
                &data[..consumed],
                &encoded[..],
                "a spec that was read is not its canonical encoding"
            );
            assert_eq!(spec.body_len() + 10, encoded.len() as u64);
            assert_eq!(trickle.data.len(), whole.len(), "read past the spec");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(spec) = arbitrary_spec(&mut u) else {
        return;
    };
    let valid = !spec.argv.is_empty()
        && spec.argv.iter().all(|a| !a.contains(&0))
        && spec
            .env
            .iter()
            .all(|e| !e.contains(&0) && e.first().is_some_and(|b| *b != b'='))
        && !spec.cwd.contains(&0);
    let encoded = spec.encode();
    assert_eq!(spec.body_len() + 10, encoded.len() as u64);
    let mut rest = &encoded[..];
    match JobSpec::read_from(&mut rest) {
        Ok(back) => {
            assert!(valid, "an invalid spec was accepted: {spec:?}");
            assert!(back == spec, "{back:?} came back as {spec:?}");
            assert!(rest.is_empty());
        }
        Err(SpecError::Malformed(_)) => assert!(!valid, "a valid spec was refused: {spec:?}"),
        Err(e) => panic!("an encoded spec fails with {e:?}"),
    }
}

fn arbitrary_spec(u: &mut Unstructured) -> arbitrary::Result<JobSpec> {
    Ok(JobSpec {
        argv: u.arbitrary()?,
        env: u.arbitrary()?,
        cwd: u.arbitrary()?,
        stdin: u.arbitrary()?,
    })
}

fn cgroup(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(n) = parse_oom_kill(text) {
        let line = format!("{n}");
        assert!(
            text.lines().any(|l| l.contains("oom_kill")
                && l.split_whitespace()
                    .nth(1)
                    .and_then(|w| w.parse::<u64>().ok())
                    == Some(n)),
            "{line} is not the number of an oom_kill line"
        );
    }
}
