//! `cargo xtask lab`: a contact-centre network in namespaces, with real SIP software, and the
//! HA switchover the seed is about. Tears everything down on exit, Ctrl-C included, unless
//! `--keep` is given. `--k8s`: the DaemonSet on two nodes instead (the image under podman,
//! SIP Server pods named by DNS), with the VIP moving from node to node. `--pair`: two
//! gateways with keepalived as an active/standby pair, the master killed in mid-call.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use sipvip_tests::{
    lab::{Lab, BACKUP, BACKUP6, PHONE6, PRIMARY, PRIMARY6, TLIB, VIP, VIP6},
    scenario::{self, epoch, window, Calls},
};

fn stopped() -> Result<()> {
    sipvip_tests::netns::interrupted()
}

struct Args {
    keep: bool,
    fast: bool,
    rate: u32,
    k8s: bool,
    pair: bool,
}

fn args() -> Args {
    let mut a = Args {
        keep: false,
        fast: false,
        rate: 10,
        k8s: false,
        pair: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--keep" => a.keep = true,
            "--fast" => a.fast = true,
            "--k8s" => a.k8s = true,
            "--pair" => a.pair = true,
            "--rate" => a.rate = it.next().and_then(|r| r.parse().ok()).unwrap_or(10),
            "-h" | "--help" => {
                println!(
                    "sipvip-lab [--keep] [--fast] [--rate CALLS_PER_S] [--k8s | --pair]\n  --keep  leave the lab up and print how to enter and remove it\n  \
                     --fast  monitor at 200 ms / 1 s instead of the seed's 1 s / 4 s\n  \
                     --k8s   the DaemonSet on two nodes (the image under podman) instead of the gateway\n  \
                     --pair  two gateways with keepalived (VRRP) and flow-state sync; the master dies in mid-call"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() -> Result<()> {
    let a = args();
    sipvip_tests::netns::catch_interrupts();
    if a.k8s {
        return k8s::main(a.keep, a.fast);
    }
    if a.pair {
        return pair::main(a.keep, a.rate);
    }
    let mut lab = Lab::new("lab")?;
    let r = run(&mut lab, &a);
    if a.keep && r.is_ok() {
        println!("\nThe lab stays up. Enter a namespace:");
        for (role, ns) in [
            ("gateway", &lab.gw),
            ("client (groups A-D)", &lab.client),
            ("primary", &lab.primary),
            ("backup", &lab.backup),
        ] {
            println!("  {role:<20} ip netns exec {} bash", ns.name);
        }
        println!(
            "  status               {} status --socket {}",
            sipvip_tests::lab::sipvip_bin().display(),
            lab.socket().display()
        );
        println!("Tear it all down:\n  {}", lab.teardown_command());
        lab.keep();
        return Ok(());
    }
    drop(lab);
    println!("lab torn down: namespaces, links, pins and processes removed");
    r
}

fn run(lab: &mut Lab, a: &Args) -> Result<()> {
    let (interval, timeout) = if a.fast {
        ("200ms", "1s")
    } else {
        ("1s", "4s")
    };
    println!("sipvip lab: gateway, client (phones {PHONE_DESC}), primary {PRIMARY}, backup {BACKUP}, VIP {VIP} and [{VIP6}]");
    println!("monitor: SIP OPTIONS over UDP, interval {interval}, timeout {timeout}");
    scenario::start_sip_server(lab, "primary")?;
    // The backup ignores UDP until it is promoted, as a Genesys backup does.
    let silent = {
        let _g = lab.backup.enter()?;
        UdpSocket::bind((BACKUP, 5060))?
    };
    let cfg = lab.write_config(&lab.config(interval, timeout, ""))?;
    lab.start_daemon(&cfg)?;
    let up = lab.wait_active("primary", Duration::from_secs(10));
    if up.is_none() {
        bail!(
            "the primary never became active; daemon log:\n{}",
            lab.daemon_log(0)
        );
    }
    stopped()?;
    println!("\n== sipvip status ==\n{}", status_table(lab));

    println!("== device groups, primary active ==");
    for g in scenario::device_groups(lab, PRIMARY)? {
        println!("  {g}");
    }
    let registered = scenario::register_agents(lab, 20)?;
    println!("\n== 20 agents register through the VIP: {registered} registered ==");
    stopped()?;

    // The same VIP over IPv6: the primary's SIP server also listens on its IPv6 address.
    let child = scenario::sip_server_in(&lab.primary, PRIMARY6, 5060, &lab.dir)?;
    lab.children.push(("sipp-primary6".into(), child));
    std::thread::sleep(Duration::from_millis(300));
    let registered6 = scenario::register_agents_via(lab, VIP6.into(), PHONE6.into(), 20)?;
    println!(
        "== 20 IPv6 agents ({PHONE6}) register through the IPv6 VIP [{VIP6}]: {registered6} registered =="
    );
    stopped()?;

    // Group D holds a T-Lib connection to the primary's physical address through it all.
    let tserver = {
        let _g = lab.primary.enter()?;
        std::net::TcpListener::bind((PRIMARY, 3001))?
    };
    let mut tlib = {
        let _g = lab.client.enter()?;
        sipvip_tests::netns::tcp_connect_from(
            TLIB,
            std::net::SocketAddrV4::new(PRIMARY, 3001),
            Duration::from_secs(2),
        )?
    };
    tlib.set_read_timeout(Some(Duration::from_secs(2)))?;
    let (mut tsrv, _) = tserver.accept()?;

    // Calls throughout, the primary dies at `kill_at`.
    let before_s = 6.0;
    let after_s = 8.0;
    let hold = Duration::from_millis(1000);
    let total = (f64::from(a.rate) * (before_s + after_s + 6.0)) as u32;
    println!(
        "\n== calls: {} per second, {} ms each, from the agent phones to the VIP ==",
        a.rate,
        hold.as_millis()
    );
    let calls = Calls::start(lab, a.rate, hold, total)?;
    let start = epoch();
    let t0 = Instant::now();
    let live = |lab: &Lab, calls: &Calls, phase: &str| {
        let rows = calls.snapshot();
        let last = rows.last().copied().unwrap_or_default();
        println!(
            "  t={:>4.1}s {phase:<7} active={:<8} calls attempted {:>4} ok {:>4} failed {:>3}",
            t0.elapsed().as_secs_f64(),
            lab.active().ok().flatten().unwrap_or_else(|| "none".into()),
            last.attempted,
            last.ok,
            last.failed
        );
    };
    while t0.elapsed() < Duration::from_secs_f64(before_s) {
        stopped()?;
        std::thread::sleep(Duration::from_secs(1));
        live(lab, &calls, "before");
    }

    println!("\n== switchover: the primary's SIP process is killed; the backup is promoted ==");
    drop(silent);
    let kill_epoch = epoch();
    let killed = Instant::now();
    lab.stop("sipp-primary", libc::SIGKILL)?;
    lab.stop("sipp-primary6", libc::SIGKILL)?;
    scenario::start_sip_server(lab, "backup")?;
    let child = scenario::sip_server_in(&lab.backup, BACKUP6, 5060, &lab.dir)?;
    lab.children.push(("sipp-backup6".into(), child));
    let flipped = lab.wait_active("backup", Duration::from_secs(10));
    let failover = flipped.map(|_| killed.elapsed());
    let flip_epoch = epoch();
    match failover {
        Some(d) => println!(
            "  VIP {VIP} now steers to the backup, {:.0} ms after the kill",
            d.as_secs_f64() * 1000.0
        ),
        None => println!("  the VIP did NOT move to the backup within 10 s"),
    }
    let during_end = flip_epoch + 2.0;
    while t0.elapsed() < Duration::from_secs_f64(before_s + after_s) {
        stopped()?;
        std::thread::sleep(Duration::from_secs(1));
        live(
            lab,
            &calls,
            if epoch() < during_end {
                "during"
            } else {
                "after"
            },
        );
    }
    let rows = calls.finish(Duration::from_secs(15))?;
    let end = epoch() + 1.0;

    println!("\n== results ==");
    match failover {
        Some(d) => println!(
            "failover time (primary killed -> VIP on the backup): {:.0} ms",
            d.as_secs_f64() * 1000.0
        ),
        None => println!("failover time: no failover"),
    }
    if let Some(line) = lab
        .daemon_log(0)
        .lines()
        .find(|l| l.contains("active member changed") && l.contains("to=backup"))
    {
        println!("daemon event: {}", line.trim());
    }
    println!("calls per phase (attempted: by start; ok/failed: by end)   attempted     ok  failed");
    for (name, from, to) in [
        ("before", start - 1.0, kill_epoch),
        ("during", kill_epoch, during_end),
        ("after", during_end, end),
    ] {
        let (att, ok, failed) = window(&rows, from, to);
        println!("  {name:<56} {att:>9} {ok:>6} {failed:>7}");
    }
    let tlib_ok = {
        use std::io::{Read, Write};
        let mut b = [0u8; 32];
        tsrv.write_all(b"EventDNISChanged").is_ok()
            && tlib
                .read(&mut b)
                .map(|n| &b[..n] == b"EventDNISChanged")
                .unwrap_or(false)
            && tlib.peer_addr().map(|p| p.ip() == PRIMARY).unwrap_or(false)
    };
    println!(
        "T-Lib connection {TLIB} -> {PRIMARY}:3001, opened before the switchover: {}",
        if tlib_ok {
            "still up, physical address both ways"
        } else {
            "BROKEN"
        }
    );
    println!("\n== device groups, backup active ==");
    for g in scenario::device_groups(lab, BACKUP)? {
        println!("  {g}");
    }
    let registered6 = scenario::register_agents_via(lab, VIP6.into(), PHONE6.into(), 20)?;
    println!(
        "== IPv6 after the switchover: 20 agents register through [{VIP6}], now on the backup: {registered6} registered =="
    );
    println!("\n== sipvip status ==\n{}", status_table(lab));
    Ok(())
}

const PHONE_DESC: &str =
    "198.18.1.10, SBC 198.18.1.20, T-Lib 198.18.1.30, config server 198.18.1.50";

fn status_table(lab: &Lab) -> String {
    lab.sipvip(&["status"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("(status failed: {e})"))
}

/// `--k8s`: the DaemonSet on two nodes.
mod k8s {
    use std::{
        net::SocketAddr,
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::{Duration, Instant},
    };

    use anyhow::{bail, Result};
    use sipvip_tests::{
        cluster::{ping_vip, Cluster, Runner, MOVED, NAMES, NODE_ADDRS},
        lab::{BACKUP, PRIMARY, VIP},
    };

    use super::stopped;

    /// Requests from the phone to the VIP every 50 ms until stopped: (sent, answered from
    /// the VIP) per phase, the phase read from `phase` at each send.
    fn traffic(
        phone: std::net::UdpSocket,
        phase: Arc<std::sync::atomic::AtomicUsize>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<[(u32, u32); 4]> {
        std::thread::spawn(move || {
            let mut out = [(0, 0); 4];
            let t = Instant::now();
            let mut call = 10_000;
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(600) {
                let p = phase.load(Ordering::Relaxed).min(3);
                out[p].0 += 1;
                if ping_vip(&phone, call) == Some(SocketAddr::from((VIP, 5060))) {
                    out[p].1 += 1;
                }
                call += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            out
        })
    }

    pub fn main(keep: bool, fast: bool) -> Result<()> {
        let mut c = Cluster::new("k8s", Runner::Image)?;
        let r = run(&mut c, fast);
        if keep && r.is_ok() {
            println!("\nThe cluster stays up. Enter a namespace:");
            for (role, ns) in [
                ("phones (bridge)", &c.sw),
                ("node 1", &c.nodes[0]),
                ("node 2", &c.nodes[1]),
                ("pod sip-0", &c.pods[0]),
                ("pod sip-1", &c.pods[1]),
            ] {
                println!("  {role:<16} ip netns exec {} bash", ns.name);
            }
            for i in 0..2 {
                println!(
                    "  node {} status    {} status --socket {}",
                    i + 1,
                    sipvip_tests::lab::sipvip_bin().display(),
                    c.socket(i).display()
                );
            }
            println!("Tear it all down:\n  {}", c.keep());
            return Ok(());
        }
        drop(c);
        println!("cluster torn down: containers, namespaces, links, pins and processes removed");
        r
    }

    fn run(c: &mut Cluster, fast: bool) -> Result<()> {
        let (monitor, claim) = if fast {
            (("200ms", "1s"), "500ms")
        } else {
            (("1s", "4s"), "5s")
        };
        println!(
            "sipvip on two Kubernetes nodes (played in namespaces; the image under podman, as the DaemonSet runs it)"
        );
        println!(
            "  node 1 {} with pod {} ({PRIMARY}, primary), node 2 {} with pod {} ({BACKUP}, backup), VIP {VIP}",
            NODE_ADDRS[0], NAMES[0], NODE_ADDRS[1], NAMES[1]
        );
        println!(
            "  monitor: SIP OPTIONS over UDP, interval {}, timeout {}; a node claims the VIP after {claim}",
            monitor.0, monitor.1
        );
        println!("building and starting the image (the first build takes a few minutes)...");
        c.sip_server(0, PRIMARY)?;
        let silent = {
            let _g = c.pods[1].enter()?;
            std::net::UdpSocket::bind((BACKUP, 5060))?
        };
        c.apply_config(&c.config_text(monitor, claim, ""))?;
        c.start(0)?;
        c.start(1)?;
        let limit = Duration::from_secs(60);
        if c.wait_for(limit, |c| c.owner(0) == Some(true)).is_none() {
            bail!("node 1 never claimed the VIP:\n{}", c.log(0));
        }
        stopped()?;
        let show = |c: &Cluster, what: &str| {
            println!("\n== {what} ==");
            for i in 0..2 {
                if let Some(s) = c.status(i) {
                    let v = &s["vips"][0];
                    println!(
                        "  node {}: active {}, {}",
                        i + 1,
                        v["active"].as_str().unwrap_or("none"),
                        if v["owner"] == true {
                            "answers for the VIP"
                        } else {
                            "silent"
                        }
                    );
                }
            }
            println!(
                "  the phone's ARP entry for the VIP names node {}",
                c.phone_sees_node()
                    .map_or_else(|| "none".to_string(), |n| n.to_string())
            );
        };
        let phone = c.phone()?;
        let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = traffic(phone.try_clone()?, phase.clone(), stop.clone());
        std::thread::sleep(Duration::from_secs(3));
        show(c, "primary active");

        println!("\n== the primary's pod dies; the backup is promoted ==");
        phase.store(1, Ordering::Relaxed);
        c.kill_sip_server(0);
        drop(silent);
        c.sip_server(1, BACKUP)?;
        let moved = c.wait_for(Duration::from_secs(30), |c| c.owner(1) == Some(true));
        let Some(moved) = moved else {
            bail!("node 2 never claimed the VIP:\n{}", c.log(1));
        };
        println!(
            "  node 2 answers for the VIP {} ms after the primary died (its failover took {} ms)",
            moved.as_millis(),
            c.status(1)
                .and_then(|s| s["vips"][0]["last_failover_ms"].as_f64())
                .map_or_else(|| "?".to_string(), |m| format!("{m:.0}"))
        );
        let _ = c.wait_for(Duration::from_secs(3), |c| c.phone_sees_node() == Some(2));
        phase.store(2, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(2));
        show(c, "backup active");
        stopped()?;

        println!("\n== the primary's pod is recreated at {MOVED}; its DNS record follows ==");
        c.pods[0].exec(&format!("ip addr add {MOVED}/24 dev p0"))?;
        c.sip_server(0, MOVED)?;
        c.set_records(MOVED)?;
        let probed = c.wait_for(Duration::from_secs(30), |c| {
            (0..2).all(|i| {
                c.status(i).is_some_and(|s| {
                    let m = &s["vips"][0]["members"][0];
                    m["address"] == MOVED.to_string() && m["up"] == true
                })
            })
        });
        println!(
            "  both nodes probe {} at {MOVED}: {}",
            NAMES[0],
            if probed.is_some() { "yes" } else { "NO" }
        );

        println!("\n== rolling update of node 2's sipvip container, under traffic ==");
        phase.store(3, Ordering::Relaxed);
        c.stop(1)?;
        c.start(1)?;
        std::thread::sleep(Duration::from_secs(2));
        let adopted = c.status(1).is_some_and(|s| s["adopted"] == true);
        println!("  the new container adopted the pinned datapath: {adopted}");
        stop.store(true, Ordering::Relaxed);
        let counts = sender.join().unwrap_or_default();
        println!("\n== requests through the VIP, every 50 ms (sent / answered from the VIP) ==");
        for (name, (sent, ok)) in [
            "primary active",
            "failover",
            "backup active",
            "rolling update",
        ]
        .iter()
        .zip(counts)
        {
            println!("  {name:<16} {sent:>5} {ok:>5}");
        }
        show(c, "at the end");
        Ok(())
    }
}

/// `--pair`: two sipvip gateways with keepalived, the seed's SIP Server pair behind them.
mod pair {
    use std::time::{Duration, Instant};

    use anyhow::{bail, Result};
    use sipvip_tests::{
        pair::{Pair, BACKUP, FLOAT_EXT, FLOAT_INT, GW_EXT, PHONE, PRIMARY, VIP},
        scenario::{self, epoch, window, Calls},
    };

    use super::stopped;

    pub fn main(keep: bool, rate: u32) -> Result<()> {
        let mut p = Pair::new("pair")?;
        let r = run(&mut p, rate);
        if keep && r.is_ok() {
            println!("\nThe pair stays up. Enter a namespace:");
            for (role, ns) in [
                ("gateway A", &p.gw[0]),
                ("gateway B", &p.gw[1]),
                ("client", &p.client),
                ("primary", &p.primary),
                ("backup", &p.backup),
                ("bridges", &p.sw),
            ] {
                println!("  {role:<10} ip netns exec {} bash", ns.name);
            }
            println!("(Everything is removed when this program exits.)");
            println!("Press Ctrl-C to tear it down.");
            while stopped().is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        drop(p);
        println!("pair torn down: namespaces, bridges, pins and processes removed");
        r
    }

    fn show(p: &Pair, what: &str) {
        println!("\n== {what} ==");
        for g in 0..2 {
            let st = p.status(g).ok();
            let s = st.as_ref().map(|s| &s["vips"][0]);
            println!(
                "  gateway {} ({}): {:<7} active member {:<8} holds the VIP: {}",
                ["A", "B"][g],
                GW_EXT[g],
                p.ha_state(g).unwrap_or_else(|| "down".into()),
                s.and_then(|s| s["active"].as_str()).unwrap_or("-"),
                p.holds_vip(g)
            );
        }
    }

    fn run(p: &mut Pair, rate: u32) -> Result<()> {
        println!(
            "Two sipvip gateways, one configuration, keepalived (VRRP, advertisements every {}) moving VIP {VIP} and the floating addresses {FLOAT_EXT} and {FLOAT_INT}; conntrack synchronised between them",
            sipvip_tests::pair::ADVERT
        );
        println!("  SIP servers: primary {PRIMARY}, backup {BACKUP} (sipp), behind both gateways");
        for (name, ns, addr) in [
            ("primary", &p.primary, PRIMARY),
            ("backup", &p.backup, BACKUP),
        ] {
            let child = scenario::sip_server_in(ns, addr, 5060, &p.dir)?;
            p.children.push((format!("sipp-{name}"), child));
        }
        p.start_gateway(0)?;
        p.start_gateway(1)?;
        if p.wait_for(Duration::from_secs(15), || {
            p.ha_state(0).as_deref() == Some("master") && p.holds_vip(0)
        })
        .is_none()
        {
            bail!("gateway A never became master:\n{}", p.log(0));
        }
        std::thread::sleep(Duration::from_secs(2));
        stopped()?;
        show(p, "A is master, B a ready standby");
        let n = scenario::register_agents_in(&p.client, &p.dir, VIP.into(), PHONE.into(), 20)?;
        println!("  {n} of 20 agents registered through the VIP");

        let calls = Calls::start_in(
            &p.client,
            &p.dir,
            VIP.into(),
            PHONE.into(),
            rate,
            Duration::from_secs(2),
            rate * 20,
        )?;
        std::thread::sleep(Duration::from_secs(5));
        stopped()?;
        println!("\n== gateway A dies: sipvip and keepalived killed (SIGKILL) in mid-call ==");
        let killed = Instant::now();
        let at = epoch();
        p.kill(0, "keepalived");
        p.kill(0, "sipvip");
        let took = p.wait_for(Duration::from_secs(10), || {
            p.ha_state(1).as_deref() == Some("master") && p.holds_vip(1)
        });
        match took {
            Some(_) => println!(
                "  B is master {} ms after the kill",
                killed.elapsed().as_millis()
            ),
            None => bail!("B never took over:\n{}", p.log(1)),
        }
        show(p, "B is master");
        println!(
            "  (the dead A still has the VIP on its interface, as a crashed box would: the ARP\n   caches follow B's gratuitous ARP; A's pinned XDP programs even keep forwarding)"
        );
        let rows = calls.finish(Duration::from_secs(40))?;
        let (a1, o1, f1) = window(&rows, 0.0, at);
        let (a2, o2, f2) = window(&rows, at, f64::MAX);
        println!("\ncalls (attempted: by start; ok/failed: by end)   attempted     ok  failed");
        println!("  before the kill                             {a1:>9} {o1:>6} {f1:>7}");
        println!("  from the kill on                            {a2:>9} {o2:>6} {f2:>7}");
        let st = p.status(1)?;
        println!(
            "  B's flow-state sync: {} entries added from A, {} rejected datagrams",
            st["sync"]["inserted"], st["sync"]["rejected_datagrams"]
        );
        stopped()?;

        println!("\n== gateway A comes back: it stays backup (nopreempt) ==");
        p.start_gateway(0)?;
        std::thread::sleep(Duration::from_secs(4));
        show(p, "A back");
        Ok(())
    }
}
