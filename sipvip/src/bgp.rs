//! Scale-out behind ECMP: every gateway announces the VIPs it can serve to the upstream
//! router with BGP, through a routing daemon the operator runs (BIRD 2). sipvip writes the
//! routes into a file the daemon includes and asks it to reload; it speaks no routing
//! protocol itself. A gateway announces a VIP's addresses while its datapath is healthy and
//! the VIP has an active member that is up; otherwise it withdraws them, and the router
//! (BFD for a dead gateway) takes it out of the ECMP set.

use std::net::IpAddr;

/// Whether VIP `i` is announced: a healthy datapath, and an active member that is up.
pub fn announces(healthy: bool, active_up: Option<bool>) -> bool {
    healthy && active_up == Some(true)
}

/// The members' subnets are announced while the datapath is healthy.
pub fn announces_members(healthy: bool) -> bool {
    healthy
}

/// The routes file, BIRD 2 syntax: one static protocol per family (`sipvip4`, `sipvip6`)
/// with an `unreachable` route for each announced prefix (a VIP's address, a members'
/// subnet). bird.conf includes the file and exports these routes with BGP (`next hop
/// self`), never to the kernel.
pub fn render_bird(routes: &[(IpAddr, u8)]) -> String {
    let mut out = String::from(
        "# Written by sipvip: the VIP addresses this gateway announces (docs/operations.md,\n\
         # \"Scale-out with BGP and ECMP\"). Export with BGP only, never to the kernel.\n",
    );
    for (name, v4) in [("sipvip4", true), ("sipvip6", false)] {
        out.push_str(&format!(
            "protocol static {name} {{\n    {};\n",
            if v4 { "ipv4" } else { "ipv6" }
        ));
        for (a, len) in routes.iter().filter(|(a, _)| a.is_ipv4() == v4) {
            out.push_str(&format!("    route {a}/{len} unreachable;\n"));
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_is_announced_while_it_can_be_served() {
        assert!(announces(true, Some(true)));
        assert!(!announces(false, Some(true)), "datapath broken");
        assert!(!announces(true, Some(false)), "the active member is down");
        assert!(!announces(true, None), "no active member");
        assert!(announces_members(true));
        assert!(!announces_members(false), "datapath broken");
    }

    #[test]
    fn the_routes_file_has_one_static_protocol_per_family() {
        let f = render_bird(&[
            ("198.18.1.100".parse().unwrap(), 32),
            ("2001:db8:1::100".parse().unwrap(), 128),
            ("198.18.2.0".parse().unwrap(), 24),
        ]);
        assert!(
            f.contains(
                "protocol static sipvip4 {\n    ipv4;\n    route 198.18.1.100/32 unreachable;\n    route 198.18.2.0/24 unreachable;\n}"
            ),
            "{f}"
        );
        assert!(f.contains("protocol static sipvip6 {\n    ipv6;\n    route 2001:db8:1::100/128 unreachable;\n}"), "{f}");
        // Nothing announced: both protocols stay, empty (the include still parses).
        let empty = render_bird(&[]);
        assert!(
            empty.contains("protocol static sipvip4 {\n    ipv4;\n}"),
            "{empty}"
        );
    }
}
