//! The bodies of warmpool's fuzz targets: each parser of outside input fed
//! bytes, with the properties it must keep. A body returns normally when the
//! properties hold and panics (an assertion) when one does not, so a fuzzer
//! reports a broken property as a crash.
//!
//! One body per target, shared by the two drivers:
//! - `fuzz/` (cargo-fuzz, nightly, libFuzzer): `fuzz/fuzz_targets/<name>.rs` is
//!   `fuzz_target!(|data| warmpool_fuzzing::<name>::run(data))`;
//! - this crate's tests (stable): each body over its seed corpus
//!   (`fuzz/seeds/<name>/`) and mutations of it, for a time budget
//!   (`WARMPOOL_FUZZ_MS`, per target), so `cargo test` exercises them too.
//!
//! The bodies call the functions production calls (the gate's spec reader, the
//! host's frame decoder, the webhook's signature check and event parser, the
//! config loader, the API's request decoders), never copies of them.
//! See docs/fuzzing.md.

pub mod api;
pub mod config;
pub mod frames;
pub mod mention;
pub mod spec;
pub mod webhook;

/// A target's body: returns if its properties hold, panics if not.
pub type Body = fn(&[u8]);

/// Every target: its name (a directory under `fuzz/seeds/`, a binary under
/// `fuzz/fuzz_targets/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("spec", spec::run),
    ("frames", frames::run),
    ("webhook", webhook::run),
    ("mention", mention::run),
    ("config", config::run),
    ("api", api::run),
];

/// A small deterministic generator (splitmix64) for the choices a body makes
/// from its input (chunk sizes, say), so a crash replays exactly.
pub(crate) struct Mix(u64);

impl Mix {
    pub(crate) fn new(data: &[u8]) -> Mix {
        // FNV-1a over the input: different inputs, different choices.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Mix(h)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `1..=max`.
    pub(crate) fn size(&mut self, max: usize) -> usize {
        1 + (self.next() % max.max(1) as u64) as usize
    }
}
