//! Incremental Internet checksum arithmetic (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')), shared
//! by `apply` (which rewrites) and the hooks (which store a TCP/UDP checksum as their context
//! requires: see [`crate::hook::Frame::update_l4_csum`]).
//!
//! All values are 16-bit words exactly as loaded from packet memory. One's-complement sums are
//! byte-order independent (RFC 1071), so no byte swapping is needed.

/// An accumulated difference: the sum of `~old + new` over every changed 16-bit word.
#[derive(Clone, Copy)]
pub struct Delta(u32);

impl core::ops::Add for Delta {
    type Output = Delta;
    #[inline(always)]
    fn add(self, o: Delta) -> Delta {
        Delta(self.0 + o.0)
    }
}

impl Delta {
    #[inline(always)]
    pub const fn new() -> Self {
        Delta(0)
    }

    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// The accumulated sum, to keep for later packets.
    #[inline(always)]
    pub fn raw(self) -> u32 {
        self.0
    }

    /// A 32-bit field (an IPv4 address) as two words.
    #[inline(always)]
    pub fn addr(&mut self, old: u32, new: u32) {
        self.word(old as u16, new as u16);
        self.word((old >> 16) as u16, (new >> 16) as u16);
    }

    /// The difference as a 32-bit one's-complement partial sum (a `__wsum`), for the skb
    /// checksum helpers.
    #[inline(always)]
    pub fn wsum(self) -> u32 {
        u32::from(fold(self.0))
    }

    /// Whether nothing changed.
    #[inline(always)]
    pub fn is_empty(self) -> bool {
        fold(self.0) == 0 || fold(self.0) == 0xffff
    }

    /// Applies the difference to a checksum field.
    #[inline(always)]
    pub fn apply(self, csum: u16) -> u16 {
        !fold(u32::from(!csum) + self.0)
    }

    /// Applies the difference to a TCP (`udp` false) or UDP checksum.
    #[inline(always)]
    pub fn apply_l4(self, udp: bool, csum: u16) -> u16 {
        if udp {
            self.apply_udp(csum)
        } else {
            self.apply(csum)
        }
    }

    /// Applies the difference to a UDP checksum: 0 means "no checksum" and stays 0, and a
    /// computed 0 is sent as 0xffff (RFC 768).
    #[inline(always)]
    pub fn apply_udp(self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }
}

/// A difference folded to 16 bits ahead of the packet (the flow cache keeps its deltas so:
/// `fold` of the raw sum), applied with one carry (`sipvip_common::csum_update_folded`).
#[derive(Clone, Copy)]
pub struct Folded(pub u16);

impl Folded {
    /// Applies the difference to a checksum field.
    #[inline(always)]
    pub fn apply(self, csum: u16) -> u16 {
        sipvip_common::csum_update_folded(csum, self.0)
    }

    /// Applies the difference to a TCP (`udp` false) or UDP checksum, as `Delta::apply_l4`.
    #[inline(always)]
    pub fn apply_l4(self, udp: bool, csum: u16) -> u16 {
        if !udp {
            return self.apply(csum);
        }
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }
}

#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}
