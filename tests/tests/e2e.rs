//! End-to-end tests on the lab topology, with the daemon and real SIP software: the device
//! groups' rules, calls across a failover, SIP over TCP and TLS through the VIP, TLS-only
//! mode, a fragmented 4 KB INVITE, CRLF keep-alives and unsolicited traffic. Every assertion
//! is about what the receiving end saw.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    process::Stdio,
    time::{Duration, Instant},
};

use sipvip_tests::{
    lab::{command_in, Lab, BACKUP, PHONE, PRIMARY, TLIB, VIP},
    netns::{tcp_connect_from, Netns},
    scenario::{self, epoch, window, Calls},
};

const T: Duration = Duration::from_secs(3);

fn udp_in(ns: &Netns, addr: (Ipv4Addr, u16)) -> UdpSocket {
    let _g = ns.enter().unwrap();
    let s = UdpSocket::bind(SocketAddr::from(addr)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s
}

fn active(lab: &Lab) -> Option<String> {
    lab.active().ok().flatten()
}

fn wait_active(lab: &Lab, who: &str) -> Duration {
    lab.wait_active(who, Duration::from_secs(8))
        .unwrap_or_else(|| panic!("{who} never became active:\n{}", lab.daemon_log(0)))
}

#[test]
fn device_groups_before_and_after_a_failover_and_a_daemon_restart() {
    let mut lab = Lab::new("dg").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let cfg = lab.write_config(&lab.config("200ms", "1s", "")).unwrap();
    lab.start_daemon(&cfg).unwrap();
    wait_active(&lab, "primary");
    for g in scenario::device_groups(&lab, PRIMARY).unwrap() {
        assert_eq!(g.saw, g.expected, "primary active: {g}");
    }

    // A T-Lib client holds a connection to the primary's physical address throughout.
    let tserver = {
        let _g = lab.primary.enter().unwrap();
        TcpListener::bind((PRIMARY, 7000)).unwrap()
    };
    let mut tlib = {
        let _g = lab.client.enter().unwrap();
        tcp_connect_from(TLIB, SocketAddrV4::new(PRIMARY, 7000), T).unwrap()
    };
    tlib.set_read_timeout(Some(T)).unwrap();
    let (mut ts, peer) = tserver.accept().unwrap();
    ts.set_read_timeout(Some(T)).unwrap();
    assert_eq!(peer.ip(), TLIB);
    let exchange = |tlib: &mut std::net::TcpStream, ts: &mut std::net::TcpStream, what: &str| {
        tlib.write_all(what.as_bytes()).unwrap();
        let mut b = [0u8; 64];
        let n = ts.read(&mut b).unwrap();
        assert_eq!(&b[..n], what.as_bytes(), "T-Server received");
        ts.write_all(b"EventACK").unwrap();
        let n = tlib.read(&mut b).unwrap();
        assert_eq!(&b[..n], b"EventACK", "T-Lib client received ({what})");
        assert_eq!(tlib.peer_addr().unwrap(), SocketAddr::from((PRIMARY, 7000)));
    };
    exchange(&mut tlib, &mut ts, "RequestRegisterAddress");

    // Failover: the primary's SIP process dies; the backup takes the VIP.
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    wait_active(&lab, "backup");
    for g in scenario::device_groups(&lab, BACKUP).unwrap() {
        assert_eq!(g.saw, g.expected, "backup active: {g}");
    }
    exchange(&mut tlib, &mut ts, "RequestMakeCall");

    // A daemon restart changes nothing for anyone.
    lab.stop("daemon-0", libc::SIGTERM).unwrap();
    exchange(&mut tlib, &mut ts, "RequestAnswerCall");
    lab.start_daemon(&cfg).unwrap();
    assert_eq!(active(&lab).as_deref(), Some("backup"));
    exchange(&mut tlib, &mut ts, "RequestReleaseCall");
    for g in scenario::device_groups(&lab, BACKUP).unwrap() {
        assert_eq!(g.saw, g.expected, "after a restart: {g}");
    }
}

#[test]
fn calls_in_flight_across_a_failover() {
    let mut lab = Lab::new("cf").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    let silent = udp_in(&lab.backup, (BACKUP, 5060));
    let cfg = lab.write_config(&lab.config("200ms", "1s", "")).unwrap();
    lab.start_daemon(&cfg).unwrap();
    wait_active(&lab, "primary");
    assert_eq!(
        scenario::register_agents(&lab, 10).unwrap(),
        10,
        "registrations through the VIP"
    );

    let (rate, hold) = (20u32, Duration::from_millis(1000));
    let calls = Calls::start(&lab, rate, hold, rate * 8).unwrap();
    let start = epoch();
    std::thread::sleep(Duration::from_secs(3));
    let kill = epoch();
    drop(silent);
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let took = wait_active(&lab, "backup");
    let flip = epoch();
    let rows = calls.finish(Duration::from_secs(20)).unwrap();
    let end = epoch() + 1.0;
    let before = window(&rows, start - 1.0, kill);
    let during = window(&rows, kill, flip + 2.0);
    let after = window(&rows, flip + 2.0, end);
    let total = rows.last().copied().unwrap_or_default();
    eprintln!(
        "failover {:.0} ms; calls attempted/ok/failed before {before:?}, during {during:?}, after {after:?}; lost {} of {}",
        took.as_secs_f64() * 1000.0,
        total.failed,
        total.attempted
    );
    assert_eq!(total.attempted, u64::from(rate * 8));
    assert_eq!(before.2, 0, "no call fails before the switchover");
    assert!(
        before.1 > 0 && after.1 > 0,
        "calls complete before and after"
    );
    // At most the calls in flight at the kill (rate x hold), plus those started during it.
    assert!(
        total.failed <= u64::from(rate) * 2,
        "lost {} calls",
        total.failed
    );
    assert_eq!(total.ok + total.failed, total.attempted, "every call ended");
}

/// A self-signed certificate for the SIP server's TLS listener.
fn cert(lab: &Lab) -> (String, String) {
    let (c, k) = (lab.dir.join("sip.crt"), lab.dir.join("sip.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=sipvip-lab", "-keyout"])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl (Debian package openssl) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (c.display().to_string(), k.display().to_string())
}

#[test]
fn sip_over_tcp_and_tls_tls_only_mode_fragments_keepalives_and_unsolicited_ports() {
    let mut lab = Lab::new("tl").expect("lab");
    // The primary's SIP server, played by sockets here: UDP and TCP 5060, TLS 5061 (openssl).
    // The monitor is TCP on 5060, leaving UDP 5060 to the test.
    let udp5060 = udp_in(&lab.primary, (PRIMARY, 5060));
    let tcp5060 = {
        let _g = lab.primary.enter().unwrap();
        TcpListener::bind((PRIMARY, 5060)).unwrap()
    };
    tcp5060.set_nonblocking(false).unwrap();
    let extra = "\n[[monitor]]\nname = \"sipTcp\"\ntype = \"tcp\"\nport = 5060\ninterval = \"200ms\"\ntimeout = \"1s\"\n";
    let text = lab
        .config("200ms", "1s", extra)
        .replace("monitors = [\"monSipUdp\"]", "monitors = [\"sipTcp\"]");
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    // The TCP monitor connects every 200 ms: keep accepting (and closing) those in the
    // background, and hand over the phones' connections.
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    {
        let l = tcp5060.try_clone().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if s.peer_addr().map(|p| p.ip()).ok() != Some(Ipv4Addr::new(198, 18, 2, 1).into())
                    && conn_tx.send(s).is_err()
                {
                    return;
                }
            }
        });
    }
    wait_active(&lab, "primary");

    // SIP over TCP through the VIP, with CRLF keep-alives both ways.
    let mut c = {
        let _g = lab.client.enter().unwrap();
        tcp_connect_from(PHONE, SocketAddrV4::new(VIP, 5060), T).unwrap()
    };
    c.set_read_timeout(Some(T)).unwrap();
    let mut srv = conn_rx
        .recv_timeout(T)
        .expect("the SIP server accepted the client");
    srv.set_read_timeout(Some(T)).unwrap();
    assert_eq!(
        srv.peer_addr().unwrap().ip(),
        PHONE,
        "the server sees the phone"
    );
    assert_eq!(
        c.peer_addr().unwrap(),
        SocketAddr::from((VIP, 5060)),
        "the phone sees the VIP"
    );
    let register = b"REGISTER sip:vip SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    c.write_all(register).unwrap();
    let mut b = [0u8; 256];
    let n = srv.read(&mut b).unwrap();
    assert_eq!(&b[..n], register);
    c.write_all(b"\r\n\r\n").unwrap();
    let n = srv.read(&mut b).unwrap();
    assert_eq!(&b[..n], b"\r\n\r\n", "CRLF keep-alive reaches the server");
    srv.write_all(b"\r\n").unwrap();
    let n = c.read(&mut b).unwrap();
    assert_eq!(&b[..n], b"\r\n", "the pong reaches the phone");

    // A 4 KB INVITE over UDP, fragmented on the wire, arrives whole.
    let phone = udp_in(&lab.client, (PHONE, 5062));
    let invite: Vec<u8> = (0..4096u32)
        .map(|i| b"INVITE sip:agent SIP/2.0 v=0 "[(i % 29) as usize])
        .collect();
    phone.send_to(&invite, (VIP, 5060)).unwrap();
    let mut big = vec![0u8; 9000];
    let (n, from) = udp5060.recv_from(&mut big).expect("the 4 KB INVITE");
    assert_eq!(
        (&big[..n], from),
        (&invite[..], SocketAddr::from((PHONE, 5062)))
    );
    udp5060
        .send_to(b"SIP/2.0 100 Trying\r\n\r\n", from)
        .unwrap();
    let (_, from) = phone.recv_from(&mut big).unwrap();
    assert_eq!(from, SocketAddr::from((VIP, 5060)));

    // SIP over TLS on 5061: a real TLS server and client, passed through untouched.
    let (crt, key) = cert(&lab);
    let mut server = command_in(&lab.primary, std::path::Path::new("/usr/bin/openssl"))
        .unwrap()
        .args([
            "s_server",
            "-accept",
            &format!("{PRIMARY}:5061"),
            "-cert",
            &crt,
            "-key",
            &key,
            "-naccept",
            "2",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let tls_call = |lab: &Lab| {
        let mut client = command_in(&lab.client, std::path::Path::new("/usr/bin/openssl"))
            .unwrap()
            .args(["s_client", "-connect", &format!("{VIP}:5061"), "-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        client
            .stdin
            .take()
            .unwrap()
            .write_all(b"OPTIONS sips:vip SIP/2.0\r\n\r\n")
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && client.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = client.kill();
        let out = client.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let hs = tls_call(&lab);
    assert!(
        hs.contains("CN = sipvip-lab") || hs.contains("CN=sipvip-lab"),
        "TLS handshake through the VIP: {hs}"
    );

    // TLS-only mode: UDP and TCP 5060 disabled; their traffic is dropped, TLS still works.
    let tls_only = text
        .replace("[snat]", "[[vip.service]]\nprotocol = \"udp\"\nport = 5060\nenabled = false\n\n[[vip.service]]\nprotocol = \"tcp\"\nport = 5060\nenabled = false\n\n[[vip.service]]\nprotocol = \"tcp\"\nport = 5061\n\n[snat]");
    std::fs::write(&cfg, tls_only).unwrap();
    let out = lab.sipvip(&["reload"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = lab.status().unwrap()["datapath"]["drop_vip_closed"]
        .as_u64()
        .unwrap_or(0);
    phone
        .send_to(b"OPTIONS sip:vip SIP/2.0\r\n\r\n", (VIP, 5060))
        .unwrap();
    udp5060
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        udp5060.recv_from(&mut big).is_err(),
        "UDP 5060 must be dropped in TLS-only mode"
    );
    let blocked = {
        let _g = lab.client.enter().unwrap();
        tcp_connect_from(PHONE, SocketAddrV4::new(VIP, 5060), Duration::from_secs(1))
    };
    assert!(
        blocked.is_err(),
        "TCP 5060 must be dropped in TLS-only mode"
    );
    let hs = tls_call(&lab);
    assert!(
        hs.contains("sipvip-lab"),
        "TLS still works in TLS-only mode: {hs}"
    );
    let _ = server.kill();
    let _ = server.wait();

    // Unsolicited traffic to other VIP ports is dropped and counted.
    phone.send_to(b"probe", (VIP, 6000)).unwrap();
    phone.send_to(b"probe", (VIP, 22)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after = lab.status().unwrap()["datapath"]["drop_vip_closed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after >= before + 3,
        "drop_vip_closed went from {before} to {after}"
    );
}
