//! The DaemonSet, played without an API server (none can run here): two nodes and their SIP
//! Server pods in namespaces (`sipvip_tests::cluster`), the real image under podman in each
//! node's network with the manifest's capabilities, the host's bpffs and the ConfigMap
//! layout, after the init container; members named by DNS (dnsmasq). In order:
//!
//! - phones' requests through the VIP are answered from the VIP, and only node 1 (the
//!   primary's) answers ARP for it;
//! - the primary's pod dies, the backup is promoted, the VIP moves to node 2 with gratuitous
//!   ARP (failover time and unanswered requests reported);
//! - the primary's pod is recreated at a new address, its DNS record changes, and both nodes
//!   probe it there;
//! - a configuration change is applied by the ConfigMap's symlink swap, and a broken one is
//!   rejected while the running one stays;
//! - node 2's sipvip container is replaced (a rolling update) under a request every 10 ms,
//!   and no request is lost.
//!
//! The seed's two SIP Server instances on one host (5060 and 5070) fail over through TC
//! egress in `node_mode.rs`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sipvip_tests::{
    cluster::{ping_vip, Cluster, Runner, MOVED},
    lab::{BACKUP, PRIMARY, VIP},
};

#[test]
fn the_daemonset_on_two_nodes() {
    let mut c = Cluster::new("ds", Runner::Image).expect("cluster");
    c.sip_server(0, PRIMARY).unwrap();
    // The backup ignores UDP until it is promoted.
    let backup_silent = {
        let _g = c.pods[1].enter().unwrap();
        std::net::UdpSocket::bind((BACKUP, 5060)).unwrap()
    };
    let text = c.config_text(("200ms", "1000ms"), "500ms", "");
    c.apply_config(&text).unwrap();
    c.start(0).unwrap();
    c.start(1).unwrap();
    let both = c.wait_for(Duration::from_secs(20), |c| {
        (0..2).all(|i| c.active(i).as_deref() == Some("primary")) && c.owner(0) == Some(true)
    });
    assert!(
        both.is_some(),
        "node 1:\n{}\nnode 2:\n{}",
        c.log(0),
        c.log(1)
    );
    let vip = Some(SocketAddr::from((VIP, 5060)));

    // Requests through the VIP, answered from the VIP; node 1 answers ARP, node 2 is silent.
    let phone = c.phone().unwrap();
    let answered = (0..20).filter(|i| ping_vip(&phone, *i) == vip).count();
    assert!(answered >= 19, "{answered}/20 answered\n{}", c.log(0));
    assert_eq!(c.phone_sees_node(), Some(1));
    assert_eq!(c.owner(1), Some(false));

    // The primary's pod dies; the backup is promoted; the VIP moves to node 2.
    let killed = Instant::now();
    c.kill_sip_server(0);
    drop(backup_silent);
    c.sip_server(1, BACKUP).unwrap();
    let mut unanswered = 0;
    let mut back = None;
    for i in 0..100 {
        if ping_vip(&phone, 100 + i) == vip && c.owner(1) == Some(true) {
            back = Some(killed.elapsed());
            break;
        }
        unanswered += 1;
    }
    let back = back.unwrap_or_else(|| panic!("node 2 never took the VIP:\n{}", c.log(1)));
    let followed = c.wait_for(Duration::from_secs(2), |c| c.phone_sees_node() == Some(2));
    assert!(followed.is_some(), "the phone's ARP entry stayed on node 1");
    assert_eq!(c.owner(0), Some(false));
    let failover_ms = |i: usize| c.status(i).unwrap()["vips"][0]["last_failover_ms"].clone();
    eprintln!(
        "daemonset: the VIP answered from node 2 {} ms after the primary's pod died ({unanswered} requests of 300 ms unanswered meanwhile); failover took {} / {} ms on the nodes",
        back.as_millis(),
        failover_ms(0),
        failover_ms(1)
    );

    // The primary's pod is recreated at a new address; its record follows; both nodes
    // probe it there (it stays the backup's turn: no flap-back).
    c.pods[0]
        .exec(&format!("ip addr add {MOVED}/24 dev p0"))
        .unwrap();
    c.sip_server(0, MOVED).unwrap();
    c.set_records(MOVED).unwrap();
    let probed = c.wait_for(Duration::from_secs(10), |c| {
        (0..2).all(|i| {
            c.status(i).is_some_and(|s| {
                let m = &s["vips"][0]["members"][0];
                m["address"] == MOVED.to_string() && m["up"] == true
            })
        })
    });
    assert!(probed.is_some(), "{}", c.status(0).unwrap());
    assert_eq!(c.active(1).as_deref(), Some("backup"));
    assert_eq!(ping_vip(&phone, 300), vip);

    // A configuration change by the symlink swap, then a broken one.
    // The member's move above has already reloaded each node (an address change is a
    // reload): each node must count one more than before the swap.
    let counted = |key: &str| -> Vec<u64> {
        (0..2)
            .map(|i| c.status(i).unwrap()["config"][key].as_u64().unwrap())
            .collect()
    };
    // Waits for each node's count under `key` to be one more than `before`.
    let one_more = |key: &str, before: &[u64]| {
        let done = c.wait_for(Duration::from_secs(10), |c| {
            (0..2).all(|i| {
                c.status(i)
                    .is_some_and(|s| s["config"][key] == before[i] + 1)
            })
        });
        assert!(
            done.is_some(),
            "{key} before {before:?}:\n{}\n{}",
            c.status(0).unwrap(),
            c.status(1).unwrap()
        );
    };
    let (reloads, failures) = (counted("reloads"), counted("reload_failures"));
    let changed = c
        .config_text(("200ms", "1000ms"), "500ms", "")
        .replace("burst = 3", "burst = 2");
    c.apply_config(&changed).unwrap();
    one_more("reloads", &reloads);
    c.apply_config("this is [not a sipvip config").unwrap();
    one_more("reload_failures", &failures);
    assert_eq!(
        ping_vip(&phone, 301),
        vip,
        "the running configuration stays"
    );
    c.apply_config(&changed).unwrap();

    // A rolling update of node 2's container (the one answering) under a request every
    // 10 ms: SIGTERM, then the next pod adopts the pinned datapath.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let phone = phone.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut sent, mut ok) = (0, 0);
            while !stop.load(Ordering::Relaxed) && sent < 1000 {
                if ping_vip(&phone, 1000 + sent) == Some(SocketAddr::from((VIP, 5060))) {
                    ok += 1;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (sent, ok)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    c.stop(1).unwrap();
    c.start(1).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (sent, ok) = sender.join().unwrap();
    eprintln!("daemonset: rolling update of node 2 under load: {ok}/{sent} requests answered");
    assert_eq!(
        ok,
        sent,
        "requests lost in the rolling update:\n{}",
        c.log(1)
    );
    let s = c.status(1).unwrap();
    assert_eq!(s["adopted"], true, "{s}");
    assert_eq!(s["vips"][0]["owner"], true, "{s}");
    assert_eq!(s["vips"][0]["active"], "backup", "{s}");
}
