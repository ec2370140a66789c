//! The fixture topology shared by the packet tests and the reference model.
//!
//! One namespace holds the gateway's two interfaces with static neighbours, so that
//! `bpf_fib_lookup` inside BPF_PROG_TEST_RUN gives known, repeatable answers:
//!
//! ```text
//!   ext0 198.18.1.1/24  (02:00:00:00:01:01)   phones, SBC, T-Lib client, config server
//!   int0 198.18.2.1/24  (02:00:00:00:02:01)   primary .11, backup .12
//!   198.18.3.0/24 via 198.18.1.254 (neighbour never resolved)
//!   blackhole 198.18.9.0/24
//! ```
//!
//! The VIP is dual-stack: the same interfaces carry 2001:db8:a::1/64 (ext0) and
//! 2001:db8:b::1/64 (int0), with the IPv6 twins of the VIP, members and peers (`*6`),
//! outside 2001:db8:1::/64, which the differential test's IPv6 frames use.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use sipvip::datapath::{Datapath, MapSizes, MemberReach, MemberSpec, ServiceSpec, VipSpec};
use sipvip_common::{IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    frame::{mac_str, Mac},
    netns::Netns,
};

pub const EXT_MAC: Mac = [2, 0, 0, 0, 1, 1];
pub const INT_MAC: Mac = [2, 0, 0, 0, 2, 1];
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const INT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
pub const VIP_ID: u32 = 3;
pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
pub const BACKUP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 12);
pub const PRIMARY_MAC: Mac = [2, 0, 0, 2, 0, 11];
pub const BACKUP_MAC: Mac = [2, 0, 0, 2, 0, 12];

/// Group A.
pub const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const PHONE_MAC: Mac = [2, 0, 0, 1, 0, 10];
/// Group B.
pub const SBC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
pub const SBC_MAC: Mac = [2, 0, 0, 1, 0, 20];
/// Group D.
pub const TLIB: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 30);
pub const TLIB_MAC: Mac = [2, 0, 0, 1, 0, 30];
/// Group C, excluded from SNAT as a host; also inside the excluded 198.18.1.48/28.
pub const CONFIG: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
pub const CONFIG_MAC: Mac = [2, 0, 0, 1, 0, 50];
/// Inside the excluded /28 but not the excluded /32 host.
pub const EXCL_NET_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 49);
pub const EXCL_NET_HOST_MAC: Mac = [2, 0, 0, 1, 0, 49];
/// On the external link, no neighbour entry.
pub const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 77);
/// Behind a gateway whose neighbour is never resolved.
pub const REMOTE_NO_NEIGH: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 5);
/// Blackholed.
pub const BLACKHOLED: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);

// ---- IPv6 twins ----
pub const EXT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);
pub const INT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x100);
pub const PRIMARY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0x11);
pub const BACKUP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0x12);
pub const PHONE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x10);
pub const TLIB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x30);
/// Excluded as a host; also inside the excluded 2001:db8:a::48/125.
pub const CONFIG6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x50);
/// Inside the excluded /125 but not the excluded /128 host.
pub const EXCL_NET_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x49);
/// Blackholed (2001:db8:9::/48).
pub const BLACKHOLED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9);

/// Static IPv6 neighbours: (address, MAC, interface).
pub const NEIGHBOURS6: &[(Ipv6Addr, Mac, &str)] = &[
    (PHONE6, PHONE_MAC, "ext0"),
    (TLIB6, TLIB_MAC, "ext0"),
    (CONFIG6, CONFIG_MAC, "ext0"),
    (EXCL_NET_HOST6, EXCL_NET_HOST_MAC, "ext0"),
    (PRIMARY6, PRIMARY_MAC, "int0"),
    (BACKUP6, BACKUP_MAC, "int0"),
];

/// IPv6 SNAT exclusions, as the IPv4 ones.
pub const EXCLUSIONS6: &[(Ipv6Addr, u8)] = &[
    (EXT_IP6, 128),
    (INT_IP6, 128),
    (CONFIG6, 128),
    (Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x48), 125),
];

/// T-Server listening port, a pass-through port on both members.
pub const TSERVER_PORT: u16 = 3000;
/// A service with port translation: udp VIP:5080 -> member:15080.
pub const MAPPED_PORT: u16 = 5080;
pub const MAPPED_MEMBER_PORT: u16 = 15080;

/// Static neighbours: (address, MAC, interface).
pub const NEIGHBOURS: &[(Ipv4Addr, Mac, &str)] = &[
    (PHONE, PHONE_MAC, "ext0"),
    (SBC, SBC_MAC, "ext0"),
    (TLIB, TLIB_MAC, "ext0"),
    (CONFIG, CONFIG_MAC, "ext0"),
    (EXCL_NET_HOST, EXCL_NET_HOST_MAC, "ext0"),
    (PRIMARY, PRIMARY_MAC, "int0"),
    (BACKUP, BACKUP_MAC, "int0"),
];

/// SNAT exclusions: overlapping prefixes, and the gateway's own addresses (a daemon excludes
/// those so that members' replies to its monitors are never SNATed).
pub const EXCLUSIONS: &[(Ipv4Addr, u8)] = &[
    (EXT_IP, 32),
    (INT_IP, 32),
    (CONFIG, 32),
    (Ipv4Addr::new(198, 18, 1, 48), 28),
    (Ipv4Addr::new(198, 18, 200, 0), 24),
];

pub fn vip_spec() -> VipSpec {
    let svc = |proto, port, member_port| ServiceSpec {
        proto,
        port,
        member_port,
        enabled: true,
    };
    let member = |addr, addr6| MemberSpec {
        addr: Some(addr),
        addr6: Some(addr6),
        passthrough_ports: vec![TSERVER_PORT],
        ports: Vec::new(),
        local: false,
    };
    VipSpec {
        addr: Some(VIP),
        addr6: Some(VIP6),
        id: VIP_ID,
        services: vec![
            svc(IPPROTO_UDP, 5060, 5060),
            svc(IPPROTO_TCP, 5060, 5060),
            svc(IPPROTO_TCP, 5061, 5061),
            svc(IPPROTO_UDP, MAPPED_PORT, MAPPED_MEMBER_PORT),
        ],
        members: vec![member(PRIMARY, PRIMARY6), member(BACKUP, BACKUP6)],
        active: Some(0),
        snat: true,
        reach: MemberReach::Gateway,
    }
}

/// The fixture namespace with its interfaces, and the datapath loaded and programmed inside.
pub struct FixtureNet {
    pub dp: Datapath,
    pub ext_ifindex: u32,
    pub int_ifindex: u32,
    pub spec: VipSpec,
    // Dropped last: removes the namespace.
    pub ns: Netns,
}

impl FixtureNet {
    pub fn new(sizes: &MapSizes) -> Result<Self> {
        crate::netns::require_root();
        let ns = Netns::new("fx")?;
        let mut script = vec![
            "sysctl -qw net.ipv4.ip_forward=1".to_string(),
            "sysctl -qw net.ipv6.conf.all.forwarding=1".into(),
            "ip link add ext0 type veth peer name extp".into(),
            "ip link add int0 type veth peer name intp".into(),
            format!("ip link set ext0 address {}", mac_str(&EXT_MAC)),
            format!("ip link set int0 address {}", mac_str(&INT_MAC)),
            "ip link set ext0 up; ip link set extp up; ip link set int0 up; ip link set intp up"
                .into(),
            format!("ip addr add {EXT_IP}/24 dev ext0"),
            format!("ip addr add {INT_IP}/24 dev int0"),
            "ip route add 198.18.3.0/24 via 198.18.1.254".into(),
            "ip route add blackhole 198.18.9.0/24".into(),
            format!("ip -6 addr add {EXT_IP6}/64 dev ext0 nodad"),
            format!("ip -6 addr add {INT_IP6}/64 dev int0 nodad"),
            "ip -6 route add blackhole 2001:db8:9::/48".into(),
        ];
        for (ip, mac, dev) in NEIGHBOURS {
            script.push(format!(
                "ip neigh replace {ip} lladdr {} dev {dev} nud permanent",
                mac_str(mac)
            ));
        }
        for (ip, mac, dev) in NEIGHBOURS6 {
            script.push(format!(
                "ip -6 neigh replace {ip} lladdr {} dev {dev} nud permanent",
                mac_str(mac)
            ));
        }
        ns.exec(&script.join(" && "))?;
        let ext_ifindex = ns.ifindex("ext0")?;
        let int_ifindex = ns.ifindex("int0")?;
        let spec = vip_spec();
        let dp = {
            let _in = ns.enter()?;
            let mut dp = Datapath::load(sizes)?;
            program(&mut dp, ext_ifindex, int_ifindex, &spec)?;
            dp
        };
        Ok(FixtureNet {
            dp,
            ext_ifindex,
            int_ifindex,
            spec,
            ns,
        })
    }

    /// Another build's datapath (`object`), loaded in the fixture namespace and programmed
    /// as this one is (the bench compares builds on the same rows).
    pub fn load_other(&self, sizes: &MapSizes, object: &[u8]) -> Result<Datapath> {
        let _in = self.ns.enter()?;
        let mut dp = Datapath::load_object(sizes, object)?;
        program(&mut dp, self.ext_ifindex, self.int_ifindex, &self.spec)?;
        Ok(dp)
    }

    /// Runs one frame through a program as if it arrived on `ifindex`.
    pub fn run(&self, program: &'static str, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let _in = self.ns.enter()?;
        let prog = self.dp.program(program)?;
        run_xdp(prog, ifindex, frame)
    }
}

/// Programs a datapath for the fixture network: both interfaces, the VIP, the exclusions.
fn program(dp: &mut Datapath, ext_ifindex: u32, int_ifindex: u32, spec: &VipSpec) -> Result<()> {
    dp.add_egress(ext_ifindex)?;
    dp.add_egress(int_ifindex)?;
    if dp.has_ipv6() {
        dp.install_vip(spec)?;
    } else {
        let v4_only = VipSpec {
            addr6: None,
            members: spec
                .members
                .iter()
                .map(|m| MemberSpec {
                    addr6: None,
                    ..m.clone()
                })
                .collect(),
            ..spec.clone()
        };
        dp.install_vip(&v4_only)?;
    }
    for (net, len) in EXCLUSIONS {
        dp.add_exclusion((*net).into(), *len)?;
    }
    // An older build's object (the bench's baseline) has no IPv6 maps.
    if dp.has_ipv6() {
        for (net, len) in EXCLUSIONS6 {
            dp.add_exclusion((*net).into(), *len)?;
        }
    }
    Ok(())
}

/// BPF_PROG_TEST_RUN of one frame with `ingress_ifindex` set; returns the verdict and the
/// frame as the program left it.
pub fn run_xdp(prog: &Xdp, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 512];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        ..TestRunOptions::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}
