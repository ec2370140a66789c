//! Project tasks: `cargo xtask setup | build | image | test | lab | bench`.
//!
//! `setup` is idempotent and fast when everything is present: it installs what a fresh
//! machine lacks (Debian packages, the nightly rust-src component, bpf-linker).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(name = "xtask")]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Build the datapath and the sipvip binary (release).
    Build,
    /// Build the container image (a static binary in an image from scratch) with podman.
    Image {
        /// The image's tag.
        #[arg(default_value = "sipvip:dev")]
        tag: String,
    },
    /// Set up, then run rustfmt, clippy (-D warnings, eBPF crate included) and every test.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The namespace lab: a contact-centre network with real SIP software and an HA
    /// switchover; torn down on exit (also on Ctrl-C) unless --keep.
    Lab {
        /// Arguments for the lab (--keep, --fast, --rate N, --k8s: the DaemonSet on two nodes).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks: throughput side by side, per-packet cost, failover timing. Writes
    /// results/bench.json and results/bench.png. Not a test: nothing passes or fails.
    Bench {
        /// Arguments for the bench (--secs S, --rounds R, --failovers N, --generator
        /// auto|pktgen|live, --pktgen-threads N, --pktgen-burst N, --costs-only, --only CASE,
        /// --baseline-object OLD.bpf.o: per-packet costs of another build beside this one).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Debian packages the build, the tests and the lab use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "ethtool",
    "sip-tester",
    "openssl",
    "nftables",
    // The container image: build it, and run it in the image test.
    "podman",
    "runc",
    // The DNS server that names members in the DNS test.
    "dnsmasq-base",
    // VRRP for the gateway pair, BGP and BFD for the scale-out (their tests, and what
    // operators run beside sipvip).
    "keepalived",
    "bird2",
    // Reading `sipvip trace --pcap` captures back in the trace test, as operators do.
    "tcpdump",
    "tshark",
    // ping, in the trace test.
    "iputils-ping",
];
const BPF_LINKER_VERSION: &str = "0.13";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The toolchain that builds the kernel programs: the channel of
/// sipvip-ebpf/rust-toolchain.toml, the one place it is named.
fn ebpf_toolchain() -> Result<String> {
    let path = root().join("sipvip-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parse {}", path.display()))?;
    table
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: no [toolchain] channel", path.display()))
}

/// The kubernetes-validate release whose schemas (Kubernetes 1.34-1.37) the manifests are
/// checked against.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The rustc the kernel programs were verified with (see sipvip-ebpf/rust-toolchain.toml).
const EBPF_RUSTC_VERIFIED: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)";

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn cargo_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

fn setup() -> Result<()> {
    let t = Instant::now();
    // Debian packages.
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // kubernetes-validate (PyPI), with the Kubernetes OpenAPI schemas the manifests' test
    // validates against.
    let kv = format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}");
    let have_kv =
        output(Command::new("python3").args(["-m", "pip", "show", "kubernetes-validate"]))
            .unwrap_or_default();
    if !have_kv.contains(&format!("Version: {KUBERNETES_VALIDATE_VERSION}")) {
        run(Command::new("python3").args(["-m", "pip", "install", "-q", &kv]))?;
    }
    // The eBPF toolchain (sipvip-ebpf/rust-toolchain.toml) and rust-src.
    let channel = ebpf_toolchain()?;
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with(channel.as_str())) {
        bail!(
            "the {channel} toolchain is not installed; it builds the eBPF programs \
             (rustup toolchain install {channel} --component rust-src)"
        );
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        &channel,
        "--installed",
    ]))
    .unwrap_or_default();
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &channel,
        ]))?;
    }
    let rustc =
        output(Command::new("rustup").args(["run", &channel, "rustc", "-V"])).unwrap_or_default();
    let rustc = rustc.trim();
    eprintln!("xtask setup: eBPF toolchain {channel}: {rustc}");
    if rustc != EBPF_RUSTC_VERIFIED {
        eprintln!(
            "xtask setup: warning: the kernel programs were verified with {EBPF_RUSTC_VERIFIED}; \
             a different compiler may lay out the stack differently (the verifier has the last word)"
        );
    }
    // bpf-linker, built against LLVM 22.
    let linker = cargo_bin().join("bpf-linker");
    let have = output(Command::new(&linker).arg("--version")).unwrap_or_default();
    if !have.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("cargo")
            .args(["install", "bpf-linker", "--version"])
            .arg(format!("~{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path))?;
    }
    eprintln!("setup: ready ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root);
    c
}

fn test(extra: &[String]) -> Result<()> {
    setup()?;
    let root = root();
    let ebpf = root.join("sipvip-ebpf");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the tests load eBPF programs and create network namespaces: run them as root");
    }
    let t = Instant::now();
    run(cargo(&root).args(["fmt", "--all", "--check"]))?;
    let channel = ebpf_toolchain()?;
    run(Command::new("rustup")
        .args(["run", &channel, "cargo", "fmt", "--check"])
        .current_dir(&ebpf))?;
    run(cargo(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    for features in ["", "debug-log"] {
        run(Command::new("rustup")
            .args(["run", &channel, "cargo", "clippy", "--locked", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--features", features, "--target-dir"])
            .arg(root.join("target/bpf-clippy"))
            .args(["--", "-D", "warnings"])
            .current_dir(&ebpf))?;
    }
    let (passed, failed) = cargo_test(&root, extra)?;
    eprintln!("xtask test: {:.0}s", t.elapsed().as_secs_f64());
    // The closing line CI reads.
    println!("{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        bail!("{failed} tests failed, {passed} passed");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and sums its `test result:` lines.
fn cargo_test(root: &Path, extra: &[String]) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut cmd = cargo(root);
    cmd.args(["test", "--workspace", "--locked"]).args(extra);
    eprintln!("+ {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawn cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed: {status}");
    }
    Ok((passed, failed))
}

/// Sets up, builds a binary of sipvip-tests in release mode and runs it as root.
fn release_bin(bin: &str, args: &[String]) -> Result<()> {
    setup()?;
    let root = root();
    run(cargo(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "sipvip-tests",
        "--bin",
        bin,
    ]))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{bin} creates network namespaces and loads eBPF programs: run it as root");
    }
    run(Command::new(root.join("target/release").join(bin))
        .args(args)
        .current_dir(&root))
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn main() -> Result<()> {
    match Task::parse() {
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            run(cargo(&root()).args(["build", "--release", "--locked", "-p", "sipvip"]))
        }
        Task::Test { args } => test(&args),
        Task::Lab { args } => release_bin("sipvip-lab", &args),
        Task::Image { tag } => {
            setup()?;
            run(Command::new(root().join("deploy/image/build.sh")).arg(&tag))?;
            eprintln!("xtask image: built {tag}");
            Ok(())
        }
        Task::Bench { args } => {
            release_bin("sipvip-bench", &args)?;
            let root = root();
            if args.iter().any(|a| a == "--only" || a == "--costs-only") {
                return Ok(()); // a profiling run draws no chart
            }
            // The bench writes under --out DIR (relative to the workspace root), else results/.
            let out = args
                .iter()
                .position(|a| a == "--out")
                .and_then(|i| args.get(i + 1))
                .map(|d| root.join(d))
                .unwrap_or_else(|| root.join("results"));
            // The chart needs matplotlib (PyPI); install it once.
            if output(Command::new("python3").args(["-c", "import matplotlib"])).is_none() {
                run(Command::new("python3").args(["-m", "pip", "install", "-q", "matplotlib"]))?;
            }
            run(Command::new("python3")
                .arg(root.join("xtask/chart.py"))
                .arg(out.join("bench.json"))
                .arg(out.join("bench.png")))
        }
    }
}
