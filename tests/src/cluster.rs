//! A two-node cluster in namespaces, as a DaemonSet in on-node mode sees it: no Kubernetes
//! API server can run here, so this does what the kubelet would do, with the manifest's
//! settings (the ConfigMap layout with its `..data` symlink, the host's bpffs, the
//! capabilities, the init container) and, for `Runner::Image`, the real image under podman.
//! Used by the DaemonSet test, the on-node tests and `cargo xtask lab --k8s`.
//!
//! ```text
//!  sw ns: br0  198.18.1.10 phone, 198.18.1.53 DNS (dnsmasq: sip-0/sip-1.sip.contact.test)
//!   ├─ n0p ── eth0 198.18.1.2  node 1 ── int0 198.18.2.1 ── pod p0 198.18.2.11 (sip-0, primary)
//!   └─ n1p ── eth0 198.18.1.3  node 2 ── int0 198.18.4.1 ── pod p0 198.18.4.12 (sip-1, backup)
//! ```
//!
//! Each node routes the other node's pod network through it; the pods' default route is
//! their node. Everything is removed on drop.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    image::{daemonset_capabilities, Container},
    lab::{command_in, sipvip_bin, write_configmap, BACKUP, PHONE, PRIMARY, VIP},
    netns::{require_root, Netns},
};

pub const NODE_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 1, 3)];
pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 53);
/// The members' DNS names (a StatefulSet `sip` behind a headless Service).
pub const NAMES: [&str; 2] = ["sip-0.sip.contact.test", "sip-1.sip.contact.test"];
/// Where the primary's pod comes back after it is recreated.
pub const MOVED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);

/// How the daemon runs on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The sipvip binary, as root.
    Binary,
    /// The image under podman (runc, cgroupfs) with the DaemonSet's capabilities, after its
    /// init container.
    Image,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub runner: Runner,
    /// The daemons' generation per node (a rolling update starts the next one).
    generation: [usize; 2],
    daemons: [Option<Child>; 2],
    containers: [Option<Container>; 2],
    /// sipp per pod, and dnsmasq.
    sipp: [Option<Child>; 2],
    dnsmasq: Option<Child>,
    // Namespaces last: dropped after the processes.
    pub sw: Netns,
    pub nodes: [Netns; 2],
    pub pods: [Netns; 2],
}

impl Cluster {
    pub fn new(tag: &str, runner: Runner) -> Result<Cluster> {
        require_root();
        let dir = crate::netns::scratch(tag)?;
        for i in 0..2 {
            std::fs::create_dir_all(dir.join(format!("node{i}/run")))?;
        }
        let mut c = Cluster {
            dir,
            runner,
            generation: [0, 0],
            daemons: [None, None],
            containers: [None, None],
            sipp: [None, None],
            dnsmasq: None,
            sw: Netns::new(&format!("{tag}sw"))?,
            nodes: [
                Netns::new(&format!("{tag}n1"))?,
                Netns::new(&format!("{tag}n2"))?,
            ],
            pods: [
                Netns::new(&format!("{tag}p1"))?,
                Netns::new(&format!("{tag}p2"))?,
            ],
        };
        c.wire()?;
        c.set_records(PRIMARY)?;
        c.start_dns()?;
        Ok(c)
    }

    fn wire(&self) -> Result<()> {
        self.sw.exec(&format!(
            "ip link add br0 type bridge && ip addr add {PHONE}/24 dev br0 && \
             ip addr add {DNS}/24 dev br0 && ip link set br0 up"
        ))?;
        let (pod_net, pod_addr) = (["198.18.2", "198.18.4"], [PRIMARY, BACKUP]);
        for i in 0..2 {
            let (n, p) = (&self.nodes[i], &self.pods[i]);
            self.sw.exec(&format!(
                "ip link add n{i}p type veth peer name eth0 netns {n} && ip link set n{i}p master br0 && ip link set n{i}p up",
                n = n.name
            ))?;
            let other = 1 - i;
            n.exec(&format!(
                "sysctl -qw net.ipv4.ip_forward=1 && ip addr add {a}/24 dev eth0 && ip link set eth0 up && \
                 ip link add int0 type veth peer name p0 netns {p} && ip addr add {net}.1/24 dev int0 && ip link set int0 up && \
                 ip route add {onet}.0/24 via {oa}",
                a = NODE_ADDRS[i],
                p = p.name,
                net = pod_net[i],
                onet = pod_net[other],
                oa = NODE_ADDRS[other],
            ))?;
            p.exec(&format!(
                "ip addr add {pa}/24 dev p0 && ip link set p0 up && ip route add default via {net}.1 && \
                 sysctl -qw net.ipv4.icmp_ratelimit=0",
                pa = pod_addr[i],
                net = pod_net[i]
            ))?;
        }
        Ok(())
    }

    /// The members' names as dnsmasq serves them: sip-0 at `primary`, sip-1 at the backup.
    pub fn set_records(&self, primary: Ipv4Addr) -> Result<()> {
        std::fs::write(
            self.dir.join("hosts"),
            format!("{primary} {}\n{BACKUP} {}\n", NAMES[0], NAMES[1]),
        )?;
        if let Some(d) = &self.dnsmasq {
            // SAFETY: signalling the dnsmasq child this cluster started.
            unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
        }
        Ok(())
    }

    fn start_dns(&mut self) -> Result<()> {
        let child = command_in(&self.sw, Path::new("/usr/sbin/dnsmasq"))?
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={DNS}"),
                "--local-ttl=0",
                "--user=root",
                "--group=root",
                "--pid-file=",
            ])
            .arg(format!("--addn-hosts={}", self.dir.join("hosts").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("dnsmasq (Debian package dnsmasq-base): `cargo xtask setup` installs it")?;
        self.dnsmasq = Some(child);
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// The ConfigMap's configuration for this cluster: node mode, members by name, the
    /// nodes excluded from SNAT (their probes of each other's pods), `extra` appended.
    pub fn config_text(&self, monitor: (&str, &str), claim_after: &str, extra: &str) -> String {
        format!(
            r#"
[interfaces]
external = "eth0"
mode = "node"
xdp_mode = "native"

[[monitor]]
name = "monSipUdp"
type = "sip"
transport = "udp"
interval = "{interval}"
timeout = "{timeout}"

[[vip]]
name = "vsVipHa01"
address = "{VIP}"
monitors = ["monSipUdp"]

[[vip.member]]
name = "primary"
host = "{n0}"
priority = 10

[[vip.member]]
name = "backup"
host = "{n1}"
priority = 5

[snat]
exclusions = ["{a0}", "{a1}"]

[ownership]
claim_after = "{claim_after}"

[garp]
burst = 3
spacing = "100ms"

[dns]
servers = ["{DNS}:53"]
refresh = "60m"

[admin]
socket = "/run/sipvip/sipvip.sock"
metrics = "127.0.0.1:9360"
pin_dir = "{bpf}/sipvip"
{extra}
"#,
            n0 = NAMES[0],
            n1 = NAMES[1],
            a0 = NODE_ADDRS[0],
            a1 = NODE_ADDRS[1],
            bpf = self.bpffs().display(),
            interval = monitor.0,
            timeout = monitor.1,
        )
    }

    /// Leaves everything running (`--keep`); returns the shell command that removes it.
    pub fn keep(self) -> String {
        let nss = std::iter::once(&self.sw)
            .chain(&self.nodes)
            .chain(&self.pods)
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
            .join(" ");
        let containers = self
            .containers
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(" ");
        let cmd = format!(
            "{podman}{bin} down --pin-dir {b}/node0; {bin} down --pin-dir {b}/node1; \
             for ns in {nss}; do for p in $(ip netns pids $ns); do kill -9 $p; done; ip netns del $ns; done; \
             umount {b}; rm -rf {dir}",
            podman = if containers.is_empty() {
                String::new()
            } else {
                format!("podman --runtime runc --cgroup-manager=cgroupfs rm -f -t 0 {containers}; ")
            },
            bin = sipvip_bin().display(),
            b = self.bpffs().display(),
            dir = self.dir.display()
        );
        std::mem::forget(self);
        cmd
    }

    /// Where a node's bpffs is: each node has its own, as each node has its own kernel.
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    /// The config as the kubelet writes it for every node (the ConfigMap volume); returns
    /// node `i`'s path.
    pub fn apply_config(&self, text: &str) -> Result<[PathBuf; 2]> {
        let mut out = Vec::new();
        for i in 0..2 {
            // Node i's copy, with its own socket and pins (one host plays both nodes).
            let t = text
                .replace(
                    "/run/sipvip/sipvip.sock",
                    &self.socket(i).display().to_string(),
                )
                .replace(
                    &format!("{}/sipvip", self.bpffs().display()),
                    &format!("{}/node{i}", self.bpffs().display()),
                );
            out.push(write_configmap(&self.node_dir(i).join("configmap"), &t)?);
        }
        Ok([out[0].clone(), out[1].clone()])
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("run/sipvip.sock")
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("configmap/sipvip.toml")
    }

    /// Starts node `i`'s daemon (the next generation), watching its ConfigMap.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let cfg = self.config_path(i);
        let cfg_s = cfg.display().to_string();
        let g = self.generation[i];
        self.generation[i] += 1;
        match self.runner {
            Runner::Binary => {
                let log = std::fs::File::create(self.node_dir(i).join(format!("daemon-{g}.log")))?;
                let child = command_in(&self.nodes[i], &sipvip_bin())?
                    .args(["run", "--config", &cfg_s, "--watch-config"])
                    .env("RUST_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("start sipvip")?;
                self.daemons[i] = Some(child);
            }
            Runner::Image => {
                let (bpf, node) = (self.bpffs(), self.node_dir(i));
                let mounts: [&Path; 2] = [&bpf, &node];
                if g == 0 {
                    // The DaemonSet's init container: the node's sysctls, privileged.
                    Container::run_privileged_once(
                        &self.nodes[i],
                        &mounts,
                        &["node-sysctls", "--config", &cfg_s],
                    )?;
                }
                let name = format!("svc-{}-n{i}-g{g}", std::process::id());
                let c = Container::run(
                    &name,
                    &self.nodes[i],
                    &daemonset_capabilities(),
                    &mounts,
                    &["run", "--config", &cfg_s, "--watch-config"],
                )?;
                self.containers[i] = Some(c);
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if self.status(i).is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("node {} daemon did not come up:\n{}", i + 1, self.log(i))
    }

    /// Stops node `i`'s daemon as the kubelet does (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(c) = self.containers[i].take() {
            c.stop(10)?;
        }
        if let Some(mut d) = self.daemons[i].take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        Ok(())
    }

    pub fn log(&self, i: usize) -> String {
        match (&self.containers[i], self.runner) {
            (Some(c), _) => c.logs(),
            (None, Runner::Binary) => {
                let g = self.generation[i].saturating_sub(1);
                std::fs::read_to_string(self.node_dir(i).join(format!("daemon-{g}.log")))
                    .unwrap_or_default()
            }
            (None, Runner::Image) => String::new(),
        }
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = std::process::Command::new(sipvip_bin())
            .args(["status", "--json", "--socket"])
            .arg(self.socket(i))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn active(&self, i: usize) -> Option<String> {
        self.status(i)?["vips"][0]["active"]
            .as_str()
            .map(str::to_string)
    }

    pub fn owner(&self, i: usize) -> Option<bool> {
        self.status(i)?["vips"][0]["owner"].as_bool()
    }

    /// Waits (bounded) until `f` holds; how long it took.
    pub fn wait_for(
        &self,
        limit: Duration,
        mut f: impl FnMut(&Cluster) -> bool,
    ) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if f(self) {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A SIP server (sipp UAS) in pod `pod` on `addr`.
    pub fn sip_server(&mut self, pod: usize, addr: Ipv4Addr) -> Result<()> {
        let child = crate::scenario::sip_server_in(&self.pods[pod], addr, 5060, &self.dir)?;
        self.sipp[pod] = Some(child);
        Ok(())
    }

    /// The pod's SIP server dies.
    pub fn kill_sip_server(&mut self, pod: usize) {
        if let Some(mut c) = self.sipp[pod].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A socket of the phone's, on 5062.
    pub fn phone(&self) -> Result<UdpSocket> {
        let _g = self.sw.enter()?;
        let s = UdpSocket::bind(SocketAddr::from((PHONE, 5062)))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(s)
    }

    /// Node `i`'s uplink MAC.
    pub fn mac(&self, i: usize) -> Result<String> {
        Ok(self.nodes[i]
            .exec("cat /sys/class/net/eth0/address")?
            .trim()
            .to_string())
    }

    /// Which node the phone's ARP entry for the VIP names (1 or 2), if either.
    pub fn phone_sees_node(&self) -> Option<usize> {
        let n = self
            .sw
            .exec(&format!("ip neigh show {VIP} dev br0"))
            .unwrap_or_default();
        (0..2)
            .find(|i| self.mac(*i).is_ok_and(|m| n.contains(&m)))
            .map(|i| i + 1)
    }
}

/// One OPTIONS from the phone to the VIP (a fresh Call-ID per `call`); the source of the
/// 200 that answered it, if one did within 300 ms.
pub fn ping_vip(phone: &UdpSocket, call: usize) -> Option<SocketAddr> {
    let msg = format!(
        "OPTIONS sip:{VIP}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK-k8s-{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:phone@{PHONE}>;tag=k{call}\r\nTo: <sip:{VIP}>\r\nCall-ID: k8s-{call}@phone\r\nCSeq: 1 OPTIONS\r\n\
         Contact: <sip:phone@{PHONE}:5062>\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(msg.as_bytes(), (VIP, 5060)).ok()?;
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(300) {
        let (n, from) = phone.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 200") && text.contains(&format!("k8s-{call}@phone")) {
            return Some(from);
        }
    }
    None
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.containers {
            *c = None;
        }
        for c in self
            .daemons
            .iter_mut()
            .chain(self.sipp.iter_mut())
            .chain(std::iter::once(&mut self.dnsmasq))
        {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for i in 0..2 {
            if let Some(bin) = crate::lab::sipvip_bin_for_cleanup() {
                let _ = std::process::Command::new(bin)
                    .args(["down", "--pin-dir"])
                    .arg(self.bpffs().join(format!("node{i}")))
                    .output();
            }
        }
        crate::netns::remove_scratch(&self.dir);
    }
}
