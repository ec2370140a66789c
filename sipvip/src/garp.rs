//! Gratuitous ARP for a VIP, so switches and neighbours learn (again) where it lives after a
//! failover, and before their ARP and FDB entries age out.

use std::{io, net::Ipv4Addr};

const ETH_P_ARP: u16 = 0x0806;

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

/// Sends one gratuitous ARP for `vip` out of `ifname`.
pub fn send(ifname: &str, vip: Ipv4Addr) -> io::Result<()> {
    let mac = mac_of(ifname)?;
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
            i32::from(ETH_P_ARP.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let f = frame(mac, vip);
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
}
