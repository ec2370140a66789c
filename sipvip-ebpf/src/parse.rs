//! One parse per packet: Ethernet, one optional 802.1Q tag, IPv4 (with options), and the
//! offsets of the L4 header. Every access is bounds-checked against `data_end`.

use aya_ebpf::programs::XdpContext;
use sipvip_common::{iface_slot, Iface, Reason, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::maps::IFACES;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// 0x0800 and 0x8100 as loaded from packet memory (network order).
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_8021Q_BE: u16 = 0x8100u16.to_be();

/// A mask no header offset we use exceeds (the deepest is a quoted TCP checksum, < 200).
const MAX_OFFSET: usize = 0x3ff;

pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

// IPv4 header field offsets.
pub const IP_TTL: usize = 8;
pub const IP_CSUM: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;

/// Where the parsed headers are, as offsets from the start of the frame.
pub struct Packet {
    pub l3: usize,
    pub l4: usize,
    pub vlan: bool,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    /// Host order.
    pub tot_len: u16,
    pub id_be: u16,
    /// Fragment offset in 8-byte units (host order); 0 for the first or only fragment.
    pub frag_offset: u16,
    pub more_frags: bool,
    /// Don't Fragment.
    pub df: bool,
    pub src_be: u32,
    pub dst_be: u32,
    /// The frame length, for byte counters.
    pub len: u32,
}

impl Packet {
    /// True for a later fragment (no L4 header).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }
}

/// A pointer to a `T` at `off` bytes into the frame, if it lies wholly inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, ()> {
    // Volatile context reads give every access its own packet pointer and its own check:
    // LLVM cannot then drop a check it deems implied by another one, which the verifier
    // (tracking ranges per register) would reject.
    // SAFETY: reading the xdp_md fields the kernel provides.
    let (start, end) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    };
    // Bounds the offset for the verifier, which may have lost track of it across spills.
    // Every header we touch starts within the first MAX_OFFSET bytes.
    let off = off & MAX_OFFSET;
    if start + off + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + off) as *mut T)
}

/// Loads a `T` from the frame.
///
/// The read is volatile so that it happens right after its bounds check: otherwise LLVM may
/// re-read packet memory later through a register the verifier has not bounds-checked.
/// Every `T` loaded is at most 2-byte aligned and every offset is even (headers start at 14,
/// 18 or an IHL multiple of 4 beyond), so the pointer is suitably aligned.
#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Result<T, ()> {
    const { assert!(core::mem::align_of::<T>() <= 2) };
    // SAFETY: ptr_at checked that the whole T is inside the packet; see above for alignment.
    Ok(unsafe { core::ptr::read_volatile(ptr_at::<T>(ctx, off)?) })
}

/// Stores a `T` into the frame; the same alignment rules as [`load`] apply.
#[inline(always)]
pub fn store<T: Copy>(ctx: &XdpContext, off: usize, v: T) -> Result<(), ()> {
    const { assert!(core::mem::align_of::<T>() <= 2) };
    // SAFETY: ptr_at checked that the whole T is inside the packet; see `load` for alignment.
    unsafe { core::ptr::write_volatile(ptr_at::<T>(ctx, off)?, v) };
    Ok(())
}

/// The L2 acceptance rule, before anything else: only a frame addressed to the MAC of the
/// interface it arrived on may be translated. Broadcast and multicast frames, frames for
/// another host (unknown-unicast flooding, mirror ports) and frames on an interface the
/// datapath does not know go to the kernel untouched.
#[inline(always)]
pub fn accept(ctx: &XdpContext) -> Result<(), Reason> {
    let dmac: [u16; 3] = load(ctx, 0).map_err(|_| Reason::DropMalformedEth)?;
    if dmac[0].to_ne_bytes()[0] & 1 != 0 {
        return Err(Reason::PassL2Multicast);
    }
    let Some(ifc) = iface(ctx) else {
        return Err(Reason::PassOtherHost);
    };
    let m = ifc.mac;
    let own = [
        u16::from_ne_bytes([m[0], m[1]]),
        u16::from_ne_bytes([m[2], m[3]]),
        u16::from_ne_bytes([m[4], m[5]]),
    ];
    if dmac != own {
        return Err(Reason::PassOtherHost);
    }
    Ok(())
}

/// The record of the interface the frame arrived on, if the datapath knows it.
#[inline(always)]
pub fn iface(ctx: &XdpContext) -> Option<&'static Iface> {
    // SAFETY: reading the context's ingress ifindex.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    IFACES
        .get(iface_slot(ifindex))
        .filter(|i| i.ifindex == ifindex)
}

/// Martian addresses are dropped, and broadcast or multicast destinations passed untouched,
/// before any rule, on both sides.
#[inline(always)]
pub fn screen(p: &Packet) -> Result<(), Reason> {
    let s = p.src_be.to_ne_bytes()[0];
    let d = p.dst_be.to_ne_bytes();
    // Sources: 0/8, 127/8, and 224/3 (multicast, reserved, 255.255.255.255).
    if s == 0 || s == 127 || s >= 224 {
        return Err(Reason::DropMartian);
    }
    if d[0] == 0 || d[0] == 127 {
        return Err(Reason::DropMartian);
    }
    if (224..240).contains(&d[0]) || p.dst_be == u32::MAX {
        return Err(Reason::PassBroadcast);
    }
    Ok(())
}

/// Parses up to the L4 header offset.
///
/// Non-IPv4 frames are `PassNotIpv4`; broken headers are counted drops.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Reason> {
    let len = (ctx.data_end() - ctx.data()) as u32;
    let mut ethertype: u16 = load(ctx, 12).map_err(|_| Reason::DropMalformedEth)?;
    let mut l3 = ETH_HLEN;
    let mut vlan = false;
    if ethertype == ETH_P_8021Q_BE {
        ethertype = load(ctx, ETH_HLEN + 2).map_err(|_| Reason::DropMalformedEth)?;
        l3 = ETH_HLEN + VLAN_HLEN;
        vlan = true;
    }
    if ethertype != ETH_P_IP_BE {
        return Err(Reason::PassNotIpv4);
    }
    // The fixed 20-byte header must be present. It is loaded as ten 16-bit words (headers
    // are 2-byte aligned), which is half the loads of a byte array.
    let h: [u16; 10] = load(ctx, l3).map_err(|_| Reason::DropMalformedIp)?;
    let [ver_ihl, tos] = h[0].to_ne_bytes();
    if ver_ihl >> 4 != 4 {
        return Err(Reason::DropMalformedIp);
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::DropMalformedIp);
    }
    let tot_len = u16::from_be(h[1]);
    let avail = (len as usize).saturating_sub(l3);
    if (tot_len as usize) < ihl || tot_len as usize > avail {
        return Err(Reason::DropMalformedIp);
    }
    let frag = u16::from_be(h[3]);
    let [ttl, proto] = h[4].to_ne_bytes();
    Ok(Packet {
        l3,
        l4: l3 + ihl,
        vlan,
        proto,
        ttl,
        tos,
        tot_len,
        id_be: h[2],
        frag_offset: frag & IP_OFFSET_MASK,
        more_frags: frag & IP_MF != 0,
        df: frag & IP_DF != 0,
        src_be: addr(h[6], h[7]),
        dst_be: addr(h[8], h[9]),
        len,
    })
}

/// An address from its two words as loaded from packet memory (network order kept).
#[inline(always)]
fn addr(hi: u16, lo: u16) -> u32 {
    let (a, b) = (hi.to_ne_bytes(), lo.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// Stores a MAC address as three 16-bit words (Ethernet addresses are 2-byte aligned).
#[inline(always)]
pub fn store_mac(ctx: &XdpContext, off: usize, m: [u8; 6]) -> Result<(), ()> {
    let w = [
        u16::from_ne_bytes([m[0], m[1]]),
        u16::from_ne_bytes([m[2], m[3]]),
        u16::from_ne_bytes([m[4], m[5]]),
    ];
    store(ctx, off, w)
}

/// Stores an address (network order, as parsed) as two 16-bit words.
#[inline(always)]
pub fn store_addr(ctx: &XdpContext, off: usize, addr_be: u32) -> Result<(), ()> {
    let b = addr_be.to_ne_bytes();
    let w = [
        u16::from_ne_bytes([b[0], b[1]]),
        u16::from_ne_bytes([b[2], b[3]]),
    ];
    store(ctx, off, w)
}

/// Source and destination ports (network order) of a TCP or UDP header at `l4`, checking that
/// the header the datapath rewrites (8 bytes for UDP, 20 for TCP) is present in the frame.
#[inline(always)]
pub fn ports(ctx: &XdpContext, p: &Packet) -> Result<(u16, u16), Reason> {
    let need = match p.proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return Err(Reason::DropTruncatedL4),
    };
    // The L4 header must lie inside the IP datagram as well as inside the frame.
    if p.l4 + need > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    let (sport, dport): (u16, u16) = if p.proto == IPPROTO_TCP {
        let h: [u16; 10] = load(ctx, p.l4).map_err(|_| Reason::DropTruncatedL4)?;
        (h[0], h[1])
    } else {
        let h: [u16; 4] = load(ctx, p.l4).map_err(|_| Reason::DropTruncatedL4)?;
        (h[0], h[1])
    };
    Ok((sport, dport))
}

/// Offset of the L4 checksum field from the L4 header, for the protocols we rewrite.
#[inline(always)]
pub fn l4_csum_offset(proto: u8) -> usize {
    match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        IPPROTO_ICMP => 2,
        _ => 0,
    }
}
