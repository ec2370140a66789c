//! Members named by DNS (`host`): resolved with hickory-resolver, which honours TTLs and needs
//! no NSS modules (a static binary in an image from scratch cannot load them). A member is
//! one address: a name must resolve to exactly one IPv4 address.

use std::{net::Ipv4Addr, time::Duration};

use hickory_resolver::{
    config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts},
    TokioAsyncResolver,
};

use crate::config::{Config, Dns};

pub struct Resolver(TokioAsyncResolver);

impl Resolver {
    /// A resolver asking `dns.servers`, or the system's (/etc/resolv.conf) when none.
    pub fn new(dns: &Dns) -> Result<Resolver, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 2;
        if dns.servers.is_empty() {
            let (config, mut sys) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("the system's DNS configuration: {e}"))?;
            sys.timeout = opts.timeout;
            sys.attempts = opts.attempts;
            return Ok(Resolver(TokioAsyncResolver::tokio(config, sys)));
        }
        let mut config = ResolverConfig::new();
        for s in &dns.servers {
            config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
        }
        Ok(Resolver(TokioAsyncResolver::tokio(config, opts)))
    }

    /// The one IPv4 address `name` resolves to.
    pub async fn one_ipv4(&self, name: &str) -> Result<Ipv4Addr, String> {
        let answer = self
            .0
            .ipv4_lookup(name)
            .await
            .map_err(|e| format!("{name:?} does not resolve: {e}"))?;
        let mut addrs: Vec<Ipv4Addr> = answer.iter().map(|a| a.0).collect();
        addrs.sort();
        addrs.dedup();
        match addrs.as_slice() {
            [a] => Ok(*a),
            [] => Err(format!("{name:?} has no IPv4 address")),
            many => Err(format!(
                "{name:?} resolves to {} addresses ({}); a member is one address",
                many.len(),
                many.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Gives every local member without an address the external interface's, in each of its
/// VIP's families (on-node mode: the node's own address, which a DaemonSet's shared
/// configuration cannot name).
fn local_members(cfg: &mut Config) -> Result<(), Vec<String>> {
    let ext = cfg.interfaces.external.clone();
    let (mut node, mut node6) = (None, None);
    for (i, v) in cfg.vips.iter_mut().enumerate() {
        let (has4, has6) = (v.address.is_some(), v.address6.is_some());
        for (j, m) in v.members.iter_mut().enumerate() {
            if !m.local {
                continue;
            }
            let missing = |family: &str, e: std::io::Error| {
                vec![format!(
                    "vip[{i}] ({}).member[{j}] ({}): a local member without `{family}` takes interfaces.external's ({ext}), which has none: {e}",
                    v.name, m.name
                )]
            };
            if has4 && m.address.is_none() {
                if node.is_none() {
                    node = Some(crate::netif::ipv4_of(&ext).map_err(|e| missing("address", e))?);
                }
                m.address = node;
            }
            if has6 && m.address6.is_none() {
                if node6.is_none() {
                    node6 = Some(crate::netif::ipv6_of(&ext).map_err(|e| missing("address6", e))?);
                }
                m.address6 = node6;
            }
        }
    }
    Ok(())
}

/// Local members first (`local_members`); then fills in the address of every member given
/// by `host`, then checks the addresses as the
/// configuration's own are checked (one member per address, none a VIP). Every problem
/// comes back, each with its place.
pub async fn resolve_members(cfg: &mut Config) -> Result<(), Vec<String>> {
    local_members(cfg)?;
    if !cfg
        .vips
        .iter()
        .flat_map(|v| &v.members)
        .any(|m| m.host.is_some())
    {
        return Ok(());
    }
    let resolver = Resolver::new(&cfg.dns).map_err(|e| vec![format!("dns: {e}")])?;
    let mut problems = Vec::new();
    for (i, v) in cfg.vips.iter_mut().enumerate() {
        for (j, m) in v.members.iter_mut().enumerate() {
            let Some(host) = &m.host else { continue };
            match resolver.one_ipv4(host).await {
                Ok(a) => m.address = Some(a),
                Err(e) => problems.push(format!(
                    "vip[{i}] ({}).member[{j}] ({}).host: {e}",
                    v.name, m.name
                )),
            }
        }
    }
    if problems.is_empty() {
        // The resolved addresses, checked as if they had been written as `address`.
        let mut check = cfg.clone();
        for m in check.vips.iter_mut().flat_map(|v| &mut v.members) {
            m.host = None;
        }
        problems.extend(check.validate().into_iter().map(|p| p.to_string()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
