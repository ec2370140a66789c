//! What a VIP is, as the datapath's map records.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sipvip_common::{
    ipv6_be, Ipv6Be, MemberRecord, Service, VipRecord, MAX_MEMBERS, MAX_PASSTHROUGH_PORTS,
    MAX_SERVICES, MEMBER_F_SERVICE_ONLY, MEMBER_F_SNAT, VIP_F_LOCAL, VIP_F_REDIRECT,
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
    /// The member's IPv4 address (a VIP with an IPv4 address: its members have one).
    pub addr: Option<Ipv4Addr>,
    /// The member's IPv6 address (a VIP with an IPv6 address: its members have one).
    pub addr6: Option<Ipv6Addr>,
    /// Source ports never SNATed (T-Server listening ports and the like).
    pub passthrough_ports: Vec<u16>,
    /// The member's port for each of the VIP's services (by index), where it differs from
    /// the service's `member_port`; empty: the services' own.
    pub ports: Vec<u16>,
    /// A process on the node's own address (on-node mode): only its service traffic is its
    /// own, and it shares its address (and its member record) with the VIP's other local
    /// members.
    pub local: bool,
}

/// Everything the datapath needs to know about one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    /// The VIP's IPv4 address, if it has one (at least one of `addr` and `addr6`).
    pub addr: Option<Ipv4Addr>,
    /// The VIP's IPv6 address, if it has one: its record in the IPv6 maps has the same
    /// id, services and active member (by slot) as its IPv4 record.
    pub addr6: Option<Ipv6Addr>,
    /// Index of the VIP's counters; unique per VIP, below `MapSizes::vips`.
    pub id: u32,
    pub services: Vec<ServiceSpec>,
    /// In slot order: members[i] counts in slot i.
    pub members: Vec<MemberSpec>,
    /// Index into `members` of the active member, or None (traffic dropped).
    pub active: Option<usize>,
    /// Whether members' outbound traffic is SNATed to the VIP.
    pub snat: bool,
    /// How traffic toward the members leaves.
    pub reach: MemberReach,
}

/// How traffic toward a VIP's members leaves the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberReach {
    /// Gateway mode: to the next hop the FIB names, redirected by XDP.
    Gateway,
    /// On-node mode: translated and handed to the kernel (`VIP_F_LOCAL`).
    Kernel,
    /// On-node mode: redirected by XDP into the member's veth (`VIP_F_REDIRECT`).
    XdpRedirect,
}

impl MemberSpec {
    /// How errors name the member: its IPv4 address, else its IPv6 one.
    pub fn label(&self) -> String {
        match (self.addr, self.addr6) {
            (Some(a), _) => a.to_string(),
            (None, Some(a6)) => a6.to_string(),
            (None, None) => "(no address)".into(),
        }
    }
}

impl VipSpec {
    /// How errors and logs name the VIP: its IPv4 address, else its IPv6 one.
    pub fn label(&self) -> String {
        match (self.addr, self.addr6) {
            (Some(a), _) => a.to_string(),
            (None, Some(a6)) => a6.to_string(),
            (None, None) => "(no address)".into(),
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        let bad = |what: String| DatapathError::Invalid {
            vip: self.label(),
            what,
        };
        if self.addr.is_none() && self.addr6.is_none() {
            return Err(bad("no address in either family".into()));
        }
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
                return Err(bad(format!("member {}: pass-through port 0", m.label())));
            }
            if m.passthrough_ports.len() > MAX_PASSTHROUGH_PORTS {
                return Err(bad(format!(
                    "member {}: {} pass-through ports, at most {MAX_PASSTHROUGH_PORTS}",
                    m.label(),
                    m.passthrough_ports.len()
                )));
            }
        }
        for m in &self.members {
            if self.addr6.is_some() != m.addr6.is_some() || self.addr.is_some() != m.addr.is_some()
            {
                return Err(bad(format!(
                    "member {}: its address families differ from the VIP's",
                    m.label()
                )));
            }
        }
        for m in &self.members {
            if !m.ports.is_empty() && m.ports.len() != self.services.len() {
                return Err(bad(format!(
                    "member {}: {} ports for {} services",
                    m.label(),
                    m.ports.len(),
                    self.services.len()
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

    /// Member `m`'s port for service `i`.
    fn member_port(&self, m: Option<usize>, i: usize) -> u16 {
        m.and_then(|m| self.members[m].ports.get(i).copied())
            .unwrap_or(self.services[i].member_port)
    }

    /// The services as member `m` serves them (its own ports).
    fn services(&self, m: Option<usize>) -> [Service; MAX_SERVICES] {
        let mut out = [Service::default(); MAX_SERVICES];
        for (i, (o, s)) in out.iter_mut().zip(&self.services).enumerate() {
            *o = Service {
                proto: s.proto,
                enabled: u8::from(s.enabled),
                _pad: 0,
                port_be: be16(s.port),
                member_port_be: be16(self.member_port(m, i)),
            };
        }
        out
    }

    /// The services of every local member on `addr`, each with its own port: they share
    /// one member record, so the record names all their service ports.
    fn shared_services(&self, addr: IpAddr) -> Result<[Service; MAX_SERVICES]> {
        let mut out = [Service::default(); MAX_SERVICES];
        let mut n = 0;
        for (mi, _) in self.members.iter().enumerate().filter(|(_, m)| {
            m.local
                && match addr {
                    IpAddr::V4(a) => m.addr == Some(a),
                    IpAddr::V6(a) => m.addr6 == Some(a),
                }
        }) {
            for s in self.services(Some(mi)).iter().take(self.services.len()) {
                if out[..n].contains(s) {
                    continue;
                }
                let Some(o) = out.get_mut(n) else {
                    return Err(DatapathError::Invalid {
                        vip: self.label(),
                        what: format!(
                            "the local members on {addr} have more than {MAX_SERVICES} service ports together"
                        ),
                    });
                };
                *o = *s;
                n += 1;
            }
        }
        Ok(out)
    }

    /// The VIP's IPv4 record (a VIP with an IPv4 address), with `active` steered to and
    /// `draining` keeping the TCP connections it had (both member slots).
    pub fn record(&self, active: Option<usize>, draining: Option<usize>) -> Option<VipRecord> {
        self.addr?;
        Some(self.record_of(active, draining, |m| m.addr.map(be32).unwrap_or_default()))
    }

    /// The VIP's IPv6 record (a VIP with an IPv6 address), with the same active and draining
    /// members.
    pub fn record6(
        &self,
        active: Option<usize>,
        draining: Option<usize>,
    ) -> Option<VipRecord<Ipv6Be>> {
        self.addr6?;
        Some(self.record_of(active, draining, |m| {
            m.addr6.map(|a| ipv6_be(a.octets())).unwrap_or_default()
        }))
    }

    /// The record in either family: `addr` gives a member's address in it.
    fn record_of<A: Default>(
        &self,
        active: Option<usize>,
        draining: Option<usize>,
        addr: impl Fn(&MemberSpec) -> A,
    ) -> VipRecord<A> {
        let member = |m: Option<usize>| match m {
            Some(i) => (addr(&self.members[i]), i as u32),
            None => (A::default(), 0),
        };
        let (active_be, active_slot) = member(active);
        let (draining_be, draining_slot) = member(draining.filter(|d| Some(*d) != active));
        VipRecord {
            vip_id: self.id,
            active_be,
            active_slot,
            flags: match self.reach {
                MemberReach::Gateway => 0,
                MemberReach::Kernel => VIP_F_LOCAL,
                MemberReach::XdpRedirect => VIP_F_REDIRECT,
            },
            draining_be,
            draining_slot,
            // Steered to the active member's own ports.
            services: self.services(active),
        }
    }

    /// Member `slot`'s IPv6 record, keyed by its IPv6 address and translated to the VIP's
    /// (a VIP with an IPv6 address).
    pub fn member_record6(&self, slot: usize) -> Result<Option<(Ipv6Be, MemberRecord<Ipv6Be>)>> {
        let (Some(vip6), Some(addr6)) = (self.addr6, self.members[slot].addr6) else {
            return Ok(None);
        };
        Ok(Some((
            ipv6_be(addr6.octets()),
            self.member_record_of(slot, ipv6_be(vip6.octets()), addr6.into())?,
        )))
    }

    /// Member `slot`'s IPv4 record, keyed by its IPv4 address and translated to the VIP's
    /// (a VIP with an IPv4 address).
    pub fn member_record(&self, slot: usize) -> Result<Option<(u32, MemberRecord)>> {
        let (Some(vip), Some(addr)) = (self.addr, self.members[slot].addr) else {
            return Ok(None);
        };
        Ok(Some((
            be32(addr),
            self.member_record_of(slot, be32(vip), addr.into())?,
        )))
    }

    /// The member record in either family (the member's address in it: `addr`),
    /// translated to `vip_be`.
    fn member_record_of<A>(&self, slot: usize, vip_be: A, addr: IpAddr) -> Result<MemberRecord<A>> {
        let m = &self.members[slot];
        let mut flags = if self.snat { MEMBER_F_SNAT } else { 0 };
        // Local members (on-node mode) share the node's address and its record.
        let services = if m.local {
            flags |= MEMBER_F_SERVICE_ONLY;
            self.shared_services(addr)?
        } else {
            self.services(Some(slot))
        };
        let mut pt = [0u16; MAX_PASSTHROUGH_PORTS];
        for (o, p) in pt.iter_mut().zip(&m.passthrough_ports) {
            *o = be16(*p);
        }
        Ok(MemberRecord {
            vip_be,
            vip_id: self.id,
            slot: slot as u32,
            flags,
            services,
            passthrough_ports_be: pt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's one-host pair: both on one address, the backup on 5070.
    fn pair() -> VipSpec {
        let node = Ipv4Addr::new(198, 18, 1, 1);
        let member = |ports: Vec<u16>| MemberSpec {
            addr: Some(node),
            addr6: None,
            passthrough_ports: vec![],
            ports,
            local: true,
        };
        VipSpec {
            addr: Some(Ipv4Addr::new(198, 18, 1, 100)),
            addr6: None,
            id: 0,
            services: vec![
                ServiceSpec {
                    proto: 17,
                    port: 5060,
                    member_port: 5060,
                    enabled: true,
                },
                ServiceSpec {
                    proto: 6,
                    port: 5060,
                    member_port: 5060,
                    enabled: true,
                },
            ],
            members: vec![member(vec![]), member(vec![5070, 5070])],
            active: None,
            snat: true,
            reach: MemberReach::Kernel,
        }
    }

    #[test]
    fn the_vip_steers_to_the_active_members_own_ports() {
        let s = pair();
        let ports = |r: Option<VipRecord>| {
            let r = r.expect("an IPv4 VIP");
            r.services[..2]
                .iter()
                .map(|s| u16::from_be(s.member_port_be))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(s.record(Some(0), None)), vec![5060, 5060]);
        let r = s.record(Some(1), None).expect("an IPv4 VIP");
        assert_eq!(ports(Some(r)), vec![5070, 5070]);
        assert_eq!((r.active_slot, r.flags), (1, VIP_F_LOCAL));
    }

    #[test]
    fn local_members_share_one_record_naming_all_their_ports() {
        let s = pair();
        let record = |slot| s.member_record(slot).unwrap().expect("an IPv4 member").1;
        let a = record(0);
        assert_eq!(a.services, record(1).services);
        assert_eq!(a.flags, MEMBER_F_SNAT | MEMBER_F_SERVICE_ONLY);
        let mut got: Vec<(u8, u16, u16)> = a
            .services
            .iter()
            .filter(|x| x.proto != 0)
            .map(|x| {
                (
                    x.proto,
                    u16::from_be(x.member_port_be),
                    u16::from_be(x.port_be),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (6, 5060, 5060),
                (6, 5070, 5060),
                (17, 5060, 5060),
                (17, 5070, 5060)
            ]
        );
        // More service ports than a record holds is refused, not cut short.
        let mut big = pair();
        for p in 0..6u16 {
            big.services.push(ServiceSpec {
                proto: 6,
                port: 6000 + p,
                member_port: 6000 + p,
                enabled: true,
            });
        }
        for m in &mut big.members[1..] {
            m.ports = (0..8).map(|p| 7000 + p).collect();
        }
        assert!(big.member_record(0).is_err());
    }
}
