//! The daemon end to end, in namespaces, with real SIP servers (sipp answering OPTIONS):
//! monitors, failover on process death (ICMP fast path) and on a cut link (timeout), no
//! flap-back, forged replies, gratuitous ARP, restart without loss, SIGHUP with a broken
//! config, manual operations, metrics and `sipvip down`; the kubelet's probes and a
//! ConfigMap-style reload.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sipvip_tests::{
    lab::{udp_in, Lab, BACKUP, PHONE, PRIMARY, VIP},
    netns::Netns,
    scenario,
};

const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 1000;

fn options(call: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:{VIP}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK-test-{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:phone@{PHONE}>;tag=t{call}\r\nTo: <sip:{VIP}>\r\nCall-ID: test-{call}@phone\r\nCSeq: 1 OPTIONS\r\n\
         Contact: <sip:phone@{PHONE}:5062>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One OPTIONS from the phone to the VIP; returns the reply's source if a 200 came back.
fn ping_vip(phone: &UdpSocket, call: usize) -> Option<SocketAddr> {
    phone.send_to(&options(call), (VIP, 5060)).ok()?;
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        let (n, from) = phone.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 200") && text.contains(&format!("test-{call}@phone")) {
            return Some(from);
        }
    }
    None
}

/// A TCP server on `addr` in `ns` that answers every line with `tag`, until `stop` is set
/// (bounded: it gives up after a minute).
fn tcp_tagger(
    ns: &Netns,
    addr: (Ipv4Addr, u16),
    tag: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    let listener = {
        let _g = ns.enter().unwrap();
        std::net::TcpListener::bind(SocketAddr::from(addr)).unwrap()
    };
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut conns: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) {
            if let Ok((c, _)) = listener.accept() {
                c.set_nonblocking(true).unwrap();
                conns.push(c);
            }
            for c in &mut conns {
                let mut buf = [0u8; 64];
                if let Ok(n) = c.read(&mut buf) {
                    if n > 0 {
                        let _ = c.write_all(tag.as_bytes());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Sends a line on `c` and returns the tag that answered.
fn who_answers(c: &mut TcpStream) -> String {
    c.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Counts gratuitous ARPs for the VIP seen by the client (AF_PACKET), for `window`.
fn count_garps(ns: &Netns, window: Duration) -> std::thread::JoinHandle<usize> {
    let _g = ns.enter().unwrap();
    // SAFETY: a raw packet socket owned by the thread below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(0x0806u16.to_be()),
        )
    };
    assert!(fd >= 0, "AF_PACKET socket");
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setting a receive timeout on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            16,
        )
    };
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut n = 0;
        let mut buf = [0u8; 128];
        while t.elapsed() < window {
            // SAFETY: recv into our buffer.
            let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 42
                && buf[12..14] == [8, 6]
                && buf[28..32] == VIP.octets()
                && buf[38..42] == VIP.octets()
            {
                n += 1;
            }
        }
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
        n
    })
}

#[test]
fn failover_on_process_death_and_on_a_cut_link() {
    let mut lab = Lab::new("fo").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    // The backup ignores UDP until it is promoted, as a Genesys backup does.
    let backup_silent = udp_in(&lab.backup, (BACKUP, 5060));
    let cfg = lab
        .write_config(&lab.config(&format!("{INTERVAL_MS}ms"), &format!("{TIMEOUT_MS}ms"), ""))
        .unwrap();
    lab.start_daemon(&cfg).unwrap();
    let took = lab.wait_active("primary", Duration::from_secs(5));
    assert!(
        took.is_some(),
        "primary never became active:\n{}",
        lab.daemon_log(0)
    );

    // Calls through the VIP reach the primary, and replies come from the VIP.
    let phone = udp_in(&lab.client, (PHONE, 5062));
    assert_eq!(ping_vip(&phone, 1), Some(SocketAddr::from((VIP, 5060))));

    // 802.1Q tags stay in the frame: receive VLAN offload is off where sipvip is attached.
    for ifc in ["ext0", "int0", "int1"] {
        let k = lab.gw.exec(&format!("ethtool -k {ifc}")).unwrap();
        assert!(k.contains("rx-vlan-offload: off"), "{ifc}: {k}");
    }
    // Route MTUs count for the datapath's FIB lookups, as for the kernel's forwarding.
    let pmtu = lab
        .gw
        .exec("cat /proc/sys/net/ipv4/ip_forward_use_pmtu")
        .unwrap();
    assert_eq!(pmtu.trim(), "1");

    // Forged replies: the backup's probe is captured, then answered perfectly, but from
    // other addresses. The backup must stay down.
    let mut buf = [0u8; 4096];
    let (n, probe_from) = backup_silent
        .recv_from(&mut buf)
        .expect("a probe reaches the backup");
    let probe = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        probe.starts_with(&format!("OPTIONS sip:{BACKUP}:5060 SIP/2.0")),
        "{probe}"
    );
    assert_eq!(
        probe_from.ip(),
        Ipv4Addr::new(198, 18, 4, 1),
        "probes come from the gateway's internal address"
    );
    let header = |name: &str| {
        probe
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    let forged = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=f\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header("Via:"),
        header("From:"),
        header("To:"),
        header("Call-ID:"),
        header("CSeq:")
    );
    let forger = udp_in(&lab.primary, (PRIMARY, 5099));
    let phone_forger = udp_in(&lab.client, (PHONE, 5099));
    for _ in 0..5 {
        forger.send_to(forged.as_bytes(), probe_from).unwrap();
        phone_forger.send_to(forged.as_bytes(), probe_from).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    assert!(
        !lab.member_up("backup"),
        "a forged reply marked the backup up"
    );

    // Kill the primary's SIP process; the backup is promoted at the same moment. The ICMP
    // port unreachable takes the primary down within one interval.
    let garps = count_garps(&lab.client, Duration::from_millis(1500));
    drop(backup_silent);
    let killed = Instant::now();
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let down = lab
        .wait_for(Duration::from_secs(3), || !lab.member_up("primary"))
        .expect("primary marked down");
    let flipped = lab
        .wait_active("backup", Duration::from_secs(3))
        .expect("flip to the backup");
    let flip_time = killed.elapsed().min(flipped + down);
    eprintln!(
        "process death: primary down after {:.0} ms, active = backup after {:.0} ms (interval {INTERVAL_MS} ms)",
        down.as_secs_f64() * 1000.0,
        killed.elapsed().as_secs_f64() * 1000.0 - (killed.elapsed() - flip_time).as_secs_f64() * 1000.0
    );
    assert!(
        down <= Duration::from_millis(INTERVAL_MS + 150),
        "ICMP fast path took {down:?}"
    );
    let s = lab.status().unwrap();
    let reason = s["vips"][0]["members"][0]["monitors"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(reason, "ICMP port unreachable", "{s}");
    assert_eq!(
        ping_vip(&phone, 2),
        Some(SocketAddr::from((VIP, 5060))),
        "calls reach the backup through the VIP"
    );
    let garp_count = garps.join().unwrap();
    assert!(
        garp_count >= 3,
        "gratuitous ARPs seen by the client: {garp_count}"
    );
    let log = lab.daemon_log(0);
    assert!(
        log.contains("event=\"failover\"") || log.contains("event=failover"),
        "{log}"
    );
    assert!(log.contains("since_last_good_reply_ms"), "{log}");

    // The old primary comes back: no flap-back.
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    assert!(lab
        .wait_for(Duration::from_secs(3), || lab.member_up("primary"))
        .is_some());
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    assert_eq!(
        lab.active().unwrap().as_deref(),
        Some("backup"),
        "the old primary took over again"
    );

    // Cut the backup's link: no ICMP, the flip comes with the timeout.
    let cut = Instant::now();
    lab.backup.exec("ip link set b0 down").unwrap();
    let flipped = lab
        .wait_active("primary", Duration::from_secs(5))
        .expect("flip back to the primary after the cut");
    eprintln!(
        "link cut: flip after {:.0} ms (timeout {TIMEOUT_MS} ms)",
        flipped.as_secs_f64() * 1000.0
    );
    assert!(
        flipped <= Duration::from_millis(TIMEOUT_MS + INTERVAL_MS + 300),
        "took {flipped:?}"
    );
    assert!(cut.elapsed() >= Duration::from_millis(100));
    assert_eq!(ping_vip(&phone, 3), Some(SocketAddr::from((VIP, 5060))));
    let s = lab.status().unwrap();
    assert_eq!(s["vips"][0]["failovers"], 2, "{s}");
}

#[test]
fn restart_without_loss_sighup_manual_operations_metrics_and_down() {
    let mut lab = Lab::new("rs").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let text = lab.config(&format!("{INTERVAL_MS}ms"), &format!("{TIMEOUT_MS}ms"), "");
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    assert!(lab.wait_active("primary", Duration::from_secs(5)).is_some());
    let phone = udp_in(&lab.client, (PHONE, 5062));

    // Restart the daemon while calls flow: every request is answered.
    let sender = {
        let phone = phone.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut answered = 0;
            for call in 0..150 {
                if ping_vip(&phone, 1000 + call).is_some() {
                    answered += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            answered
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    lab.stop("daemon-0", libc::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    lab.start_daemon(&cfg).unwrap();
    let answered = sender.join().unwrap();
    eprintln!("restart under load: {answered}/150 requests answered");
    assert_eq!(answered, 150, "requests lost across a daemon restart");
    let s = lab.status().unwrap();
    assert_eq!(s["adopted"], true, "{s}");
    assert_eq!(s["vips"][0]["active"], "primary", "{s}");
    assert_eq!(
        s["vips"][0]["failovers"], 0,
        "the restart must not fail over: {s}"
    );

    // SIGHUP with a broken config: rejected, the running config keeps working.
    std::fs::write(
        &cfg,
        text.replace("interval = \"200ms\"", "interval = \"200 msec\""),
    )
    .unwrap();
    lab.signal("daemon-1", libc::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = lab.sipvip(&["reload"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload rejected") && err.contains("unit must be ms, s or m"),
        "{err}"
    );
    assert!(lab.daemon_log(1).contains("reload rejected"));
    assert_eq!(ping_vip(&phone, 5000), Some(SocketAddr::from((VIP, 5060))));
    assert_eq!(lab.active().unwrap().as_deref(), Some("primary"));
    // `sipvip check` reports the same problem with its location.
    let out = lab.sipvip(&["check", cfg.to_str().unwrap()]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "line 11, column 12: interval: duration \"200 msec\": unit must be ms, s or m"
            ),
        "{err}"
    );

    // A good config reloads without a flip.
    std::fs::write(
        &cfg,
        text.replace("exclusions = [", "exclusions = [\"198.18.1.60\", "),
    )
    .unwrap();
    let out = lab.sipvip(&["reload"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.active().unwrap().as_deref(), Some("primary"));

    // The daemon starts a new next-hop generation every forwarding.nexthop_refresh (1 s by
    // default), so the datapath picks up route and neighbour changes.
    let generation = || -> u32 {
        let data =
            aya::maps::MapData::from_pin(lab.pin_dir().join(sipvip_common::map_names::NEXTHOP_GEN))
                .expect("pinned generation map");
        let m: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("array");
        m.get(&0, 0).expect("generation")
    };
    let g0 = generation();
    std::thread::sleep(Duration::from_millis(2200));
    let g1 = generation();
    assert!(g0 > 0 && g1 >= g0 + 2, "next-hop generation {g0} -> {g1}");

    // Manual operations: forced offline moves the VIP; enable does not move it back;
    // failover --to moves it. A healthy member moved away from keeps its established TCP
    // connections (BIG-IP "Forced Offline"); new ones go to the new active member.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers = [
        tcp_tagger(&lab.primary, (PRIMARY, 5061), "primary", stop.clone()),
        tcp_tagger(&lab.backup, (BACKUP, 5061), "backup", stop.clone()),
    ];
    let connect = || {
        let _g = lab.client.enter().unwrap();
        let c = TcpStream::connect_timeout(&SocketAddr::from((VIP, 5061)), Duration::from_secs(2))
            .expect("TCP to VIP:5061");
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c
    };
    let mut before = connect();
    assert_eq!(who_answers(&mut before), "primary");
    let out = lab.sipvip(&["member", "disable", "primary"]).unwrap();
    assert!(out.status.success());
    assert_eq!(lab.active().unwrap().as_deref(), Some("backup"));
    assert_eq!(lab.status().unwrap()["vips"][0]["draining"], "primary");
    for _ in 0..3 {
        assert_eq!(
            who_answers(&mut before),
            "primary",
            "established connection kept"
        );
    }
    let mut after = connect();
    assert_eq!(who_answers(&mut after), "backup", "a new connection");
    assert_eq!(who_answers(&mut before), "primary");
    drop((before, after));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
    assert!(lab
        .sipvip(&["member", "enable", "primary"])
        .unwrap()
        .status
        .success());
    assert!(lab
        .wait_for(Duration::from_secs(3), || lab.member_up("primary"))
        .is_some());
    assert_eq!(lab.active().unwrap().as_deref(), Some("backup"));
    let out = lab
        .sipvip(&["failover", "vsVipHa01", "--to", "primary"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.active().unwrap().as_deref(), Some("primary"));
    let out = lab.sipvip(&["member", "disable", "nobody"]).unwrap();
    assert!(!out.status.success());

    // The table and the metrics.
    let out = lab.sipvip(&["status"]).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("VIP vsVipHa01 198.18.1.100 2001:db8:1::100  active: primary"),
        "{table}"
    );
    assert!(
        table.contains("monSipUdp up (valid reply, last 200"),
        "{table}"
    );
    let body = {
        let _g = lab.gw.enter().unwrap();
        let mut s = TcpStream::connect("127.0.0.1:9360").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    assert!(
        body.contains("sipvip_member_up{vip=\"vsVipHa01\",member=\"primary\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("sipvip_failovers_total{vip=\"vsVipHa01\"} 2"),
        "{body}"
    );
    assert!(
        body.contains(
            "sipvip_probe_rtt_seconds{vip=\"vsVipHa01\",member=\"primary\",monitor=\"monSipUdp\"}"
        ),
        "{body}"
    );
    assert!(
        body.contains("sipvip_datapath_packets_total{reason=\"steered\"}"),
        "{body}"
    );

    // Stop, then `sipvip down`: nothing stays attached or pinned.
    lab.stop("daemon-1", libc::SIGTERM).unwrap();
    assert_eq!(
        ping_vip(&phone, 6000),
        Some(SocketAddr::from((VIP, 5060))),
        "the pinned datapath outlives the daemon"
    );
    let out = lab
        .sipvip(&["down", "--pin-dir", lab.pin_dir().to_str().unwrap()])
        .unwrap();
    assert!(out.status.success());
    let links = lab.gw.exec("ip link show ext0; ip link show int0").unwrap();
    assert!(!links.contains("xdp"), "{links}");
    // The daemon's pin directory is gone (the lab's own peer pins live next to it).
    assert!(
        !lab.pin_dir().exists(),
        "pins left behind in {} ({})",
        lab.pin_dir().display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn tcp_and_icmp_monitors() {
    let mut lab = Lab::new("tm").expect("lab");
    let extra = format!(
        "\n[[monitor]]\nname = \"tls\"\ntype = \"tcp\"\nport = 5061\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\n\n\
         [[monitor]]\nname = \"icmp\"\ntype = \"icmp\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\n"
    );
    let text = lab
        .config(
            &format!("{INTERVAL_MS}ms"),
            &format!("{TIMEOUT_MS}ms"),
            &extra,
        )
        .replace(
            "monitors = [\"monSipUdp\"]",
            "monitors = [\"tls\", \"icmp\"]",
        );
    let cfg = lab.write_config(&text).unwrap();
    // TLS servers (just their listening sockets) on both members.
    let tls_primary = {
        let _g = lab.primary.enter().unwrap();
        std::net::TcpListener::bind((PRIMARY, 5061)).unwrap()
    };
    let _tls_backup = {
        let _g = lab.backup.enter().unwrap();
        std::net::TcpListener::bind((BACKUP, 5061)).unwrap()
    };
    lab.start_daemon(&cfg).unwrap();
    assert!(lab.wait_active("primary", Duration::from_secs(5)).is_some());
    let s = lab.status().unwrap();
    let mons = &s["vips"][0]["members"][0]["monitors"];
    assert_eq!(mons[0]["name"], "tls", "{s}");
    assert_eq!(mons[1]["name"], "icmp", "{s}");
    assert!(
        mons[1]["up"] == true && mons[1]["last_rtt_ms"].as_f64().is_some(),
        "ICMP echo answered: {s}"
    );

    // The TLS server goes away: the next connect gets a RST, down at once.
    let t = Instant::now();
    drop(tls_primary);
    let flipped = lab
        .wait_active("backup", Duration::from_secs(3))
        .expect("flip on RST");
    eprintln!(
        "TCP RST: flip after {:.0} ms (interval {INTERVAL_MS} ms)",
        flipped.as_secs_f64() * 1000.0
    );
    assert!(
        t.elapsed() <= Duration::from_millis(INTERVAL_MS + 300),
        "took {:?}",
        t.elapsed()
    );
    let s = lab.status().unwrap();
    assert_eq!(
        s["vips"][0]["members"][0]["monitors"][0]["reason"], "TCP connection refused",
        "{s}"
    );
}

/// What a Kubernetes node needs of the daemon: `/healthz` and `/readyz` on the metrics
/// listener, and a config in a ConfigMap volume reloaded when the kubelet swaps its `..data`
/// symlink (`--watch-config`); a swap to garbage keeps the running configuration and is
/// reported in the status and the metrics.
#[test]
fn kubelet_probes_and_configmap_reload() {
    let mut lab = Lab::new("k8").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let text = lab.config(&format!("{INTERVAL_MS}ms"), &format!("{TIMEOUT_MS}ms"), "");
    let cfg = lab.write_configmap(&text).unwrap();
    lab.start_daemon_with(&cfg, &["--watch-config"]).unwrap();

    // The HTTP listener binds in its own task, a moment after the control socket answers.
    let healthy = lab.wait_for(Duration::from_secs(5), || {
        lab.http_get("/healthz")
            .is_ok_and(|(s, _)| s.contains(" 200 "))
    });
    assert!(healthy.is_some(), "{:?}", lab.http_get("/healthz"));
    assert!(
        lab.wait_for(Duration::from_secs(5), || {
            lab.http_get("/readyz")
                .is_ok_and(|(s, _)| s.contains(" 200 "))
        })
        .is_some(),
        "never ready: {:?}",
        lab.http_get("/readyz")
    );
    let (status, _) = lab.http_get("/nothing-here").unwrap();
    assert!(status.contains(" 404 "), "{status}");
    assert!(lab.wait_active("primary", Duration::from_secs(5)).is_some());
    let phone = udp_in(&lab.client, (PHONE, 5062));

    let config = |lab: &Lab| lab.status().unwrap()["config"].clone();
    // A valid new config: reloaded within the watch period, without a flip.
    lab.write_configmap(&text.replace("exclusions = [", "exclusions = [\"198.18.1.60\", "))
        .unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(5), || config(&lab)["reloads"] == 1)
            .is_some(),
        "not reloaded: {}",
        config(&lab)
    );
    assert_eq!(lab.active().unwrap().as_deref(), Some("primary"));

    // Garbage: rejected, reported, the running configuration keeps forwarding.
    lab.write_configmap("this is not [toml").unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(5), || config(&lab)["reload_failures"]
            == 1)
            .is_some(),
        "not rejected: {}",
        config(&lab)
    );
    let c = config(&lab);
    assert!(
        c["last_error"].as_str().unwrap_or("").contains("line 1"),
        "the rejection names the place: {c}"
    );
    assert!(lab.daemon_log(0).contains("reload rejected"));
    assert_eq!(ping_vip(&phone, 7000), Some(SocketAddr::from((VIP, 5060))));
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("sipvip_config_reload_failures_total 1\n")
            && metrics.contains("sipvip_config_last_reload_ok 0\n")
            && metrics.contains("sipvip_ready 1\n"),
        "{metrics}"
    );
    let out = lab.sipvip(&["status"]).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("last reload rejected"), "{table}");

    // Fixed again: applied, and the error is cleared.
    lab.write_configmap(&text).unwrap();
    assert!(
        lab.wait_for(Duration::from_secs(5), || config(&lab)["reloads"] == 2)
            .is_some(),
        "not reloaded: {}",
        config(&lab)
    );
    assert!(config(&lab)["last_error"].is_null(), "{}", config(&lab));
    assert_eq!(ping_vip(&phone, 7001), Some(SocketAddr::from((VIP, 5060))));

    // Detached under the daemon's feet: no longer alive, and the probe says why.
    let out = lab
        .sipvip(&["down", "--pin-dir", lab.pin_dir().to_str().unwrap()])
        .unwrap();
    assert!(out.status.success());
    let (status, body) = lab.http_get("/healthz").unwrap();
    assert!(
        status.contains(" 503 ") && body.contains("not attached"),
        "{status} {body}"
    );
}

/// Members given by DNS name (`host`), served by a real DNS server (dnsmasq) in the gateway
/// namespace: the primary dies, the backup takes over, the primary comes back as a new "pod"
/// at a new address, its record changes, and the daemon probes it there while the VIP keeps
/// answering from the backup; a name that stops resolving keeps its last address and shows
/// in the status; a name with two addresses and one that never resolves are refused. The
/// refresh timer is an hour: the names are resolved again because probes fail.
#[test]
fn members_by_dns_name_follow_their_records() {
    use std::net::Ipv4Addr;
    let mut lab = Lab::new("dn").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let hosts = lab.dir.join("hosts");
    let write_hosts = |text: &str| std::fs::write(&hosts, text).unwrap();
    write_hosts(&format!(
        "{PRIMARY} sip-0.sip.test\n{BACKUP} sip-1.sip.test\n"
    ));
    let dnsmasq = sipvip_tests::lab::command_in(&lab.gw, std::path::Path::new("/usr/sbin/dnsmasq"))
        .unwrap()
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--port=5353",
            "--local-ttl=0",
            "--user=root",
            "--group=root",
            "--pid-file=",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dnsmasq (Debian package dnsmasq-base): `cargo xtask setup` installs it");
    let dns_pid = dnsmasq.id() as i32;
    lab.children.push(("dnsmasq".into(), dnsmasq));
    std::thread::sleep(Duration::from_millis(300));

    let text = lab
        .config(&format!("{INTERVAL_MS}ms"), &format!("{TIMEOUT_MS}ms"), "")
        .replace(
            &format!("address = \"{PRIMARY}\""),
            "host = \"sip-0.sip.test\"",
        )
        .replace(
            &format!("address = \"{BACKUP}\""),
            "host = \"sip-1.sip.test\"",
        )
        + "\n[dns]\nservers = [\"127.0.0.1:5353\"]\nrefresh = \"60m\"\n";
    let cfg = lab.write_config(&text).unwrap();
    lab.start_daemon(&cfg).unwrap();
    assert!(
        lab.wait_active("primary", Duration::from_secs(5)).is_some(),
        "{}",
        lab.daemon_log(0)
    );
    let member = |lab: &Lab, i: usize| lab.status().unwrap()["vips"][0]["members"][i].clone();
    assert_eq!(member(&lab, 0)["host"], "sip-0.sip.test");
    assert_eq!(member(&lab, 0)["address"], PRIMARY.to_string());
    let phone = udp_in(&lab.client, (PHONE, 5062));
    assert_eq!(ping_vip(&phone, 8000), Some(SocketAddr::from((VIP, 5060))));

    // The primary "pod" dies: the backup takes over.
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    assert!(lab.wait_active("backup", Duration::from_secs(5)).is_some());

    // It is recreated at a new address, and its record follows.
    let moved = Ipv4Addr::new(198, 18, 2, 21);
    lab.primary
        .exec(&format!("ip addr add {moved}/24 dev p0"))
        .unwrap();
    scenario::start_sip_server_at(&mut lab, "primary", moved).unwrap();
    write_hosts(&format!(
        "{moved} sip-0.sip.test\n{BACKUP} sip-1.sip.test\n"
    ));
    // SAFETY: signalling the dnsmasq child this test started.
    unsafe { libc::kill(dns_pid, libc::SIGHUP) };
    let probed = lab.wait_for(Duration::from_secs(5), || {
        let m = member(&lab, 0);
        m["address"] == moved.to_string() && m["up"] == true
    });
    assert!(
        probed.is_some(),
        "the primary is not probed at its new address: {}\n{}",
        member(&lab, 0),
        lab.daemon_log(0)
    );
    // The VIP stayed on the backup throughout, and still answers.
    assert_eq!(lab.active().unwrap().as_deref(), Some("backup"));
    assert_eq!(ping_vip(&phone, 8001), Some(SocketAddr::from((VIP, 5060))));
    assert!(lab
        .daemon_log(0)
        .contains("the member's address changed; reloading"));

    // The record disappears and the pod dies again: the failing probes have the name
    // resolved again; the last address stays, and the status says why.
    write_hosts(&format!("{BACKUP} sip-1.sip.test\n"));
    // SAFETY: as above.
    unsafe { libc::kill(dns_pid, libc::SIGHUP) };
    lab.stop("sipp-primary", libc::SIGKILL).unwrap();
    let reported = lab.wait_for(Duration::from_secs(5), || {
        member(&lab, 0)["resolve_error"].is_string()
    });
    assert!(reported.is_some(), "{}", member(&lab, 0));
    assert_eq!(member(&lab, 0)["address"], moved.to_string());
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("sipvip_member_resolved{vip=\"vsVipHa01\",member=\"primary\"} 0"),
        "{metrics}"
    );

    // Bad input, refused by a reload with the member's place; the running config stays.
    write_hosts(&format!(
        "{moved} sip-0.sip.test\n{BACKUP} sip-1.sip.test\n198.18.2.31 sip-1.sip.test\n"
    ));
    // SAFETY: as above.
    unsafe { libc::kill(dns_pid, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(200));
    let out = lab.sipvip(&["reload"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("vip[0] (vsVipHa01).member[1] (backup).host")
            && err.contains("resolves to 2 addresses"),
        "{err}"
    );
    std::fs::write(&cfg, text.replace("sip-1.sip.test", "sip-9.sip.test")).unwrap();
    let out = lab.sipvip(&["reload"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"sip-9.sip.test\" does not resolve"),
        "{err}"
    );
    assert_eq!(lab.active().unwrap().as_deref(), Some("backup"));
    assert_eq!(ping_vip(&phone, 8002), Some(SocketAddr::from((VIP, 5060))));
}
