//! `sipvip trace` on the lab (`sipvip_tests::lab`): the events of one registration and one
//! call, a packet to the excluded configuration server, a T-Lib connection and an unsolicited
//! packet, asserted one by one; the pcapng capture read back by tcpdump and tshark; each
//! filter; the kernel's rate limit under a flood; one trace at a time, and a trace killed
//! with SIGKILL leaves no filter behind.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sipvip::trace::Record;
use sipvip_tests::{
    lab::{sipvip_bin, Lab, CONFIG, PHONE, PRIMARY, SBC, TLIB, VIP},
    netns::{tcp_connect_from, Netns},
    scenario::{self, Calls},
};

/// `sipvip trace ARGS --json` against the lab's daemon, in the background.
fn trace(lab: &Lab, args: &[&str]) -> Child {
    Command::new(sipvip_bin())
        .arg("trace")
        .args(args)
        .args(["--json", "--socket"])
        .arg(lab.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipvip trace")
}

/// Waits until the daemon has the trace's filter installed (or not).
fn wait_tracing(lab: &Lab, on: bool) {
    let ok = lab.wait_for(Duration::from_secs(5), || {
        lab.status().is_ok_and(|s| s["tracing"] == on)
    });
    assert!(ok.is_some(), "tracing never became {on}");
}

/// The trace's records and its summary line, once it ended.
fn records(child: Child) -> (Vec<Record>, String) {
    let out = child.wait_with_output().expect("trace output");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "trace failed: {stderr}");
    let recs = BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Record>(&l).ok())
        .collect();
    (recs, stderr)
}

fn udp_from(ns: &Netns, from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), what: &[u8]) {
    let _g = ns.enter().unwrap();
    let s = std::net::UdpSocket::bind(from).unwrap();
    s.send_to(what, to).unwrap();
}

/// The bench's XDP generator on the client's side of the lab for `how_long`: the client's
/// pass program on cl0 gives way to the bench's sink (which also accepts what the gateway
/// sends back). Returns the frames the sink received.
fn flood(lab: &Lab, how_long: Duration) -> u64 {
    use sipvip_common::bench::GenCfg;
    use std::sync::{atomic::AtomicBool, Arc};
    let pin = sipvip::datapath::link_pin(
        &lab.bpffs.join("peers"),
        sipvip_common::program_names::PASS,
        "cl0",
    );
    if let Ok(l) = aya::programs::links::PinnedLink::from_pin(&pin) {
        let _ = l.unpin();
    }
    let _ = std::fs::remove_file(&pin);
    let mut host = sipvip_tests::bench::Host::new(&lab.client, "cl0").expect("the generator");
    host.set_gen(GenCfg {
        dmac: sipvip_tests::bench::mac_of(&lab.gw, "ext0").unwrap(),
        smac: sipvip_tests::bench::mac_of(&lab.client, "cl0").unwrap(),
        src_be: sipvip_tests::bench::be32(Ipv4Addr::new(198, 18, 100, 0)),
        dst_be: sipvip_tests::bench::be32(VIP),
        n_src: 4096,
        n_dst: 1,
        n_ports: 1,
        sport_base: 10000,
        dport_be: 5060u16.to_be(),
        ip_len: 46,
        frag_be: 0,
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let gen = sipvip_tests::bench::generate(&lab.client, &host, 60, stop.clone()).unwrap();
    std::thread::sleep(how_long);
    sipvip_tests::bench::stop(gen, &stop);
    host.received().unwrap_or(0)
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// A mix: service traffic, a member-opened flow, an excluded destination, a T-Lib
/// connection's first packet, an unsolicited packet to a closed VIP port, a ping.
fn mix(lab: &Lab) {
    udp_from(
        &lab.client,
        (PHONE, 5090),
        (VIP, 5060),
        b"OPTIONS sip:vip SIP/2.0\r\n\r\n",
    );
    udp_from(&lab.primary, (PRIMARY, 40100), (SBC, 5080), b"hello");
    udp_from(&lab.primary, (PRIMARY, 40101), (CONFIG, 2020), b"config");
    udp_from(&lab.client, (PHONE, 5091), (VIP, 5999), b"unsolicited");
    let _ = {
        let _g = lab.client.enter().unwrap();
        tcp_connect_from(
            TLIB,
            SocketAddrV4::new(PRIMARY, 3000),
            Duration::from_millis(300),
        )
    };
    lab.client
        .exec(&format!("ping -c 1 -W 1 {VIP} >/dev/null"))
        .unwrap();
}

/// The lab with both SIP servers and the daemon, the primary active.
fn serving_lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let cfg = lab.write_config(&lab.config("500ms", "2s", "")).unwrap();
    lab.start_daemon(&cfg).unwrap();
    assert!(lab
        .wait_active("primary", Duration::from_secs(10))
        .is_some());
    lab
}

#[test]
fn trace_shows_each_packet_before_and_after() {
    let lab = serving_lab("tr");

    // The gateway knows its neighbours (else the datapath leaves those packets to the
    // kernel, counted pass_no_neigh, which the trace would show instead).
    lab.gw
        .exec(&format!(
            "ping -c 1 -W 1 {CONFIG} >/dev/null; ping -c 1 -W 1 {TLIB} >/dev/null"
        ))
        .unwrap();
    // The T-Server on the primary's own address (its port a pass-through port).
    let tserver = {
        let _g = lab.primary.enter().unwrap();
        TcpListener::bind((PRIMARY, 3000)).unwrap()
    };
    let pcap = lab.dir.join("trace.pcapng");
    let t = trace(
        &lab,
        &[
            "--duration",
            "6s",
            "--snap",
            "512",
            "--pcap",
            pcap.to_str().unwrap(),
        ],
    );
    wait_tracing(&lab, true);
    assert_eq!(
        scenario::register_agents_in(&lab.client, &lab.dir, VIP.into(), PHONE.into(), 1).unwrap(),
        1
    );
    let calls = Calls::start(&lab, 1, Duration::from_millis(200), 1).unwrap();
    let rows = calls.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(rows.last().map(|r| (r.ok, r.failed)), Some((1, 0)));
    udp_from(
        &lab.primary,
        (PRIMARY, 40001),
        (CONFIG, 2020),
        b"GET /config",
    );
    let tlib = {
        let _g = lab.client.enter().unwrap();
        tcp_connect_from(
            TLIB,
            SocketAddrV4::new(PRIMARY, 3000),
            Duration::from_secs(2),
        )
        .expect("T-Lib connects")
    };
    let _accepted = tserver.accept().unwrap();
    udp_from(&lab.client, (PHONE, 5091), (VIP, 5999), b"unsolicited");
    let (recs, summary) = records(t);
    eprintln!("{summary}");
    for r in recs.iter().take(40) {
        eprintln!("{}", r.line);
    }
    drop(tlib);

    let sip = |r: &Record| sipvip::trace::sip(&r.frame_bytes());
    // The REGISTER, steered to the primary.
    let register = recs
        .iter()
        .find(|r| sip(r).is_some_and(|(s, _)| s.starts_with("REGISTER ")))
        .expect("the REGISTER's event");
    assert_eq!(register.reason, "steered");
    assert_eq!(
        (register.side.as_str(), register.direction.as_str()),
        ("ext", "in")
    );
    assert_eq!(register.verdict, "redirect");
    assert_eq!(register.vip.as_deref(), Some("vsVipHa01"));
    assert_eq!(register.member.as_deref(), Some("primary"));
    let (b, a) = (register.before.unwrap(), register.after.unwrap());
    assert_eq!((b.src, b.dst), (v4(PHONE), v4(VIP)));
    assert_eq!((a.dst, a.dport), (v4(PRIMARY), 5060));
    assert!(register.line.contains("steered"), "{}", register.line);
    // Its 200 OK, SNATed to the VIP with the same source port.
    let ok = recs
        .iter()
        .find(|r| {
            r.reason == "snat"
                && sip(r).is_some_and(|(s, c)| {
                    s.starts_with("SIP/2.0 200") && c == sip(register).unwrap().1
                })
        })
        .expect("the 200 OK's event");
    let (b, a) = (ok.before.unwrap(), ok.after.unwrap());
    assert_eq!((b.src, a.src), (v4(PRIMARY), v4(VIP)));
    assert_eq!(a.sport, b.sport, "the source port is kept");
    assert_eq!(ok.direction, "out");
    // The call's INVITE, steered too.
    assert!(recs
        .iter()
        .any(|r| r.reason == "steered" && sip(r).is_some_and(|(s, _)| s.starts_with("INVITE "))));
    // The configuration server, excluded: untouched.
    let excl = recs
        .iter()
        .find(|r| r.before.is_some_and(|b| b.dst == v4(CONFIG)))
        .expect("the excluded packet's event");
    assert_eq!(excl.reason, "excluded");
    assert!(excl.after.is_none() || excl.after.unwrap().src == v4(PRIMARY));
    // T-Lib to the primary's own address: passed through both ways.
    assert!(recs.iter().any(|r| r.reason == "pass_to_member"
        && r.before
            .is_some_and(|b| b.src == v4(TLIB) && b.dport == 3000)));
    assert!(recs.iter().any(|r| r.reason == "passthrough"
        && r.before
            .is_some_and(|b| b.src == v4(PRIMARY) && b.sport == 3000)));
    // The unsolicited packet, dropped with its reason.
    let dropped = recs
        .iter()
        .find(|r| r.before.is_some_and(|b| b.dport == 5999))
        .expect("the unsolicited packet's event");
    assert_eq!(
        (dropped.reason.as_str(), dropped.verdict.as_str()),
        ("drop_vip_closed", "drop")
    );
    assert!(summary.contains("lost 0"), "{summary}");
    // The trace ended: its filter is gone.
    wait_tracing(&lab, false);

    // The capture: tcpdump and tshark read it, and tshark's SIP dissector finds the
    // REGISTER's method and Call-ID, in the frames as they arrived and as they left.
    let tcpdump = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap)
        .output()
        .expect("tcpdump");
    assert!(
        tcpdump.status.success(),
        "{}",
        String::from_utf8_lossy(&tcpdump.stderr)
    );
    let lines = String::from_utf8_lossy(&tcpdump.stdout);
    assert!(lines.lines().count() >= recs.len(), "{lines}");
    let tshark = tshark(
        &pcap,
        &[
            "-Y",
            "sip.Method == \"REGISTER\"",
            "-T",
            "fields",
            "-e",
            "sip.Method",
            "-e",
            "sip.Call-ID",
            "-e",
            "frame.comment",
        ],
    );
    let call_id = sip(register).unwrap().1.unwrap();
    assert!(tshark.contains(&format!("REGISTER\t{call_id}")), "{tshark}");
    assert!(
        tshark.contains("as it arrived") && tshark.contains("as it left"),
        "{tshark}"
    );
}

fn tshark(pcap: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(args)
        .output()
        .expect("tshark (Debian package tshark; `cargo xtask setup` installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn trace_filters_limits_and_one_trace_at_a_time() {
    let lab = serving_lab("tf");
    let _tserver = {
        let _g = lab.primary.enter().unwrap();
        TcpListener::bind((PRIMARY, 3000)).unwrap()
    };

    // Each filter: the mix of traffic, and every event the trace shows matches it (and some
    // do).
    type Check = fn(&Record) -> bool;
    let cases: &[(&[&str], Check)] = &[
        (&["--vip", "vsVipHa01"], |r| {
            [r.before, r.after]
                .iter()
                .flatten()
                .any(|t| t.src == v4(VIP) || t.dst == v4(VIP))
        }),
        (&["--member", "backup"], |r| {
            [r.before, r.after].iter().flatten().any(|t| {
                t.src == v4(sipvip_tests::lab::BACKUP) || t.dst == v4(sipvip_tests::lab::BACKUP)
            })
        }),
        (&["--host", "198.18.1.50/32"], |r| {
            r.before
                .is_some_and(|t| t.dst == v4(CONFIG) || t.src == v4(CONFIG))
        }),
        (&["--port", "5999"], |r| {
            [r.before, r.after]
                .iter()
                .flatten()
                .any(|t| t.sport == 5999 || t.dport == 5999)
        }),
        (&["--proto", "icmp"], |r| {
            r.before.is_some_and(|t| t.proto == 1)
        }),
        (&["--reason", "drop"], |r| r.reason.starts_with("drop_")),
        (&["--reason", "excluded"], |r| r.reason == "excluded"),
        (&["--direction", "in"], |r| r.side == "ext"),
        (&["--direction", "out"], |r| r.side != "ext"),
    ];
    for (args, check) in cases {
        let mut a = args.to_vec();
        a.extend(["--duration", "2s"]);
        let t = trace(&lab, &a);
        wait_tracing(&lab, true);
        mix(&lab);
        if args[1] == "backup" {
            // The monitor's probes of the backup are its only packets here.
            std::thread::sleep(Duration::from_millis(600));
        }
        let (recs, summary) = records(t);
        eprintln!("{args:?}: {} events; {summary}", recs.len());
        assert!(!recs.is_empty(), "{args:?}: no event");
        for r in &recs {
            assert!(check(r), "{args:?} let through: {}", r.line);
        }
        wait_tracing(&lab, false);
    }

    // --call-id: one call's SIP messages, picked out after the kernel's port filter.
    let t = trace(
        &lab,
        &[
            "--port",
            "5060",
            "--call-id",
            "want@trace",
            "--duration",
            "2s",
        ],
    );
    wait_tracing(&lab, true);
    for (i, id) in ["other@trace", "want@trace", "other@trace", "want@trace"]
        .iter()
        .enumerate()
    {
        let m = format!(
            "OPTIONS sip:vip SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:{p}\r\nCall-ID: {id}\r\nCSeq: 1 OPTIONS\r\n\r\n",
            p = 5080 + i
        );
        udp_from(
            &lab.client,
            (PHONE, 5080 + i as u16),
            (VIP, 5060),
            m.as_bytes(),
        );
    }
    let (recs, _) = records(t);
    assert!(recs.len() >= 2, "{} events", recs.len());
    for r in &recs {
        let call = sipvip::trace::sip(&r.frame_bytes()).and_then(|(_, c)| c);
        assert_eq!(call.as_deref(), Some("want@trace"), "{}", r.line);
    }
    wait_tracing(&lab, false);

    // The rate limit under the bench's generator (XDP live frames from the client's side:
    // requests to VIP:5060 from 4,096 sources, as fast as it sends, for 1.5 s), traced at
    // 50 events a second on each CPU: what the trace shows stays within the rate, and the
    // rest is counted, not silently lost.
    let t = trace(
        &lab,
        &["--port", "5060", "--rate", "50", "--duration", "3s"],
    );
    wait_tracing(&lab, true);
    let sent = flood(&lab, Duration::from_millis(1500));
    let (recs, summary) = records(t);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "flood: {sent} frames received back; {} events on {cpus} CPUs; {summary}",
        recs.len()
    );
    // 3 s at 50 a second per CPU, a window's worth more at each end.
    assert!(recs.len() <= cpus * (150 + 10), "{} events", recs.len());
    let over: u64 = summary
        .split("dropped ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts the events over the rate");
    assert!(over > 10_000, "{summary}");

    // One trace at a time: a second is refused with a clear message while the first runs;
    // the first killed with SIGKILL leaves no filter behind, and the next trace starts.
    let mut first = trace(&lab, &["--duration", "60s"]);
    wait_tracing(&lab, true);
    let second = Command::new(sipvip_bin())
        .args(["trace", "--duration", "1s", "--socket"])
        .arg(lab.socket())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("another trace is running"), "{msg}");
    first.kill().unwrap();
    let _ = first.wait();
    wait_tracing(&lab, false);
    let third = trace(&lab, &["--duration", "1s"]);
    let (_, summary) = records(third);
    assert!(summary.contains("events shown"), "{summary}");
}
