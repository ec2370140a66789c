//! Builds the kernel programs (sipvip-ebpf) for bpfel-unknown-none with the toolchain
//! sipvip-ebpf/rust-toolchain.toml names, and places the objects in OUT_DIR, where
//! src/datapath/mod.rs embeds them.
//!
//! It reruns only when the kernel crate, its lockfile or toolchain file, or sipvip-common
//! change: a change to user-space files alone does not rebuild the objects.
//!
//! Needs that toolchain with rust-src, and bpf-linker: `cargo xtask setup` installs them.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    let ebpf = root.join("sipvip-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for p in ["src", "Cargo.toml", "Cargo.lock", "rust-toolchain.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    for p in ["sipvip-common/src", "sipvip-common/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let channel = toolchain(&ebpf);

    // The release object, and one with per-packet debug logs for `--datapath-debug`; each in
    // a target dir of its own, outside OUT_DIR, so every profile shares one eBPF build.
    for (features, dir, name) in [
        (None, "bpf", "sipvip.bpf.o"),
        (Some("debug-log"), "bpf-debug", "sipvip-debug.bpf.o"),
    ] {
        let target_dir = root.join("target").join(dir);
        let mut cmd = Command::new("rustup");
        cmd.args(["run", &channel, "cargo", "build", "--release", "--locked"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--manifest-path")
            .arg(ebpf.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        if let Some(f) = features {
            cmd.args(["--features", f]);
        }
        // Do not leak the outer build's compiler, wrappers or flags into the eBPF build.
        for (key, _) in env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CARGO_") && k != "CARGO_HOME"
                || k.starts_with("RUSTC")
                || k == "RUSTFLAGS"
                || k == "RUSTUP_TOOLCHAIN"
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        );
        let status = cmd.status().unwrap_or_else(|e| {
            panic!(
                "cannot run rustup to build the eBPF programs ({e}); run `cargo xtask setup` first"
            )
        });
        if !status.success() {
            panic!(
                "building sipvip-ebpf failed ({status}); it needs the toolchain sipvip-ebpf/rust-toolchain.toml names, with rust-src, and \
                 bpf-linker on PATH: run `cargo xtask setup`"
            );
        }
        let obj = target_dir.join("bpfel-unknown-none/release/sipvip");
        std::fs::copy(&obj, out_dir.join(name))
            .unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
        if features.is_none() {
            let bench = target_dir.join("bpfel-unknown-none/release/bench");
            std::fs::copy(&bench, out_dir.join("bench.bpf.o"))
                .unwrap_or_else(|e| panic!("copy {}: {e}", bench.display()));
        }
    }
}

/// The channel of sipvip-ebpf/rust-toolchain.toml.
fn toolchain(ebpf: &std::path::Path) -> String {
    let path = ebpf.join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    table
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| panic!("{}: no [toolchain] channel", path.display()))
        .to_owned()
}
