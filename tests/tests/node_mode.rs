//! On-node mode (`interfaces.mode = "node"`), end to end with the daemon and real SIP
//! servers (sipp), in namespaces:
//!
//! - members in "pods" behind routed veths on the node: VIP traffic is steered by XDP on the
//!   uplink and handed to the kernel, which routes it into the member's veth (no XDP on the
//!   pod side); what the members send is SNATed to the VIP at TC egress on the uplink, with
//!   the veths' checksum and segmentation offloads off and then on (a GSO TCP stream with
//!   partial checksums arrives intact, from the VIP);
//! - the seed's SIP Server pair as two processes on the node's own address (5060 and 5070):
//!   the VIP's 5060 reaches whichever is active, replies leave from VIP:5060 through TC
//!   egress, the node's own traffic is never translated, and the pair fails over;
//! - two nodes (`sipvip_tests::cluster`): the VIP follows the active member from node to node
//!   with gratuitous ARP, and no two nodes hold it at once.
//!
//! ```text
//!  client ns                   node ns ("gw")                       primary ns
//!  cl0 198.18.1.10 (phone) --- ext0 198.18.1.1 [XDP sipvip_ext, TC egress sipvip_node_out]
//!                              VIP 198.18.1.100/32
//!                              int0 198.18.2.1 (routed, nothing attached) --- p0 198.18.2.11
//!                              int1 198.18.4.1 (routed, nothing attached) --- b0 198.18.4.12
//! ```

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    time::{Duration, Instant},
};

use sipvip_tests::{
    cluster::{self, Cluster, Runner},
    lab::{udp_in, Lab, BACKUP, PHONE, PRIMARY, VIP},
    netns::{tcp_connect_from, Netns},
    scenario,
};

/// The node's own address (ext0's).
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

/// The lab's gateway config, made an on-node one: nothing on the internal interfaces.
fn node_config(lab: &Lab) -> String {
    lab.node_config("200ms", "1000ms")
}

/// Starts the daemon in node mode with `interfaces` lines added, and waits until the primary
/// is active and the node answers for the VIP; returns the config's path.
fn start_node(lab: &mut Lab, interfaces: &str) -> std::path::PathBuf {
    let text =
        node_config(lab).replace("mode = \"node\"", &format!("mode = \"node\"\n{interfaces}"));
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    let up = lab.wait_for(Duration::from_secs(10), || {
        lab.status()
            .is_ok_and(|s| s["vips"][0]["active"] == "primary" && s["vips"][0]["owner"] == true)
    });
    assert!(up.is_some(), "{}", lab.daemon_log(0));
    cfg
}

/// The reason counters from `sipvip status --json`.
fn reason(lab: &Lab, label: &str) -> u64 {
    let s = lab.status().unwrap();
    s["datapath"][label].as_u64().unwrap_or(0)
}

#[test]
fn members_in_pods_behind_veths_through_xdp_and_tc_egress() {
    let mut lab = Lab::new("nd").expect("lab");
    lab.detach_peers().unwrap();
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let backup_silent = udp_in(&lab.backup, (BACKUP, 5060));
    let cfg = lab.write_config(&node_config(&lab)).unwrap();
    lab.start_daemon(&cfg).unwrap();
    assert!(
        lab.wait_active("primary", Duration::from_secs(5)).is_some(),
        "primary never became active:\n{}",
        lab.daemon_log(0)
    );
    // XDP on the uplink, TC egress on the uplink, nothing on the members' veths.
    for pin in ["link_sipvip_ext_ext0", "link_sipvip_node_out_ext0"] {
        assert!(lab.pin_dir().join(pin).exists(), "{pin} is pinned");
    }
    assert!(!lab.pin_dir().join("link_sipvip_int_int0").exists());

    let phone = udp_in(&lab.client, (PHONE, 5062));
    for (round, on) in [(0, false), (1, true)] {
        lab.offloads(on);
        let what = if on { "offloads on" } else { "offloads off" };
        // Service traffic: steered to the primary's pod, answered from the VIP.
        let from = (0..5).find_map(|i| cluster::ping_vip(&phone, round * 100 + i));
        assert_eq!(
            from,
            Some(SocketAddr::from((VIP, 5060))),
            "{what}: OPTIONS through the VIP\n{}",
            lab.daemon_log(0)
        );
        // A member-opened TCP stream (GSO with partial checksums when offloads are on):
        // every byte arrives, from the VIP.
        let (peer, intact) =
            lab.stream_from_primary(PRIMARY.into(), PHONE.into(), 7000 + round as u16, 2 << 20);
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(VIP),
            "{what}: stream source"
        );
        assert!(intact, "{what}: the stream arrived intact");
    }
    assert!(reason(&lab, "snat") > 0, "{}", lab.status().unwrap());
    assert!(reason(&lab, "steered") > 0);

    // `sipvip trace` sees the TC egress side too: the pod's answer, SNATed to the VIP.
    let trace = std::process::Command::new(sipvip_tests::lab::sipvip_bin())
        .args([
            "trace",
            "--direction",
            "out",
            "--proto",
            "udp",
            "--duration",
            "2s",
        ])
        .args(["--json", "--socket"])
        .arg(lab.socket())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(lab
        .wait_for(Duration::from_secs(5), || lab
            .status()
            .is_ok_and(|s| s["tracing"] == true))
        .is_some());
    let _ = (0..5).find_map(|i| cluster::ping_vip(&phone, 300 + i));
    let out = trace.wait_with_output().unwrap();
    let recs: Vec<sipvip::trace::Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        recs.iter().any(|r| r.side == "node"
            && r.reason == "snat"
            && r.after.is_some_and(|a| a.src == std::net::IpAddr::V4(VIP))),
        "{:?}",
        recs.iter().map(|r| &r.line).collect::<Vec<_>>()
    );

    // The primary's pod dies; the backup is promoted and answers through the VIP.
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    drop(backup_silent);
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    assert!(
        lab.wait_active("backup", Duration::from_secs(10)).is_some(),
        "backup never became active:\n{}",
        lab.daemon_log(0)
    );
    let from = (0..10).find_map(|i| cluster::ping_vip(&phone, 500 + i));
    assert_eq!(from, Some(SocketAddr::from((VIP, 5060))));

    // A reload that moves the VIP to another address: the old one leaves the uplink (no
    // ARP answers for a VIP that is gone), the new one is claimed.
    let other = Ipv4Addr::new(198, 18, 1, 101);
    let moved = node_config(&lab).replace(
        &format!("address = \"{VIP}\""),
        &format!("address = \"{other}\""),
    );
    lab.write_config(&moved).unwrap();
    let out = lab.sipvip(&["reload"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs = || lab.gw.exec("ip -4 addr show ext0").unwrap();
    let swapped = lab.wait_for(Duration::from_secs(5), || {
        let a = addrs();
        !a.contains(&format!("{VIP}/32")) && a.contains(&format!("{other}/32"))
    });
    assert!(swapped.is_some(), "{}\n{}", addrs(), lab.daemon_log(0));
}

/// TC egress attached as a clsact filter (kernels before 6.6 have no tcx): it SNATs, a
/// restarted daemon adopts it instead of adding a second, and `sipvip down` removes it.
#[test]
fn tc_egress_as_a_clsact_filter() {
    let mut lab = Lab::new("nc").expect("lab");
    lab.detach_peers().unwrap();
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let _backup_silent = udp_in(&lab.backup, (BACKUP, 5060));
    let cfg = start_node(&mut lab, "tc_attach = \"clsact\"");
    let filters = |lab: &Lab| lab.gw.exec("tc filter show dev ext0 egress").unwrap();
    let f = filters(&lab);
    assert!(
        f.contains("sipvip_node_out")
            && f.contains(&format!("pref {}", sipvip::datapath::CLSACT_PRIORITY)),
        "{f}"
    );
    let phone = udp_in(&lab.client, (PHONE, 5062));
    let vip = Some(SocketAddr::from((VIP, 5060)));
    assert_eq!(
        (0..5).find_map(|i| cluster::ping_vip(&phone, 3000 + i)),
        vip
    );

    // A restart adopts the filter: still one, still SNATing.
    lab.stop("daemon-0", libc::SIGTERM).unwrap();
    assert_eq!(
        cluster::ping_vip(&phone, 3010),
        vip,
        "forwarding without a daemon"
    );
    lab.start_daemon(&cfg).unwrap();
    assert_eq!(
        filters(&lab).matches("direct-action").count(),
        1,
        "{}",
        filters(&lab)
    );
    assert!(
        !lab.daemon_log(1).contains("attached sipvip_node_out"),
        "{}",
        lab.daemon_log(1)
    );
    assert_eq!(
        (0..5).find_map(|i| cluster::ping_vip(&phone, 3020 + i)),
        vip
    );

    // `sipvip down` removes it.
    lab.stop("daemon-1", libc::SIGTERM).unwrap();
    // In the node's network namespace, as an operator on the node runs it.
    lab.gw
        .exec(&format!(
            "{} down --pin-dir {}",
            sipvip_tests::lab::sipvip_bin().display(),
            lab.pin_dir().display()
        ))
        .unwrap();
    assert!(
        !filters(&lab).contains("sipvip_node_out"),
        "{}",
        filters(&lab)
    );
}

/// IP datagrams the node's kernel has forwarded (/proc/net/snmp, Ip: ForwDatagrams).
fn forwarded(ns: &Netns) -> u64 {
    let snmp = ns.exec("cat /proc/net/snmp").unwrap();
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

#[test]
fn members_in_pods_steered_by_xdp_redirect() {
    // The pods' sides of the veths keep the lab's XDP programs: they accept redirected
    // frames, as a CNI that runs XDP (or turns GRO on) in the pod would.
    let mut lab = Lab::new("nr").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let backup_silent = udp_in(&lab.backup, (BACKUP, 5060));
    start_node(&mut lab, "node_steering = \"xdp-redirect\"");
    let phone = udp_in(&lab.client, (PHONE, 5062));
    let vip = Some(SocketAddr::from((VIP, 5060)));
    // The devmap learns the members' veths within a tick or two.
    let warm = (0..20).find(|i| cluster::ping_vip(&phone, 2000 + i) == vip);
    assert!(warm.is_some(), "{}", lab.daemon_log(0));

    // Each request is redirected into the pod's veth by XDP; only the reply is forwarded
    // by the node's kernel (the kernel mode forwards both).
    let before = forwarded(&lab.gw);
    let answered = (0..20)
        .filter(|i| cluster::ping_vip(&phone, 2100 + i) == vip)
        .count();
    let forwards = forwarded(&lab.gw) - before;
    assert_eq!(answered, 20, "{}", lab.daemon_log(0));
    assert!(
        forwards <= 24,
        "{forwards} datagrams forwarded by the kernel for 20 requests and their replies"
    );
    eprintln!("xdp-redirect: 20 requests, {forwards} datagrams forwarded by the node's kernel");

    // Failover to the backup's pod, redirected into its veth.
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    drop(backup_silent);
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    assert!(lab.wait_active("backup", Duration::from_secs(10)).is_some());
    let from = (0..10).find_map(|i| cluster::ping_vip(&phone, 2200 + i));
    assert_eq!(from, vip, "{}", lab.daemon_log(0));
}

/// A sipp UAS on the node's own address, as one of the seed's two SIP Server instances on
/// one host; its child is named `sipp-<name>`.
fn sip_server_on_node(lab: &mut Lab, name: &str, port: u16) {
    let child = scenario::sip_server_in(&lab.gw, NODE, port, &lab.dir).unwrap();
    lab.children.push((format!("sipp-{name}"), child));
}

#[test]
fn a_sip_server_pair_on_the_node_itself_fails_over_through_tc_egress() {
    let mut lab = Lab::new("nh").expect("lab");
    lab.detach_peers().unwrap();
    let cfg = node_config(&lab)
        .replace(
            &format!("name = \"primary\"\naddress = \"{PRIMARY}\""),
            "name = \"primary\"\nlocal = true",
        )
        .replace(
            &format!("name = \"backup\"\naddress = \"{BACKUP}\""),
            "name = \"backup\"\nlocal = true\nports = { \"udp/5060\" = 5070, \"tcp/5060\" = 5070, \"tcp/5061\" = 5071 }",
        );
    assert!(cfg.contains("ports = {"), "{cfg}");
    let path = lab.write_config(&cfg).unwrap();
    let check = lab.sipvip(&["check", path.to_str().unwrap()]).unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    sip_server_on_node(&mut lab, "primary", 5060);
    // The backup instance ignores UDP until it is promoted.
    let backup_silent = udp_in(&lab.gw, (NODE, 5070));
    lab.start_daemon(&path).unwrap();
    assert!(
        lab.wait_active("primary", Duration::from_secs(5)).is_some(),
        "primary never became active:\n{}",
        lab.daemon_log(0)
    );
    // The backup is probed on its own port.
    let mut buf = [0u8; 2048];
    let (n, _) = backup_silent
        .recv_from(&mut buf)
        .expect("a probe reaches 5070");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("OPTIONS sip:"));

    let phone = udp_in(&lab.client, (PHONE, 5062));
    for (round, on) in [(0, false), (1, true)] {
        lab.offloads(on);
        let from = (0..5).find_map(|i| cluster::ping_vip(&phone, round * 100 + i));
        assert_eq!(
            from,
            Some(SocketAddr::from((VIP, 5060))),
            "offloads {on}: the primary answers from the VIP\n{}",
            lab.daemon_log(0)
        );
    }

    // The node's own traffic is never translated: from another port of its address, and
    // to it.
    let node_sock = udp_in(&lab.gw, (NODE, 40000));
    node_sock.send_to(b"node", (PHONE, 5062)).unwrap();
    let (n, from) = phone.recv_from(&mut buf).expect("the node's datagram");
    assert_eq!(
        (&buf[..n], from),
        (&b"node"[..], SocketAddr::from((NODE, 40000)))
    );
    let listener = {
        let _g = lab.gw.enter().unwrap();
        TcpListener::bind((NODE, 2222)).unwrap()
    };
    let mut c = {
        let _g = lab.client.enter().unwrap();
        tcp_connect_from(PHONE, SocketAddrV4::new(NODE, 2222), Duration::from_secs(3))
            .expect("the phone reaches the node's own port")
    };
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"ok").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut two = [0u8; 2];
    c.read_exact(&mut two)
        .expect("the node's reply, untranslated");
    assert!(reason(&lab, "pass_not_service") > 0);

    // The primary instance dies; the backup (5070) is promoted; the VIP's 5060 reaches it
    // and its replies leave from VIP:5060.
    let t = Instant::now();
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    drop(backup_silent);
    sip_server_on_node(&mut lab, "backup", 5070);
    assert!(
        lab.wait_active("backup", Duration::from_secs(10)).is_some(),
        "backup never became active:\n{}",
        lab.daemon_log(0)
    );
    eprintln!("host-process failover: {} ms", t.elapsed().as_millis());
    let from = (0..10).find_map(|i| cluster::ping_vip(&phone, 500 + i));
    assert_eq!(
        from,
        Some(SocketAddr::from((VIP, 5060))),
        "the backup on 5070 answers from VIP:5060\n{}",
        lab.daemon_log(0)
    );
}

/// Watches whether the VIP is on node `ns`'s uplink, every millisecond or so, until `stop`:
/// the times it was (claimed, released) as offsets from `t0`.
fn watch_vip(
    ns: &Netns,
    t0: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Duration, bool)>> {
    let name = ns.name.clone();
    std::thread::spawn(move || {
        let ns = Netns { name };
        let _g = ns.enter().unwrap();
        let mut changes = Vec::new();
        let mut last = None;
        let t = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && t.elapsed() < Duration::from_secs(60)
        {
            let has = sipvip::netif::local_addresses().contains(&VIP);
            if last != Some(has) {
                changes.push((t0.elapsed(), has));
                last = Some(has);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // The namespace is the test's: not removed by this handle.
        std::mem::forget(ns);
        changes
    })
}

/// How long both nodes had the VIP at once, from their change logs.
fn overlap(a: &[(Duration, bool)], b: &[(Duration, bool)], end: Duration) -> Duration {
    let intervals = |c: &[(Duration, bool)]| {
        let mut out = Vec::new();
        let mut since = None;
        for (t, has) in c {
            match (has, since) {
                (true, None) => since = Some(*t),
                (false, Some(s)) => {
                    out.push((s, *t));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since {
            out.push((s, end));
        }
        out
    };
    let mut total = Duration::ZERO;
    for (a0, a1) in intervals(a) {
        for (b0, b1) in intervals(b) {
            let (s, e) = (a0.max(b0), a1.min(b1));
            if e > s {
                total += e - s;
            }
        }
    }
    total
}

/// Two nodes on a bridge with the phone, a member pod on each (`sipvip_tests::cluster`, the
/// binary as root): only the primary's node answers for the VIP; when the primary dies the
/// VIP moves to the backup's node with gratuitous ARP; a watcher on each node finds no moment
/// when both held the VIP.
#[test]
fn two_nodes_the_vip_follows_the_active_member_with_gratuitous_arp() {
    let mut t = Cluster::new("2n", Runner::Binary).expect("cluster");
    t.sip_server(0, PRIMARY).unwrap();
    // The backup ignores UDP until it is promoted.
    let backup_silent = udp_in(&t.pods[1], (BACKUP, 5060));
    t.apply_config(&t.config_text(("200ms", "1000ms"), "500ms", ""))
        .unwrap();
    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchers = [
        watch_vip(&t.nodes[0], t0, stop.clone()),
        watch_vip(&t.nodes[1], t0, stop.clone()),
    ];
    t.start(0).unwrap();
    t.start(1).unwrap();
    let up = t.wait_for(Duration::from_secs(10), |t| {
        (0..2).all(|i| t.active(i).as_deref() == Some("primary")) && t.owner(0) == Some(true)
    });
    assert!(up.is_some(), "node 1:\n{}\nnode 2:\n{}", t.log(0), t.log(1));

    // Only node 1 (the primary's) answers for the VIP.
    let phone = t.phone().unwrap();
    let vip = Some(SocketAddr::from((VIP, 5060)));
    let from = (0..10).find_map(|i| cluster::ping_vip(&phone, 700 + i));
    assert_eq!(from, vip, "{}", t.log(0));
    assert_eq!(t.phone_sees_node(), Some(1));
    assert_eq!(t.owner(1), Some(false));
    assert!(!t.nodes[1]
        .exec("ip -4 addr show eth0")
        .unwrap()
        .contains(&VIP.to_string()));

    // The primary's pod dies; the backup is promoted; node 1 goes silent and node 2 claims
    // the VIP with gratuitous ARP; the phone follows.
    let killed = Instant::now();
    t.kill_sip_server(0);
    drop(backup_silent);
    t.sip_server(1, BACKUP).unwrap();
    let mut failed = 0;
    let mut answered_after = None;
    for i in 0..100 {
        if cluster::ping_vip(&phone, 800 + i) == vip {
            answered_after = Some(killed.elapsed());
            break;
        }
        failed += 1;
    }
    let answered_after = answered_after.unwrap_or_else(|| {
        panic!(
            "the VIP never answered again\nnode 1:\n{}\nnode 2:\n{}",
            t.log(0),
            t.log(1)
        )
    });
    let claimed = t
        .wait_for(Duration::from_secs(2), |t| t.owner(1) == Some(true))
        .map(|_| killed.elapsed())
        .unwrap_or_else(|| panic!("node 2 never claimed the VIP:\n{}", t.log(1)));
    let followed = t.wait_for(Duration::from_secs(1), |t| t.phone_sees_node() == Some(2));
    assert!(followed.is_some(), "the phone's ARP entry stayed on node 1");
    assert_eq!(cluster::ping_vip(&phone, 900), vip, "{}", t.log(1));
    assert_eq!(t.owner(0), Some(false));
    assert!(t.log(1).contains("vip_claimed"), "{}", t.log(1));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let end = t0.elapsed();
    let [w1, w2] = watchers.map(|w| w.join().unwrap());
    let both = overlap(&w1, &w2, end);
    let gap = match (
        w1.iter().rev().find(|c| !c.1),
        w2.iter().rev().find(|c| c.1),
    ) {
        (Some(r), Some(c)) => c.0.saturating_sub(r.0),
        _ => Duration::ZERO,
    };
    eprintln!(
        "two nodes: the VIP answered again {} ms after the primary died ({failed} OPTIONS of 300 ms unanswered); \
         node 2 claimed it after {} ms; both nodes held the VIP for {} ms; node 2 claimed it {} ms after node 1 released it",
        answered_after.as_millis(),
        claimed.as_millis(),
        both.as_millis(),
        gap.as_millis()
    );
    assert_eq!(
        both,
        Duration::ZERO,
        "split brain: node 1 {w1:?}, node 2 {w2:?}"
    );
}
