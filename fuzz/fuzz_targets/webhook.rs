#![no_main]
// The body and its properties: crates/fuzzing/src/webhook.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| warmpool_fuzzing::webhook::run(data));
