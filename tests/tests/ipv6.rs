//! IPv6 end to end on the dual-stack lab: the daemon serves one VIP with an IPv4 and an IPv6
//! address and the same members. Real sipp registers and calls over IPv6 through the IPv6
//! VIP; a 4 KB INVITE crosses fragmented; the device groups' rules hold over IPv6 (SNAT to
//! the VIP, the excluded config server, T-Lib to a member's own address); a failover moves
//! both families at once, and a neighbour on the outside sees the unsolicited Neighbor
//! Advertisements for the VIP. The ICMP echo monitor probes IPv6 too. Every assertion is
//! about what the receiving end saw.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sipvip_tests::{
    lab::{Lab, BACKUP, BACKUP6, CONFIG6, PHONE6, PRIMARY, PRIMARY6, SBC6, TLIB6, VIP, VIP6},
    netns::{tcp_connect_from, Netns},
    scenario::{self, Calls},
};

const T: Duration = Duration::from_secs(3);

fn udp6_in(ns: &Netns, addr: Ipv6Addr, port: u16) -> UdpSocket {
    let _g = ns.enter().unwrap();
    let s = UdpSocket::bind(SocketAddr::from((addr, port))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s
}

fn options(from: SocketAddr, tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:[{VIP6}]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-v6-{tag};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:lab@[{}]>;tag={tag}\r\nTo: <sip:[{VIP6}]>\r\nCall-ID: v6-{tag}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        from.ip()
    )
    .into_bytes()
}

/// A TCP connection from `src` to `dst` made inside `ns`.
fn tcp6_from(ns: &Netns, src: Ipv6Addr, dst: SocketAddrV6) -> TcpStream {
    let _g = ns.enter().unwrap();
    let s = tcp_connect_from(src, dst, T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

/// One ICMPv6 echo request from `src` to `dst` in `ns` (a raw socket: the kernel fills in
/// the checksum); whether the reply came back within 2 s.
fn ping6(ns: &Netns, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
    let _g = ns.enter().unwrap();
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV6),
    )
    .unwrap();
    s.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let echo = [128u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
    s.send_to(&echo, &SocketAddr::from((dst, 0)).into())
        .unwrap();
    let t = Instant::now();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
    while t.elapsed() < Duration::from_secs(2) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            // SAFETY: recv_from initialised the first n bytes.
            let b: Vec<u8> = buf[..n]
                .iter()
                .map(|x| unsafe { x.assume_init() })
                .collect();
            if from.as_socket().map(|a| a.ip()) == Some(IpAddr::V6(dst))
                && b.first() == Some(&129)
                && b.get(4..6) == Some(&[0x12, 0x34])
            {
                return true;
            }
        }
    }
    false
}

/// Unsolicited Neighbor Advertisements for `target` (Override set) seen on `dev` in `ns`
/// within `limit`: a packet socket, as any neighbour's kernel receives them.
struct NaWatch {
    fd: i32,
}

impl NaWatch {
    fn new(ns: &Netns, dev: &str) -> NaWatch {
        let _g = ns.enter().unwrap();
        let ifindex = ns.ifindex(dev).unwrap();
        // SAFETY: a packet socket bound to one interface, closed on drop.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(0x86ddu16.to_be()),
            );
            assert!(fd >= 0, "packet socket");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = 0x86ddu16.to_be();
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind packet socket");
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            NaWatch { fd }
        }
    }

    /// How many advertisements for `target` with Override arrive within `limit` (bounded
    /// reads of 100 ms each).
    fn count(&self, target: Ipv6Addr, limit: Duration) -> usize {
        let t = Instant::now();
        let mut n = 0;
        let mut buf = [0u8; 2048];
        while t.elapsed() < limit {
            // SAFETY: reading into a buffer of its own length.
            let got = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got < 14 + 40 + 24 {
                continue;
            }
            let f = &buf[..got as usize];
            if f[14 + 6] == 58 && f[54] == 136 && f[58] & 0x20 != 0 && f[62..78] == target.octets()
            {
                n += 1;
            }
        }
        n
    }
}

impl Drop for NaWatch {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn dual_stack_vip_registrations_calls_groups_fragments_and_failover() {
    let mut lab = Lab::new("v6").expect("lab");
    // The SIP servers answer on both families, and the monitor probes both (`ipv6 = true`).
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    for (which, ns, addr) in [
        ("primary6", &lab.primary, PRIMARY6),
        ("backup6", &lab.backup, BACKUP6),
    ] {
        let child = scenario::sip_server_in(ns, addr, 5060, &lab.dir).unwrap();
        lab.children.push((format!("sipp-{which}"), child));
    }
    let cfg = lab
        .write_config(&lab.config("200ms", "1s", "ipv6 = true"))
        .unwrap();
    lab.start_daemon(&cfg).unwrap();
    lab.wait_active("primary", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("primary never active:\n{}", lab.daemon_log(0)));
    let st = lab.status().unwrap();
    assert_eq!(st["vips"][0]["address6"], VIP6.to_string(), "status");
    let primary = &st["vips"][0]["members"][0];
    assert_eq!(primary["address6"], PRIMARY6.to_string());
    let monitors: Vec<&str> = primary["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        monitors,
        ["monSipUdp", "monSipUdp (IPv6)"],
        "both families probed"
    );

    // A 4 KB OPTIONS over UDP/IPv6, fragmented by the phone's kernel, reaches the SIP server
    // whole (sipp parses it and answers), and the answer comes back from the VIP.
    {
        let phone = udp6_in(&lab.client, PHONE6, 5092);
        let mut big = options(phone.local_addr().unwrap(), "frag");
        let pad = format!("X-Pad: {}\r\n", "p".repeat(4000));
        let at = big.len() - "Content-Length: 0\r\n\r\n".len();
        big.splice(at..at, pad.bytes());
        assert!(big.len() > 4000);
        phone.send_to(&big, (VIP6, 5060)).unwrap();
        let mut buf = [0u8; 8192];
        let (n, from) = phone
            .recv_from(&mut buf)
            .expect("the answer to a 4 KB request");
        assert_eq!(
            from,
            SocketAddr::from((VIP6, 5060)),
            "answered from the VIP"
        );
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    // Group A over IPv6: registrations and calls through the IPv6 VIP (sipp, both ends).
    assert_eq!(
        scenario::register_agents_via(&lab, VIP6.into(), PHONE6.into(), 10).unwrap(),
        10,
        "registrations through the IPv6 VIP"
    );
    let calls = Calls::start_via(
        &lab,
        VIP6.into(),
        PHONE6.into(),
        10,
        Duration::from_millis(500),
        20,
    )
    .unwrap();
    let rows = calls.finish(Duration::from_secs(20)).unwrap();
    let last = rows.last().expect("call statistics");
    assert_eq!(
        (last.ok, last.failed),
        (20, 0),
        "calls through the IPv6 VIP"
    );

    // ICMPv6 echo to the VIP is answered.
    assert!(
        ping6(&lab.client, PHONE6, VIP6),
        "ICMPv6 echo to the VIP unanswered; datapath: {}",
        lab.status().unwrap()["datapath"]
    );

    // Group B: the SIP server's request to the SBC arrives from the VIP.
    let sbc = udp6_in(&lab.client, SBC6, 5060);
    let m = udp6_in(&lab.primary, PRIMARY6, 5061);
    m.send_to(&options(m.local_addr().unwrap(), "b1"), (SBC6, 5060))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (_, from) = sbc.recv_from(&mut buf).expect("group B over IPv6");
    assert_eq!(from.ip(), IpAddr::V6(VIP6), "group B sees the VIP");
    assert_eq!(from.port(), 5061, "source port kept 1:1");

    // Group C: the configuration server (excluded) sees the member's own address.
    let cfgsrv = {
        let _g = lab.client.enter().unwrap();
        TcpListener::bind((CONFIG6, 2020)).unwrap()
    };
    let _c = tcp6_from(
        &lab.primary,
        PRIMARY6,
        SocketAddrV6::new(CONFIG6, 2020, 0, 0),
    );
    let (_, peer) = cfgsrv.accept().unwrap();
    assert_eq!(peer.ip(), IpAddr::V6(PRIMARY6), "group C: no SNAT");

    // Group D: a T-Lib client's connection to the primary's own IPv6 address, held across
    // the failover.
    let tserver = {
        let _g = lab.primary.enter().unwrap();
        TcpListener::bind((PRIMARY6, 7000)).unwrap()
    };
    let mut tlib = tcp6_from(&lab.client, TLIB6, SocketAddrV6::new(PRIMARY6, 7000, 0, 0));
    let (mut ts, peer) = tserver.accept().unwrap();
    ts.set_read_timeout(Some(T)).unwrap();
    assert_eq!(
        peer.ip(),
        IpAddr::V6(TLIB6),
        "group D: the client's own address"
    );
    let exchange = |tlib: &mut TcpStream, ts: &mut TcpStream, what: &str| {
        tlib.write_all(what.as_bytes()).unwrap();
        let mut b = [0u8; 64];
        let n = ts.read(&mut b).unwrap();
        assert_eq!(&b[..n], what.as_bytes(), "T-Server received");
        ts.write_all(b"EventACK").unwrap();
        let n = tlib.read(&mut b).unwrap();
        assert_eq!(&b[..n], b"EventACK", "T-Lib client received ({what})");
        assert_eq!(
            tlib.peer_addr().unwrap(),
            SocketAddr::from((PRIMARY6, 7000))
        );
    };
    exchange(&mut tlib, &mut ts, "RequestRegisterAddress");

    // Failover: only the primary's IPv6 SIP process dies. Its IPv6 monitor sees ICMPv6 port
    // unreachable and takes it down at once; both families move to the backup, and the
    // outside hears unsolicited Neighbor Advertisements for the IPv6 VIP.
    let watch = NaWatch::new(&lab.client, "cl0");
    lab.stop("sipp-primary6", libc::SIGKILL).unwrap();
    lab.wait_active("backup", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("backup never active:\n{}", lab.daemon_log(0)));
    let st = lab.status().unwrap();
    let m6 = &st["vips"][0]["members"][0]["monitors"][1];
    assert_eq!(m6["name"], "monSipUdp (IPv6)");
    assert_eq!(m6["up"], false);
    assert_eq!(
        m6["reason"], "ICMP port unreachable",
        "down at once on ICMPv6 port unreachable, not at the timeout"
    );
    assert_eq!(
        st["vips"][0]["members"][0]["monitors"][0]["up"], true,
        "the primary's IPv4 SIP server still answers"
    );
    let nas = watch.count(VIP6, Duration::from_millis(800));
    assert!(nas >= 1, "unsolicited NAs for the VIP seen outside: {nas}");
    assert_eq!(st["vips"][0]["active"], "backup");
    // IPv6 answered by the backup, IPv4 too: one decision for both families.
    let phone = udp6_in(&lab.client, PHONE6, 5093);
    phone
        .send_to(&options(phone.local_addr().unwrap(), "a2"), (VIP6, 5060))
        .unwrap();
    let (n, from) = phone
        .recv_from(&mut buf)
        .expect("OPTIONS over IPv6 after the failover");
    assert_eq!(from, SocketAddr::from((VIP6, 5060)));
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
        "the backup answers"
    );
    for g in scenario::device_groups(&lab, BACKUP).unwrap() {
        assert_eq!(g.saw, g.expected, "IPv4 after the failover: {g}");
    }
    let _ = (VIP, PRIMARY);
    exchange(&mut tlib, &mut ts, "RequestMakeCall");
}

/// The ICMP echo monitor over IPv6: a member that stops answering echo on its IPv6 address
/// (the address removed) goes down while IPv4 still answers, and both families move.
#[test]
fn icmpv6_echo_monitor_fails_over_both_families() {
    let mut lab = Lab::new("e6").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let text = lab
        .config("200ms", "1s", "")
        .replace(
            "[[vip]]",
            "[[monitor]]\nname = \"monIcmp\"\ntype = \"icmp\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nipv6 = true\n\n[[vip]]",
        )
        .replace("monitors = [\"monSipUdp\"]", "monitors = [\"monIcmp\"]");
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    lab.wait_active("primary", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("primary never active:\n{}", lab.daemon_log(0)));
    let names = |st: &serde_json::Value| -> Vec<(String, bool)> {
        st["vips"][0]["members"][0]["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().to_string(), m["up"] == true))
            .collect()
    };
    let up = lab.wait_for(Duration::from_secs(5), || {
        names(&lab.status().unwrap()) == [("monIcmp".into(), true), ("monIcmp (IPv6)".into(), true)]
    });
    assert!(
        up.is_some(),
        "both echo monitors up: {:?}",
        names(&lab.status().unwrap())
    );
    // The primary's IPv6 address goes away: its IPv6 echo goes unanswered.
    lab.primary
        .exec(&format!("ip -6 addr del {PRIMARY6}/64 dev p0"))
        .unwrap();
    lab.wait_active("backup", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("backup never active:\n{}", lab.daemon_log(0)));
    let st = lab.status().unwrap();
    assert_eq!(
        names(&st),
        [("monIcmp".into(), true), ("monIcmp (IPv6)".into(), false)],
        "IPv4 echo still answered, IPv6 not"
    );
    assert_eq!(st["vips"][0]["active"], "backup");
}

/// An IPv6-only VIP (no IPv4 address) with IPv6-only members: the daemon adds only the IPv6
/// address, the monitor probes IPv6 without `ipv6 = true`, sipp registers and calls through
/// it, the SIP server's request to the SBC leaves from the VIP, and a failover moves it with
/// unsolicited Neighbor Advertisements. The datapath has no IPv4 record for it.
#[test]
fn ipv6_only_vip_registrations_calls_snat_and_failover() {
    let mut lab = Lab::new("o6").expect("lab");
    for (which, ns, addr) in [
        ("primary6", &lab.primary, PRIMARY6),
        ("backup6", &lab.backup, BACKUP6),
    ] {
        let child = scenario::sip_server_in(ns, addr, 5060, &lab.dir).unwrap();
        lab.children.push((format!("sipp-{which}"), child));
    }
    let text: String = lab
        .config("200ms", "1s", "")
        .lines()
        .filter(|l| !l.starts_with("address = "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains(&format!("address6 = \"{VIP6}\"")));
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    lab.wait_active("primary", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("primary never active:\n{}", lab.daemon_log(0)));
    let st = lab.status().unwrap();
    let vip = &st["vips"][0];
    assert!(vip.get("address").is_none(), "no IPv4 address: {vip}");
    assert_eq!(vip["address6"], VIP6.to_string());
    let monitors: Vec<&str> = vip["members"][0]["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(monitors, ["monSipUdp (IPv6)"], "IPv6 probed, IPv4 not");
    // Only the IPv6 address is on the external interface.
    let addrs = lab.gw.exec("ip -o addr show dev ext0").unwrap();
    assert!(addrs.contains(&format!("{VIP6}/128")), "{addrs}");
    assert!(!addrs.contains(&format!("{VIP}/32")), "{addrs}");

    assert_eq!(
        scenario::register_agents_via(&lab, VIP6.into(), PHONE6.into(), 5).unwrap(),
        5,
        "registrations through the IPv6-only VIP"
    );
    let calls = Calls::start_via(
        &lab,
        VIP6.into(),
        PHONE6.into(),
        10,
        Duration::from_millis(500),
        10,
    )
    .unwrap();
    let rows = calls.finish(Duration::from_secs(20)).unwrap();
    let last = rows.last().expect("call statistics");
    assert_eq!(
        (last.ok, last.failed),
        (10, 0),
        "calls through the IPv6-only VIP"
    );
    assert!(ping6(&lab.client, PHONE6, VIP6), "ICMPv6 echo to the VIP");

    // Group B: the member's request to the SBC arrives from the VIP, port kept.
    let sbc = udp6_in(&lab.client, SBC6, 5060);
    let m = udp6_in(&lab.primary, PRIMARY6, 5061);
    m.send_to(&options(m.local_addr().unwrap(), "o1"), (SBC6, 5060))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (_, from) = sbc.recv_from(&mut buf).expect("group B over IPv6");
    assert_eq!(
        from,
        SocketAddr::from((VIP6, 5061)),
        "SNAT to the VIP, port 1:1"
    );

    // The primary's SIP server dies: the backup takes the VIP, announced by unsolicited NAs.
    let watch = NaWatch::new(&lab.client, "cl0");
    lab.stop("sipp-primary6", libc::SIGKILL).unwrap();
    lab.wait_active("backup", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("backup never active:\n{}", lab.daemon_log(0)));
    let nas = watch.count(VIP6, Duration::from_millis(800));
    assert!(nas >= 1, "unsolicited NAs for the VIP seen outside: {nas}");
    let phone = udp6_in(&lab.client, PHONE6, 5094);
    phone
        .send_to(&options(phone.local_addr().unwrap(), "o2"), (VIP6, 5060))
        .unwrap();
    let (n, from) = phone
        .recv_from(&mut buf)
        .expect("OPTIONS over IPv6 after the failover");
    assert_eq!(from, SocketAddr::from((VIP6, 5060)));
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
        "the backup answers"
    );
}

/// The node's own IPv6 address (ext0's).
const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

/// One OPTIONS from `phone` to the IPv6 VIP; the address its 200 came from, if one came
/// within 300 ms.
fn ping_vip6(phone: &UdpSocket, tag: &str) -> Option<SocketAddr> {
    phone
        .send_to(&options(phone.local_addr().ok()?, tag), (VIP6, 5060))
        .ok()?;
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(300) {
        let (n, from) = phone.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 200") && text.contains(&format!("Call-ID: v6-{tag}")) {
            return Some(from);
        }
    }
    None
}

/// On-node mode over IPv6: a dual-stack VIP whose members are pods behind routed veths.
/// The node claims both addresses (a neighbour hears the unsolicited NAs); XDP on the uplink
/// steers IPv6 service traffic to the active pod through the kernel, and TC egress SNATs
/// what the pod sends to the IPv6 VIP, a GSO TCP stream with partial checksums included;
/// the VIP fails over to the backup's pod in both families.
#[test]
fn node_mode_ipv6_members_in_pods_through_xdp_and_tc_egress() {
    let mut lab = Lab::new("n6").expect("lab");
    lab.detach_peers().unwrap();
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let child = scenario::sip_server_in(&lab.primary, PRIMARY6, 5060, &lab.dir).unwrap();
    lab.children.push(("sipp-primary6".into(), child));
    let backup_silent = (
        sipvip_tests::lab::udp_in(&lab.backup, (BACKUP, 5060)),
        udp6_in(&lab.backup, BACKUP6, 5060),
    );
    let text = lab
        .node_config_dual_stack("200ms", "1000ms")
        .replace("timeout = \"1000ms\"", "timeout = \"1000ms\"\nipv6 = true");
    assert!(text.contains("ipv6 = true") && text.contains("mode = \"node\""));
    let cfg = lab.write_config(&text).unwrap();
    let watch = NaWatch::new(&lab.client, "cl0");
    lab.start_daemon(&cfg).unwrap();
    let up = lab.wait_for(Duration::from_secs(10), || {
        lab.status()
            .is_ok_and(|s| s["vips"][0]["active"] == "primary" && s["vips"][0]["owner"] == true)
    });
    assert!(up.is_some(), "{}", lab.daemon_log(0));
    let addrs = lab.gw.exec("ip addr show dev ext0").unwrap();
    assert!(
        addrs.contains(&format!("{VIP6}/128")) && addrs.contains(&format!("{VIP}/32")),
        "the node claims both addresses: {addrs}"
    );
    assert!(
        watch.count(VIP6, Duration::from_millis(800)) >= 1,
        "unsolicited NAs for the claimed VIP"
    );

    let phone = udp6_in(&lab.client, PHONE6, 5095);
    for (round, on) in [(0u16, false), (1, true)] {
        lab.offloads(on);
        let what = if on { "offloads on" } else { "offloads off" };
        let from = (0..5).find_map(|i| ping_vip6(&phone, &format!("n{round}-{i}")));
        assert_eq!(
            from,
            Some(SocketAddr::from((VIP6, 5060))),
            "{what}: OPTIONS through the IPv6 VIP\n{}",
            lab.daemon_log(0)
        );
        let (peer, intact) =
            lab.stream_from_primary(PRIMARY6.into(), PHONE6.into(), 7100 + round, 2 << 20);
        assert_eq!(peer.ip(), IpAddr::V6(VIP6), "{what}: the stream's source");
        assert!(intact, "{what}: the stream arrived intact");
    }
    let st = lab.status().unwrap();
    assert!(st["datapath"]["snat"].as_u64().unwrap_or(0) > 0, "{st}");

    // The primary's pod dies; the backup's takes over, over both families.
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    lab.stop("sipp-primary6", libc::SIGKILL).unwrap();
    drop(backup_silent);
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let child = scenario::sip_server_in(&lab.backup, BACKUP6, 5060, &lab.dir).unwrap();
    lab.children.push(("sipp-backup6".into(), child));
    lab.wait_active("backup", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("backup never active:\n{}", lab.daemon_log(0)));
    let from = (0..10).find_map(|i| ping_vip6(&phone, &format!("nb-{i}")));
    assert_eq!(
        from,
        Some(SocketAddr::from((VIP6, 5060))),
        "{}",
        lab.daemon_log(0)
    );
}

/// On-node mode, an IPv6-only VIP served by the seed's SIP Server pair as two processes on
/// the node's own IPv6 address (5060 and 5070), which the local members take from the
/// uplink: the VIP's 5060 reaches whichever is active, replies leave from [VIP]:5060 through
/// TC egress, the node's own IPv6 traffic is never translated, and the pair fails over.
#[test]
fn node_mode_ipv6_only_vip_with_a_sip_server_pair_on_the_node() {
    let mut lab = Lab::new("h6").expect("lab");
    lab.detach_peers().unwrap();
    let text: String = lab
        .node_config_dual_stack("200ms", "1000ms")
        .lines()
        .filter(|l| !l.starts_with("address = ") && !l.starts_with("address6 = \"2001:db8:2") && !l.starts_with("address6 = \"2001:db8:4"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("name = \"primary\"", "name = \"primary\"\nlocal = true")
        .replace(
            "name = \"backup\"",
            "name = \"backup\"\nlocal = true\nports = { \"udp/5060\" = 5070, \"tcp/5060\" = 5070, \"tcp/5061\" = 5071 }",
        );
    let path = lab.write_config(&text).unwrap();
    let check = lab.sipvip(&["check", path.to_str().unwrap()]).unwrap();
    assert!(
        check.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = scenario::sip_server_in(&lab.gw, NODE6, 5060, &lab.dir).unwrap();
    lab.children.push(("sipp-primary6".into(), child));
    let backup_silent = udp6_in(&lab.gw, NODE6, 5070);
    lab.start_daemon(&path).unwrap();
    lab.wait_active("primary", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("primary never active:\n{}", lab.daemon_log(0)));
    let st = lab.status().unwrap();
    let members = &st["vips"][0]["members"];
    assert_eq!(
        members[0]["address6"],
        NODE6.to_string(),
        "the uplink's address"
    );
    assert!(members[0].get("address").is_none(), "no IPv4 address: {st}");
    let mut buf = [0u8; 2048];
    let (n, _) = backup_silent
        .recv_from(&mut buf)
        .expect("a probe reaches [node]:5070");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("OPTIONS sip:"));

    let phone = udp6_in(&lab.client, PHONE6, 5096);
    let from = (0..5).find_map(|i| ping_vip6(&phone, &format!("h-{i}")));
    assert_eq!(
        from,
        Some(SocketAddr::from((VIP6, 5060))),
        "the primary answers from the VIP\n{}",
        lab.daemon_log(0)
    );
    // The node's own IPv6 traffic from another port is not translated.
    let node_sock = udp6_in(&lab.gw, NODE6, 40000);
    node_sock.send_to(b"node", (PHONE6, 5096)).unwrap();
    let (n, from) = phone.recv_from(&mut buf).expect("the node's datagram");
    assert_eq!(
        (&buf[..n], from),
        (&b"node"[..], SocketAddr::from((NODE6, 40000)))
    );

    lab.stop("sipp-primary6", libc::SIGKILL).unwrap();
    drop(backup_silent);
    let child = scenario::sip_server_in(&lab.gw, NODE6, 5070, &lab.dir).unwrap();
    lab.children.push(("sipp-backup6".into(), child));
    lab.wait_active("backup", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("backup never active:\n{}", lab.daemon_log(0)));
    let from = (0..10).find_map(|i| ping_vip6(&phone, &format!("hb-{i}")));
    assert_eq!(
        from,
        Some(SocketAddr::from((VIP6, 5060))),
        "the backup on 5070 answers from [VIP]:5060\n{}",
        lab.daemon_log(0)
    );
}

/// IPv6 datagrams the node's kernel has forwarded (/proc/net/snmp6, Ip6OutForwDatagrams).
fn forwarded6(ns: &Netns) -> u64 {
    let snmp = ns.exec("cat /proc/net/snmp6").unwrap();
    snmp.lines()
        .find_map(|l| l.strip_prefix("Ip6OutForwDatagrams"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Ip6OutForwDatagrams")
}

/// On-node mode over IPv6 with `node_steering = "xdp-redirect"`: IPv6 requests to the VIP
/// are redirected by XDP into the pod's veth (the FIB's AF_INET6 answer), so the node's
/// kernel forwards only the replies.
#[test]
fn node_mode_ipv6_pods_steered_by_xdp_redirect() {
    // The pods' sides of the veths keep the lab's XDP programs: they accept redirected
    // frames.
    let mut lab = Lab::new("r6").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let child = scenario::sip_server_in(&lab.primary, PRIMARY6, 5060, &lab.dir).unwrap();
    lab.children.push(("sipp-primary6".into(), child));
    let _backup_silent = sipvip_tests::lab::udp_in(&lab.backup, (BACKUP, 5060));
    let text = lab.node_config_dual_stack("200ms", "1000ms").replace(
        "mode = \"node\"",
        "mode = \"node\"\nnode_steering = \"xdp-redirect\"",
    );
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    lab.wait_active("primary", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("primary never active:\n{}", lab.daemon_log(0)));
    let phone = udp6_in(&lab.client, PHONE6, 5097);
    let vip = Some(SocketAddr::from((VIP6, 5060)));
    // The devmap learns the members' veths within a tick or two.
    let warm = (0..20).find(|i| ping_vip6(&phone, &format!("w-{i}")) == vip);
    assert!(warm.is_some(), "{}", lab.daemon_log(0));
    let before = forwarded6(&lab.gw);
    let answered = (0..20)
        .filter(|i| ping_vip6(&phone, &format!("r-{i}")) == vip)
        .count();
    let forwards = forwarded6(&lab.gw) - before;
    assert_eq!(answered, 20, "{}", lab.daemon_log(0));
    assert!(
        forwards <= 24,
        "{forwards} IPv6 datagrams forwarded by the kernel for 20 requests and their replies"
    );
}

/// Path MTU discovery over IPv6 through the VIP, with a real router beyond the gateway: a
/// member's UDP datagram, SNATed to the IPv6 VIP, meets a 1400-byte link past the client's
/// router; the router's ICMPv6 packet too big, sent to the VIP, is translated to the member
/// (quoted source and port back to the member's), whose kernel learns the path MTU.
#[test]
fn ipv6_packet_too_big_from_beyond_reaches_the_member_translated() {
    let mut lab = Lab::new("pt").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let cfg = lab.write_config(&lab.config("200ms", "1s", "")).unwrap();
    lab.start_daemon(&cfg).unwrap();
    lab.wait_active("primary", Duration::from_secs(8))
        .unwrap_or_else(|| panic!("primary never active:\n{}", lab.daemon_log(0)));
    // A far host behind the client's namespace, which routes to it over a 1400-byte link.
    let far = Netns::new("far").unwrap();
    let far6: Ipv6Addr = "2001:db8:7::2".parse().unwrap();
    lab.client
        .exec(&format!(
            "sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             ip link add cf0 mtu 1400 type veth peer name f0 netns {} && \
             ip link set cf0 up && ip -6 addr add 2001:db8:7::1/64 dev cf0 nodad",
            far.name
        ))
        .unwrap();
    far.exec(
        "ip link set f0 mtu 1400 up && ip -6 addr add 2001:db8:7::2/64 dev f0 nodad && \
         ip -6 route add default via 2001:db8:7::1",
    )
    .unwrap();
    // The router knows the far host's link-layer address (no Neighbor Discovery to wait
    // for on the new link).
    let far_mac = far.exec("cat /sys/class/net/f0/address").unwrap();
    lab.client
        .exec(&format!(
            "ip -6 neigh replace {far6} lladdr {} dev cf0 nud permanent",
            far_mac.trim()
        ))
        .unwrap();
    lab.gw
        .exec(&format!(
            "ip -6 route add 2001:db8:7::/64 via {PHONE6} dev ext0"
        ))
        .unwrap();
    let before = lab.status().unwrap()["datapath"]["icmp_error_in"]
        .as_u64()
        .unwrap_or(0);
    // The member sends 1450 bytes of IPv6 (its own link's MTU is 1500): SNATed and
    // forwarded, then too big for the far link.
    let member = udp6_in(&lab.primary, PRIMARY6, 40000);
    let receiver = udp6_in(&far, far6, 9999);
    member.send_to(&[b'x'; 1402], (far6, 9999)).unwrap();
    let learned = lab.wait_for(Duration::from_secs(5), || {
        let r = lab
            .primary
            .exec(&format!("ip -6 route get {far6} from {PRIMARY6}"))
            .unwrap();
        r.contains("mtu 1400")
    });
    let after = lab.status().unwrap()["datapath"]["icmp_error_in"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        learned.is_some(),
        "the member's kernel learned no path MTU; ICMP errors translated in: {}",
        after - before
    );
    assert!(
        after > before,
        "the packet too big went through the datapath"
    );
    // The member's next datagram fits, and arrives from the VIP with its port.
    member.send_to(&[b'y'; 1300], (far6, 9999)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = receiver
        .recv_from(&mut buf)
        .expect("the datagram that fits");
    assert_eq!((n, from), (1300, SocketAddr::from((VIP6, 40000))));
}
