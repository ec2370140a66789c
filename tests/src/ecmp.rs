//! Three sipvip gateways, all active behind a router's ECMP, in namespaces: each gateway runs
//! BIRD 2 next to sipvip and announces the VIP with BGP (sipvip writes the routes file and
//! reloads BIRD); the router (BIRD 2, BFD) installs one route with a next hop per announcing
//! gateway and hashes flows over them (L4).
//!
//! ```text
//!  client ns 198.18.5.10 ── router ns r-cl .1 / ext side 198.18.1.254 ── brE ── ext0 gateways
//!                                                         .2 .3 .4 [XDP] int0 .2 .3 .4 ── brI
//!                                                   ── p0 primary 198.18.2.11, b0 backup .12
//! ```
//!
//! The SIP servers' default route is a floating internal address that keepalived moves
//! between the gateways (tracking each one's external link and `sipvip health`): the
//! replies to a flow may cross another gateway than its requests, so the gateways share
//! their conntrack entries (`ha.sync`), and a gateway the entry has not reached yet hands
//! the packet to the one holding that address (`ha.floating`).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
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
pub const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 10);
pub const SBC: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 20);
pub const TLIB: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 30);
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
pub const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 12);
pub const ROUTER_EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
pub const N: usize = 3;
/// The members' default gateway (keepalived).
pub const FLOAT_INT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);

pub fn gw_ext(g: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 2 + g as u8)
}

pub fn gw_int(g: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, 2 + g as u8)
}

pub struct Ecmp {
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    /// The sipvip binary keepalived's track script runs, in a directory only root can write.
    pub bin: PathBuf,
    pub children: Vec<(String, Child)>,
    peer_xdp: Option<sipvip::datapath::Datapath>,
    // Namespaces last: dropped after the processes are killed.
    pub sw: Netns,
    pub client: Netns,
    pub router: Netns,
    pub gw: Vec<Netns>,
    pub primary: Netns,
    pub backup: Netns,
}

impl Ecmp {
    pub fn new(tag: &str) -> Result<Ecmp> {
        require_root();
        for tool in ["sipp", "bird", "birdc", "keepalived"] {
            if which(tool).is_none() {
                panic!(
                    "the scale-out test needs {tool} (Debian packages sip-tester, bird2, keepalived); `cargo xtask setup` installs them"
                );
            }
        }
        let dir = crate::netns::scratch(tag)?;
        let bpffs = dir.join("bpf");
        let bin = gateways::safe_bin(tag)?;
        let mut e = Ecmp {
            dir,
            bpffs,
            bin,
            children: Vec::new(),
            peer_xdp: None,
            sw: Netns::new(&format!("{tag}sw"))?,
            client: Netns::new(&format!("{tag}cl"))?,
            router: Netns::new(&format!("{tag}rt"))?,
            gw: (0..N)
                .map(|g| Netns::new(&format!("{tag}g{g}")))
                .collect::<Result<_>>()?,
            primary: Netns::new(&format!("{tag}pr"))?,
            backup: Netns::new(&format!("{tag}bk"))?,
        };
        e.wire()?;
        Ok(e)
    }

    fn wire(&mut self) -> Result<()> {
        self.sw.exec(
            "ip link add brE type bridge && ip link add brI type bridge && \
             ip link set brE up && ip link set brI up",
        )?;
        let port = |ns: &Netns, dev: &str, swdev: &str, bridge: &str| {
            gateways::bridge_port(&self.sw, ns, dev, swdev, bridge)
        };
        port(&self.router, "r-e0", "e-rt", "brE")?;
        port(&self.primary, "p0", "i-pr", "brI")?;
        port(&self.backup, "b0", "i-bk", "brI")?;
        for (g, ns) in self.gw.iter().enumerate() {
            port(ns, "ext0", &format!("e-g{g}"), "brE")?;
            port(ns, "int0", &format!("i-g{g}"), "brI")?;
            ns.exec(&format!(
                "sysctl -qw net.ipv4.ip_forward=1 && ip addr add {}/24 dev ext0 && \
                 ip addr add {}/24 dev int0 && ip route add default via {ROUTER_EXT}",
                gw_ext(g),
                gw_int(g)
            ))?;
        }
        // The client on a link of its own behind the router.
        self.client.exec(&format!(
            "ip link add cl0 type veth peer name r-cl netns {} && ip link set cl0 up && \
             ip addr add {PHONE}/24 dev cl0 && ip addr add {SBC}/24 dev cl0 && \
             ip addr add {TLIB}/24 dev cl0 && \
             ip route add default via 198.18.5.1",
            self.router.name
        ))?;
        self.router.exec(&format!(
            "ip link set r-cl up && ip addr add 198.18.5.1/24 dev r-cl && \
             ip addr add {ROUTER_EXT}/24 dev r-e0 && sysctl -qw net.ipv4.ip_forward=1 && \
             sysctl -qw net.ipv4.fib_multipath_hash_policy=1"
        ))?;
        // The SIP servers' default route: a next hop per gateway, hashed by flow (L4).
        for (ns, dev, a) in [(&self.primary, "p0", PRIMARY), (&self.backup, "b0", BACKUP)] {
            ns.exec(&format!(
                "ip addr add {a}/24 dev {dev} && ip route add default via {FLOAT_INT} && \
                 sysctl -qw net.ipv4.icmp_ratelimit=0"
            ))?;
        }
        let ports: Vec<String> = (0..N)
            .flat_map(|g| [format!("e-g{g}"), format!("i-g{g}")])
            .collect();
        let dp = gateways::pass_on_ports(&self.sw, &ports, &self.bpffs.join("ports"))?;
        self.peer_xdp = Some(dp);
        Ok(())
    }

    pub fn socket(&self, g: usize) -> PathBuf {
        self.dir.join(format!("sipvip-{g}.sock"))
    }

    pub fn pin_dir(&self, g: usize) -> PathBuf {
        self.bpffs.join(format!("sipvip-{g}"))
    }

    fn bird_ctl(&self, who: &str) -> PathBuf {
        self.dir.join(format!("bird-{who}.ctl"))
    }

    /// Starts the router's BIRD: a BGP session (with BFD) to every gateway, their routes
    /// merged into one multipath route.
    pub fn start_router(&mut self) -> Result<()> {
        let mut conf = format!(
            "router id {ROUTER_EXT};\nprotocol device {{}}\n\
             protocol bfd {{ interface \"*\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}\n\
             protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n\
             template bgp gateways {{ local as 64500; neighbor as 64501; bfd on; hold time 3; connect retry time 2; error wait time 1, 5; ipv4 {{ import all; export none; }}; }}\n"
        );
        for g in 0..N {
            conf.push_str(&format!(
                "protocol bgp gw{g} from gateways {{ neighbor {}; }}\n",
                gw_ext(g)
            ));
        }
        let child = self.bird("router", &conf, &self.router)?;
        self.children.push(("bird-router".into(), child));
        Ok(())
    }

    /// BIRD in `ns` with `conf`, in the foreground (a child of this process).
    fn bird(&self, who: &str, conf: &str, ns: &Netns) -> Result<Child> {
        let path = self.dir.join(format!("bird-{who}.conf"));
        std::fs::write(&path, conf)?;
        let log = std::fs::File::create(self.dir.join(format!("bird-{who}.log")))?;
        command_in(ns, Path::new("/usr/sbin/bird"))?
            .arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(self.bird_ctl(who))
            .arg("-P")
            .arg(self.dir.join(format!("bird-{who}.pid")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start bird")
    }

    /// Gateway `g`'s sipvip configuration: `ha.mode = "ecmp"`, the routes file its BIRD
    /// includes, conntrack synced with the others.
    pub fn config(&self, g: usize) -> String {
        let sync: Vec<String> = (0..N).map(|i| format!("\"{}:9361\"", gw_int(i))).collect();
        let head = crate::gateways::seed_vip_config(VIP, PRIMARY, BACKUP);
        format!(
            r#"{head}
[ha]
mode = "ecmp"
sync = [{sync}]
sync_interval = "100ms"
# The members' default gateway: the gateway holding it carries their return path, and the
# others hand it the packets of flows whose state has not reached them yet.
floating = ["int0={FLOAT_INT}/24"]

[bgp]
routes_file = "{routes}"
reload = ["birdc", "-s", "{ctl}", "configure"]
# The servers' own addresses (T-Lib, management), announced while the datapath is healthy.
member_subnets = ["198.18.2.0/24"]

[admin]
socket = "{socket}"
metrics = "127.0.0.1:9360"
pin_dir = "{pins}"
"#,
            sync = sync.join(", "),
            routes = self.dir.join(format!("routes-{g}.conf")).display(),
            ctl = self.bird_ctl(&format!("g{g}")).display(),
            socket = self.socket(g).display(),
            pins = self.pin_dir(g).display(),
        )
    }

    /// Starts gateway `g`: its BIRD (including the routes file sipvip writes, empty until
    /// then) and its daemon.
    pub fn start_gateway(&mut self, g: usize) -> Result<()> {
        let routes = self.dir.join(format!("routes-{g}.conf"));
        if !routes.exists() {
            std::fs::write(&routes, sipvip::bgp::render_bird(&[]))?;
        }
        let conf = format!(
            "router id {ext};\nprotocol device {{}}\n\
             protocol bfd {{ interface \"*\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}\n\
             include \"{routes}\";\n\
             protocol bgp up {{ local as 64501; neighbor {ROUTER_EXT} as 64500; bfd on; hold time 3; connect retry time 2; error wait time 1, 5; ipv4 {{ import none; export where source = RTS_STATIC; next hop self; }}; }}\n",
            ext = gw_ext(g),
            routes = routes.display(),
        );
        let child = self.bird(&format!("g{g}"), &conf, &self.gw[g])?;
        self.children.push((format!("bird-g{g}"), child));
        let cfg = self.dir.join(format!("sipvip-{g}.toml"));
        std::fs::write(&cfg, self.config(g))?;
        let log = std::fs::File::create(self.dir.join(format!("daemon-{g}.log")))?;
        let child = command_in(&self.gw[g], &self.bin)?
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start sipvip")?;
        self.children.push((format!("sipvip-g{g}"), child));
        let t = Instant::now();
        while self.status(g).is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("sipvip {g} did not come up:\n{}", self.log(g));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // keepalived moves the members' default gateway (`sipvip keepalived-config` with
        // ha.mode = "ecmp": the internal instance only, tracking the external link; the
        // address from ha.floating).
        let args: Vec<String> = [
            "--priority".to_string(),
            (150 - 50 * g).to_string(),
            "--advert".into(),
            "200ms".into(),
        ]
        .into();
        let child = gateways::keepalived(
            &self.gw[g],
            &self.bin,
            &cfg,
            &self.dir,
            &g.to_string(),
            &args,
        )?;
        self.children.push((format!("keepalived-g{g}"), child));
        Ok(())
    }

    /// Which gateway holds the members' default gateway, if one does.
    pub fn int_master(&self) -> Option<usize> {
        (0..N).find(|&g| {
            self.gw[g]
                .exec("ip -4 addr show dev int0")
                .is_ok_and(|a| a.contains(&format!("{FLOAT_INT}/24")))
        })
    }

    pub fn status(&self, g: usize) -> Result<serde_json::Value> {
        gateways::status(&self.bin, &self.socket(g))
    }

    /// The gateways the router's route to the VIP names as next hops.
    pub fn next_hops(&self) -> Vec<Ipv4Addr> {
        self.next_hops_to(&format!("{VIP}/32"))
    }

    /// The gateways the router's route to `prefix` names as next hops.
    pub fn next_hops_to(&self, prefix: &str) -> Vec<Ipv4Addr> {
        let r = self
            .router
            .exec(&format!("ip route show {prefix}"))
            .unwrap_or_default();
        (0..N)
            .map(gw_ext)
            .filter(|a| r.contains(&format!("via {a} ")))
            .collect()
    }

    pub fn wait_for(&self, limit: Duration, f: impl FnMut() -> bool) -> Option<Duration> {
        gateways::wait_for(limit, f)
    }

    /// Kills the processes named `name` (`bird-g1`, `sipvip-g0`, ...) with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        for (n, c) in &mut self.children {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.retain(|(n, _)| n != name);
    }

    pub fn log(&self, g: usize) -> String {
        let read = |f: String| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "--- sipvip {g}:\n{}\n--- bird {g}:\n{}\n--- keepalived {g}:\n{}\n--- router:\n{}",
            read(format!("daemon-{g}.log")),
            read(format!("bird-g{g}.log")),
            read(format!("keepalived-{g}.log")),
            read("bird-router.log".into())
        )
    }
}

impl Drop for Ecmp {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.peer_xdp = None;
        if let Some(bin) = sipvip_bin_for_cleanup() {
            for g in 0..N {
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
