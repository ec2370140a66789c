//! What the multi-gateway topologies (`pair`, `ecmp`) share: the switch namespace's bridge
//! ports, the XDP pass program on the ports the gateways redirect into, the sipvip binary in
//! a directory keepalived's script security accepts, keepalived from the file `sipvip
//! keepalived-config` generates, and the daemons' status.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    lab::{command_in, sipvip_bin},
    netns::Netns,
};

/// A veth from `ns` (`dev`, up, offloads off) to a port `swdev` of `bridge` in `sw`.
pub fn bridge_port(sw: &Netns, ns: &Netns, dev: &str, swdev: &str, bridge: &str) -> Result<()> {
    ns.exec(&format!(
        "ip link add {dev} type veth peer name {swdev} netns {} && ip link set {dev} up && \
         ethtool -K {dev} tx off tso off gso off gro off >/dev/null 2>&1 || true",
        sw.name
    ))?;
    sw.exec(&format!(
        "ip link set {swdev} master {bridge} && ip link set {swdev} up && \
         ethtool -K {swdev} tx off tso off gso off gro off >/dev/null 2>&1 || true"
    ))?;
    Ok(())
}

/// The XDP pass program on bridge ports `devs` of `sw` (pinned under `pins`): a gateway's
/// XDP redirects into its veths, whose peers must run XDP to receive the frames; it passes
/// them on to the bridge. Holds the programs while it lives.
pub fn pass_on_ports(
    sw: &Netns,
    devs: &[String],
    pins: &Path,
) -> Result<sipvip::datapath::Datapath> {
    let sizes = sipvip::datapath::MapSizes {
        conntrack: 1024,
        frags: 1024,
        exclusions: 16,
        flows: 1024,
        ..Default::default()
    };
    let mut dp = sipvip::datapath::Datapath::load(&sizes)?;
    std::fs::create_dir_all(pins)?;
    let _in = sw.enter()?;
    for dev in devs {
        dp.attach_pinned(
            sipvip_common::program_names::PASS,
            dev,
            sipvip::datapath::AttachMode::Native,
            pins,
        )?;
    }
    Ok(dp)
}

/// The sipvip binary copied into a directory under /run that only root can write, as
/// keepalived's script security requires of the scripts it runs (a checkout under /tmp
/// would not do). Remove the directory with [`remove_safe_bin`].
pub fn safe_bin(tag: &str) -> Result<PathBuf> {
    let safe = PathBuf::from(format!("/run/svt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&safe);
    std::fs::create_dir_all(&safe)?;
    let bin = safe.join("sipvip");
    std::fs::copy(sipvip_bin(), &bin).context("copy the sipvip binary")?;
    Ok(bin)
}

pub fn remove_safe_bin(bin: &Path) {
    if let Some(safe) = bin.parent() {
        let _ = std::fs::remove_dir_all(safe);
    }
}

/// keepalived in `ns`, with the file `bin keepalived-config --config cfg args...` prints,
/// its files in `dir` named after `name` (pid files apart, so that several run at once).
pub fn keepalived(
    ns: &Netns,
    bin: &Path,
    cfg: &Path,
    dir: &Path,
    name: &str,
    args: &[String],
) -> Result<Child> {
    let out = Command::new(bin)
        .args(["keepalived-config", "--config"])
        .arg(cfg)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "keepalived-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conf = dir.join(format!("keepalived-{name}.conf"));
    std::fs::write(&conf, &out.stdout)?;
    let log = std::fs::File::create(dir.join(format!("keepalived-{name}.log")))?;
    let pid = |what: &str| dir.join(format!("keepalived-{name}-{what}.pid"));
    command_in(ns, Path::new("/usr/sbin/keepalived"))?
        .args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--vrrp",
            "--use-file",
        ])
        .arg(&conf)
        .arg("--pid")
        .arg(pid("main"))
        .arg("--vrrp_pid")
        .arg(pid("vrrp"))
        .arg("--checkers_pid")
        .arg(pid("checkers"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start keepalived")
}

/// Kills keepalived `name`'s VRRP process (SIGKILL): killed with its parent alone, it would
/// be told to stop and leave in good order (priority 0, addresses removed), unlike a crashed
/// box.
pub fn kill_vrrp(dir: &Path, name: &str) {
    let pid = dir.join(format!("keepalived-{name}-vrrp.pid"));
    if let Some(pid) = std::fs::read_to_string(pid)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: signalling the VRRP process our keepalived child started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A daemon's status (`sipvip status --json`).
pub fn status(bin: &Path, socket: &Path) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()?;
    if !out.status.success() {
        bail!("status: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Polls `f` every 50 ms until it holds (how long that took) or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A steady stream of SIP OPTIONS to `vip:5060` from `phone`, one source port after another
/// (`ports`), each waiting up to `wait` for its 200 and the next sent no sooner than `pace`
/// after it (bounded by `limit` in all), recording
/// when each port's answers came; stopped on drop. An outage is the longest gap of any
/// port's answers.
pub struct Probes {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u16, Vec<Instant>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probes {
    pub fn start(
        client: &Netns,
        phone: std::net::Ipv4Addr,
        vip: std::net::Ipv4Addr,
        ports: std::ops::Range<u16>,
        (wait, pace): (Duration, Duration),
        limit: Duration,
    ) -> Probes {
        use std::sync::{atomic::Ordering, Arc, Mutex};
        let socks: Vec<(u16, std::net::UdpSocket)> = {
            let _g = client.enter().expect("enter");
            ports
                .map(|p| {
                    let s = std::net::UdpSocket::bind((phone, p)).expect("bind");
                    s.set_read_timeout(Some(wait)).expect("timeout");
                    (p, s)
                })
                .collect()
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let (s2, a2) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut n = 0u64;
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) && t0.elapsed() < limit {
                let (port, sock) = &socks[n as usize % socks.len()];
                n += 1;
                let msg = format!(
                    "OPTIONS sip:{vip}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {phone}:{port};branch=z9hG4bK-probe-{n}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:phone@{phone}>;tag=p{n}\r\nTo: <sip:{vip}>\r\n\
                     Call-ID: probe-{n}@phone\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = sock.send_to(msg.as_bytes(), (vip, 5060));
                let sent = Instant::now();
                while sent.elapsed() < wait {
                    if let Ok((len, from)) = sock.recv_from(&mut buf) {
                        if from == std::net::SocketAddr::from((vip, 5060))
                            && buf[..len].starts_with(b"SIP/2.0 200")
                        {
                            a2.lock()
                                .expect("lock")
                                .entry(*port)
                                .or_insert_with(Vec::new)
                                .push(Instant::now());
                            break;
                        }
                    }
                }
                if let Some(rest) = pace.checked_sub(sent.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        });
        Probes {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    /// Since `from`: the longest time any port went without an answer (up to its last
    /// one), how many answers came, and from how many ports.
    pub fn gap_since(&self, from: Instant) -> (Duration, usize, usize) {
        let a = self.answers.lock().expect("lock");
        let (mut gap, mut answers, mut ports) = (Duration::ZERO, 0, 0);
        for times in a.values() {
            let mut last = from;
            let mut any = false;
            for t in times.iter().filter(|t| **t >= from) {
                gap = gap.max(t.duration_since(last));
                last = *t;
                answers += 1;
                any = true;
            }
            ports += usize::from(any);
        }
        (gap, answers, ports)
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The head of every lab gateway's sipvip configuration: the seed's VIP (`vip`) and its pair
/// (`primary`, `backup`) behind a fast SIP OPTIONS monitor, on ext0/int0 in native XDP. The
/// pair and scale-out labs add their own sections.
pub fn seed_vip_config(vip: Ipv4Addr, primary: Ipv4Addr, backup: Ipv4Addr) -> String {
    format!(
        r#"
[interfaces]
external = "ext0"
internal = ["int0"]
xdp_mode = "native"

[[monitor]]
name = "monSipUdp"
type = "sip"
transport = "udp"
interval = "200ms"
timeout = "1s"

[[vip]]
name = "vsVipHa01"
address = "{vip}"
monitors = ["monSipUdp"]

[[vip.member]]
name = "primary"
address = "{primary}"
priority = 10

[[vip.member]]
name = "backup"
address = "{backup}"
priority = 5
"#
    )
}
