//! Network namespaces for tests: created with a unique name, removed on drop (also when a
//! test fails), and entered per thread with `setns`.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

/// Fails loudly unless running as root: privileged tests never skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces); \
             run the suite as root with `cargo xtask test`"
        );
    }
    for tool in ["ip", "ethtool"] {
        if which(tool).is_none() {
            panic!("this test needs `{tool}` on PATH; `cargo xtask setup` installs it");
        }
    }
}

/// A test's scratch directory, `svt-<tag>-<pid>` under the temporary directory, emptied,
/// with a bpffs of its own mounted at `bpf` inside (so pins never meet the host's). Remove
/// both with [`remove_scratch`].
pub fn scratch(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("svt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bpf"))?;
    sh(&format!("mount -t bpf bpf {}", dir.join("bpf").display()))?;
    Ok(dir)
}

/// Unmounts a [`scratch`] directory's bpffs and removes the directory.
pub fn remove_scratch(dir: &std::path::Path) {
    let _ = sh(&format!("umount {}", dir.join("bpf").display()));
    let _ = std::fs::remove_dir_all(dir);
}

pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// Runs a shell command, failing with its stderr.
pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .with_context(|| format!("spawn: {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `svt-<tag>-<pid>-<n>`.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!(
            "svt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sh(&format!("ip netns add {name}"))?;
        let ns = Netns { name };
        ns.exec("ip link set lo up")?;
        Ok(ns)
    }

    /// Runs a shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> Result<String> {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', r"'\''")
        ))
    }

    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.exec(&format!("cat /sys/class/net/{ifname}/ifindex"))?;
        Ok(out.trim().parse()?)
    }

    /// Moves the calling thread into the namespace until the guard is dropped.
    pub fn enter(&self) -> Result<NsGuard> {
        let back = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        let target = File::open(format!("/run/netns/{}", self.name)).context("open netns")?;
        // SAFETY: setns on valid namespace fds affects only this thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
        }
        Ok(NsGuard { back })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then remove the namespace (and its veths).
        let _ = sh(&format!(
            "for p in $(ip netns pids {0}); do kill -9 $p; done; ip netns del {0}",
            self.name
        ));
    }
}

/// Restores the thread's original namespace on drop.
pub struct NsGuard {
    back: File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // SAFETY: returning to the namespace we came from.
        unsafe { libc::setns(self.back.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// A TCP connection from `src` (bound before connecting, as std cannot) to `dst`, either
/// family, in the calling thread's namespace; the connect is bounded by `timeout`.
pub fn tcp_connect_from(
    src: impl Into<std::net::IpAddr>,
    dst: impl Into<std::net::SocketAddr>,
    timeout: std::time::Duration,
) -> std::io::Result<std::net::TcpStream> {
    let dst: std::net::SocketAddr = dst.into();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_write_timeout(Some(timeout))?;
    s.bind(&std::net::SocketAddr::from((src.into(), 0)).into())?;
    s.connect_timeout(&dst.into(), timeout)?;
    Ok(s.into())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag that [`interrupted`] reports, so that a long run
/// (bench, lab) stops at its next check and its Drop impls tear everything down.
pub fn catch_interrupts() {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

/// An error once SIGINT or SIGTERM has arrived (after [`catch_interrupts`]).
pub fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: tearing everything down");
    }
    Ok(())
}
