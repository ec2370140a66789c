//! Gateway pair with keepalived (VRRP), end to end in namespaces (`sipvip_tests::pair`): two
//! gateways with one sipvip configuration, keepalived moving the VIP and the floating
//! addresses. Registrations and calls flow through the master; the master's sipvip and
//! keepalived are killed (SIGKILL) in the middle of a steady probe stream, and the backup
//! takes over, announcing the VIP; a T-Lib connection to a server's own address survives;
//! the old master comes back and stays backup (nothing flaps back); a link cut on the new
//! master moves everything back. Each outage is measured as the longest gap in the probe
//! stream.

use std::{
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use sipvip_tests::{
    gateways::Probes,
    netns::{tcp_connect_from, Netns},
    pair::{Pair, BACKUP, PHONE, PRIMARY, SBC, TLIB, VIP},
    scenario::{self, Calls},
};

fn udp_in(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let _g = ns.enter().unwrap();
    let s = UdpSocket::bind(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

#[test]
fn a_keepalived_pair_survives_the_loss_of_its_master() {
    let mut p = Pair::new("hp").expect("pair");
    for (name, ns, addr) in [
        ("primary", &p.primary, PRIMARY),
        ("backup", &p.backup, BACKUP),
    ] {
        let child = scenario::sip_server_in(ns, addr, 5060, &p.dir).unwrap();
        p.children.push((format!("sipp-{name}"), child));
    }
    p.start_gateway(0).unwrap();
    p.start_gateway(1).unwrap();
    // A (the higher priority) becomes master: its daemon hears it from keepalived and A
    // holds the VIP; B is backup, its datapath attached and its monitors running.
    let master = p.wait_for(Duration::from_secs(15), || {
        p.ha_state(0).as_deref() == Some("master") && p.holds_vip(0)
    });
    assert!(master.is_some(), "A never became master:\n{}", p.log(0));
    assert_eq!(p.ha_state(1).as_deref(), Some("backup"), "{}", p.log(1));
    assert!(!p.holds_vip(1), "B holds the VIP too");
    for g in 0..2 {
        let active = p.wait_for(Duration::from_secs(10), || {
            p.status(g)
                .is_ok_and(|s| s["vips"][0]["active"] == "primary")
        });
        assert!(
            active.is_some(),
            "gateway {g}: primary not active:\n{}",
            p.log(g)
        );
    }
    let st = p.status(1).unwrap();
    assert_eq!(
        st["vips"][0]["members"][0]["up"], true,
        "B's monitors see the primary"
    );

    // Registrations and calls through the VIP.
    assert_eq!(
        scenario::register_agents_in(&p.client, &p.dir, VIP.into(), PHONE.into(), 10).unwrap(),
        10,
        "registrations through the master"
    );
    let calls = Calls::start_in(
        &p.client,
        &p.dir,
        VIP.into(),
        PHONE.into(),
        10,
        Duration::from_millis(500),
        10,
    )
    .unwrap();
    let rows = calls.finish(Duration::from_secs(20)).unwrap();
    let last = rows.last().expect("call statistics");
    assert_eq!((last.ok, last.failed), (10, 0), "calls through the master");

    // A T-Lib client's connection to the primary's own address, through the master.
    let tserver = {
        let _g = p.primary.enter().unwrap();
        TcpListener::bind((PRIMARY, 7000)).unwrap()
    };
    let mut tlib = {
        let _g = p.client.enter().unwrap();
        tcp_connect_from(
            TLIB,
            SocketAddrV4::new(PRIMARY, 7000),
            Duration::from_secs(3),
        )
        .expect("T-Lib connects to the primary")
    };
    tlib.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut ts, _) = tserver.accept().unwrap();
    ts.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let exchange = |tlib: &mut std::net::TcpStream, ts: &mut std::net::TcpStream, what: &str| {
        tlib.write_all(what.as_bytes()).unwrap();
        let mut b = [0u8; 64];
        let n = ts.read(&mut b).unwrap();
        assert_eq!(&b[..n], what.as_bytes(), "T-Server received");
        ts.write_all(b"EventACK").unwrap();
        let n = tlib.read(&mut b).unwrap();
        assert_eq!(&b[..n], b"EventACK", "T-Lib received ({what})");
    };
    exchange(&mut tlib, &mut ts, "RequestRegisterAddress");
    // A connection the primary opens to the SBC through the VIP (SNATed, tracked by A).
    let sbc_listener = {
        let _g = p.client.enter().unwrap();
        TcpListener::bind((SBC, 5080)).unwrap()
    };
    let mut opened = {
        let _g = p.primary.enter().unwrap();
        tcp_connect_from(
            PRIMARY,
            SocketAddrV4::new(SBC, 5080),
            Duration::from_secs(3),
        )
        .expect("the primary connects to the SBC")
    };
    opened
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut sbc, peer) = sbc_listener.accept().unwrap();
    sbc.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(VIP), "the SBC sees the VIP");
    // Both flows reach B's datapath through the sync.
    let synced = p.wait_for(Duration::from_secs(5), || {
        p.status(1)
            .is_ok_and(|s| s["sync"]["inserted"].as_u64().unwrap_or(0) >= 2)
    });
    assert!(
        synced.is_some(),
        "B's sync: {}\n{}",
        p.status(1).unwrap()["sync"],
        p.log(1)
    );

    // The master dies: its sipvip and keepalived killed together, mid-stream.
    let probes = Probes::start(
        &p.client,
        PHONE,
        VIP,
        5099..5100,
        (Duration::from_millis(20), Duration::from_millis(20)),
        Duration::from_secs(60),
    );
    // Calls in progress across the kill: 5 a second, each held 2 s.
    let calls = Calls::start_in(
        &p.client,
        &p.dir,
        VIP.into(),
        PHONE.into(),
        5,
        Duration::from_secs(2),
        30,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    p.kill(0, "keepalived");
    p.kill(0, "sipvip");
    let took = p.wait_for(Duration::from_secs(10), || {
        p.ha_state(1).as_deref() == Some("master") && p.holds_vip(1)
    });
    assert!(took.is_some(), "B never took over:\n{}", p.log(1));
    std::thread::sleep(Duration::from_secs(2));
    let (gap, after, _) = probes.gap_since(killed);
    eprintln!(
        "master killed: B master after {:?}; longest gap in the probe stream {} ms, {after} answers since",
        took.unwrap(),
        gap.as_millis()
    );
    assert!(after > 20, "probes answered again through B ({after})");
    assert!(
        gap < Duration::from_secs(5),
        "outage {} ms",
        gap.as_millis()
    );
    // The flows that began on A go on through B, the far end speaking first: B knows them
    // from the sync. The SBC's data reaches the primary; the T-Server's event reaches the
    // T-Lib client from the server's own address.
    sbc.write_all(b"NOTIFY").unwrap();
    let mut b = [0u8; 64];
    let n = opened
        .read(&mut b)
        .expect("the SBC's data reaches the primary through B");
    assert_eq!(&b[..n], b"NOTIFY");
    ts.write_all(b"EventRinging").unwrap();
    let n = tlib
        .read(&mut b)
        .expect("the T-Server's event reaches the T-Lib client through B");
    assert_eq!(&b[..n], b"EventRinging");
    exchange(&mut tlib, &mut ts, "RequestMakeCall");
    let rows = calls.finish(Duration::from_secs(30)).unwrap();
    let last = rows.last().expect("call statistics");
    eprintln!(
        "calls across the kill: {} ok, {} failed",
        last.ok, last.failed
    );
    assert_eq!((last.ok, last.failed), (30, 0), "calls across the kill");
    // Bad sync input leaves B's datapath alone: a datagram cut short from the dead
    // master's address (its sender killed mid-write), garbage from it, and a well-formed
    // datagram from an address not in ha.sync are dropped whole and counted.
    let before = p.status(1).unwrap()["sync"].clone();
    let valid = sipvip::sync::encode(&[sipvip::sync::Entry::V4(
        sipvip_common::CtKey {
            addr_a_be: u32::from_ne_bytes(VIP.octets()),
            addr_b_be: u32::from_ne_bytes(SBC.octets()),
            port_a_be: 40123u16.to_be(),
            port_b_be: 5060u16.to_be(),
            proto: 17,
            kind: sipvip_common::CT_SNAT,
            _pad: 0,
        },
        sipvip_common::CtValue {
            member_be: u32::from_ne_bytes(PRIMARY.octets()),
            slot: 0,
        },
    )])
    .remove(0);
    let to_b = SocketAddr::from((sipvip_tests::pair::GW_INT[1], 9361));
    {
        let a = udp_in(
            &p.gw[0],
            SocketAddr::from((sipvip_tests::pair::GW_INT[0], 9361)),
        );
        a.send_to(&valid[..valid.len() - 5], to_b).unwrap();
        a.send_to(b"SVSY\x01\x04\xff\xffgarbage", to_b).unwrap();
        let stranger = udp_in(&p.primary, SocketAddr::from((PRIMARY, 9361)));
        stranger.send_to(&valid, to_b).unwrap();
    }
    let counted = p.wait_for(Duration::from_secs(3), || {
        p.status(1).is_ok_and(|s| {
            s["sync"]["rejected_datagrams"].as_u64().unwrap_or(0)
                >= before["rejected_datagrams"].as_u64().unwrap_or(0) + 3
        })
    });
    let st = p.status(1).unwrap();
    assert!(counted.is_some(), "B's sync: {}", st["sync"]);
    assert_eq!(
        st["sync"]["inserted"], before["inserted"],
        "nothing bad was added"
    );
    eprintln!("B's sync: {}", st["sync"]);
    assert_eq!(
        scenario::register_agents_in(&p.client, &p.dir, VIP.into(), PHONE.into(), 5).unwrap(),
        5,
        "registrations through the new master"
    );

    // B's daemon restarts (an upgrade) while B is master: keepalived says nothing until its
    // next transition, and the new daemon knows it is master from the VIP on its interface.
    p.kill(1, "sipvip");
    p.start_daemon(1).unwrap();
    assert_eq!(
        p.ha_state(1).as_deref(),
        Some("master"),
        "B's restarted daemon:\n{}",
        p.log(1)
    );

    // A comes back: it stays backup (nopreempt), the VIP stays on B.
    p.start_gateway(0).unwrap();
    let back = p.wait_for(Duration::from_secs(10), || {
        p.ha_state(0).as_deref() == Some("backup")
    });
    assert!(
        back.is_some(),
        "A's daemon never heard backup:\n{}",
        p.log(0)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(p.ha_state(1).as_deref(), Some("master"), "B stays master");
    assert!(p.holds_vip(1), "the VIP stays on B");
    assert!(!p.holds_vip(0), "A released the VIP it held when it died");

    // B's external link is cut: everything moves back to A.
    let cut = Instant::now();
    p.gw[1].exec("ip link set ext0 down").unwrap();
    let took = p.wait_for(Duration::from_secs(10), || {
        p.ha_state(0).as_deref() == Some("master") && p.holds_vip(0)
    });
    assert!(
        took.is_some(),
        "A never took over after the link cut:\n{}",
        p.log(0)
    );
    std::thread::sleep(Duration::from_secs(2));
    let (gap, after, _) = probes.gap_since(cut);
    eprintln!(
        "link cut: A master after {:?}; longest gap {} ms, {after} answers since",
        took.unwrap(),
        gap.as_millis()
    );
    assert!(after > 20, "probes answered again through A ({after})");
    assert!(
        gap < Duration::from_secs(5),
        "outage {} ms",
        gap.as_millis()
    );
    assert_ne!(p.ha_state(1).as_deref(), Some("master"), "B gave up");
    exchange(&mut tlib, &mut ts, "RequestReleaseCall");
}
