//! `sipvip run`: the datapath (adopted from pins or loaded and pinned), the monitors, the
//! failover supervisor, the control socket, the metrics endpoint with the kubelet's probes,
//! reload on SIGHUP, on `sipvip reload`, and (`--watch-config`) when the file changes.
//!
//! - `setup`: the datapath, the host settings and what the monitors probe;
//! - `actuator`: carrying out the supervisor's flips;
//! - `control`: the control socket, status and the metrics endpoint;
//! - here: one configuration's running parts (`Generation`) and the run loop with reload.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use sipvip::{
    api::{ConfigStatus, Response},
    config::{Config, HaMode},
    datapath::Datapath,
    failover::{self, Event, MemberState, Supervisor, VipState},
    garp,
    monitor::probe::{self, ProbeStats},
    ownership::{Change, Ownership},
    plan::Plan,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

mod actuator;
mod bgp;
mod control;
mod setup;
mod sync;
mod trace;

use actuator::DaemonActuator;
use control::{control, metrics};
use setup::{install, open_datapath, prepare, Installed};

/// State shared by the supervisor's actuator, the control socket and the metrics endpoint.
struct Shared {
    dp: Mutex<Datapath>,
    adopted: bool,
    installed_exclusions: Mutex<BTreeSet<(std::net::IpAddr, u8)>>,
    /// The configuration's path and what became of its reloads.
    config: Mutex<ConfigStatus>,
    /// Members given by `host` whose name did not resolve at the last try, with why (their
    /// last address stays in use).
    resolve_errors: Mutex<std::collections::BTreeMap<String, String>>,
    /// On-node mode: whether this node answers for each VIP (see `sipvip::ownership`).
    /// By VIP name.
    owners: Mutex<std::collections::BTreeMap<String, bool>>,
    /// `ha.mode = "keepalived"`: the VRRP state keepalived last reported (`backup` until it
    /// does).
    ha_state: Mutex<String>,
    /// What the flow-state sync sent and received (`ha.sync`).
    sync: Mutex<sipvip::api::SyncStatus>,
    /// What this gateway announces (`[bgp]`).
    bgp: Mutex<sipvip::api::BgpStatus>,
    /// The trace's ring buffer while no trace runs (a running trace holds it).
    trace_ring: Mutex<Option<aya::maps::RingBuf<aya::maps::MapData>>>,
}

impl Shared {
    /// Whether this gateway announces the VIPs (gratuitous ARP, unsolicited NA): always
    /// alone; in a keepalived pair, only while it is the VRRP master.
    fn announces(&self, plan: &Plan) -> bool {
        match plan.ha {
            HaMode::Single => true,
            HaMode::Keepalived => *self.ha_state.lock().expect("lock") == "master",
            // The router reaches the VIPs through BGP routes: nothing to announce on the link.
            HaMode::Ecmp => false,
        }
    }
}

/// How soon after one resolution a failed probe may ask for the next.
const RESOLVE_SPACING: Duration = Duration::from_secs(1);

/// Resolves the plan's `host` members every `dns.refresh`, and when a `host` member's probe
/// fails (`now`, at most once per `RESOLVE_SPACING`); asks for a reload when an address
/// changed (the reload resolves again, and installs the new address). A name that no longer
/// resolves keeps its last address and is reported in the status.
fn refresh_hosts(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<()>,
    now: Arc<tokio::sync::Notify>,
) -> Option<JoinHandle<()>> {
    let hosts: Vec<(String, String, Ipv4Addr)> = plan
        .vips
        .iter()
        .flat_map(|v| &v.members)
        .filter_map(|m| Some((m.name.clone(), m.host.clone()?, m.address?)))
        .collect();
    if hosts.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let resolver = match sipvip::resolve::Resolver::new(&plan.dns) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot resolve members' names again");
                return;
            }
        };
        let mut t = tokio::time::interval(plan.dns.refresh.0);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t.tick().await;
        loop {
            tokio::select! {
                _ = t.tick() => {}
                _ = now.notified() => {}
            }
            let mut changed = false;
            for (name, host, addr) in &hosts {
                let r = resolver.one_ipv4(host).await;
                let mut errors = shared.resolve_errors.lock().expect("lock");
                match r {
                    Ok(a) => {
                        if errors.remove(name).is_some() {
                            tracing::info!(member = %name, %host, address = %a, "the member's name resolves again");
                        }
                        if a != *addr {
                            tracing::info!(member = %name, %host, from = %addr, to = %a, "the member's address changed; reloading");
                            changed = true;
                        }
                    }
                    Err(e) => {
                        if errors.insert(name.clone(), e.clone()).is_none() {
                            tracing::warn!(member = %name, %host, address = %addr, error = %e, "the member's name does not resolve; its last address stays");
                        }
                    }
                }
            }
            if changed && tx.send(()).await.is_err() {
                return;
            }
            tokio::time::sleep(RESOLVE_SPACING).await;
        }
    }))
}

/// How often `--watch-config` reads the file.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Asks for a reload whenever the file's content changes. A Kubernetes ConfigMap volume
/// updates by swapping its `..data` symlink, which changes what the path reads without
/// touching the file the path names; reading the content catches that, an edit in place and a
/// rename alike.
fn watch_config(path: std::path::PathBuf, tx: mpsc::Sender<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = tokio::fs::read(&path).await.ok();
        let mut t = tokio::time::interval(WATCH_PERIOD);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let now = tokio::fs::read(&path).await.ok();
            if now.is_some() && now != seen {
                seen = now;
                tracing::info!(config = %path.display(), "the configuration file changed; reloading");
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// One configuration's running parts; replaced whole on reload.
struct Generation {
    plan: Arc<Plan>,
    tx: mpsc::Sender<Event>,
    supervisor: JoinHandle<()>,
    probes: Vec<JoinHandle<()>>,
    refresh: Option<JoinHandle<()>>,
    /// Resolves the members' names again (`dns.refresh`).
    hosts: Option<JoinHandle<()>>,
    /// Starts a new next-hop generation every `forwarding.nexthop_refresh`.
    nexthops: JoinHandle<()>,
    /// On-node mode: claims and releases the VIPs (`ownership`).
    owning: Option<JoinHandle<()>>,
    /// The flow-state sync with the other gateways (`ha.sync`).
    syncing: Option<JoinHandle<()>>,
    /// Scale-out: the VIP routes for the routing daemon (`[bgp]`).
    announcing: Option<JoinHandle<()>>,
    stats: Arc<Vec<Arc<ProbeStats>>>,
}

/// Starts the monitors and the supervisor for one configuration.
fn start(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    installed: &[Installed],
    instance: &str,
    reload: mpsc::Sender<()>,
) -> Generation {
    let resolve_now = Arc::new(tokio::sync::Notify::new());
    let hosts = refresh_hosts(plan.clone(), shared.clone(), reload, resolve_now.clone());
    let actives: Vec<Option<usize>> = installed.iter().map(|i| i.active).collect();
    let now = Instant::now();
    let specs = plan.probes.clone();
    let mut health = std::collections::BTreeMap::new();
    for s in &specs {
        // The adopted active member starts up, with a full timeout to prove itself; others
        // must answer first.
        let up = actives[s.key.vip] == Some(s.key.member);
        health.insert(s.key, s.health(now, up));
    }
    let vips = plan
        .vips
        .iter()
        .enumerate()
        .map(|(vi, v)| {
            let members = v
                .members
                .iter()
                .enumerate()
                .map(|(mi, m)| MemberState {
                    name: m.name.clone(),
                    priority: m.priority,
                    up: actives[vi] == Some(mi),
                    disabled: false,
                    last_ok: None,
                })
                .collect();
            let mut st = VipState::new(v.name.clone(), members, actives[vi], v.when_all_down, now);
            st.draining = installed[vi].draining;
            if actives[vi].is_none() {
                st.settle_until = Some(now + v.settle);
            }
            st
        })
        .collect();
    let mut sup = Supervisor { health, vips };
    let (tx, mut rx) = mpsc::channel(1024);
    let stats: Arc<Vec<Arc<ProbeStats>>> = Arc::new(
        specs
            .iter()
            .map(|_| Arc::new(ProbeStats::default()))
            .collect(),
    );
    let probes = specs
        .into_iter()
        .zip(stats.iter().cloned())
        .map(|(s, st)| tokio::spawn(probe::run(s, tx.clone(), instance.to_string(), st)))
        .collect();
    let mut act = DaemonActuator {
        plan: plan.clone(),
        resolve_now,
        shared: shared.clone(),
    };
    let supervisor = tokio::spawn(async move { failover::run(&mut sup, &mut rx, &mut act).await });
    let owning = own_vips(plan.clone(), shared.clone());
    let syncing = sync::start(plan.clone(), shared.clone());
    let announcing = bgp::start(plan.clone(), shared.clone(), tx.clone());
    let refresh = plan.garp.refresh.map(|every| {
        let (plan, shared) = (plan.clone(), shared.clone());
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                for v in &plan.vips {
                    // On-node mode: only the node that answers for the VIP; in a keepalived
                    // pair, only the master.
                    let answers = match plan.ownership {
                        None => shared.announces(&plan),
                        Some(_) => shared
                            .owners
                            .lock()
                            .expect("lock")
                            .get(&v.name)
                            .copied()
                            .unwrap_or(false),
                    };
                    if answers {
                        if let Some(a) = v.spec.addr {
                            let _ = garp::send(&plan.garp.interface, a);
                        }
                        if let Some(a6) = v.spec.addr6 {
                            let _ = garp::send_na(&plan.garp.interface, a6);
                        }
                    }
                }
            }
        })
    });
    let nexthops = {
        let every = plan.nexthop_refresh;
        tokio::spawn(async move {
            // "0s": the cache is turned off once; otherwise a new generation every period.
            let on = !every.is_zero();
            let mut t = tokio::time::interval(every.max(Duration::from_millis(1)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                let r = shared.dp.lock().expect("lock").refresh_nexthops(on);
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not start a new next-hop generation");
                }
                if !on {
                    return;
                }
            }
        })
    };
    Generation {
        plan,
        tx,
        supervisor,
        probes,
        refresh,
        hosts,
        nexthops,
        owning,
        syncing,
        announcing,
        stats,
    }
}

/// How often the ownership of each VIP is looked at (on-node mode).
const OWNERSHIP_TICK: Duration = Duration::from_millis(50);

/// On-node mode: every `OWNERSHIP_TICK`, whether this node hosts each VIP's active member
/// (one of the member's addresses is the node's, or routed out of another interface than
/// the uplink: a pod's veth), and the claims and releases `sipvip::ownership` decides: the
/// VIP's addresses (each family it has) added to the uplink with a burst of gratuitous ARP
/// and unsolicited Neighbor Advertisements, or removed.
fn own_vips(plan: Arc<Plan>, shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    let o = plan.ownership.clone()?;
    Some(tokio::spawn(async move {
        let ifindex = match setup::ifindex(&o.interface) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot own the VIPs");
                return;
            }
        };
        let (at_start, at_start6) = (
            sipvip::netif::local_addresses(),
            sipvip::netif::local_addresses6(),
        );
        let mut states: Vec<Ownership> = plan
            .vips
            .iter()
            .map(|v| {
                Ownership::new(
                    o.claim_after,
                    v.spec.addr.is_some_and(|a| at_start.contains(&a))
                        || v.spec.addr6.is_some_and(|a| at_start6.contains(&a)),
                )
            })
            .collect();
        {
            let mut dp = shared.dp.lock().expect("lock");
            for (v, s) in plan.vips.iter().zip(&states) {
                if let Err(e) = dp.set_vip_answering(&v.spec, s.owner()) {
                    tracing::error!(vip = %v.name, error = %e, "cannot write the VIP's ownership");
                }
            }
        }
        // node_steering = "xdp-redirect": the devices the members' veths are, in the devmap
        // (a recreated pod's veth is a new device; the set is renewed every second).
        let redirect = plan
            .vips
            .iter()
            .any(|v| v.spec.reach == sipvip::datapath::MemberReach::XdpRedirect);
        let mut egress = std::collections::BTreeSet::new();
        let mut egress_since = std::time::Instant::now();
        let mut t = tokio::time::interval(OWNERSHIP_TICK);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            if redirect {
                if egress_since.elapsed() > Duration::from_secs(1) {
                    egress.clear();
                    egress_since = std::time::Instant::now();
                }
                for m in plan.vips.iter().flat_map(|v| &v.members) {
                    let devs = member_addresses(m)
                        .filter_map(|a| sipvip::netif::route_interface_ip(a).ok().flatten());
                    for dev in devs.filter(|d| *d != o.interface && d != "lo") {
                        let Ok(ix) = setup::ifindex(&dev) else {
                            continue;
                        };
                        if egress.insert(ix) {
                            if let Err(e) = shared.dp.lock().expect("lock").add_egress(ix) {
                                tracing::warn!(member = %m.name, interface = %dev, error = %e, "cannot redirect to the member's veth; its traffic goes through the kernel");
                            }
                        }
                    }
                }
            }
            let (locals, locals6) = (
                sipvip::netif::local_addresses(),
                sipvip::netif::local_addresses6(),
            );
            for (v, state) in plan.vips.iter().zip(&mut states) {
                // The active member, as the VIP's record (of its first family) names it.
                let active = {
                    let dp = shared.dp.lock().expect("lock");
                    match (v.spec.addr, v.spec.addr6) {
                        (Some(a), _) => dp
                            .vip_record(a)
                            .ok()
                            .filter(|r| r.active_be != 0)
                            .map(|r| r.active_slot),
                        (None, Some(a6)) => dp
                            .vip_record6(a6)
                            .filter(|r| r.active_be != [0u32; 4])
                            .map(|r| r.active_slot),
                        (None, None) => None,
                    }
                };
                let hosts = active
                    .and_then(|slot| v.members.get(slot as usize))
                    .is_some_and(|m| {
                        member_addresses(m).any(|a| {
                            let local = match a {
                                IpAddr::V4(a) => locals.contains(&a),
                                IpAddr::V6(a) => locals6.contains(&a),
                            };
                            local
                                || matches!(sipvip::netif::route_interface_ip(a), Ok(Some(i)) if i != o.interface && i != "lo")
                        })
                    });
                let change = state.observe(std::time::Instant::now(), hosts);
                if change.is_some() {
                    let r = shared
                        .dp
                        .lock()
                        .expect("lock")
                        .set_vip_answering(&v.spec, state.owner());
                    if let Err(e) = r {
                        tracing::error!(vip = %v.name, error = %e, "cannot write the VIP's ownership");
                    }
                }
                let addrs = || {
                    [
                        v.spec.addr.map(|a| (IpAddr::V4(a), 32)),
                        v.spec.addr6.map(|a| (IpAddr::V6(a), 128)),
                    ]
                    .into_iter()
                    .flatten()
                };
                match change {
                    Some(Change::Claim) => {
                        for (a, len) in addrs() {
                            let r = match a {
                                IpAddr::V4(a4) => sipvip::netif::add_ipv4_address(ifindex, a4, len),
                                IpAddr::V6(a6) => sipvip::netif::add_ipv6_address(ifindex, a6, len),
                            };
                            if let Err(e) = r {
                                tracing::error!(vip = %a, error = %e, "cannot claim the VIP");
                            }
                        }
                        tracing::info!(event = "vip_claimed", vip = %v.name, address = %v.spec.label(), "this node hosts the active member: it answers for the VIP");
                        garp_burst(plan.garp.clone(), v.spec.addr, v.spec.addr6);
                    }
                    Some(Change::Release) => {
                        for (a, len) in addrs() {
                            if let Err(e) = sipvip::netif::remove_address(ifindex, a, len) {
                                tracing::error!(vip = %a, error = %e, "cannot release the VIP");
                            }
                        }
                        tracing::info!(event = "vip_released", vip = %v.name, address = %v.spec.label(), "this node no longer hosts the active member: it is silent for the VIP");
                    }
                    None => {}
                }
                shared
                    .owners
                    .lock()
                    .expect("lock")
                    .insert(v.name.clone(), state.owner());
            }
        }
    }))
}

/// A member's addresses, each family it has.
fn member_addresses(m: &sipvip::plan::MemberPlan) -> impl Iterator<Item = IpAddr> {
    [m.address.map(IpAddr::V4), m.address6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
}

/// A burst of gratuitous ARP and unsolicited Neighbor Advertisements for every VIP, in
/// parallel.
pub(super) fn announce_all(plan: &Plan) {
    for v in &plan.vips {
        garp_burst(plan.garp.clone(), v.spec.addr, v.spec.addr6);
    }
}

/// A burst of gratuitous ARP for `vip`, and of unsolicited Neighbor Advertisements for its
/// IPv6 address `vip6` (`garp.burst`, `garp.spacing` apart).
pub(super) fn garp_burst(g: sipvip::plan::GarpPlan, vip: Option<Ipv4Addr>, vip6: Option<Ipv6Addr>) {
    tokio::spawn(async move {
        for i in 0..g.burst {
            if i > 0 {
                tokio::time::sleep(g.spacing).await;
            }
            if let Some(vip) = vip {
                if let Err(e) = garp::send(&g.interface, vip) {
                    tracing::warn!(%vip, error = %e, "gratuitous ARP failed");
                }
            }
            if let Some(a6) = vip6 {
                if let Err(e) = garp::send_na(&g.interface, a6) {
                    tracing::warn!(vip = %a6, error = %e, "unsolicited neighbor advertisement failed");
                }
            }
        }
    });
}

impl Generation {
    async fn stop(self) {
        for p in &self.probes {
            p.abort();
        }
        if let Some(r) = &self.refresh {
            r.abort();
        }
        if let Some(o) = &self.owning {
            o.abort();
        }
        if let Some(s) = &self.syncing {
            s.abort();
        }
        if let Some(a) = &self.announcing {
            a.abort();
        }
        if let Some(h) = &self.hosts {
            h.abort();
        }
        self.nexthops.abort();
        let _ = self.tx.send(Event::Stop).await;
        let _ = self.supervisor.await;
    }
}

pub(super) struct Current {
    pub(super) plan: Arc<Plan>,
    pub(super) tx: mpsc::Sender<Event>,
    pub(super) stats: Arc<Vec<Arc<ProbeStats>>>,
}

/// Runs the daemon until SIGTERM or SIGINT. The datapath stays pinned and forwarding.
pub async fn run(path: &Path, replace: bool, datapath_debug: bool, watch: bool) -> Result<()> {
    let mut cfg = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    sipvip::resolve::resolve_members(&mut cfg)
        .await
        .map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?;
    let plan = Plan::new(&cfg);
    let (mut dp, adopted) = open_datapath(&cfg, &plan, replace, datapath_debug)?;
    if let Some(logger) = dp.take_logger() {
        tracing::warn!("datapath debug logs on: one log line per packet");
        // SAFETY: the logger owns its ring buffer's fd for its whole life inside the AsyncFd.
        let mut fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        }
        .map_err(|e| anyhow::anyhow!("debug logger: {e}"))?;
        tokio::spawn(async move {
            while let Ok(mut guard) = fd.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
    }
    let excl = Mutex::new(BTreeSet::new());
    prepare(&cfg, &mut dp, &excl)?;
    let actives = install(&plan, &mut dp)?;
    // A keepalived pair's daemon restarting (an upgrade) on the master: keepalived reports
    // nothing until its next transition, but only the master holds the VIPs' addresses.
    let ha_state = if plan.ha == HaMode::Keepalived
        && plan.vips.iter().any(|v| {
            v.spec
                .addr
                .is_some_and(|a| sipvip::netif::local_addresses().contains(&a))
                || v.spec
                    .addr6
                    .is_some_and(|a| sipvip::netif::local_addresses6().contains(&a))
        }) {
        tracing::info!("the VIPs' addresses are here: this gateway is keepalived's master");
        "master"
    } else {
        "backup"
    };
    // A trace left running by a daemon that died: nobody reads it now.
    let _ = dp.stop_trace();
    let trace_ring = Mutex::new(dp.take_trace_events());
    let shared = Arc::new(Shared {
        dp: Mutex::new(dp),
        adopted,
        installed_exclusions: excl,
        config: Mutex::new(ConfigStatus {
            path: path.display().to_string(),
            ..ConfigStatus::default()
        }),
        resolve_errors: Mutex::default(),
        owners: Mutex::default(),
        ha_state: Mutex::new(ha_state.into()),
        sync: Mutex::default(),
        bgp: Mutex::default(),
        trace_ring,
    });
    let instance = sipvip::monitor::sip::token(6);
    let cfg = Arc::new(cfg);
    // A reload asked for by the file watcher or by a member's address change.
    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
    let mut gen = start(
        Arc::new(plan),
        shared.clone(),
        &actives,
        &instance,
        changed_tx.clone(),
    );
    let (cur_tx, cur_rx) = watch::channel(Arc::new(Current {
        plan: gen.plan.clone(),
        tx: gen.tx.clone(),
        stats: gen.stats.clone(),
    }));
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Response>>(4);
    let ctl = tokio::spawn(control(
        cfg.admin.socket.clone(),
        cur_rx.clone(),
        shared.clone(),
        reload_tx,
    ));
    let met = (cfg.admin.metrics != "off").then(|| {
        let (addr, cur, sh) = (cfg.admin.metrics.clone(), cur_rx.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics(addr, cur, sh).await {
                tracing::error!(error = %e, "the metrics listener stopped: no /metrics, /healthz or /readyz");
            }
        })
    });
    tracing::info!(config = %path.display(), adopted, vips = cfg.vips.len(), "sipvip running");

    let watcher = watch.then(|| watch_config(path.to_path_buf(), changed_tx.clone()));

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let reply: Option<oneshot::Sender<Response>> = tokio::select! {
            _ = hup.recv() => None,
            Some(()) = changed_rx.recv() => None,
            r = reload_rx.recv() => r,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let loaded = match Config::load(path) {
            Ok(mut new) => match sipvip::resolve::resolve_members(&mut new).await {
                Ok(()) => Ok(new),
                Err(p) => Err(p.join("\n")),
            },
            Err(e) => Err(e.to_string()),
        };
        let resp = match loaded {
            Err(e) => {
                tracing::error!(problems = %e, "reload rejected; the running configuration stays");
                Response::err(format!("reload rejected:\n{e}"))
            }
            Ok(new) => {
                let new_plan = Plan::new(&new);
                let r = (|| -> Result<Vec<Installed>> {
                    let mut dp = shared.dp.lock().expect("lock");
                    // VIPs and members that left the configuration, or whose address
                    // changed (a member given by a name that now resolves elsewhere).
                    let ext = &gen.plan.garp.interface;
                    // Off the external interface, unless keepalived owns the addresses.
                    let unassign = |name: &str, a: std::net::IpAddr| {
                        if gen.plan.ha != HaMode::Single {
                            return;
                        }
                        let len = if a.is_ipv4() { 32 } else { 128 };
                        if let Err(e) = setup::ifindex(ext)
                            .and_then(|x| Ok(sipvip::netif::remove_address(x, a, len)?))
                        {
                            tracing::warn!(vip = %name, address = %a, error = %e, "cannot remove the VIP's address");
                        }
                    };
                    for v in &gen.plan.vips {
                        // Each address the VIP lost (or changed) leaves the datapath and the
                        // external interface: nothing answers ARP or ND for it.
                        if let Some(a) = v.spec.addr {
                            if !new.vips.iter().any(|n| n.address == Some(a)) {
                                dp.remove_vip4(a)?;
                                unassign(&v.name, a.into());
                            }
                        }
                        if let Some(a6) = v.spec.addr6 {
                            if !new.vips.iter().any(|n| n.address6 == Some(a6)) {
                                dp.remove_vip6(a6)?;
                                unassign(&v.name, a6.into());
                            }
                        }
                        let members = || new_plan.vips.iter().flat_map(|n| &n.members);
                        for m in &v.members {
                            if let Some(a) = m.address {
                                if !members().any(|n| n.address == Some(a)) {
                                    dp.remove_member(a.into())?;
                                }
                            }
                            if let Some(a6) = m.address6 {
                                if !members().any(|n| n.address6 == Some(a6)) {
                                    dp.remove_member(a6.into())?;
                                }
                            }
                        }
                    }
                    prepare(&new, &mut dp, &shared.installed_exclusions)?;
                    install(&new_plan, &mut dp)
                })();
                match r {
                    Ok(actives) => {
                        let old = std::mem::replace(
                            &mut gen,
                            start(
                                Arc::new(new_plan),
                                shared.clone(),
                                &actives,
                                &instance,
                                changed_tx.clone(),
                            ),
                        );
                        old.stop().await;
                        let _ = cur_tx.send(Arc::new(Current {
                            plan: gen.plan.clone(),
                            tx: gen.tx.clone(),
                            stats: gen.stats.clone(),
                        }));
                        tracing::info!(config = %path.display(), "configuration reloaded");
                        Response::ok("reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed while applying; the running configuration stays");
                        Response::err(format!("reload failed: {e}"))
                    }
                }
            }
        };
        {
            let mut c = shared.config.lock().expect("lock");
            if resp.ok {
                c.reloads += 1;
                c.last_error = None;
            } else {
                c.reload_failures += 1;
                c.last_error = resp.error.clone();
            }
        }
        if let Some(r) = reply {
            let _ = r.send(resp);
        }
    }
    tracing::info!(
        "stopping; the datapath stays pinned and keeps forwarding (`sipvip down` removes it)"
    );
    gen.stop().await;
    if let Some(w) = watcher {
        w.abort();
    }
    ctl.abort();
    if let Some(m) = met {
        m.abort();
    }
    let _ = std::fs::remove_file(&cfg.admin.socket);
    Ok(())
}
