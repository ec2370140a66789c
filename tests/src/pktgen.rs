//! Kernel pktgen as the bench's traffic generator, where the machine has it
//! (`/proc/net/pktgen`, CONFIG_NET_PKTGEN). The setup follows the kernel's own samples
//! (samples/pktgen/pktgen_sample01_simple.sh and _sample03_burst_single_flow.sh): one pktgen
//! device `DEV@N` per thread, bound to kernel thread `kpktgend_N`, with packet size, count,
//! clone_skb and burst, then `start` on pgctrl, which blocks until `stop` or the count.
//!
//! pktgen is per network namespace: its files are under the namespace's /proc/net, which a
//! thread reaches as /proc/thread-self/net after entering the namespace.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// The namespace-relative pktgen directory, seen from a thread inside the namespace.
pub const PROC_DIR: &str = "/proc/thread-self/net/pktgen";

/// One pktgen flow set, as the kernel samples parameterise it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PktgenCfg {
    /// The sending interface (in the generator's namespace).
    pub dev: String,
    /// Kernel threads (kpktgend_0..threads-1), one pktgen device each.
    pub threads: u32,
    /// Frame size without the FCS (60 is a minimum 64-byte Ethernet frame).
    pub pkt_size: usize,
    /// Packets per thread; the sender stops earlier on `stop`.
    pub count: u64,
    /// Packets sent per transmit call (xmit_more); 1 = none.
    pub burst: u32,
    /// Times each skb is reused before a new one is built.
    pub clone_skb: u32,
    pub dst_mac: [u8; 6],
    pub src_min: Ipv4Addr,
    pub src_max: Ipv4Addr,
    pub dst_min: Ipv4Addr,
    pub dst_max: Ipv4Addr,
    pub udp_src_min: u16,
    pub udp_src_max: u16,
    pub udp_dst: u16,
}

/// The writes that configure `cfg`: (file under the pktgen directory, command), in order.
pub fn commands(cfg: &PktgenCfg) -> Vec<(String, String)> {
    let mac = crate::frame::mac_str(&cfg.dst_mac);
    let mut out = vec![("pgctrl".to_string(), "reset".to_string())];
    for t in 0..cfg.threads {
        let thread = format!("kpktgend_{t}");
        let dev = format!("{}@{t}", cfg.dev);
        out.push((thread.clone(), "rem_device_all".into()));
        out.push((thread, format!("add_device {dev}")));
        for c in [
            "flag QUEUE_MAP_CPU".to_string(),
            format!("count {}", cfg.count),
            format!("clone_skb {}", cfg.clone_skb),
            format!("pkt_size {}", cfg.pkt_size),
            "delay 0".into(),
            "flag NO_TIMESTAMP".into(),
            format!("dst_mac {mac}"),
            format!("src_min {}", cfg.src_min),
            format!("src_max {}", cfg.src_max),
            format!("dst_min {}", cfg.dst_min),
            format!("dst_max {}", cfg.dst_max),
            format!("udp_src_min {}", cfg.udp_src_min),
            format!("udp_src_max {}", cfg.udp_src_max),
            format!("udp_dst_min {}", cfg.udp_dst),
            format!("udp_dst_max {}", cfg.udp_dst),
            format!("burst {}", cfg.burst),
        ] {
            out.push((dev.clone(), c));
        }
    }
    out
}

/// Writes one command and checks the kernel's "Result: OK" answer (as the samples' pg_set
/// does); pgctrl has no result line.
fn write(dir: &Path, file: &str, cmd: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, format!("{cmd}\n"))
        .with_context(|| format!("pktgen: {cmd:?} > {}", path.display()))?;
    if file != "pgctrl" {
        let s = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = s.lines().find(|l| l.starts_with("Result:")) {
            if !line.starts_with("Result: OK") {
                bail!("pktgen: {cmd:?} > {}: {line}", path.display());
            }
        }
    }
    Ok(())
}

/// Whether kernel pktgen is available in `ns`.
pub fn available(ns: &Netns) -> bool {
    ns.enter()
        .map(|_g| Path::new(PROC_DIR).join("pgctrl").exists())
        .unwrap_or(false)
}

/// A running pktgen: `start` blocks in its own thread (inside the namespace) until
/// [`Running::stop`] writes `stop`.
pub struct Running {
    handle: std::thread::JoinHandle<Result<()>>,
    ns_name: String,
    done: Arc<AtomicBool>,
}

/// Configures `cfg` in `ns` and starts sending.
pub fn start(ns: &Netns, cfg: &PktgenCfg) -> Result<Running> {
    {
        let _g = ns.enter()?;
        let dir = PathBuf::from(PROC_DIR);
        for (file, cmd) in commands(cfg) {
            write(&dir, &file, &cmd)?;
        }
    }
    let ns_name = ns.name.clone();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || -> Result<()> {
        let ns = std::fs::File::open(format!("/run/netns/{ns_name}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let r = std::fs::write(Path::new(PROC_DIR).join("pgctrl"), "start\n");
        flag.store(true, Ordering::SeqCst);
        r.context("pktgen start")
    });
    Ok(Running {
        handle,
        ns_name: ns.name.clone(),
        done,
    })
}

impl Running {
    /// Stops the senders (bounded: gives up after 5 s) and resets pktgen in the namespace.
    pub fn stop(self, ns: &Netns) -> Result<()> {
        debug_assert_eq!(ns.name, self.ns_name);
        let _g = ns.enter()?;
        let ctrl = Path::new(PROC_DIR).join("pgctrl");
        let t = Instant::now();
        while !self.done.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            let _ = std::fs::write(&ctrl, "stop\n");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::write(&ctrl, "reset\n");
        if !self.handle.is_finished() {
            bail!("pktgen did not stop within 5 s");
        }
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("pktgen thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_follow_the_kernel_samples() {
        let cfg = PktgenCfg {
            dev: "e0".into(),
            threads: 2,
            pkt_size: 60,
            count: 1000,
            burst: 32,
            clone_skb: 0,
            dst_mac: [2, 0, 0, 0, 1, 1],
            src_min: Ipv4Addr::new(198, 18, 64, 0),
            src_max: Ipv4Addr::new(198, 18, 79, 255),
            dst_min: Ipv4Addr::new(198, 18, 1, 100),
            dst_max: Ipv4Addr::new(198, 18, 1, 100),
            udp_src_min: 10000,
            udp_src_max: 10015,
            udp_dst: 5060,
        };
        let c = commands(&cfg);
        assert_eq!(c[0], ("pgctrl".into(), "reset".into()));
        assert_eq!(c[1], ("kpktgend_0".into(), "rem_device_all".into()));
        assert_eq!(c[2], ("kpktgend_0".into(), "add_device e0@0".into()));
        let dev0: Vec<&str> = c
            .iter()
            .filter(|(f, _)| f == "e0@0")
            .map(|(_, x)| x.as_str())
            .collect();
        assert_eq!(
            dev0,
            [
                "flag QUEUE_MAP_CPU",
                "count 1000",
                "clone_skb 0",
                "pkt_size 60",
                "delay 0",
                "flag NO_TIMESTAMP",
                "dst_mac 02:00:00:00:01:01",
                "src_min 198.18.64.0",
                "src_max 198.18.79.255",
                "dst_min 198.18.1.100",
                "dst_max 198.18.1.100",
                "udp_src_min 10000",
                "udp_src_max 10015",
                "udp_dst_min 5060",
                "udp_dst_max 5060",
                "burst 32",
            ]
        );
        assert!(c.contains(&("kpktgend_1".into(), "add_device e0@1".into())));
        assert_eq!(c.len(), 1 + 2 * (2 + 16));
    }
}
