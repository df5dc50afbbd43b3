#![no_main]
// The body and its properties: crates/fuzzing/src/config.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| warmpool_fuzzing::config::run(data));
