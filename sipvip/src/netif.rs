//! Facts about the host's network interfaces, read with getifaddrs(3) (netlink underneath,
//! so they are those of the current network namespace).

use std::{
    ffi::CStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// One getifaddrs entry, as far as sipvip cares.
struct Entry {
    name: String,
    /// AF_PACKET: the link-layer address.
    mac: Option<[u8; 6]>,
    /// AF_INET: the address and its prefix length.
    v4: Option<(Ipv4Addr, u32)>,
    /// AF_INET6: the address and its prefix length.
    v6: Option<(Ipv6Addr, u32)>,
}

fn entries() -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs/freeifaddrs pair; the list is only read, and every pointer is
    // checked for null before use.
    unsafe {
        let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifa) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut p = ifa;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            let name = CStr::from_ptr((*p).ifa_name).to_string_lossy().into_owned();
            let mut e = Entry {
                name,
                mac: None,
                v4: None,
                v6: None,
            };
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = a as *const libc::sockaddr_in;
                        let addr = Ipv4Addr::from((*sin).sin_addr.s_addr.to_ne_bytes());
                        let m = (*p).ifa_netmask as *const libc::sockaddr_in;
                        let len = if m.is_null() {
                            32
                        } else {
                            (*m).sin_addr.s_addr.count_ones()
                        };
                        e.v4 = Some((addr, len));
                    }
                    libc::AF_INET6 => {
                        let sin6 = a as *const libc::sockaddr_in6;
                        let m = (*p).ifa_netmask as *const libc::sockaddr_in6;
                        let len = if m.is_null() {
                            128
                        } else {
                            (*m).sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum()
                        };
                        e.v6 = Some((Ipv6Addr::from((*sin6).sin6_addr.s6_addr), len));
                    }
                    libc::AF_PACKET => {
                        let ll = a as *const libc::sockaddr_ll;
                        if (*ll).sll_halen == 6 {
                            let sll = (*ll).sll_addr;
                            e.mac = Some([sll[0], sll[1], sll[2], sll[3], sll[4], sll[5]]);
                        }
                    }
                    _ => {}
                }
            }
            out.push(e);
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifa);
    }
    Ok(out)
}

/// Every IPv4 address on this host.
pub fn local_addresses() -> Vec<Ipv4Addr> {
    entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.v4.map(|(a, _)| a))
        .collect()
}

/// Every IPv6 address on this host.
pub fn local_addresses6() -> Vec<Ipv6Addr> {
    entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.v6.map(|(a, _)| a))
        .collect()
}

/// The name of the interface with this index.
pub fn name(ifindex: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// The interface's MAC address, and its own IPv4 address: the first that is not a /32 (a
/// VIP is added as a /32), else the first.
pub fn mac_and_ipv4(ifindex: u32) -> io::Result<([u8; 6], Option<Ipv4Addr>)> {
    mac_and_addresses(ifindex).map(|(mac, a, _)| (mac, a))
}

/// The interface's Ethernet address, and its own IPv4 and global IPv6 addresses, from one
/// read of the interface list: of each family, one with a shorter prefix than a host route's
/// (a VIP added as /32 or /128 is not the interface's own), else the first; never a
/// link-local IPv6 address.
pub fn mac_and_addresses(
    ifindex: u32,
) -> io::Result<([u8; 6], Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let name = name(ifindex)?;
    let all: Vec<Entry> = entries()?.into_iter().filter(|e| e.name == name).collect();
    let mac = all.iter().find_map(|e| e.mac).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has no Ethernet address"),
        )
    })?;
    let v4: Vec<(Ipv4Addr, u32)> = all.iter().filter_map(|e| e.v4).collect();
    let addr = v4
        .iter()
        .find(|(_, len)| *len < 32)
        .or(v4.first())
        .map(|(a, _)| *a);
    let v6: Vec<(Ipv6Addr, u32)> = all
        .iter()
        .filter_map(|e| e.v6)
        .filter(|(a, _)| a.segments()[0] & 0xffc0 != 0xfe80)
        .collect();
    let addr6 = v6
        .iter()
        .find(|(_, len)| *len < 128)
        .or(v6.first())
        .map(|(a, _)| *a);
    Ok((mac, addr, addr6))
}

/// The index of the interface named `ifname`.
pub fn index_of(ifname: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(ifname)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: if_nametoindex with a valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("interface {ifname:?} does not exist"),
        )),
        i => Ok(i),
    }
}

/// The interface's own IPv4 address (as [`mac_and_ipv4`] chooses it), by name.
pub fn ipv4_of(ifname: &str) -> io::Result<Ipv4Addr> {
    mac_and_ipv4(index_of(ifname)?)?.1.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{ifname} has no IPv4 address"),
        )
    })
}

/// The interface's own global IPv6 address (as [`mac_and_addresses`] chooses it), by name.
pub fn ipv6_of(ifname: &str) -> io::Result<Ipv6Addr> {
    mac_and_addresses(index_of(ifname)?)?.2.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{ifname} has no global IPv6 address"),
        )
    })
}

/// Turns receive VLAN offload off on `ifname` (`ethtool -K IF rxvlan off
/// rx-vlan-stag-hw-parse off`), so that the NIC leaves 802.1Q/802.1ad tags in the frame
/// where XDP sees them: a tag the NIC strips into packet metadata is invisible to an XDP
/// program (short of the rx_vlan_tag kfunc, which needs device-bound programs), and a tagged
/// frame would be translated and redirected as if untagged. Returns what ethtool then
/// reports, or why the offload is still on.
pub fn rx_vlan_offload_off(ifname: &str) -> Result<(), String> {
    for feature in ["rxvlan", "rx-vlan-stag-hw-parse"] {
        // A feature the driver lacks or fixes is reported below, not here.
        let _ = std::process::Command::new("ethtool")
            .args(["-K", ifname, feature, "off"])
            .output();
    }
    let out = std::process::Command::new("ethtool")
        .args(["-k", ifname])
        .output()
        .map_err(|e| format!("cannot run ethtool: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let on: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            (l.starts_with("rx-vlan-offload:") || l.starts_with("rx-vlan-stag-hw-parse:"))
                && l.contains(": on")
        })
        .map(str::trim)
        .collect();
    if on.is_empty() {
        Ok(())
    } else {
        Err(format!("still on: {}", on.join(", ")))
    }
}

/// Adds `addr/prefix` to the interface `ifindex` with one RTM_NEWADDR over rtnetlink (what
/// `ip addr add` does, without needing the `ip` binary, which a container image from scratch
/// does not have). An address already there is not an error.
pub fn add_ipv4_address(ifindex: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    address(libc::RTM_NEWADDR, ifindex, IpAddr::V4(addr), prefix)
}

/// Removes `addr/prefix` from the interface `ifindex` (RTM_DELADDR, what `ip addr del`
/// does). An address that is not there is not an error.
pub fn remove_ipv4_address(ifindex: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    remove_address(ifindex, IpAddr::V4(addr), prefix)
}

/// Adds the IPv6 `addr/prefix` to the interface `ifindex`, without duplicate address
/// detection (`ip addr add ... nodad`): a VIP answers Neighbor Solicitations at once, and
/// the datapath, not the kernel, owns its traffic.
pub fn add_ipv6_address(ifindex: u32, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
    address(libc::RTM_NEWADDR, ifindex, IpAddr::V6(addr), prefix)
}

/// Removes an address of either family; one that is not there is not an error.
pub fn remove_address(ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    match address(libc::RTM_DELADDR, ifindex, addr, prefix) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        r => r,
    }
}

/// One RTM_NEWADDR or RTM_DELADDR request, and its acknowledgement.
fn address(op: u16, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    // struct nlmsghdr (16) + struct ifaddrmsg (8) + IFA_LOCAL and IFA_ADDRESS (4 + the
    // address each).
    const NLMSG_HDR: usize = 16;
    const IFADDRMSG: usize = 8;
    /// IFA_F_NODAD (linux/if_addr.h).
    const NODAD: u8 = 0x02;
    let (family, octets, flags6): (i32, Vec<u8>, u8) = match addr {
        IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec(), 0),
        IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec(), NODAD),
    };
    let rta = 4 + octets.len();
    let len = NLMSG_HDR + IFADDRMSG + 2 * rta;
    let mut msg = vec![0u8; len];
    let flags = if op == libc::RTM_NEWADDR {
        libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL
    } else {
        libc::NLM_F_REQUEST | libc::NLM_F_ACK
    } as u16;
    msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&op.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
    let ifa = NLMSG_HDR;
    msg[ifa] = family as u8;
    msg[ifa + 1] = prefix;
    msg[ifa + 2] = flags6;
    msg[ifa + 3] = libc::RT_SCOPE_UNIVERSE;
    msg[ifa + 4..ifa + 8].copy_from_slice(&ifindex.to_ne_bytes());
    for (i, ty) in [libc::IFA_LOCAL, libc::IFA_ADDRESS].into_iter().enumerate() {
        let at = NLMSG_HDR + IFADDRMSG + i * rta;
        msg[at..at + 2].copy_from_slice(&(rta as u16).to_ne_bytes());
        msg[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
        msg[at + 4..at + rta].copy_from_slice(&octets);
    }
    // SAFETY: a netlink socket, used for one request and its acknowledgement, then closed.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            let sent = libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = [0u8; 1024];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            // The acknowledgement: NLMSG_ERROR with the request's errno (0: done).
            let n = n as usize;
            if n < NLMSG_HDR + 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short netlink reply",
                ));
            }
            let ty = u16::from_ne_bytes([buf[4], buf[5]]);
            if ty != libc::NLMSG_ERROR as u16 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected netlink reply type {ty}"),
                ));
            }
            let errno = -i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            match errno {
                0 | libc::EEXIST => Ok(()),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        })();
        libc::close(fd);
        result
    }
}

/// The interface the kernel's main table routes `addr` out of (the longest prefix of
/// /proc/net/route that covers it), or None when no route does. A local address is not in
/// that table: ask [`local_addresses`] first.
pub fn route_interface(addr: Ipv4Addr) -> io::Result<Option<String>> {
    Ok(route_in(&std::fs::read_to_string("/proc/net/route")?, addr))
}

/// The interface the kernel routes the IPv6 `addr` out of (the longest prefix of
/// /proc/net/ipv6_route that covers it, local routes included: a local address routes
/// out of `lo`), or None when no route does.
pub fn route_interface6(addr: Ipv6Addr) -> io::Result<Option<String>> {
    Ok(route6_in(
        &std::fs::read_to_string("/proc/net/ipv6_route")?,
        addr,
    ))
}

/// The interface the kernel routes `addr` out of, in either family.
pub fn route_interface_ip(addr: IpAddr) -> io::Result<Option<String>> {
    match addr {
        IpAddr::V4(a) => route_interface(a),
        IpAddr::V6(a) => route_interface6(a),
    }
}

/// [`route_interface6`] over the text of /proc/net/ipv6_route: `destination prefix_len
/// source source_len next_hop metric refcnt use flags device`, addresses as 32 hex digits,
/// the prefix length and metric in hex.
fn route6_in(table: &str, addr: Ipv6Addr) -> Option<String> {
    let a = u128::from(addr);
    let mut best: Option<(u32, u32, String)> = None;
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dst), Some(len), Some(metric), Some(ifc)) =
            (f.first(), f.get(1), f.get(5), f.get(9))
        else {
            continue;
        };
        let (Ok(dst), Ok(len), Ok(metric)) = (
            u128::from_str_radix(dst, 16),
            u32::from_str_radix(len, 16),
            u32::from_str_radix(metric, 16),
        ) else {
            continue;
        };
        if len > 128 {
            continue;
        }
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        if a & mask != dst & mask {
            continue;
        }
        let better = match &best {
            None => true,
            Some((l, m, _)) => len > *l || (len == *l && metric < *m),
        };
        if better {
            best = Some((len, metric, (*ifc).to_string()));
        }
    }
    best.map(|(_, _, i)| i)
}

/// [`route_interface`] over the text of /proc/net/route: a header line, then `Iface
/// Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses in host-order hex of
/// their network-order bytes.
fn route_in(table: &str, addr: Ipv4Addr) -> Option<String> {
    let a = u32::from_ne_bytes(addr.octets());
    let mut best: Option<(u32, u32, String)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(ifc), Some(dst), Some(metric), Some(mask)) =
            (f.first(), f.get(1), f.get(6), f.get(7))
        else {
            continue;
        };
        let (Ok(dst), Ok(mask), Ok(metric)) = (
            u32::from_str_radix(dst, 16),
            u32::from_str_radix(mask, 16),
            metric.parse::<u32>(),
        ) else {
            continue;
        };
        if a & mask != dst {
            continue;
        }
        let len = mask.count_ones();
        let better = match &best {
            None => true,
            Some((l, m, _)) => len > *l || (len == *l && metric < *m),
        };
        if better {
            best = Some((len, metric, (*ifc).to_string()));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_routes() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000112C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            veth1\t0B0212C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
        let r = |a: [u8; 4]| route_in(table, Ipv4Addr::from(a));
        assert_eq!(r([198, 18, 2, 11]).as_deref(), Some("veth1"));
        assert_eq!(r([198, 18, 1, 7]).as_deref(), Some("eth0"));
        assert_eq!(r([203, 0, 113, 1]).as_deref(), Some("eth0"));
        assert_eq!(route_in("Iface\n", Ipv4Addr::new(198, 18, 1, 1)), None);
    }

    #[test]
    fn the_longest_ipv6_prefix_routes() {
        let table = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000100000000000000000001 00000400 00000001 00000000 00000003     eth0
20010db8000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
20010db8000200000000000000000011 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001    veth1
20010db8000100000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
";
        let r = |a: &str| route6_in(table, a.parse().unwrap());
        assert_eq!(r("2001:db8:2::11").as_deref(), Some("veth1"));
        assert_eq!(r("2001:db8:1::7").as_deref(), Some("eth0"));
        assert_eq!(r("2001:db8:1::1").as_deref(), Some("lo"));
        assert_eq!(
            r("2001:db8:99::1").as_deref(),
            Some("eth0"),
            "the default route"
        );
        assert_eq!(route6_in("", "2001:db8::1".parse().unwrap()), None);
    }
}
