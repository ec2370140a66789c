//! What a VIP is, as the datapath's map records.

use std::net::Ipv4Addr;

use sipvip_common::{
    MemberRecord, Service, VipRecord, MAX_MEMBERS, MAX_PASSTHROUGH_PORTS, MAX_SERVICES,
    MEMBER_F_SNAT,
};

use super::{be16, be32, DatapathError, Result};

/// One service of a VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `sipvip_common::IPPROTO_UDP` or `IPPROTO_TCP`.
    pub proto: u8,
    pub port: u16,
    /// The port on the member; usually the same as `port`.
    pub member_port: u16,
    pub enabled: bool,
}

/// One pool member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub addr: Ipv4Addr,
    /// Source ports never SNATed (T-Server listening ports and the like).
    pub passthrough_ports: Vec<u16>,
}

/// Everything the datapath needs to know about one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub addr: Ipv4Addr,
    /// Index of the VIP's counters; unique per VIP, below `MapSizes::vips`.
    pub id: u32,
    pub services: Vec<ServiceSpec>,
    /// In slot order: members[i] counts in slot i.
    pub members: Vec<MemberSpec>,
    /// Index into `members` of the active member, or None (traffic dropped).
    pub active: Option<usize>,
    /// Whether members' outbound traffic is SNATed to the VIP.
    pub snat: bool,
}

impl VipSpec {
    pub(super) fn check(&self) -> Result<()> {
        let bad = |what: String| DatapathError::Invalid {
            vip: self.addr,
            what,
        };
        if self.services.len() > MAX_SERVICES {
            return Err(bad(format!(
                "{} services, at most {MAX_SERVICES}",
                self.services.len()
            )));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(bad(format!(
                "{} members, at most {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        // The datapath stops at the first unused slot: services and pass-through ports must be
        // packed, with no protocol 0 or port 0 among them.
        if let Some(sv) = self
            .services
            .iter()
            .find(|sv| sv.proto == 0 || sv.port == 0)
        {
            return Err(bad(format!(
                "service {}/{}: protocol and port must be non-zero",
                sv.proto, sv.port
            )));
        }
        for m in &self.members {
            if m.passthrough_ports.contains(&0) {
                return Err(bad(format!("member {}: pass-through port 0", m.addr)));
            }
            if m.passthrough_ports.len() > MAX_PASSTHROUGH_PORTS {
                return Err(bad(format!(
                    "member {}: {} pass-through ports, at most {MAX_PASSTHROUGH_PORTS}",
                    m.addr,
                    m.passthrough_ports.len()
                )));
            }
        }
        if let Some(a) = self.active {
            if a >= self.members.len() {
                return Err(bad(format!("active member index {a} out of range")));
            }
        }
        Ok(())
    }

    fn services(&self) -> [Service; MAX_SERVICES] {
        let mut out = [Service::default(); MAX_SERVICES];
        for (o, s) in out.iter_mut().zip(&self.services) {
            *o = Service {
                proto: s.proto,
                enabled: u8::from(s.enabled),
                _pad: 0,
                port_be: be16(s.port),
                member_port_be: be16(s.member_port),
            };
        }
        out
    }

    /// The VIP record with `active` as the active member.
    /// The VIP's record with `active` steered to and `draining` keeping the TCP connections
    /// it had (both member slots).
    pub fn record(&self, active: Option<usize>, draining: Option<usize>) -> VipRecord {
        let member = |m: Option<usize>| match m {
            Some(i) => (be32(self.members[i].addr), i as u32),
            None => (0, 0),
        };
        let (active_be, active_slot) = member(active);
        let (draining_be, draining_slot) = member(draining.filter(|d| Some(*d) != active));
        VipRecord {
            vip_id: self.id,
            active_be,
            active_slot,
            flags: 0,
            draining_be,
            draining_slot,
            services: self.services(),
        }
    }

    pub fn member_record(&self, slot: usize) -> MemberRecord {
        let m = &self.members[slot];
        let mut pt = [0u16; MAX_PASSTHROUGH_PORTS];
        for (o, p) in pt.iter_mut().zip(&m.passthrough_ports) {
            *o = be16(*p);
        }
        MemberRecord {
            vip_be: be32(self.addr),
            vip_id: self.id,
            slot: slot as u32,
            flags: if self.snat { MEMBER_F_SNAT } else { 0 },
            services: self.services(),
            passthrough_ports_be: pt,
        }
    }
}
