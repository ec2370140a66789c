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
//!   egress, the node's own traffic is never translated, and the pair fails over.
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
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use sipvip_tests::{
    lab::{command_in, Lab, BACKUP, PHONE, PRIMARY, VIP},
    netns::{tcp_connect_from, Netns},
    scenario,
};

/// The node's own address (ext0's).
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

fn udp_in(ns: &Netns, addr: (Ipv4Addr, u16)) -> UdpSocket {
    let _g = ns.enter().unwrap();
    let s = UdpSocket::bind(SocketAddr::from(addr)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn options(call: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:{VIP}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK-node-{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:phone@{PHONE}>;tag=t{call}\r\nTo: <sip:{VIP}>\r\nCall-ID: node-{call}@phone\r\nCSeq: 1 OPTIONS\r\n\
         Contact: <sip:phone@{PHONE}:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One OPTIONS from the phone to the VIP; the reply's source if a 200 came back.
fn ping_vip(phone: &UdpSocket, call: usize) -> Option<SocketAddr> {
    phone.send_to(&options(call), (VIP, 5060)).ok()?;
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        let (n, from) = phone.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 200") && text.contains(&format!("node-{call}@phone")) {
            return Some(from);
        }
    }
    None
}

/// The lab's gateway config, made an on-node one: nothing on the internal interfaces.
fn node_config(lab: &Lab) -> String {
    let cfg = lab.config("200ms", "1000ms", "");
    assert!(cfg.contains("internal = [\"int0\", \"int1\"]"));
    cfg.replace(
        "internal = [\"int0\", \"int1\"]",
        "internal = []\nmode = \"node\"",
    )
}

fn offloads(lab: &Lab, on: bool) {
    let v = if on { "on" } else { "off" };
    for (ns, dev) in [
        (&lab.gw, "ext0"),
        (&lab.gw, "int0"),
        (&lab.gw, "int1"),
        (&lab.client, "cl0"),
        (&lab.primary, "p0"),
        (&lab.backup, "b0"),
    ] {
        // A veth whose peer runs XDP cannot take GSO frames: ethtool may refuse some of
        // these, which is the setting a real deployment would have too.
        ns.exec(&format!(
            "ethtool -K {dev} tx {v} tso {v} gso {v} gro {v} >/dev/null 2>&1 || true"
        ))
        .unwrap();
    }
}

/// The primary opens a TCP connection to the phone (a member-opened flow, SNATed at TC
/// egress and tracked) and sends `len` bytes; returns the peer address the phone saw and
/// whether every byte arrived intact.
fn stream_from_primary(lab: &Lab, port: u16, len: usize) -> (SocketAddr, bool) {
    let listener = {
        let _g = lab.client.enter().unwrap();
        TcpListener::bind((PHONE, port)).unwrap()
    };
    let sender = {
        let _g = lab.primary.enter().unwrap();
        tcp_connect_from(
            PRIMARY,
            SocketAddrV4::new(PHONE, port),
            Duration::from_secs(5),
        )
        .expect("the primary connects to the phone")
    };
    let writer = std::thread::spawn(move || {
        let mut s = sender;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
    });
    let (mut c, peer) = listener.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; 65536];
    let t = Instant::now();
    while got.len() < len && t.elapsed() < Duration::from_secs(20) {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    writer.join().unwrap();
    let intact = got.len() == len && got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8);
    (peer, intact)
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
        offloads(&lab, on);
        let what = if on { "offloads on" } else { "offloads off" };
        // Service traffic: steered to the primary's pod, answered from the VIP.
        let from = (0..5).find_map(|i| ping_vip(&phone, round * 100 + i));
        assert_eq!(
            from,
            Some(SocketAddr::from((VIP, 5060))),
            "{what}: OPTIONS through the VIP\n{}",
            lab.daemon_log(0)
        );
        // A member-opened TCP stream (GSO with partial checksums when offloads are on):
        // every byte arrives, from the VIP.
        let (peer, intact) = stream_from_primary(&lab, 7000 + round as u16, 2 << 20);
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(VIP),
            "{what}: stream source"
        );
        assert!(intact, "{what}: the stream arrived intact");
    }
    assert!(reason(&lab, "snat") > 0, "{}", lab.status().unwrap());
    assert!(reason(&lab, "steered") > 0);

    // The primary's pod dies; the backup is promoted and answers through the VIP.
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    drop(backup_silent);
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    assert!(
        lab.wait_active("backup", Duration::from_secs(10)).is_some(),
        "backup never became active:\n{}",
        lab.daemon_log(0)
    );
    let from = (0..10).find_map(|i| ping_vip(&phone, 500 + i));
    assert_eq!(from, Some(SocketAddr::from((VIP, 5060))));
}

/// A sipp UAS on the node's own address, as one of the seed's two SIP Server instances on
/// one host; its child is named `sipp-<name>`.
fn sip_server_on_node(lab: &mut Lab, name: &str, port: u16) {
    let xml = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp/sip_server.xml");
    let child = command_in(&lab.gw, Path::new("/usr/bin/sipp"))
        .unwrap()
        .arg("-sf")
        .arg(xml)
        .args([
            "-i",
            &NODE.to_string(),
            "-p",
            &port.to_string(),
            "-t",
            "u1",
            "-nostdin",
        ])
        .current_dir(&lab.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
        offloads(&lab, on);
        let from = (0..5).find_map(|i| ping_vip(&phone, round * 100 + i));
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
    let from = (0..10).find_map(|i| ping_vip(&phone, 500 + i));
    assert_eq!(
        from,
        Some(SocketAddr::from((VIP, 5060))),
        "the backup on 5070 answers from VIP:5060\n{}",
        lab.daemon_log(0)
    );
}
