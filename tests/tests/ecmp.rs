//! Scale-out behind ECMP, end to end in namespaces (`sipvip_tests::ecmp`): three gateways,
//! each with BIRD 2 announcing the VIP to a router (BIRD 2, BFD) that hashes flows over
//! them. Registrations and calls through the VIP; a steady stream of requests from 16
//! source ports spreads over the gateways; a connection a SIP server opens to the SBC works
//! both ways whichever gateway each packet crosses (conntrack synced), the first answer of
//! every flow a server opens reaches it on the first try (handed to the return path's
//! gateway where the entry has not arrived yet), and so do T-Lib connections to the
//! primary's own address, with no pass-through port; a gateway whose datapath is detached withdraws,
//! one whose members are all forced offline withdraws, and a gateway that drops off the
//! link in the middle of calls is taken out by BFD; it comes back without the return path
//! flapping. Each outage is the longest gap of any source port's answers.

use std::{
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sipvip_tests::{
    ecmp::{gw_ext, Ecmp, BACKUP, PHONE, PRIMARY, SBC, TLIB, VIP},
    gateways::Probes,
    netns::tcp_connect_from,
    scenario::{self, Calls},
};

const PORTS: u16 = 16;
/// The servers' subnet (`bgp.member_subnets`).
const SERVERS: &str = "198.18.2.0/24";
/// Flows a member opens with fresh source ports.
const FRESH: usize = 40;

/// Packets the gateways handed over to the return path's gateway, all together.
fn handed_over(e: &Ecmp) -> u64 {
    (0..3)
        .map(|g| {
            e.status(g).unwrap()["datapath"]["handed_over"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

/// A UDP echo server at `at` in the client namespace, until the returned flag is set or
/// `limit` passes.
fn udp_echo(e: &Ecmp, at: SocketAddrV4, limit: Duration) -> Arc<AtomicBool> {
    let sock = {
        let _g = e.client.enter().unwrap();
        UdpSocket::bind(at).unwrap()
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut b = [0u8; 1500];
        while !done.load(Ordering::Relaxed) && t.elapsed() < limit {
            if let Ok((n, from)) = sock.recv_from(&mut b) {
                let _ = sock.send_to(&b[..n], from);
            }
        }
    });
    stop
}

#[test]
fn three_gateways_behind_ecmp_serve_any_flow_on_any_gateway() {
    let mut e = Ecmp::new("ec").expect("topology");
    for (name, ns, addr) in [
        ("primary", &e.primary, PRIMARY),
        ("backup", &e.backup, BACKUP),
    ] {
        // The cut loses some INVITEs' responses: the servers absorb the retransmissions.
        let child = scenario::sip_server_with(ns, addr, 5060, &e.dir, scenario::Unexpected::Ignore)
            .unwrap();
        e.children.push((format!("sipp-{name}"), child));
    }
    e.start_router().unwrap();
    for g in 0..3 {
        e.start_gateway(g).unwrap();
    }
    // Every gateway serves the VIP, so every one announces it: three next hops.
    let all = e.wait_for(Duration::from_secs(30), || {
        e.next_hops().len() == 3 && e.next_hops_to(SERVERS).len() == 3
    });
    assert!(all.is_some(), "next hops {:?}\n{}", e.next_hops(), e.log(0));
    for g in 0..3 {
        assert_eq!(
            e.status(g).unwrap()["bgp"]["announced"][0],
            "vsVipHa01",
            "gateway {g}"
        );
    }
    // Gateway 0 (the highest priority) carries the members' return path.
    let int = e.wait_for(Duration::from_secs(10), || e.int_master() == Some(0));
    assert!(
        int.is_some(),
        "int master {:?}\n{}",
        e.int_master(),
        e.log(0)
    );

    // Registrations and calls through the VIP.
    assert_eq!(
        scenario::register_agents_in(&e.client, &e.dir, VIP.into(), PHONE.into(), 10).unwrap(),
        10
    );
    let calls = Calls::start_in(
        &e.client,
        &e.dir,
        VIP.into(),
        PHONE.into(),
        10,
        Duration::from_millis(500),
        10,
    )
    .unwrap();
    let rows = calls.finish(Duration::from_secs(20)).unwrap();
    assert_eq!(rows.last().map(|r| (r.ok, r.failed)), Some((10, 0)));

    // Sixteen source ports spread over the gateways: each steers some of them.
    let probes = Probes::start(
        &e.client,
        PHONE,
        VIP,
        6000..6000 + PORTS,
        (Duration::from_millis(10), Duration::ZERO),
        Duration::from_secs(90),
    );
    std::thread::sleep(Duration::from_secs(2));
    let steered: Vec<u64> = (0..3)
        .map(|g| {
            e.status(g).unwrap()["datapath"]["steered"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    eprintln!("steered per gateway: {steered:?}");
    assert!(
        steered.iter().filter(|s| **s > 0).count() >= 2,
        "ECMP spreads flows: {steered:?}"
    );

    // Any flow, any gateway: a connection the primary opens to the SBC (its packets through
    // the members' default gateway, the SBC's hashed over every gateway by the router)
    // carries data both ways.
    let listener = {
        let _g = e.client.enter().unwrap();
        TcpListener::bind((SBC, 5080)).unwrap()
    };
    let mut opened = {
        let _g = e.primary.enter().unwrap();
        tcp_connect_from(
            PRIMARY,
            SocketAddrV4::new(SBC, 5080),
            Duration::from_secs(5),
        )
        .expect("the primary connects to the SBC")
    };
    opened
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut sbc, peer) = listener.accept().unwrap();
    sbc.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(VIP));
    let mut b = [0u8; 64];
    for i in 0..20 {
        let m = format!("NOTIFY {i}");
        sbc.write_all(m.as_bytes()).unwrap();
        let n = opened
            .read(&mut b)
            .expect("the SBC's data reaches the primary");
        assert_eq!(&b[..n], m.as_bytes());
        opened.write_all(b"200 OK").unwrap();
        let n = sbc
            .read(&mut b)
            .expect("the primary's answer reaches the SBC");
        assert_eq!(&b[..n], b"200 OK");
    }

    // The first answer of every flow a member opens reaches it on the first try, whichever
    // gateway it crosses: one the flow's entry has not reached yet (sync runs every 100 ms,
    // the answer comes within a millisecond) hands it to gateway 0, which carries the
    // members' return path and saw the request.
    let handed_before = handed_over(&e);
    let echo = udp_echo(&e, SocketAddrV4::new(SBC, 5090), Duration::from_secs(60));
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    {
        let _g = e.primary.enter().unwrap();
        for i in 0..FRESH {
            let s = UdpSocket::bind((PRIMARY, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let m = format!("OPTIONS {i}");
            let t = Instant::now();
            s.send_to(m.as_bytes(), (SBC, 5090)).unwrap();
            let mut b = [0u8; 64];
            if let Ok((n, from)) = s.recv_from(&mut b) {
                if &b[..n] == m.as_bytes() && from == SocketAddr::from((SBC, 5090)) {
                    answered += 1;
                    slowest = slowest.max(t.elapsed());
                }
            }
        }
    }
    echo.store(true, Ordering::Relaxed);
    // And every connection a member opens completes without its SYN retransmitted (1 s).
    let mut slow_connects = 0;
    for _ in 0..FRESH / 2 {
        let _g = e.primary.enter().unwrap();
        let t = Instant::now();
        let c = tcp_connect_from(
            PRIMARY,
            SocketAddrV4::new(SBC, 5080),
            Duration::from_secs(5),
        )
        .expect("the primary connects to the SBC");
        if t.elapsed() >= Duration::from_millis(900) {
            slow_connects += 1;
        }
        drop(c);
        let _ = listener.set_nonblocking(true);
        while listener.accept().is_ok() {}
    }
    let handed = handed_over(&e) - handed_before;
    eprintln!(
        "member-opened flows: {answered}/{FRESH} first answers (slowest {} ms), {slow_connects} of {} connections slow; {handed} packets handed over to the return path",
        slowest.as_millis(),
        FRESH / 2
    );
    assert_eq!(answered, FRESH, "every first answer reached the primary");
    assert_eq!(slow_connects, 0, "no SYN-ACK was lost");
    assert!(handed > 0, "the other gateways handed answers over");

    // A gateway whose datapath is detached withdraws, and gives the members' return path up
    // (keepalived's track script, `sipvip health`).
    let down = std::process::Command::new(&e.bin)
        .args(["down", "--pin-dir"])
        .arg(e.pin_dir(0))
        .output()
        .unwrap();
    assert!(down.status.success());
    let out = e.wait_for(Duration::from_secs(5), || {
        !e.next_hops().contains(&gw_ext(0)) && !e.next_hops_to(SERVERS).contains(&gw_ext(0))
    });
    assert!(out.is_some(), "gateway 0 still announced:\n{}", e.log(0));
    let st = e.status(0).unwrap();
    assert_eq!(st["bgp"]["announced"].as_array().map(Vec::len), Some(0));
    let moved = e.wait_for(Duration::from_secs(10), || e.int_master() == Some(1));
    assert!(
        moved.is_some(),
        "int master {:?}\n{}",
        e.int_master(),
        e.log(1)
    );

    // A gateway whose members are all forced offline has no member to serve: it withdraws.
    for m in ["primary", "backup"] {
        let o = std::process::Command::new(&e.bin)
            .args(["member", "disable", m, "--socket"])
            .arg(e.socket(2))
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    let out = e.wait_for(Duration::from_secs(5), || {
        !e.next_hops().contains(&gw_ext(2))
    });
    assert!(out.is_some(), "gateway 2 still announced:\n{}", e.log(2));
    for m in ["primary", "backup"] {
        std::process::Command::new(&e.bin)
            .args(["member", "enable", m, "--socket"])
            .arg(e.socket(2))
            .output()
            .unwrap();
    }
    let back = e.wait_for(Duration::from_secs(10), || {
        e.next_hops().contains(&gw_ext(2))
    });
    assert!(back.is_some(), "gateway 2 back");

    // T-Lib clients' connections to the primary's own address (the gateways announce the
    // servers' subnet too): through any gateway in, the return path out, untranslated,
    // with no pass-through port configured: a gateway without the flow's state hands its
    // first packets to the return path's gateway, which records the flow before the
    // T-Server answers.
    let tserver = {
        let _g = e.primary.enter().unwrap();
        TcpListener::bind((PRIMARY, 7000)).unwrap()
    };
    let mut slow_connects = 0;
    for _ in 0..FRESH / 2 {
        let _g = e.client.enter().unwrap();
        let t = Instant::now();
        let c = tcp_connect_from(
            TLIB,
            SocketAddrV4::new(PRIMARY, 7000),
            Duration::from_secs(5),
        )
        .expect("T-Lib connects to the primary's own address");
        assert_eq!(c.peer_addr().unwrap(), SocketAddr::from((PRIMARY, 7000)));
        if t.elapsed() >= Duration::from_millis(900) {
            slow_connects += 1;
        }
        let (mut ts, _) = tserver.accept().unwrap();
        ts.write_all(b"EventLinkConnected").unwrap();
        let mut c = c;
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        let n = c.read(&mut b).expect("the T-Server speaks first");
        assert_eq!(&b[..n], b"EventLinkConnected");
    }
    if slow_connects > 0 {
        for g in 0..3 {
            let st = e.status(g).unwrap();
            eprintln!(
                "gateway {g}: sync {} datapath {}",
                st["sync"], st["datapath"]
            );
            eprintln!("{}", e.log(g));
        }
    }
    assert_eq!(slow_connects, 0, "no T-Lib SYN-ACK was lost");
    let mut tlib = {
        let _g = e.client.enter().unwrap();
        tcp_connect_from(
            TLIB,
            SocketAddrV4::new(PRIMARY, 7000),
            Duration::from_secs(5),
        )
        .expect("T-Lib connects to the primary")
    };
    tlib.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut ts, peer) = tserver.accept().unwrap();
    ts.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(TLIB));
    let exchange = |tlib: &mut std::net::TcpStream, ts: &mut std::net::TcpStream, what: &str| {
        // The T-Server speaks first.
        ts.write_all(what.as_bytes()).unwrap();
        let mut b = [0u8; 64];
        let n = tlib
            .read(&mut b)
            .expect("the T-Server's event reaches T-Lib");
        assert_eq!(&b[..n], what.as_bytes());
        tlib.write_all(b"ACK").unwrap();
        let n = ts
            .read(&mut b)
            .expect("T-Lib's answer reaches the T-Server");
        assert_eq!(&b[..n], b"ACK");
        assert_eq!(
            tlib.peer_addr().unwrap(),
            SocketAddr::from((PRIMARY, 7000)),
            "T-Lib sees the server's own address"
        );
    };
    exchange(&mut tlib, &mut ts, "EventRegistered");
    // Calls in progress across the cut below.
    let calls = Calls::start_in(
        &e.client,
        &e.dir,
        VIP.into(),
        PHONE.into(),
        5,
        Duration::from_secs(2),
        30,
    )
    .unwrap();

    // Gateway 1 (now carrying the return path) loses its external link: BFD takes it out of
    // the router's set, keepalived moves the return path to gateway 2; the flows move.
    std::thread::sleep(Duration::from_secs(1));
    let cut = Instant::now();
    e.gw[1].exec("ip link set ext0 down").unwrap();
    let gone = e.wait_for(Duration::from_secs(5), || {
        !e.next_hops().contains(&gw_ext(1)) && e.int_master() == Some(2)
    });
    assert!(
        gone.is_some(),
        "next hops {:?}, int master {:?}",
        e.next_hops(),
        e.int_master()
    );
    std::thread::sleep(Duration::from_secs(2));
    let (gap, _, ports) = probes.gap_since(cut);
    eprintln!(
        "gateway 1 cut off: withdrawn and return path moved after {:?}; the longest gap of any source port {} ms, {ports} ports answered since",
        gone.unwrap(),
        gap.as_millis()
    );
    assert_eq!(
        ports,
        usize::from(PORTS),
        "every source port answered again"
    );
    assert!(
        gap < Duration::from_secs(3),
        "outage {} ms",
        gap.as_millis()
    );
    assert_eq!(e.next_hops(), vec![gw_ext(2)], "only gateway 2 serves now");
    exchange(&mut tlib, &mut ts, "EventRinging");
    let rows = calls.finish(Duration::from_secs(30)).unwrap();
    let last = rows.last().expect("call statistics");
    eprintln!(
        "calls across the cut: {} ok, {} failed",
        last.ok, last.failed
    );
    assert_eq!((last.ok, last.failed), (30, 0), "calls across the cut");

    // Gateway 1's link comes back: it announces again and takes flows, and the return path
    // stays where it is (keepalived's nopreempt): nothing flaps back.
    let back = Instant::now();
    e.gw[1].exec("ip link set ext0 up").unwrap();
    let again = e.wait_for(Duration::from_secs(15), || {
        e.next_hops().contains(&gw_ext(1))
    });
    assert!(
        again.is_some(),
        "gateway 1 never announced again:\n{}",
        e.log(1)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        e.int_master(),
        Some(2),
        "the return path stays on gateway 2"
    );
    let (gap, _, ports) = probes.gap_since(back);
    eprintln!(
        "gateway 1 back: announced after {:?}; the longest gap of any source port {} ms",
        again.unwrap(),
        gap.as_millis()
    );
    assert_eq!(
        ports,
        usize::from(PORTS),
        "every source port still answered"
    );
    assert!(
        gap < Duration::from_secs(3),
        "outage {} ms",
        gap.as_millis()
    );
}
