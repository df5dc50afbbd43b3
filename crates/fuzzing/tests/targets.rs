//! The fuzz targets on stable: each body over its seed corpus
//! (`fuzz/seeds/<target>/`), then over mutations of the seeds (arbtest), for
//! `WARMPOOL_FUZZ_MS` milliseconds per target (default 1000). No coverage
//! guidance here (that is cargo-fuzz's part, see docs/fuzzing.md), but every
//! property is checked on every input, and `.ci/run` runs this with a larger
//! budget where nightly is missing.

use arbitrary::Unstructured;
use std::path::PathBuf;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Bytes that mean something to one parser or another.
const TOKENS: &[&[u8]] = &[
    b"@warmpool-bot",
    b"@warmpool-bot: ",
    b"WPGS\x00\x02",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\n",
    b"\r",
    b"```\n",
    b"> ",
    b"<blockquote>",
    b"<!--",
    b"`",
    b"=",
    b"\"1h\"",
    b"9223372036854775807",
    b"-1",
    b"&",
    b"%",
    b"\\u0000",
    b"sha256=",
];

/// One to eight edits of a seed: bytes flipped, inserted, removed, repeated,
/// tokens put in, a piece of another seed spliced in.
fn mutate(u: &mut Unstructured, seeds: &[Vec<u8>]) -> arbitrary::Result<Vec<u8>> {
    let mut data = u.choose(seeds)?.clone();
    for _ in 0..u.int_in_range(1..=8)? {
        let at = u.int_in_range(0..=data.len())?;
        match u.int_in_range(0..=6)? {
            0 if at < data.len() => data[at] ^= 1 << u.int_in_range(0..=7)?,
            1 if at < data.len() => data[at] = u.arbitrary()?,
            2 => {
                let bytes: Vec<u8> = u.arbitrary()?;
                data.splice(at..at, bytes.into_iter().take(16));
            }
            3 => {
                let end = u.int_in_range(at..=data.len().min(at + 64))?;
                data.drain(at..end);
            }
            4 => {
                let end = u.int_in_range(at..=data.len().min(at + 64))?;
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            5 => {
                let t = u.choose(TOKENS)?;
                data.splice(at..at, t.iter().copied());
            }
            _ => {
                let other = u.choose(seeds)?;
                let from = u.int_in_range(0..=other.len())?;
                let end = u.int_in_range(from..=other.len().min(from + 256))?;
                data.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    Ok(data)
}

fn budget_ms() -> u64 {
    std::env::var("WARMPOOL_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn target(name: &str) {
    let (_, body) = warmpool_fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let seeds = seeds(name);
    for s in &seeds {
        body(s);
    }
    arbtest::arbtest(|u| {
        if u.ratio(1, 4)? {
            // Bytes from nowhere, too: the structured parts of a body read them.
            let len = u.arbitrary_len::<u8>()?;
            body(u.bytes(len)?);
        } else {
            body(&mutate(u, &seeds)?);
        }
        Ok(())
    })
    .budget_ms(budget_ms());
}

#[test]
fn spec() {
    target("spec");
}

#[test]
fn frames() {
    target("frames");
}

#[test]
fn webhook() {
    target("webhook");
}

#[test]
fn mention() {
    target("mention");
}

#[test]
fn config() {
    target("config");
}

#[test]
fn api() {
    target("api");
}

#[test]
fn every_target_is_tested_here() {
    let here = include_str!("targets.rs");
    for (name, _) in warmpool_fuzzing::TARGETS {
        assert!(here.contains(&format!("fn {name}() {{")), "{name}");
    }
}
