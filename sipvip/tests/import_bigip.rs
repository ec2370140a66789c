//! `sipvip import-bigip`: the seed's whole example deployment imports to the expected config,
//! field by field, and the output passes `sipvip check`'s validation.

use std::time::Duration;

use sipvip::{
    bigip::{import, ImportError},
    config::{Config, Dur, MonitorKind, Protocol},
};

const SEED: &str = include_str!("data/bigip-seed.conf");

#[test]
fn the_seed_deployment_imports_field_by_field() {
    let imp = import(SEED, None).expect("import");
    let cfg = Config::parse(&imp.toml, "imported").unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));

    assert_eq!(cfg.interfaces.external, "dc1ext");
    assert_eq!(cfg.interfaces.internal, vec!["dc2sip".to_string()]);

    assert_eq!(cfg.vips.len(), 1);
    let v = &cfg.vips[0];
    assert_eq!(v.name, "vsVipHa01");
    assert_eq!(
        v.address.map(|a| a.to_string()).as_deref(),
        Some("198.18.1.100")
    );
    // TLS-only: the UDP and TCP virtuals are disabled, the TLS one enabled.
    let svc = |p: Protocol, port: u16| {
        v.services
            .iter()
            .find(|s| s.protocol == p && s.port == port)
            .unwrap_or_else(|| panic!("{p:?}/{port}"))
    };
    assert!(!svc(Protocol::Udp, 5060).enabled);
    assert!(
        !svc(Protocol::Tcp, 5060).enabled,
        "`sip` service name is port 5060"
    );
    assert!(svc(Protocol::Tcp, 5061).enabled);
    assert_eq!(v.services.len(), 3);
    assert!(v.services.iter().all(|s| s.member_port.is_none()));
    // poolHa01tls's monitor; poolHa01 serves only disabled virtuals.
    assert_eq!(v.monitors, vec!["monSipTls".to_string()]);

    let names: Vec<&str> = v.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["nodeHa01Primary", "nodeHa01Backup"]);
    assert_eq!(
        v.members[0].address.map(|a| a.to_string()).as_deref(),
        Some("198.18.2.11")
    );
    assert_eq!(
        v.members[1].address.map(|a| a.to_string()).as_deref(),
        Some("198.18.2.12")
    );
    assert!(
        v.members[0].priority > v.members[1].priority,
        "the primary is preferred"
    );
    // Node monitor icmp joins the pool monitor.
    assert_eq!(
        v.members[0].monitors,
        Some(vec!["monSipTls".to_string(), "icmp".to_string()])
    );

    let tls = cfg.monitor("monSipTls").expect("monSipTls");
    assert_eq!(
        (tls.interval, tls.timeout),
        (Dur(Duration::from_secs(1)), Dur(Duration::from_secs(4)))
    );
    assert_eq!(tls.kind, MonitorKind::Tcp { port: 5061 });
    let icmp = cfg.monitor("icmp").expect("icmp");
    assert_eq!(icmp.kind, MonitorKind::Icmp);
    assert_eq!(
        icmp.interval,
        Dur(Duration::from_secs(5)),
        "BIG-IP's built-in default"
    );

    assert!(cfg.snat.enabled);
    assert_eq!(cfg.snat.exclusions, vec!["198.18.1.50".to_string()]);

    let r = imp.report.to_string();
    for want in [
        "rule iRuleSnatOutboundHa01 -> [snat] enabled, sources dataGroupSnatHa01",
        "data-group dataGroupSnatExcluded01 -> [snat] exclusions",
        "snatpool snatPoolVipHa01 -> SNAT to the VIP",
        "virtual vsWildCardOutbound (forwarding, outbound with the SNAT iRule)",
        "virtual vsWildcardInbound (forwarding, inbound)",
        "virtual vsVipTlsHa01 -> VIP 198.18.1.100 service tcp/5061",
        "virtual vsVipUdpHa01 -> VIP 198.18.1.100 service udp/5060 (disabled)",
        "pool poolHa01: service-down-action reselect",
        "monitor icmp: BIG-IP built-in",
        "`net vlan /Common/dc1ext` is not a kind sipvip imports",
    ] {
        assert!(r.contains(want), "report lacks {want:?}:\n{r}");
    }
}

/// The seed with an IPv6 virtual on an IPv6 pool of the same two servers, and an IPv6
/// exclusion: one dual-stack VIP.
#[test]
fn an_ipv6_virtual_becomes_the_address6_of_a_dual_stack_vip() {
    // The SNAT iRule's sources and pool in both families.
    let text = SEED
        .replace(
            "        198.18.1.50/32 { }\n",
            "        198.18.1.50/32 { }\n        2001:db8:1::50/128 { }\n",
        )
        .replace(
            "        198.18.2.12/32 { }\n",
            "        198.18.2.12/32 { }\n        2001:db8:2::11/128 { }\n        2001:db8:2::12/128 { }\n",
        )
        .replace(
            "        /Common/198.18.1.100\n",
            "        /Common/198.18.1.100\n        /Common/2001:db8:1::100\n",
        )
        + r#"
ltm snat-translation /Common/2001:db8:1::100 {
    address 2001:db8:1::100
}
ltm node /Common/nodeHa01Primary6 {
    address 2001:db8:2::11
}
ltm node /Common/nodeHa01Backup6 {
    address 2001:db8:2::12
}
ltm pool /Common/poolHa01v6 {
    members {
        /Common/nodeHa01Backup6.5060 {
            address 2001:db8:2::12
        }
        /Common/nodeHa01Primary6.5060 {
            address 2001:db8:2::11
        }
    }
    monitor /Common/monSipUdp
}
ltm virtual /Common/vsVipTlsHa01v6 {
    destination /Common/2001:db8:1::100.5061
    ip-protocol tcp
    pool /Common/poolHa01v6
    vlans {
        /Common/dc1ext
    }
    vlans-enabled
}
"#;
    let imp = import(&text, None).expect("import");
    let cfg = Config::parse(&imp.toml, "imported").unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
    let v = &cfg.vips[0];
    assert_eq!(
        v.address6.map(|a| a.to_string()).as_deref(),
        Some("2001:db8:1::100")
    );
    let addr6 = |name: &str| {
        v.members
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.address6)
            .map(|a| a.to_string())
    };
    // Paired in order, the primary first on both sides.
    assert_eq!(addr6("nodeHa01Primary").as_deref(), Some("2001:db8:2::11"));
    assert_eq!(addr6("nodeHa01Backup").as_deref(), Some("2001:db8:2::12"));
    assert!(cfg.snat.exclusions.contains(&"2001:db8:1::50".to_string()));
    let r = imp.report.to_string();
    assert!(
        r.contains("virtual vsVipTlsHa01v6 (IPv6 2001:db8:1::100) -> address6 of VIP 198.18.1.100"),
        "{r}"
    );
    // The pool's IPv6 address is the VIP's, and the IPv6 sources are its members.
    assert!(!r.contains("differ from VIP"), "{r}");
    assert!(!r.contains("is not a member of VIP"), "{r}");
    // A pool whose IPv6 address is not the VIP's is reported.
    let other = text.replace(
        "ltm snat-translation /Common/2001:db8:1::100 {\n    address 2001:db8:1::100",
        "ltm snat-translation /Common/2001:db8:1::100 {\n    address 2001:db8:1::999",
    );
    let r = import(&other, None).expect("import").report.to_string();
    assert!(
        r.contains("SNAT pool addresses [\"2001:db8:1::999\"] differ from VIP 2001:db8:1::100"),
        "{r}"
    );
}

/// A deployment served over IPv6 only: an IPv6-only VIP with IPv6 members.
#[test]
fn an_ipv6_virtual_alone_becomes_an_ipv6_only_vip() {
    let text = r#"
ltm node /Common/sip1 { address 2001:db8:2::11 }
ltm node /Common/sip2 { address 2001:db8:2::12 }
ltm pool /Common/p6 {
    members {
        /Common/sip1.5060 { address 2001:db8:2::11 }
        /Common/sip2.5060 { address 2001:db8:2::12 }
    }
    monitor /Common/icmp
}
ltm virtual /Common/vsVipUdp6 {
    destination /Common/2001:db8:1::100.5060
    ip-protocol udp
    pool /Common/p6
    vlans { /Common/ext }
}
ltm virtual /Common/vsVipTcp6 {
    destination /Common/2001:db8:1::100.5060
    ip-protocol tcp
    pool /Common/p6
    vlans { /Common/ext }
}
"#;
    let imp = import(text, None).expect("import");
    let cfg = Config::parse(&imp.toml, "imported").unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
    assert_eq!(cfg.vips.len(), 1, "{}", imp.toml);
    let v = &cfg.vips[0];
    assert_eq!(v.address, None);
    assert_eq!(
        v.address6.map(|a| a.to_string()).as_deref(),
        Some("2001:db8:1::100")
    );
    assert_eq!(v.services.len(), 2);
    let members: Vec<_> = v
        .members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.address,
                m.address6.map(|a| a.to_string()),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("sip1", None, Some("2001:db8:2::11".to_string())),
            ("sip2", None, Some("2001:db8:2::12".to_string()))
        ]
    );
    let r = imp.report.to_string();
    assert!(
        r.contains("virtual vsVipUdp6 (IPv6 2001:db8:1::100) -> IPv6-only VIP vsVip6"),
        "{r}"
    );
}

#[test]
fn with_the_udp_and_tcp_virtuals_enabled_the_sip_monitor_is_imported() {
    let text = SEED.replace("    disabled\n", "");
    let imp = import(&text, None).unwrap();
    let cfg = Config::parse(&imp.toml, "imported").unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
    let v = &cfg.vips[0];
    assert!(v.services.iter().all(|s| s.enabled));
    assert_eq!(
        v.monitors,
        vec!["monSipUdp".to_string(), "monSipTls".to_string()]
    );
    let sip = cfg.monitor("monSipUdp").unwrap();
    assert_eq!(
        (sip.interval, sip.timeout),
        (Dur(Duration::from_secs(1)), Dur(Duration::from_secs(4)))
    );
    match &sip.kind {
        MonitorKind::Sip {
            transport,
            accept,
            reject,
            ..
        } => {
            assert_eq!(*transport, Protocol::Udp);
            assert!(
                accept.is_empty() && reject.is_empty(),
                "filter any = any code"
            );
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn grammar_edge_cases() {
    let text = r#"
# comment
ltm node /Part1/n1 { address 198.18.2.21%3 }
ltm node /Part1/n2 { address 198.18.2.22%3 }
ltm monitor sip /Part1/m { interval 2 timeout 7 mode tcp filter "200 202" filter-neg "503" request "OPTIONS sip:probe@x SIP/2.0" headers "X-A: 1\r\nX-B: 2" time-until-up 4 }
ltm pool /Part1/p {
    members {
        /Part1/n1:15060 { address 198.18.2.21%3 priority-group 10 }
        /Part1/n2:15060 { address 198.18.2.22%3 priority-group 20 }
    }
    monitor min 1 of { /Part1/m }
    min-active-members 1
}
ltm virtual /Part1/v6 { destination /Part1/2001:db8::10.5060 ip-protocol udp pool /Part1/p }
ltm virtual /Part1/vs { destination /Part1/198.18.1.110%3:5060 ip-protocol udp pool /Part1/p }
ltm virtual /Other/skip { destination /Other/198.18.1.120:5060 ip-protocol udp pool /Other/q }
ltm rule /Part1/weird { when HTTP_REQUEST { HTTP::redirect "https://x/" } }
"#;
    let imp = import(text, Some("Part1")).unwrap();
    let cfg = Config::parse(&imp.toml, "imported").unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
    let v = &cfg.vips[0];
    assert_eq!(
        cfg.vips.len(),
        1,
        "IPv6 on an IPv4 pool not paired, other partition skipped"
    );
    assert_eq!(
        v.address.map(|a| a.to_string()).as_deref(),
        Some("198.18.1.110")
    );
    assert_eq!(
        v.services[0].member_port,
        Some(15060),
        "port translation from the pool member port"
    );
    assert_eq!(
        v.members[0].address.map(|a| a.to_string()).as_deref(),
        Some("198.18.2.21")
    );
    let prio: Vec<i32> = v.members.iter().map(|m| m.priority).collect();
    assert_eq!(prio, [10, 20], "priority groups");
    let m = cfg.monitor("m").unwrap();
    match &m.kind {
        MonitorKind::Sip {
            transport,
            accept,
            reject,
            request_uri,
            headers,
            ..
        } => {
            assert_eq!(*transport, Protocol::Tcp);
            assert_eq!(accept, &[200, 202]);
            assert_eq!(reject, &[503]);
            assert_eq!(request_uri.as_deref(), Some("sip:probe@x"));
            assert_eq!(headers, &["X-A: 1".to_string(), "X-B: 2".to_string()]);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(m.rise, Some(2), "time-until-up 4 s at interval 2 s");
    let r = imp.report.to_string();
    for want in [
        "virtual v6: IPv6 2001:db8::10: its pool has 0 IPv6 members and VIP 198.18.1.110 2: imported as a VIP of its own",
        "virtual v6: IPv6 2001:db8::10: its pools have no IPv6 members",
        "route domain %3",
        "rule weird: not the SNAT pattern; not translated",
        "pool p: monitor `min 1 of` treated as all of them",
        "pool p: min-active-members 1",
        "no SNAT iRule: [snat] enabled = false",
    ] {
        assert!(r.contains(want), "report lacks {want:?}:\n{r}");
    }
    assert!(
        !r.contains("skip"),
        "objects of other partitions are not even reported"
    );
}

#[test]
fn malformed_input_gives_line_and_column() {
    let err = import(
        "ltm pool /Common/p {\n    members {\n        /Common/n:5060 {\n",
        None,
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "bigip.conf line 3, column 24: this `{` is never closed"
    );
    assert!(matches!(
        import("ltm node /Common/n { address 1.2.3.4 }\n", None),
        Err(ImportError::Empty(_))
    ));
}

#[test]
fn the_importer_never_panics() {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(0xf5);
    let bytes: Vec<char> = SEED.chars().collect();
    for _ in 0..3000 {
        let mut s = bytes.clone();
        for _ in 0..rng.gen_range(1..20) {
            if s.is_empty() {
                break;
            }
            let i = rng.gen_range(0..s.len());
            match rng.gen_range(0..4) {
                0 => {
                    s.remove(i);
                }
                1 => s.insert(
                    i,
                    *['{', '}', '"', '\n', ':', '%', '.', '/', ' ']
                        .get(rng.gen_range(0..9))
                        .unwrap(),
                ),
                2 => s[i] = char::from(rng.gen_range(b' '..b'~')),
                _ => s.truncate(i.max(1)),
            }
        }
        let text: String = s.into_iter().collect();
        if let Ok(imp) = import(&text, None) {
            // Whatever it produces is TOML sipvip can read (valid or with located problems).
            let _ = Config::parse(&imp.toml, "fuzz");
        }
    }
}
