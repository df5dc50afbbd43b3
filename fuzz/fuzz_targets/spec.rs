#![no_main]
// The body and its properties: crates/fuzzing/src/spec.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| warmpool_fuzzing::spec::run(data));
