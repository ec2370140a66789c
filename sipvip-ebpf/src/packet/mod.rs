//! Parsing, per family: offsets and fields the rules read. Nothing here writes the packet or
//! reads a map. Each family has its module ([`ipv4`], [`ipv6`]) and parses into the same
//! shape, [`Ip`], with its own address type, so the rules are written once and neither
//! family pays for the other's addresses.

pub mod ipv4;
pub mod ipv6;
pub mod plain;

use sipvip_common::{Ipv6Be, Reason, IPPROTO_TCP, IPPROTO_UDP};

use crate::{family::Family, hook::Frame};

/// A parsed IPv4 or IPv6 packet: where the headers are, as offsets from the start of the
/// frame, and the fields the rules decide on. `A` is the address (`u32` or [`Ipv6Be`], in
/// network order).
pub struct Ip<A> {
    pub l3: usize,
    /// The upper-layer header (after IPv4 options or IPv6 extension headers).
    pub l4: usize,
    pub vlan: bool,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TTL, or the IPv6 hop limit.
    pub ttl: u8,
    /// Type of service, or the IPv6 traffic class.
    pub tos: u8,
    /// The IP datagram's length from `l3` (IPv4 total length; IPv6 40 + payload length),
    /// host order.
    pub tot_len: u16,
    /// The fragment identification as loaded (IPv4: 16 bits, zero-extended; IPv6: the
    /// fragment header's 32 bits); 0 for an unfragmented IPv6 packet.
    pub id_be: u32,
    /// Fragment offset in 8-byte units (host order); 0 for the first or only fragment.
    pub frag_offset: u16,
    pub more_frags: bool,
    /// Don't Fragment (always set for IPv6, which routers never fragment).
    pub df: bool,
    pub src_be: A,
    pub dst_be: A,
    /// The frame length, for byte counters.
    pub len: u32,
}

impl<A: Copy> Ip<A> {
    /// The source address. An IPv6 address is read from the parsed packet where it is used
    /// (a volatile read of memory that stays put), not held in four registers across every
    /// helper call: held, the two addresses' words are spilled one by one, and the frame
    /// goes past the 512 bytes of stack the verifier allows.
    #[inline(always)]
    pub fn src(&self) -> A {
        if core::mem::size_of::<A>() > 4 {
            // SAFETY: a field of a live value.
            unsafe { core::ptr::read_volatile(&self.src_be) }
        } else {
            self.src_be
        }
    }

    /// The destination address; see [`Ip::src`].
    #[inline(always)]
    pub fn dst(&self) -> A {
        if core::mem::size_of::<A>() > 4 {
            // SAFETY: a field of a live value.
            unsafe { core::ptr::read_volatile(&self.dst_be) }
        } else {
            self.dst_be
        }
    }

    /// True for a later fragment (no L4 header).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }
}

pub type Ipv4 = Ip<u32>;
pub type Ipv6 = Ip<Ipv6Be>;

/// Where a frame's IP header is: its offset, whether an 802.1Q tag precedes it, and its
/// family.
pub struct L3 {
    pub off: usize,
    pub vlan: bool,
    pub v6: bool,
}

/// Parses Ethernet and one optional 802.1Q tag. Non-IP frames are `PassNotIpv4`.
#[inline(always)]
pub fn l3<F: Frame>(f: &F) -> Result<L3, Reason> {
    let mut ethertype: u16 = f.load(12).map_err(|_| Reason::DropMalformedEth)?;
    let mut l3 = ETH_HLEN;
    let mut vlan = false;
    if ethertype == ETH_P_8021Q_BE {
        ethertype = f.load(ETH_HLEN + 2).map_err(|_| Reason::DropMalformedEth)?;
        l3 = ETH_HLEN + VLAN_HLEN;
        vlan = true;
    }
    let v6 = ethertype == ETH_P_IPV6_BE;
    if ethertype != ETH_P_IP_BE && !v6 {
        return Err(Reason::PassNotIpv4);
    }
    Ok(L3 { off: l3, vlan, v6 })
}

/// Source and destination ports (network order) of a TCP or UDP header at `l4`, checking that
/// the header the datapath rewrites (8 bytes for UDP, 20 for TCP) is present in the frame and
/// the datagram. A UDP checksum of 0 over IPv6 is a counted drop (RFC 8200, 8.1).
#[inline(always)]
pub fn ports<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<(u16, u16), Reason> {
    let need = match p.proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return Err(Reason::DropTruncatedL4),
    };
    // The L4 header must lie inside the IP datagram as well as inside the frame.
    if p.l4 + need > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    // The whole header is bounds-checked, and only the words read are loaded (a volatile
    // load of the header would load every word).
    let e = |_| Reason::DropTruncatedL4;
    let ports: *const [u16; 2] = if p.proto == IPPROTO_TCP {
        f.ptr_at::<[u16; 10]>(p.l4).map_err(e)?.cast()
    } else {
        let h = f.ptr_at::<[u16; 4]>(p.l4).map_err(e)?;
        // SAFETY: inside the frame (checked by ptr_at), 2-byte aligned (see `Frame::load`).
        if A::V6 && unsafe { core::ptr::read_volatile(&(*h)[3]) } == 0 {
            return Err(Reason::DropUdpNoCsum);
        }
        h.cast()
    };
    // SAFETY: as above: the first two words of the checked header.
    let [sport, dport] = unsafe { core::ptr::read_volatile(ports) };
    Ok((sport, dport))
}

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// 0x0800 and 0x8100 as loaded from packet memory (network order).
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const ETH_P_8021Q_BE: u16 = 0x8100u16.to_be();
/// 0x86dd as loaded from packet memory.
pub const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
