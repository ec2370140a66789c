//! Gratuitous ARP for a VIP, and for a dual-stack VIP's IPv6 address an unsolicited Neighbor
//! Advertisement (RFC 4861, 7.2.6, with the Override flag), so switches and neighbours learn
//! (again) where it lives after a failover, and before their ARP, neighbour and FDB entries
//! age out.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// The interface's MAC address (SIOCGIFHWADDR, in the caller's network namespace).
pub fn mac_of(ifname: &str) -> io::Result<[u8; 6]> {
    // SAFETY: an ioctl on a throwaway datagram socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr
            .ifr_name
            .iter_mut()
            .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
        let sa = ifr.ifr_ifru.ifru_hwaddr.sa_data;
        Ok([
            sa[0] as u8,
            sa[1] as u8,
            sa[2] as u8,
            sa[3] as u8,
            sa[4] as u8,
            sa[5] as u8,
        ])
    }
}

/// The gratuitous ARP request frame for `vip` from `mac` (RFC 5227 announcement form).
pub fn frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    // Target hardware address zero, target protocol address the VIP itself.
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// The unsolicited Neighbor Advertisement for `vip` from `mac`: to all nodes (ff02::1), hop
/// limit 255, Override set and Solicited clear, with the target link-layer address option
/// (RFC 4861, 4.4 and 7.2.6).
pub fn na_frame(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&vip.octets());
    add(&all_nodes.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Sends one gratuitous ARP for `vip` out of `ifname`.
pub fn send(ifname: &str, vip: Ipv4Addr) -> io::Result<()> {
    let mac = mac_of(ifname)?;
    send_frame(ifname, ETH_P_ARP, [0xff; 6], &frame(mac, vip))
}

/// Sends one unsolicited Neighbor Advertisement for `vip` out of `ifname`.
pub fn send_na(ifname: &str, vip: Ipv6Addr) -> io::Result<()> {
    let mac = mac_of(ifname)?;
    send_frame(
        ifname,
        ETH_P_IPV6,
        [0x33, 0x33, 0, 0, 0, 1],
        &na_frame(mac, vip),
    )
}

/// Sends a whole Ethernet frame out of `ifname` (a packet socket).
fn send_frame(ifname: &str, ethertype: u16, dst: [u8; 6], f: &[u8]) -> io::Result<()> {
    let name =
        std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscalls with valid buffers on a descriptor closed before returning.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ethertype.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst);
        let rc = libc::sendto(
            fd,
            f.as_ptr().cast(),
            f.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_frame() {
        let f = frame([2, 0, 0, 0, 1, 1], Ipv4Addr::new(198, 18, 1, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 1, 1]);
        assert_eq!(&f[28..32], &[198, 18, 1, 100], "sender = VIP");
        assert_eq!(&f[38..42], &[198, 18, 1, 100], "target = VIP");
    }

    #[test]
    fn unsolicited_neighbor_advertisement_frame() {
        let vip: Ipv6Addr = "2001:db8:a::100".parse().unwrap();
        let f = na_frame([2, 0, 0, 0, 1, 1], vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1], "all nodes");
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        assert_eq!(&f[22..38], &vip.octets(), "source = VIP");
        assert_eq!((f[54], f[58]), (136, 0x20), "advertisement, Override");
        assert_eq!(&f[62..78], &vip.octets(), "target = VIP");
        assert_eq!(
            &f[78..86],
            &[2, 1, 2, 0, 0, 0, 1, 1],
            "target link-layer address"
        );
        // The checksum over the pseudo-header and the message is 0xffff.
        let mut sum: u32 = 0;
        let words = |b: &[u8]| -> u32 {
            b.chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum()
        };
        sum += words(&f[22..54]) + 32 + 58 + words(&f[54..]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
