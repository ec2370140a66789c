//! Real traffic through the datapath attached in native XDP mode on veths:
//!
//! ```text
//!  client ns                   gateway ns                      primary ns
//!  cl0 198.18.1.10 (phone) --- ext0 198.18.1.1  [sipvip_ext]
//!      198.18.1.30 (T-Lib)     VIP 198.18.1.100/32
//!      198.18.1.50 (config,    int0 198.18.2.1  [sipvip_int] --- p0 198.18.2.11
//!                   excluded)  int1 198.18.4.1  [sipvip_int] --- b0 198.18.4.12  backup ns
//! ```
//!
//! Sockets are opened inside each namespace; every assertion is about what the receiving
//! socket saw (peer addresses, bytes).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    time::Duration,
};

use aya::programs::XdpMode;
use sipvip::datapath::{Datapath, MapSizes, MemberReach, MemberSpec, ServiceSpec, VipSpec};
use sipvip_common::{program_names, IPPROTO_TCP, IPPROTO_UDP};
use sipvip_tests::netns::{require_root, tcp_connect_from, Netns};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const TLIB: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 30);
const CONFIG: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 12);
const TIMEOUT: Duration = Duration::from_secs(3);

struct Lab {
    dp: Datapath,
    spec: VipSpec,
    // Declared last: dropped after the datapath, removing every namespace and veth.
    gw: Netns,
    client: Netns,
    primary: Netns,
    backup: Netns,
}

fn in_ns<T>(ns: &Netns, f: impl FnOnce() -> std::io::Result<T>) -> T {
    let _g = ns.enter().expect("enter namespace");
    f().unwrap_or_else(|e| panic!("in {}: {e}", ns.name))
}

fn udp(ns: &Netns, addr: (Ipv4Addr, u16)) -> UdpSocket {
    in_ns(ns, || {
        let s = UdpSocket::bind(SocketAddr::from(addr))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        Ok(s)
    })
}

fn recv(s: &UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 9000];
    let (n, from) = s
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: nothing received ({e})"));
    buf.truncate(n);
    (buf, from)
}

fn setup() -> Lab {
    require_root();
    let gw = Netns::new("gw").unwrap();
    let client = Netns::new("cl").unwrap();
    let primary = Netns::new("pri").unwrap();
    let backup = Netns::new("bak").unwrap();
    let offload_off = |ns: &Netns, dev: &str| {
        ns.exec(&format!(
            "ethtool -K {dev} tx off tso off gso off gro off >/dev/null 2>&1 || true"
        ))
        .unwrap();
    };
    gw.exec(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv4.conf.all.rp_filter=0 && \
         sysctl -qw net.ipv4.conf.default.rp_filter=0 && sysctl -qw net.ipv4.conf.all.accept_local=1 && \
         sysctl -qw net.ipv4.conf.default.accept_local=1 && \
         ip link add ext0 type veth peer name cl0 netns {c} && \
         ip link add int0 type veth peer name p0 netns {p} && \
         ip link add int1 type veth peer name b0 netns {b} && \
         ip addr add 198.18.1.1/24 dev ext0 && ip addr add {VIP}/32 dev ext0 && \
         ip addr add 198.18.2.1/24 dev int0 && ip addr add 198.18.4.1/24 dev int1 && \
         ip link set ext0 up && ip link set int0 up && ip link set int1 up",
        c = client.name,
        p = primary.name,
        b = backup.name
    ))
    .unwrap();
    client
        .exec(&format!(
            "ip addr add {PHONE}/24 dev cl0 && ip addr add {TLIB}/24 dev cl0 && ip addr add {CONFIG}/24 dev cl0 && \
             ip link set cl0 up && ip route add 198.18.2.0/24 via 198.18.1.1 && ip route add 198.18.4.0/24 via 198.18.1.1"
        ))
        .unwrap();
    primary
        .exec(&format!("ip addr add {PRIMARY}/24 dev p0 && ip link set p0 up && ip route add default via 198.18.2.1"))
        .unwrap();
    backup
        .exec(&format!("ip addr add {BACKUP}/24 dev b0 && ip link set b0 up && ip route add default via 198.18.4.1"))
        .unwrap();
    for (ns, dev) in [
        (&gw, "ext0"),
        (&gw, "int0"),
        (&gw, "int1"),
        (&client, "cl0"),
        (&primary, "p0"),
        (&backup, "b0"),
    ] {
        offload_off(ns, dev);
    }

    let svc = |proto, port| ServiceSpec {
        proto,
        port,
        member_port: port,
        enabled: true,
    };
    let spec = VipSpec {
        addr6: None,
        addr: Some(VIP),
        id: 0,
        services: vec![
            svc(IPPROTO_UDP, 5060),
            svc(IPPROTO_TCP, 5060),
            svc(IPPROTO_TCP, 5061),
        ],
        members: vec![
            MemberSpec {
                addr6: None,
                addr: Some(PRIMARY),
                passthrough_ports: vec![3000],
                ports: Vec::new(),
                local: false,
            },
            MemberSpec {
                addr6: None,
                addr: Some(BACKUP),
                passthrough_ports: vec![3000],
                ports: Vec::new(),
                local: false,
            },
        ],
        active: Some(0),
        snat: true,
        reach: MemberReach::Gateway,
    };
    let mut dp = {
        let _g = gw.enter().unwrap();
        let mut dp = Datapath::load(&MapSizes::default()).expect("load datapath");
        dp.attach(program_names::EXTERNAL, "ext0", XdpMode::Driver)
            .expect("native XDP on ext0");
        dp.attach(program_names::INTERNAL, "int0", XdpMode::Driver)
            .expect("native XDP on int0");
        dp.attach(program_names::INTERNAL, "int1", XdpMode::Driver)
            .expect("native XDP on int1");
        for dev in ["ext0", "int0", "int1"] {
            dp.add_egress(gw.ifindex(dev).unwrap()).unwrap();
        }
        dp.install_vip(&spec).unwrap();
        dp.add_exclusion(CONFIG.into(), 32).unwrap();
        dp
    };
    // A veth only accepts redirected frames when its peer runs an XDP program.
    for (ns, dev) in [(&client, "cl0"), (&primary, "p0"), (&backup, "b0")] {
        let _g = ns.enter().unwrap();
        dp.attach(program_names::PASS, dev, XdpMode::Driver)
            .expect("XDP pass on peer");
    }
    // Let the gateway learn every neighbour (no ping here: a UDP datagram does it).
    for (ns, src, gwip) in [
        (&client, PHONE, "198.18.1.1"),
        (&client, TLIB, "198.18.1.1"),
        (&client, CONFIG, "198.18.1.1"),
        (&primary, PRIMARY, "198.18.2.1"),
        (&backup, BACKUP, "198.18.4.1"),
    ] {
        let s = udp(ns, (src, 0));
        s.send_to(b"hello", (gwip.parse::<Ipv4Addr>().unwrap(), 9))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    Lab {
        dp,
        spec,
        gw,
        client,
        primary,
        backup,
    }
}

#[test]
fn real_traffic_through_native_xdp() {
    let mut lab = setup();

    // --- UDP to VIP:5060 reaches the primary; the reply comes back from the VIP.
    let phone = udp(&lab.client, (PHONE, 5062));
    let pri_sip = udp(&lab.primary, (Ipv4Addr::UNSPECIFIED, 5060));
    phone
        .send_to(b"REGISTER sip:vip SIP/2.0\r\n\r\n", (VIP, 5060))
        .unwrap();
    let (msg, from) = recv(&pri_sip, "primary, UDP via VIP");
    assert_eq!(msg, b"REGISTER sip:vip SIP/2.0\r\n\r\n");
    assert_eq!(
        from,
        SocketAddr::from((PHONE, 5062)),
        "the primary sees the phone's own address"
    );
    pri_sip.send_to(b"SIP/2.0 200 OK\r\n\r\n", from).unwrap();
    let (msg, from) = recv(&phone, "phone, UDP reply");
    assert_eq!(msg, b"SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(
        from,
        SocketAddr::from((VIP, 5060)),
        "the reply comes from the VIP"
    );

    // --- A 4 KB INVITE (fragmented on the wire) arrives whole.
    let invite: Vec<u8> = (0..4096u32)
        .map(|i| b"INVITE sip:agent SIP/2.0 "[(i % 25) as usize])
        .collect();
    phone.send_to(&invite, (VIP, 5060)).unwrap();
    let (msg, _) = recv(&pri_sip, "primary, 4 KB INVITE");
    assert_eq!(msg.len(), 4096);
    assert_eq!(msg, invite, "reassembled datagram differs");
    // And the member's large reply, fragmented, arrives whole from the VIP.
    pri_sip.send_to(&invite, (PHONE, 5062)).unwrap();
    let (msg, from) = recv(&phone, "phone, 4 KB from the member");
    assert_eq!((msg.len(), from), (4096, SocketAddr::from((VIP, 5060))));

    // --- TCP to VIP:5060: the client's peer is the VIP, the primary's peer is the client.
    let listener = in_ns(&lab.primary, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, 5060))
    });
    let mut c = in_ns(&lab.client, || {
        tcp_connect_from(PHONE, SocketAddrV4::new(VIP, 5060), TIMEOUT)
    });
    let (mut srv, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), PHONE);
    assert_eq!(c.peer_addr().unwrap(), SocketAddr::from((VIP, 5060)));
    c.write_all(b"OPTIONS sip:vip SIP/2.0\r\n\r\n").unwrap();
    srv.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    let n = srv.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"OPTIONS sip:vip SIP/2.0\r\n\r\n");
    // CRLF keep-alive, both ways.
    srv.write_all(b"\r\n\r\n").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\r\n\r\n");
    drop((c, srv, listener));

    // --- T-Lib: a client connects to the primary's physical address; both ends see physical
    // addresses, on a pass-through port and on a port known only to conntrack.
    for port in [3000u16, 8000] {
        let listener = in_ns(&lab.primary, || TcpListener::bind((PRIMARY, port)));
        let mut c = in_ns(&lab.client, || {
            tcp_connect_from(TLIB, SocketAddrV4::new(PRIMARY, port), TIMEOUT)
        });
        let (mut srv, peer) = listener.accept().unwrap();
        assert_eq!(
            peer.ip(),
            TLIB,
            "port {port}: the member sees the T-Lib client"
        );
        assert_eq!(c.peer_addr().unwrap(), SocketAddr::from((PRIMARY, port)));
        srv.write_all(b"EventRegistered").unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let n = c.read(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"EventRegistered",
            "port {port}: data from the physical address"
        );
    }

    // --- Excluded host keeps the physical source; others see the VIP, and replies to a
    // member-opened flow on an ephemeral port come back through conntrack.
    let config = udp(&lab.client, (CONFIG, 2020));
    let pri_eph = udp(&lab.primary, (PRIMARY, 40000));
    pri_eph.send_to(b"confserv", (CONFIG, 2020)).unwrap();
    let (_, from) = recv(&config, "config server");
    assert_eq!(
        from,
        SocketAddr::from((PRIMARY, 40000)),
        "excluded: physical source"
    );
    let sbc = udp(&lab.client, (PHONE, 5070));
    pri_eph.send_to(b"INVITE", (PHONE, 5070)).unwrap();
    let (_, from) = recv(&sbc, "SBC");
    assert_eq!(
        from,
        SocketAddr::from((VIP, 40000)),
        "SNAT to the VIP, port preserved"
    );
    sbc.send_to(b"100 Trying", from).unwrap();
    let (msg, from) = recv(&pri_eph, "primary, reply through conntrack");
    assert_eq!(
        (msg.as_slice(), from),
        (&b"100 Trying"[..], SocketAddr::from((PHONE, 5070)))
    );

    // --- Flip the active member: new packets go to the backup.
    let bak_sip = udp(&lab.backup, (Ipv4Addr::UNSPECIFIED, 5060));
    let spec = lab.spec.clone();
    lab.dp.set_active(&spec, Some(BACKUP)).unwrap();
    phone.send_to(b"REGISTER again", (VIP, 5060)).unwrap();
    let (msg, from) = recv(&bak_sip, "backup after the flip");
    assert_eq!(
        (msg.as_slice(), from),
        (&b"REGISTER again"[..], SocketAddr::from((PHONE, 5062)))
    );
    bak_sip.send_to(b"200 from backup", from).unwrap();
    let (_, from) = recv(&phone, "phone, reply from the backup");
    assert_eq!(from, SocketAddr::from((VIP, 5060)));

    // --- Unsolicited traffic to another VIP port is dropped and counted.
    phone.send_to(b"x", (VIP, 6000)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let reasons = lab.dp.reasons().unwrap();
    eprintln!("datapath counters: {reasons:?}");
    assert!(
        reasons.get("drop_vip_closed").copied().unwrap_or(0) >= 1,
        "{reasons:?}"
    );
    assert!(
        reasons.get("steered").copied().unwrap_or(0) >= 4,
        "{reasons:?}"
    );
    assert!(
        reasons.get("snat").copied().unwrap_or(0) >= 3,
        "{reasons:?}"
    );
    let _ = (&lab.gw, &lab.backup);
}

/// Sets IP_MTU_DISCOVER to "do" (DF set, never fragment locally).
fn pmtu_do(fd: std::os::fd::RawFd) {
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_MTU_DISCOVER");
}

/// The path MTU a connected socket knows (IP_MTU).
fn path_mtu(fd: std::os::fd::RawFd) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a properly sized int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "IP_MTU");
    v
}

/// Waits (bounded) until the socket's path MTU is `want`, sending `probe` meanwhile.
fn learns_mtu(fd: std::os::fd::RawFd, want: i32, mut probe: impl FnMut()) -> i32 {
    let t = std::time::Instant::now();
    let mut mtu = path_mtu(fd);
    while mtu != want && t.elapsed() < TIMEOUT {
        probe();
        std::thread::sleep(Duration::from_millis(50));
        mtu = path_mtu(fd);
    }
    mtu
}

/// Path MTU discovery through the VIP: with 1400-byte routes on the gateway toward the
/// primary and toward the phone (and net.ipv4.ip_forward_use_pmtu=1, as the daemon sets it), real sockets with DF on each end learn 1400 from the
/// "fragmentation needed" the datapath sends as the gateway, quoting what each end sent.
#[test]
fn path_mtu_is_learned_through_the_vip() {
    use std::os::fd::AsRawFd;
    let lab = setup();
    // Plain route MTUs, with the sysctl the daemon sets so that bpf_fib_lookup honours them.
    lab.gw
        .exec(&format!(
            "sysctl -qw net.ipv4.ip_forward_use_pmtu=1 && \
             ip route add {PRIMARY}/32 dev int0 mtu 1400 && ip route add {PHONE}/32 dev ext0 mtu 1400"
        ))
        .unwrap();
    let big = vec![b'x'; 1450 - 28];

    // UDP, inbound: the phone sends a DF 1450-byte datagram to VIP:5060.
    let phone = udp(&lab.client, (PHONE, 5062));
    phone.connect((VIP, 5060)).unwrap();
    pmtu_do(phone.as_raw_fd());
    let pri = udp(&lab.primary, (PRIMARY, 5060));
    let got = learns_mtu(phone.as_raw_fd(), 1400, || {
        let _ = phone.send(&big);
    });
    assert_eq!(got, 1400, "the phone learns the path MTU toward VIP:5060");
    // What fits now passes (the first send may report the error the ICMP left pending).
    if phone.send(&big[..1400 - 28]).is_err() {
        phone.send(&big[..1400 - 28]).unwrap();
    }
    let (msg, _) = recv(&pri, "primary, a datagram that fits");
    assert_eq!(msg.len(), 1400 - 28);

    // UDP, outbound: the primary answers from its service port with DF 1450 bytes.
    pri.connect((PHONE, 5062)).unwrap();
    pmtu_do(pri.as_raw_fd());
    let got = learns_mtu(pri.as_raw_fd(), 1400, || {
        let _ = pri.send(&big);
    });
    assert_eq!(
        got, 1400,
        "the primary learns the path MTU toward the phone"
    );
    if pri.send(&big[..1400 - 28]).is_err() {
        pri.send(&big[..1400 - 28]).unwrap();
    }
    let (msg, from) = recv(&phone, "phone, a reply that fits");
    assert_eq!(
        (msg.len(), from),
        (1400 - 28, SocketAddr::from((VIP, 5060)))
    );

    // TCP on the SIP and the TLS virtual: 6 KB each way arrives whole, and both ends
    // learn the path MTU (TCP sets DF).
    let frag_needed = || {
        lab.dp
            .reasons()
            .unwrap()
            .get("frag_needed")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(frag_needed(), 2, "one each way for UDP");
    for port in [5060u16, 5061] {
        // Each end forgets what it learned, so that TCP learns it again.
        lab.client.exec("ip route flush cache").unwrap();
        lab.primary.exec("ip route flush cache").unwrap();
        let before = frag_needed();
        let listener = in_ns(&lab.primary, || TcpListener::bind((PRIMARY, port)));
        let c = in_ns(&lab.client, || {
            tcp_connect_from(PHONE, SocketAddrV4::new(VIP, port), TIMEOUT)
        });
        let (srv, _) = listener.accept().unwrap();
        srv.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
        let pairs = [
            (
                c.try_clone().unwrap(),
                srv.try_clone().unwrap(),
                "to the member",
            ),
            (
                srv.try_clone().unwrap(),
                c.try_clone().unwrap(),
                "to the phone",
            ),
        ];
        for (mut from, mut to, what) in pairs {
            from.write_all(&data).unwrap();
            let mut got = vec![0u8; data.len()];
            to.read_exact(&mut got)
                .unwrap_or_else(|e| panic!("tcp/{port} {what}: {e}"));
            assert_eq!(got, data, "tcp/{port} {what}");
        }
        assert_eq!(
            path_mtu(c.as_raw_fd()),
            1400,
            "tcp/{port}: the phone's path MTU"
        );
        assert_eq!(
            path_mtu(srv.as_raw_fd()),
            1400,
            "tcp/{port}: the member's path MTU"
        );
        assert!(
            frag_needed() >= before + 2,
            "tcp/{port}: answered each way ({before} -> {})",
            frag_needed()
        );
    }
}
