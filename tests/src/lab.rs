//! The contact-centre lab: gateway, client (phones, SBC, T-Lib client, config server),
//! primary and backup SIP server namespaces, a private bpffs for the daemon's pins, the
//! daemon itself and real SIP servers (sipp). Everything is removed on drop.
//!
//! ```text
//!  client ns                   gateway ns                      primary ns
//!  cl0 198.18.1.10 (phone)  -- ext0 198.18.1.1                 p0 198.18.2.11
//!      198.18.1.20 (SBC)       VIP 198.18.1.100/32  int0 198.18.2.1 --
//!      198.18.1.30 (T-Lib)                          int1 198.18.4.1 -- b0 198.18.4.12
//!      198.18.1.50 (config server, excluded)                        backup ns
//! ```
//!
//! Every link is dual-stack: 2001:db8:1::/64 outside (the VIP's IPv6 address
//! 2001:db8:1::100, phone ::10, SBC ::20, T-Lib ::30, config server ::50), 2001:db8:2::/64 to
//! the primary (::11) and 2001:db8:4::/64 to the backup (::12).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::{require_root, which, Netns};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
pub const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const SBC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
pub const TLIB: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 30);
pub const CONFIG: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
pub const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 12);
pub const GW_INT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);

pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
pub const PHONE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub const SBC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20);
pub const TLIB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x30);
pub const CONFIG6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x50);
pub const PRIMARY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11);
pub const BACKUP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, 0, 0x12);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf()
}

/// The sipvip binary, built once per test run into a target dir of its own (the outer
/// `cargo test` holds the lock on the main one).
static BIN: OnceLock<PathBuf> = OnceLock::new();

/// The sipvip binary for a clean-up: built already, or None while a panic unwinds (building
/// it then could panic again, which would abort before the namespaces are removed).
pub fn sipvip_bin_for_cleanup() -> Option<PathBuf> {
    match BIN.get() {
        Some(b) => Some(b.clone()),
        None if std::thread::panicking() => None,
        None => Some(sipvip_bin()),
    }
}

pub fn sipvip_bin() -> PathBuf {
    BIN.get_or_init(|| {
        let root = workspace();
        let target = root.join("target/sipvip-bin");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "--locked",
                "-p",
                "sipvip",
                "--bin",
                "sipvip",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(&root)
            .status()
            .expect("run cargo build for the sipvip binary");
        assert!(status.success(), "building the sipvip binary failed");
        target.join("debug/sipvip")
    })
    .clone()
}

/// A command run inside `ns` (network namespace only: the mount namespace, and so the
/// test's bpffs, stay shared).
pub fn command_in(ns: &Netns, program: &Path) -> Result<Command> {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).context("open netns")?;
    let mut c = Command::new(program);
    // SAFETY: setns in the child between fork and exec; the fd stays open until exec.
    unsafe {
        c.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(c)
}

/// A UDP socket bound to `addr` in `ns`, with a 500 ms read timeout.
pub fn udp_in(ns: &Netns, addr: (Ipv4Addr, u16)) -> std::net::UdpSocket {
    let _g = ns.enter().unwrap();
    let s = std::net::UdpSocket::bind(std::net::SocketAddr::from(addr)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Writes `text` as a Kubernetes ConfigMap volume does: `<root>/sipvip.toml` is a symlink to
/// `..data/sipvip.toml`, `..data` a symlink to a timestamped directory that holds the file.
/// Each call writes a new directory and swaps `..data` to it atomically (a new symlink
/// renamed over the old), as the kubelet does. Returns the config path.
pub fn write_configmap(root: &Path, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    std::fs::create_dir(root.join(&stamp))?;
    std::fs::write(root.join(&stamp).join("sipvip.toml"), text)?;
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, root.join("..data"))?;
    let file = root.join("sipvip.toml");
    if std::fs::symlink_metadata(&file).is_err() {
        std::os::unix::fs::symlink("..data/sipvip.toml", &file)?;
    }
    Ok(file)
}

pub struct Lab {
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub children: Vec<(String, Child)>,
    peer_xdp: Option<sipvip::datapath::Datapath>,
    daemons: usize,
    // Namespaces last: dropped after the processes are killed.
    pub gw: Netns,
    pub client: Netns,
    pub primary: Netns,
    pub backup: Netns,
}

impl Lab {
    pub fn new(tag: &str) -> Result<Lab> {
        require_root();
        if which("sipp").is_none() {
            panic!(
                "the lab needs sipp (Debian package sip-tester); `cargo xtask setup` installs it"
            );
        }
        let dir = crate::netns::scratch(tag)?;
        let bpffs = dir.join("bpf");
        let gw = Netns::new(&format!("{tag}gw"))?;
        let client = Netns::new(&format!("{tag}cl"))?;
        let primary = Netns::new(&format!("{tag}pr"))?;
        let backup = Netns::new(&format!("{tag}bk"))?;
        let mut lab = Lab {
            dir,
            bpffs,
            children: Vec::new(),
            peer_xdp: None,
            daemons: 0,
            gw,
            client,
            primary,
            backup,
        };
        lab.wire()?;
        lab.attach_peers()?;
        Ok(lab)
    }

    fn wire(&self) -> Result<()> {
        let (c, p, b) = (&self.client.name, &self.primary.name, &self.backup.name);
        self.gw.exec(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 && \
             ip link add ext0 type veth peer name cl0 netns {c} && \
             ip link add int0 type veth peer name p0 netns {p} && \
             ip link add int1 type veth peer name b0 netns {b} && \
             ip addr add 198.18.1.1/24 dev ext0 && ip addr add {GW_INT}/24 dev int0 && \
             ip addr add 198.18.4.1/24 dev int1 && \
             sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             ip -6 addr add 2001:db8:1::1/64 dev ext0 nodad && \
             ip -6 addr add 2001:db8:2::1/64 dev int0 nodad && \
             ip -6 addr add 2001:db8:4::1/64 dev int1 nodad && \
             ip link set ext0 up && ip link set int0 up && ip link set int1 up"
        ))?;
        self.client.exec(&format!(
            "ip addr add {PHONE}/24 dev cl0 && ip addr add {SBC}/24 dev cl0 && ip addr add {TLIB}/24 dev cl0 && \
             ip addr add {CONFIG}/24 dev cl0 && ip link set cl0 up && \
             ip route add 198.18.2.0/24 via 198.18.1.1 && ip route add 198.18.4.0/24 via 198.18.1.1 && \
             for a in {PHONE6} {SBC6} {TLIB6} {CONFIG6}; do ip -6 addr add $a/64 dev cl0 nodad; done && \
             ip -6 route add 2001:db8:2::/64 via 2001:db8:1::1 && \
             ip -6 route add 2001:db8:4::/64 via 2001:db8:1::1"
        ))?;
        // The SIP server hosts answer every probe to a dead port with ICMP port unreachable:
        // the kernel's default limit (one per second per peer) would hide all but one a second
        // from a monitor probing more often than that.
        self.primary.exec(&format!(
            "ip addr add {PRIMARY}/24 dev p0 && ip link set p0 up && ip route add default via {GW_INT} && \
             sysctl -qw net.ipv4.icmp_ratelimit=0 && sysctl -qw net.ipv6.icmp.ratelimit=0 && \
             ip -6 addr add {PRIMARY6}/64 dev p0 nodad && ip -6 route add default via 2001:db8:2::1"
        ))?;
        self.backup.exec(&format!(
            "ip addr add {BACKUP}/24 dev b0 && ip link set b0 up && ip route add default via 198.18.4.1 && \
             sysctl -qw net.ipv4.icmp_ratelimit=0 && sysctl -qw net.ipv6.icmp.ratelimit=0 && \
             ip -6 addr add {BACKUP6}/64 dev b0 nodad && ip -6 route add default via 2001:db8:4::1"
        ))?;
        // Full checksums on the wire: no offloads on the lab's veths.
        for (ns, dev) in [
            (&self.gw, "ext0"),
            (&self.gw, "int0"),
            (&self.gw, "int1"),
            (&self.client, "cl0"),
            (&self.primary, "p0"),
            (&self.backup, "b0"),
        ] {
            ns.exec(&format!(
                "ethtool -K {dev} tx off tso off gso off gro off >/dev/null 2>&1 || true"
            ))?;
        }
        Ok(())
    }

    /// XDP on the peers of the gateway's veths, so they accept redirected frames (a real NIC
    /// needs nothing of the kind).
    fn attach_peers(&mut self) -> Result<()> {
        let sizes = sipvip::datapath::MapSizes {
            conntrack: 1024,
            frags: 1024,
            exclusions: 16,
            flows: 1024,
            ..Default::default()
        };
        let mut dp = sipvip::datapath::Datapath::load(&sizes)?;
        // Pinned, so that a lab left up with --keep keeps forwarding after this process exits.
        let pins = self.bpffs.join("peers");
        std::fs::create_dir_all(&pins)?;
        for (ns, dev) in [
            (&self.client, "cl0"),
            (&self.primary, "p0"),
            (&self.backup, "b0"),
        ] {
            let _in = ns.enter()?;
            dp.attach_pinned(
                sipvip_common::program_names::PASS,
                dev,
                sipvip::datapath::AttachMode::Native,
                &pins,
            )?;
        }
        self.peer_xdp = Some(dp);
        Ok(())
    }

    /// Detaches the XDP programs from the peers of the gateway's veths, for a node whose
    /// members' veths have nothing attached (on-node mode: a pod's side is the CNI's).
    pub fn detach_peers(&mut self) -> Result<()> {
        let out = Command::new(sipvip_bin())
            .args(["down", "--pin-dir"])
            .arg(self.bpffs.join("peers"))
            .output()?;
        if !out.status.success() {
            bail!("sipvip down: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.peer_xdp = None;
        Ok(())
    }

    /// Checksum and segmentation offloads on the gateway's and the peers' veths, on or off
    /// (a veth whose peer runs XDP cannot take GSO frames: ethtool may refuse some of these,
    /// which is the setting a real deployment would have too).
    pub fn offloads(&self, on: bool) {
        let v = if on { "on" } else { "off" };
        for (ns, dev) in [
            (&self.gw, "ext0"),
            (&self.gw, "int0"),
            (&self.gw, "int1"),
            (&self.client, "cl0"),
            (&self.primary, "p0"),
            (&self.backup, "b0"),
        ] {
            ns.exec(&format!(
                "ethtool -K {dev} tx {v} tso {v} gso {v} gro {v} >/dev/null 2>&1 || true"
            ))
            .expect("ethtool");
        }
    }

    /// The primary opens a TCP connection from `from` to `to:port` on the client (a
    /// member-opened flow) and sends `len` bytes; returns the peer address the client saw
    /// and whether every byte arrived intact.
    pub fn stream_from_primary(
        &self,
        from: std::net::IpAddr,
        to: std::net::IpAddr,
        port: u16,
        len: usize,
    ) -> (std::net::SocketAddr, bool) {
        use std::io::{Read, Write};
        let listener = {
            let _g = self.client.enter().expect("enter");
            std::net::TcpListener::bind((to, port)).expect("listen")
        };
        let sender = {
            let _g = self.primary.enter().expect("enter");
            crate::netns::tcp_connect_from(from, (to, port), Duration::from_secs(5))
                .expect("the primary connects")
        };
        let writer = std::thread::spawn(move || {
            let mut s = sender;
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            s.write_all(&data).expect("send");
        });
        let (mut c, peer) = listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 65536];
        let t = Instant::now();
        while got.len() < len && t.elapsed() < Duration::from_secs(20) {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        writer.join().expect("writer");
        let intact = got.len() == len && got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8);
        (peer, intact)
    }

    /// Leaves everything running (for `--keep`): nothing is torn down when this returns.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// A shell command that removes a kept lab.
    pub fn teardown_command(&self) -> String {
        let nss = [&self.gw, &self.client, &self.primary, &self.backup]
            .map(|n| n.name.clone())
            .join(" ");
        format!(
            "{bin} down --pin-dir {pins}; for ns in {nss}; do for p in $(ip netns pids $ns); do kill -9 $p; done; \
             ip netns del $ns; done; umount {bpffs}; rm -rf {dir}",
            bin = sipvip_bin().display(),
            pins = self.pin_dir().display(),
            bpffs = self.bpffs.display(),
            dir = self.dir.display()
        )
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("sipvip")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sipvip.sock")
    }

    /// A daemon config for this lab.
    pub fn config(&self, interval: &str, timeout: &str, extra_monitor: &str) -> String {
        format!(
            r#"
[interfaces]
external = "ext0"
internal = ["int0", "int1"]
xdp_mode = "native"

[[monitor]]
name = "monSipUdp"
type = "sip"
transport = "udp"
interval = "{interval}"
timeout = "{timeout}"
{extra_monitor}

[[vip]]
name = "vsVipHa01"
address = "{VIP}"
address6 = "{VIP6}"
monitors = ["monSipUdp"]

[[vip.member]]
name = "primary"
address = "{PRIMARY}"
address6 = "{PRIMARY6}"
priority = 10

[[vip.member]]
name = "backup"
address = "{BACKUP}"
address6 = "{BACKUP6}"
priority = 5

[snat]
exclusions = ["{CONFIG}", "{CONFIG6}"]

[passthrough]
ports = [3000]

[garp]
burst = 3
spacing = "100ms"

[admin]
socket = "{socket}"
metrics = "127.0.0.1:9360"
pin_dir = "{pins}"
"#,
            socket = self.socket().display(),
            pins = self.pin_dir().display(),
        )
    }

    /// The lab's config made an on-node one: nothing on the internal interfaces, IPv4 only.
    pub fn node_config(&self, interval: &str, timeout: &str) -> String {
        self.node_config_dual_stack(interval, timeout)
            .lines()
            .filter(|l| !l.starts_with("address6"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(&format!(", \"{CONFIG6}\""), "")
    }

    /// The lab's dual-stack config made an on-node one: nothing on the internal interfaces.
    pub fn node_config_dual_stack(&self, interval: &str, timeout: &str) -> String {
        let text = self.config(interval, timeout, "");
        assert!(text.contains("internal = [\"int0\", \"int1\"]"));
        text.replace(
            "internal = [\"int0\", \"int1\"]",
            "internal = []\nmode = \"node\"",
        )
    }

    /// Writes `text` as a Kubernetes ConfigMap volume does, under `<dir>/configmap` (see
    /// [`write_configmap`]). Returns the config path.
    pub fn write_configmap(&self, text: &str) -> Result<PathBuf> {
        write_configmap(&self.dir.join("configmap"), text)
    }

    /// One HTTP GET to the daemon's metrics listener (127.0.0.1:9360 in the gateway):
    /// the status line and the body.
    pub fn http_get(&self, path: &str) -> Result<(String, String)> {
        use std::io::{Read, Write};
        let _g = self.gw.enter()?;
        let mut s = std::net::TcpStream::connect("127.0.0.1:9360")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        // One write, as an HTTP client sends a short request.
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: sipvip\r\n\r\n").as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head.lines().next().unwrap_or("").to_string();
        Ok((status, body.to_string()))
    }

    pub fn write_config(&self, text: &str) -> Result<PathBuf> {
        let p = self.dir.join("sipvip.toml");
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// Starts `sipvip run` in the gateway; its log goes to `<dir>/daemon-N.log`.
    pub fn start_daemon(&mut self, config: &Path) -> Result<()> {
        self.start_daemon_with(config, &[])
    }

    /// `start_daemon` with more arguments for `sipvip run` (`--watch-config`).
    pub fn start_daemon_with(&mut self, config: &Path, args: &[&str]) -> Result<()> {
        self.start_daemon_under(config, args, &[])
    }

    /// `start_daemon_with`, run by `wrapper` (a command that execs its arguments, such as
    /// `setpriv` with a capability set).
    pub fn start_daemon_under(
        &mut self,
        config: &Path,
        args: &[&str],
        wrapper: &[&str],
    ) -> Result<()> {
        let n = self.daemons;
        self.daemons += 1;
        let log = std::fs::File::create(self.dir.join(format!("daemon-{n}.log")))?;
        let bin = sipvip_bin();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = command_in(&self.gw, Path::new(program))?;
                c.args(rest).arg(&bin);
                c
            }
            None => command_in(&self.gw, &bin)?,
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start sipvip")?;
        self.children.push((format!("daemon-{n}"), child));
        // Ready when the control socket answers.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self
                .sipvip(&["status", "--json"])
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("sipvip did not come up; log:\n{}", self.daemon_log(n))
    }

    pub fn daemon_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("daemon-{n}.log"))).unwrap_or_default()
    }

    /// Stops a child by name with `signal` and waits for it (bounded).
    pub fn stop(&mut self, name: &str, signal: i32) -> Result<()> {
        let Some(i) = self.children.iter().position(|(k, _)| k == name) else {
            bail!("no child {name}")
        };
        let (_, mut c) = self.children.remove(i);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if c.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        bail!("{name} did not exit on signal {signal}")
    }

    pub fn signal(&self, name: &str, signal: i32) -> Result<()> {
        let (_, c) = self
            .children
            .iter()
            .find(|(k, _)| k == name)
            .context("no such child")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        Ok(())
    }

    /// Runs a sipvip CLI command against this lab's daemon.
    pub fn sipvip(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut c = Command::new(sipvip_bin());
        c.args(args);
        if !matches!(args.first(), Some(&"check") | Some(&"down")) {
            c.arg("--socket").arg(self.socket());
        }
        Ok(c.output()?)
    }

    pub fn status(&self) -> Result<serde_json::Value> {
        let o = self.sipvip(&["status", "--json"])?;
        if !o.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }

    /// Whether the daemon sees the member `name` (of the first VIP) up.
    pub fn member_up(&self, name: &str) -> bool {
        self.status()
            .ok()
            .and_then(|s| {
                s["vips"][0]["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["name"] == name)
                    .map(|m| m["up"] == true)
            })
            .unwrap_or(false)
    }

    /// The VIP's active member name per the daemon.
    pub fn active(&self) -> Result<Option<String>> {
        Ok(self.status()?["vips"][0]["active"]
            .as_str()
            .map(str::to_string))
    }

    /// Waits until the daemon reports `who` as the VIP's active member; returns how long it took.
    pub fn wait_active(&self, who: &str, limit: Duration) -> Option<Duration> {
        self.wait_for(limit, || {
            self.active().ok().flatten().as_deref() == Some(who)
        })
    }

    /// Waits until `f` holds, polling every 10 ms, for at most `limit`; returns how long it took.
    pub fn wait_for(&self, limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if f() {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.peer_xdp = None;
        if let Some(bin) = sipvip_bin_for_cleanup() {
            let _ = Command::new(bin)
                .args(["down", "--pin-dir"])
                .arg(self.pin_dir())
                .output();
        }
        crate::netns::remove_scratch(&self.dir);
    }
}
