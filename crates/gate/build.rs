//! Builds the gate (src/gate/main.rs, std only) into a static Linux binary with the
//! same rustc that builds this crate, so `cargo build` needs no extra toolchain.
//! The binary is embedded into warmpool by `include_bytes!` in src/lib.rs.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::hash::Hasher;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/gate/main.rs");
    println!("cargo:rerun-if-changed=src/protocol.rs");
    println!("cargo:rerun-if-changed=src/cgroup.rs");
    println!("cargo:rerun-if-changed=src/reset.rs");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    if !target.contains("linux") {
        panic!(
            "the gate runs inside Linux containers and is built for the build target; \
             build warmpool for a Linux target (got {target})"
        );
    }
    let gate = out_dir.join("warmpool-gate");
    let status = Command::new(&rustc)
        .env("CARGO_PKG_VERSION_GATE", &version)
        .args([
            "--edition=2021",
            "--crate-name=warmpool_gate",
            "--crate-type=bin",
        ])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .args(["--target", &target])
        .arg("-o")
        .arg(&gate)
        .arg("src/gate/main.rs")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc} to build the gate: {e}"));
    if !status.success() {
        panic!(
            "building the static gate failed ({status}); it needs the target's static C \
             library (glibc: libc6-dev, which gcc already pulls in)"
        );
    }
    let bytes = std::fs::read(&gate).expect("the gate binary was just written");
    let mut h = DefaultHasher::new();
    h.write(&bytes);
    println!("cargo:rustc-env=WARMPOOL_GATE_DIGEST={:016x}", h.finish());
    println!("cargo:rustc-env=WARMPOOL_GATE_PATH={}", gate.display());
}
