//! The container image (deploy/image) runs the daemon as the DaemonSet does: under podman, in
//! the gateway namespace's network, with exactly the manifest's capabilities, the ConfigMap
//! layout and the host's bpffs; and a rolling update (the container stopped with SIGTERM, a
//! new one started) loses no request, because the new container adopts the pinned datapath.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sipvip_tests::{
    image::{daemonset_capabilities, Container},
    lab::{Lab, PHONE, VIP},
    scenario,
};

fn options(call: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:{VIP} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK-img-{call}\r\n\
         From: <sip:p@{PHONE}>;tag=i{call}\r\nTo: <sip:{VIP}>\r\nCall-ID: img-{call}@phone\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One OPTIONS to the VIP; whether a 200 for it came back from the VIP.
fn ping(phone: &UdpSocket, call: usize) -> bool {
    if phone.send_to(&options(call), (VIP, 5060)).is_err() {
        return false;
    }
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        let Ok((n, from)) = phone.recv_from(&mut buf) else {
            return false;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if from == SocketAddr::from((VIP, 5060))
            && text.starts_with("SIP/2.0 200")
            && text.contains(&format!("img-{call}@phone"))
        {
            return true;
        }
    }
    false
}

#[test]
fn the_image_runs_with_the_manifest_settings_and_a_rolling_update_loses_nothing() {
    let mut lab = Lab::new("img").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    let text = lab.config("200ms", "1000ms", "");
    let cfg = lab.write_configmap(&text).unwrap();
    let caps = daemonset_capabilities();
    let mounts = [lab.dir.as_path(), lab.bpffs.as_path()];
    let cfg_s = cfg.to_str().unwrap();
    let args = ["run", "--config", cfg_s, "--watch-config"];
    let name = |n: u32| format!("sipvip-img-{}-{n}", std::process::id());

    // The init container sets the node's sysctls (turned back to their defaults first).
    let sysctls = [
        "net/ipv4/ip_forward_use_pmtu",
        "net/ipv4/conf/all/accept_local",
        "net/ipv4/conf/ext0/accept_local",
    ];
    let read = |k: &str| {
        lab.gw
            .exec(&format!("cat /proc/sys/{k}"))
            .unwrap()
            .trim()
            .to_string()
    };
    for k in sysctls {
        lab.gw.exec(&format!("echo 0 > /proc/sys/{k}")).unwrap();
    }
    let out =
        Container::run_privileged_once(&lab.gw, &mounts, &["node-sysctls", "--config", cfg_s])
            .unwrap();
    assert!(out.contains("ip_forward_use_pmtu = 1 (set)"), "{out}");
    for k in sysctls {
        assert_eq!(read(k), "1", "{k} after the init container");
    }

    let first = Container::run(&name(0), &lab.gw, &caps, &mounts, &args).unwrap();
    let up = lab.wait_for(Duration::from_secs(20), || {
        lab.status()
            .is_ok_and(|s| s["vips"][0]["active"] == "primary")
    });
    assert!(up.is_some(), "not up; container log:\n{}", first.logs());
    let eff = std::fs::read_to_string(format!("/proc/{}/status", first.pid().unwrap()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .to_string();
    eprintln!("container {eff} (manifest: {caps:?})");
    // The HTTP listener binds in its own task, a moment after the control socket answers.
    let healthy = lab.wait_for(Duration::from_secs(5), || {
        lab.http_get("/healthz")
            .is_ok_and(|(s, _)| s.contains(" 200 "))
    });
    assert!(
        healthy.is_some(),
        "{:?}\n{}",
        lab.http_get("/healthz"),
        first.logs()
    );
    let phone = {
        let _g = lab.client.enter().unwrap();
        let s = UdpSocket::bind(SocketAddr::from((PHONE, 5062))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    };
    assert!(ping(&phone, 0), "no answer through the VIP");

    // The rolling update: requests every 10 ms while the old container stops (SIGTERM) and
    // the new one starts and adopts the pinned datapath.
    let sender = {
        let phone = phone.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut answered = 0;
            for call in 1..=200 {
                if ping(&phone, call) {
                    answered += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            answered
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    first.stop(10).unwrap();
    drop(first);
    let second = Container::run(&name(1), &lab.gw, &caps, &mounts, &args).unwrap();
    let answered = sender.join().unwrap();
    eprintln!("rolling update under load: {answered}/200 requests answered");
    assert_eq!(answered, 200, "requests lost; log:\n{}", second.logs());
    let s = lab.status().unwrap();
    assert_eq!(s["adopted"], true, "{s}");
    assert_eq!(s["vips"][0]["active"], "primary", "{s}");
    assert_eq!(s["vips"][0]["failovers"], 0, "{s}");
    let log = second.logs();
    assert!(!log.contains("cannot set sysctl"), "{log}");
    assert!(!log.contains("Operation not permitted"), "{log}");
}
