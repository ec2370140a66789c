//! Two sipvip gateways as an active/standby pair with keepalived (VRRP), in namespaces,
//! with the SIP servers behind them:
//!
//! ```text
//!  client ns (phone .10, SBC .20, T-Lib .30, config .50)
//!     cl0 ──┐                     switch ns: bridges brE and brI
//!           brE ── ext0 gateway A .2 [XDP]   int0 .2 [XDP] ── brI ── p0 primary 198.18.2.11
//!           brE ── ext0 gateway B .3 [XDP]   int0 .3 [XDP] ── brI ── b0 backup  198.18.2.12
//!  198.18.1.0/24: floating .1 (the client's route to the servers)   198.18.2.0/24: floating
//!  .1 (the servers' default gateway); VIP 198.18.1.100: all three move with keepalived.
//! ```
//!
//! Each gateway runs the daemon with the same configuration (`ha.mode = "keepalived"`) and
//! keepalived with the file `sipvip keepalived-config` generates, A at a higher priority.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    gateways,
    lab::{command_in, sipvip_bin_for_cleanup},
    netns::{require_root, which, Netns},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
pub const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const SBC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
pub const TLIB: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 30);
pub const CONFIG: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
pub const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 12);
pub const FLOAT_EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const FLOAT_INT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The gateways' own addresses (A, B) on each side.
pub const GW_EXT: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 1, 3)];
pub const GW_INT: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 2, 2), Ipv4Addr::new(198, 18, 2, 3)];
/// keepalived's priorities: A starts as master.
pub const PRIORITY: [u8; 2] = [150, 100];
/// The VRRP advertisement interval: the backup takes over about 3 of them after the
/// master's last.
pub const ADVERT: &str = "200ms";

pub struct Pair {
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    /// The sipvip binary keepalived's scripts run, in a directory only root can write
    /// (keepalived's script security).
    pub bin: PathBuf,
    pub children: Vec<(String, Child)>,
    peer_xdp: Option<sipvip::datapath::Datapath>,
    // Namespaces last: dropped after the processes are killed.
    pub sw: Netns,
    pub client: Netns,
    pub gw: [Netns; 2],
    pub primary: Netns,
    pub backup: Netns,
}

const NAMES: [&str; 2] = ["a", "b"];

impl Pair {
    pub fn new(tag: &str) -> Result<Pair> {
        require_root();
        for tool in ["sipp", "keepalived"] {
            if which(tool).is_none() {
                panic!(
                    "the pair needs {tool} (Debian packages sip-tester, keepalived); `cargo xtask setup` installs them"
                );
            }
        }
        let dir = crate::netns::scratch(tag)?;
        let bpffs = dir.join("bpf");
        let bin = gateways::safe_bin(tag)?;
        let mut p = Pair {
            dir,
            bpffs,
            bin,
            children: Vec::new(),
            peer_xdp: None,
            sw: Netns::new(&format!("{tag}sw"))?,
            client: Netns::new(&format!("{tag}cl"))?,
            gw: [
                Netns::new(&format!("{tag}ga"))?,
                Netns::new(&format!("{tag}gb"))?,
            ],
            primary: Netns::new(&format!("{tag}pr"))?,
            backup: Netns::new(&format!("{tag}bk"))?,
        };
        p.wire()?;
        Ok(p)
    }

    fn wire(&mut self) -> Result<()> {
        self.sw.exec(
            "ip link add brE type bridge && ip link add brI type bridge && \
             ip link set brE up && ip link set brI up",
        )?;
        let port = |ns: &Netns, dev: &str, swdev: &str, bridge: &str| {
            gateways::bridge_port(&self.sw, ns, dev, swdev, bridge)
        };
        port(&self.client, "cl0", "e-cl", "brE")?;
        port(&self.primary, "p0", "i-pr", "brI")?;
        port(&self.backup, "b0", "i-bk", "brI")?;
        for (i, g) in self.gw.iter().enumerate() {
            port(g, "ext0", &format!("e-g{}", NAMES[i]), "brE")?;
            port(g, "int0", &format!("i-g{}", NAMES[i]), "brI")?;
            g.exec(&format!(
                "sysctl -qw net.ipv4.ip_forward=1 && ip addr add {}/24 dev ext0 && \
                 ip addr add {}/24 dev int0",
                GW_EXT[i], GW_INT[i]
            ))?;
        }
        self.client.exec(&format!(
            "ip addr add {PHONE}/24 dev cl0 && ip addr add {SBC}/24 dev cl0 && \
             ip addr add {TLIB}/24 dev cl0 && ip addr add {CONFIG}/24 dev cl0 && \
             ip route add 198.18.2.0/24 via {FLOAT_EXT}"
        ))?;
        for (ns, dev, a) in [(&self.primary, "p0", PRIMARY), (&self.backup, "b0", BACKUP)] {
            ns.exec(&format!(
                "ip addr add {a}/24 dev {dev} && ip route add default via {FLOAT_INT} && \
                 sysctl -qw net.ipv4.icmp_ratelimit=0"
            ))?;
        }
        let ports: Vec<String> = NAMES
            .iter()
            .flat_map(|n| [format!("e-g{n}"), format!("i-g{n}")])
            .collect();
        let dp = gateways::pass_on_ports(&self.sw, &ports, &self.bpffs.join("ports"))?;
        self.peer_xdp = Some(dp);
        Ok(())
    }

    pub fn socket(&self, g: usize) -> PathBuf {
        self.dir.join(format!("sipvip-{}.sock", NAMES[g]))
    }

    pub fn pin_dir(&self, g: usize) -> PathBuf {
        self.bpffs.join(format!("sipvip-{}", NAMES[g]))
    }

    /// Gateway `g`'s sipvip configuration: the seed's VIP and pair, `ha.mode = "keepalived"`.
    pub fn config(&self, g: usize) -> String {
        let head = crate::gateways::seed_vip_config(VIP, PRIMARY, BACKUP);
        format!(
            r#"{head}
[snat]
exclusions = ["{CONFIG}"]

[passthrough]
ports = [3000]

[garp]
burst = 3
spacing = "100ms"

[ha]
mode = "keepalived"
sync = ["{a}:9361", "{b}:9361"]
sync_interval = "100ms"

[admin]
socket = "{socket}"
metrics = "127.0.0.1:9360"
pin_dir = "{pins}"
"#,
            socket = self.socket(g).display(),
            pins = self.pin_dir(g).display(),
            a = GW_INT[0],
            b = GW_INT[1],
        )
    }

    /// Starts gateway `g`'s daemon (its log appended to); returns its config's path once
    /// it answers.
    pub fn start_daemon(&mut self, g: usize) -> Result<PathBuf> {
        let n = NAMES[g];
        let cfg = self.dir.join(format!("sipvip-{n}.toml"));
        std::fs::write(&cfg, self.config(g))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("daemon-{n}.log")))?;
        let child = command_in(&self.gw[g], &self.bin)?
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start sipvip")?;
        self.children.push((format!("sipvip-{n}"), child));
        let t = Instant::now();
        while self.status(g).is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("sipvip {n} did not come up:\n{}", self.log(g));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cfg)
    }

    /// Starts gateway `g`'s daemon and keepalived (its keepalived.conf generated by
    /// `sipvip keepalived-config`); returns once the daemon answers.
    pub fn start_gateway(&mut self, g: usize) -> Result<()> {
        let n = NAMES[g];
        let cfg = self.start_daemon(g)?;
        let args: Vec<String> = [
            "--priority",
            &PRIORITY[g].to_string(),
            "--advert",
            ADVERT,
            "--floating",
            &format!("ext0={FLOAT_EXT}/24"),
            "--floating",
            &format!("int0={FLOAT_INT}/24"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let child = gateways::keepalived(&self.gw[g], &self.bin, &cfg, &self.dir, n, &args)?;
        self.children.push((format!("keepalived-{n}"), child));
        Ok(())
    }

    /// Gateway `g`'s status (`sipvip status --json`).
    pub fn status(&self, g: usize) -> Result<serde_json::Value> {
        gateways::status(&self.bin, &self.socket(g))
    }

    /// Gateway `g`'s HA state as its daemon reports it.
    pub fn ha_state(&self, g: usize) -> Option<String> {
        self.status(g)
            .ok()
            .and_then(|s| s["ha_state"].as_str().map(str::to_string))
    }

    /// Whether the VIP is on gateway `g`'s external interface.
    pub fn holds_vip(&self, g: usize) -> bool {
        self.gw[g]
            .exec("ip -4 addr show dev ext0")
            .is_ok_and(|a| a.contains(&format!("{VIP}/32")))
    }

    /// Polls `f` every 50 ms until it holds or `limit` passes.
    pub fn wait_for(&self, limit: Duration, f: impl FnMut() -> bool) -> Option<Duration> {
        gateways::wait_for(limit, f)
    }

    /// Kills gateway `g`'s processes named `what` (`sipvip`, `keepalived`) with SIGKILL:
    /// keepalived's VRRP process first (killed with its parent alone, it would be told to
    /// stop and leave in good order: priority 0, addresses removed), so that it dies as a
    /// crashed box does.
    pub fn kill(&mut self, g: usize, what: &str) {
        let name = format!("{what}-{}", NAMES[g]);
        if what == "keepalived" {
            gateways::kill_vrrp(&self.dir, NAMES[g]);
        }
        for (n, c) in &mut self.children {
            if *n == name {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
                let _ = c.wait();
            }
        }
        self.children.retain(|(n, _)| *n != name);
    }

    /// The daemon's and keepalived's logs of gateway `g`.
    pub fn log(&self, g: usize) -> String {
        let n = NAMES[g];
        let read = |f: String| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "--- sipvip {n}:\n{}\n--- keepalived {n}:\n{}",
            read(format!("daemon-{n}.log")),
            read(format!("keepalived-{n}.log"))
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.peer_xdp = None;
        if let Some(bin) = sipvip_bin_for_cleanup() {
            for g in 0..2 {
                let _ = Command::new(&bin)
                    .args(["down", "--pin-dir"])
                    .arg(self.pin_dir(g))
                    .output();
            }
            let _ = Command::new(&bin)
                .args(["down", "--pin-dir"])
                .arg(self.bpffs.join("ports"))
                .output();
        }
        crate::netns::remove_scratch(&self.dir);
        gateways::remove_safe_bin(&self.bin);
    }
}
