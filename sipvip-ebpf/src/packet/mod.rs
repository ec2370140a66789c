//! Parsing, per family: offsets and fields the rules read. Nothing here writes the packet or
//! reads a map. IPv4 today ([`ipv4`]); IPv6 gets a module of its own beside it, parsed into a
//! packet of its own, so neither family pays for the other.

pub mod ipv4;
pub mod ipv6;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// 0x0800 and 0x8100 as loaded from packet memory (network order).
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const ETH_P_8021Q_BE: u16 = 0x8100u16.to_be();
/// 0x86dd as loaded from packet memory.
pub const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
