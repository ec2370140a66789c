//! `sipvip run`: the datapath (adopted from pins or loaded and pinned), the monitors, the
//! failover supervisor, the control socket, the metrics endpoint, SIGHUP reload.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use sipvip::{
    api::{self, Request, Response, Status},
    config::{Config, MonitorKind, Prefix},
    datapath::{be32, Datapath},
    failover::{self, Actuator, Event, Flip, MemberState, Supervisor, VipState},
    garp,
    monitor::{
        probe::{self, ProbeKind, ProbeSpec, ProbeStats},
        Health, MonitorKey,
    },
};
use sipvip_common::program_names;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener},
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

/// State shared by the supervisor's actuator, the control socket and the metrics endpoint.
struct Shared {
    dp: Mutex<Datapath>,
    adopted: bool,
    installed_exclusions: Mutex<BTreeSet<(Ipv4Addr, u8)>>,
}

/// One configuration's running parts; replaced whole on reload.
struct Generation {
    cfg: Arc<Config>,
    tx: mpsc::Sender<Event>,
    supervisor: JoinHandle<()>,
    probes: Vec<JoinHandle<()>>,
    refresh: Option<JoinHandle<()>>,
    /// Starts a new next-hop generation every `forwarding.nexthop_refresh`.
    nexthops: JoinHandle<()>,
    stats: Arc<Vec<Arc<ProbeStats>>>,
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: if_nametoindex with a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("interface {name:?} does not exist");
    }
    Ok(i)
}

fn sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        tracing::warn!(path, error = %e, "cannot set sysctl");
    }
}

fn open_datapath(cfg: &Config, replace: bool, debug: bool) -> Result<(Datapath, bool)> {
    let sizes = cfg.map_sizes();
    let dir = &cfg.admin.pin_dir;
    sipvip::datapath::mount_bpffs(dir)?;
    match Datapath::adopt(&sizes, dir) {
        Ok(Some(dp)) => {
            tracing::info!(pin_dir = %dir.display(), "adopted the pinned datapath; forwarding was never interrupted");
            if debug {
                tracing::warn!("--datapath-debug needs a fresh load of the debug programs: restart with --replace");
            }
            Ok((dp, true))
        }
        Ok(None) => Ok((Datapath::load_pinned(&sizes, dir, debug)?, false)),
        Err(e) if replace => {
            tracing::warn!(error = %e, "replacing the pinned datapath (--replace)");
            Datapath::remove_pins(dir)?;
            Ok((Datapath::load_pinned(&sizes, dir, debug)?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Interfaces, host settings, VIP addresses, the devmap and the exclusions.
fn prepare(
    cfg: &Config,
    dp: &mut Datapath,
    shared_excl: &Mutex<BTreeSet<(Ipv4Addr, u8)>>,
) -> Result<()> {
    let dir = &cfg.admin.pin_dir;
    let mode = cfg.interfaces.xdp_mode;
    let ext = &cfg.interfaces.external;
    if dp.attach_pinned(program_names::EXTERNAL, ext, mode, dir)? {
        tracing::info!(interface = %ext, "attached sipvip_ext");
    }
    dp.add_egress(ifindex(ext)?)?;
    for int in &cfg.interfaces.internal {
        if dp.attach_pinned(program_names::INTERNAL, int, mode, dir)? {
            tracing::info!(interface = %int, "attached sipvip_int");
        }
        dp.add_egress(ifindex(int)?)?;
    }
    dp.set_frag_lifetime(cfg.forwarding.fragment_lifetime.0)?;
    // 802.1Q tags must stay in the frame for the datapath to see them.
    for ifc in std::iter::once(ext).chain(&cfg.interfaces.internal) {
        if let Err(e) = sipvip::netif::rx_vlan_offload_off(ifc) {
            tracing::warn!(
                interface = %ifc,
                problem = %e,
                "receive VLAN offload could not be turned off: a tagged frame whose tag the NIC strips would be translated as untagged; attach sipvip to the VLAN devices instead of the trunk"
            );
        }
    }
    // SNATed frames the kernel forwards (neighbour not yet resolved) carry the VIP, a local
    // address, as source.
    for ifc in std::iter::once(ext)
        .chain(&cfg.interfaces.internal)
        .map(String::as_str)
        .chain(["all"])
    {
        sysctl(&format!("/proc/sys/net/ipv4/conf/{ifc}/accept_local"), "1");
        sysctl(&format!("/proc/sys/net/ipv4/conf/{ifc}/rp_filter"), "0");
    }
    // The datapath's FIB lookup then honours route MTUs (`ip route ... mtu 1400`) as the
    // kernel's forwarding does; without it, bpf_fib_lookup checks only locked ones.
    sysctl("/proc/sys/net/ipv4/ip_forward_use_pmtu", "1");
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
    {
        tracing::warn!(
            "net.ipv4.ip_forward is 0: the kernel will not forward what the datapath hands it"
        );
    }
    // The VIPs live on the external interface, so the kernel answers ARP for them.
    let locals = sipvip::netif::local_addresses();
    for v in &cfg.vips {
        if !locals.contains(&v.address) {
            let out = std::process::Command::new("ip")
                .args(["addr", "add", &format!("{}/32", v.address), "dev", ext])
                .output()
                .context("run `ip addr add` for the VIP")?;
            if !out.status.success() {
                bail!(
                    "adding VIP {} to {ext}: {}",
                    v.address,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    // Exclusions: the configured ones, plus the gateway's own addresses (members' replies to
    // our monitors must never be SNATed).
    let vips: BTreeSet<Ipv4Addr> = cfg.vips.iter().map(|v| v.address).collect();
    let mut want: BTreeSet<(Ipv4Addr, u8)> = cfg
        .exclusions()
        .iter()
        .map(|Prefix { addr, len }| (*addr, *len))
        .collect();
    want.extend(
        sipvip::netif::local_addresses()
            .into_iter()
            .filter(|a| !vips.contains(a) && !a.is_loopback())
            .map(|a| (a, 32)),
    );
    let mut have = shared_excl.lock().expect("lock");
    for (a, l) in have.difference(&want) {
        dp.remove_exclusion(*a, *l)?;
    }
    for (a, l) in want.difference(&have) {
        dp.add_exclusion(*a, *l)?;
    }
    *have = want;
    Ok(())
}

/// Installs every VIP, keeping the active member the datapath already has (adoption and
/// reload never flip). Returns each VIP's active member index.
fn install(cfg: &Config, dp: &mut Datapath) -> Result<Vec<Installed>> {
    let mut out = Vec::new();
    for (i, v) in cfg.vips.iter().enumerate() {
        let record = dp.vip_record(v.address).ok();
        let slot = |addr_be: u32| {
            (addr_be != 0)
                .then(|| v.members.iter().position(|m| be32(m.address) == addr_be))
                .flatten()
        };
        let active = record.and_then(|r| slot(r.active_be));
        let draining = record.and_then(|r| slot(r.draining_be));
        let spec = cfg.vip_spec(i, active);
        dp.install_vip(&spec)?;
        if draining.is_some() {
            let addr = |m: Option<usize>| m.map(|m| v.members[m].address);
            dp.set_active_draining(&spec, addr(active), addr(draining))?;
        }
        out.push(Installed { active, draining });
    }
    Ok(out)
}

/// A VIP's members as found in the datapath when (re)starting: the active one, and one
/// still draining (kept across a restart or reload).
#[derive(Clone, Copy, Debug)]
struct Installed {
    active: Option<usize>,
    draining: Option<usize>,
}

fn probe_specs(cfg: &Config) -> Vec<ProbeSpec> {
    let mut out = Vec::new();
    for (vi, v) in cfg.vips.iter().enumerate() {
        for (mi, m) in v.members.iter().enumerate() {
            for mon in cfg.member_monitors(v, m) {
                let k = cfg
                    .monitors
                    .iter()
                    .position(|x| x.name == mon.name)
                    .unwrap_or(0);
                let kind = match &mon.kind {
                    MonitorKind::Sip {
                        transport,
                        port,
                        request_uri,
                        from,
                        headers,
                        accept,
                        reject,
                    } => {
                        let port = port.unwrap_or_else(|| {
                            v.services
                                .iter()
                                .find(|s| s.protocol == *transport)
                                .map(|s| s.member_port.unwrap_or(s.port))
                                .unwrap_or(5060)
                        });
                        ProbeKind::Sip {
                            transport: *transport,
                            port,
                            request_uri: request_uri.clone(),
                            from: from.clone(),
                            headers: headers.clone(),
                            accept: accept.clone(),
                            reject: reject.clone(),
                        }
                    }
                    MonitorKind::Tcp { port } => ProbeKind::Tcp { port: *port },
                    MonitorKind::Icmp => ProbeKind::Icmp,
                };
                out.push(ProbeSpec {
                    key: MonitorKey {
                        vip: vi,
                        member: mi,
                        monitor: k,
                    },
                    target: m.address,
                    interval: mon.interval.0,
                    timeout: mon.timeout.0,
                    rise: mon.rise,
                    fall: mon.fall,
                    kind,
                });
            }
        }
    }
    out
}

struct DaemonActuator {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
}

impl Actuator for DaemonActuator {
    fn flip(&mut self, _sup: &Supervisor, f: &Flip) {
        let v = &self.cfg.vips[f.vip];
        let spec = self.cfg.vip_spec(f.vip, f.to);
        let to = f.to.map(|i| v.members[i].address);
        let draining = f.draining.map(|i| v.members[i].address);
        let mut reselected = 0;
        {
            let mut dp = self.shared.dp.lock().expect("lock");
            if let Err(e) = dp.set_active_draining(&spec, to, draining) {
                tracing::error!(vip = %v.name, error = %e, "cannot write the active member");
                return;
            }
            if let Some(gone) = f.forget {
                reselected = dp.forget_member_flows(v.members[gone].address).unwrap_or(0);
            }
        }
        let name = |i: Option<usize>| {
            i.map(|i| v.members[i].name.clone())
                .unwrap_or_else(|| "none".into())
        };
        if !f.moves() {
            tracing::info!(
                event = "drain_end",
                vip = %v.name,
                reason = %f.reason,
                dropped_flows = reselected,
                "the drained member's connections are gone"
            );
            return;
        }
        tracing::info!(
            event = "failover",
            vip = %v.name,
            from = %name(f.from),
            to = %name(f.to),
            reason = %f.reason,
            since_last_good_reply_ms = f.since_last_ok.map(|d| d.as_secs_f64() * 1000.0),
            reselected_flows = reselected,
            draining = %name(f.draining),
            "active member changed"
        );
        if to.is_some() {
            let (ext, vip, g) = (
                self.cfg.interfaces.external.clone(),
                v.address,
                self.cfg.garp.clone(),
            );
            tokio::spawn(async move {
                for i in 0..g.burst {
                    if i > 0 {
                        tokio::time::sleep(g.spacing.0).await;
                    }
                    if let Err(e) = garp::send(&ext, vip) {
                        tracing::warn!(%vip, error = %e, "gratuitous ARP failed");
                    }
                }
            });
        }
    }
}

fn status(cfg: &Config, shared: &Shared, sup: &Supervisor, stats: &[Arc<ProbeStats>]) -> Status {
    use std::sync::atomic::Ordering::Relaxed;
    let now = Instant::now();
    let dp = shared.dp.lock().expect("lock");
    let mut s = Status {
        datapath: dp
            .reasons()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        probes_sent: stats.iter().map(|s| s.sent.load(Relaxed)).sum(),
        replies_malformed: stats.iter().map(|s| s.malformed.load(Relaxed)).sum(),
        replies_unmatched: stats.iter().map(|s| s.unmatched.load(Relaxed)).sum(),
        adopted: shared.adopted,
        ..Default::default()
    };
    for (vi, (v, st)) in cfg.vips.iter().zip(&sup.vips).enumerate() {
        let c = dp.vip_counters(vi as u32).unwrap_or_default();
        let proto = |p: sipvip::proto::Protocol| p.name().to_string();
        s.vips.push(api::VipStatus {
            name: v.name.clone(),
            address: v.address.to_string(),
            active: st.active.map(|a| v.members[a].name.clone()),
            draining: st.draining.map(|d| v.members[d].name.clone()),
            active_for_s: now.saturating_duration_since(st.active_since).as_secs_f64(),
            failovers: st.failovers,
            last_failover_ms: st.last_failover_time.map(|d| d.as_secs_f64() * 1000.0),
            services: v
                .services
                .iter()
                .enumerate()
                .map(|(i, sv)| api::ServiceStatus {
                    protocol: proto(sv.protocol),
                    port: sv.port,
                    member_port: sv.member_port.unwrap_or(sv.port),
                    enabled: sv.enabled,
                    packets_in: c.service_in[i].packets,
                    packets_out: c.service_out[i].packets,
                })
                .collect(),
            members: v
                .members
                .iter()
                .enumerate()
                .map(|(mi, m)| api::MemberStatus {
                    name: m.name.clone(),
                    address: m.address.to_string(),
                    priority: m.priority,
                    up: st.members[mi].up,
                    disabled: st.members[mi].disabled,
                    active: st.active == Some(mi),
                    monitors: sup
                        .health
                        .iter()
                        .filter(|(k, _)| k.vip == vi && k.member == mi)
                        .map(|(k, h): (&MonitorKey, &Health)| api::MonitorStatus {
                            name: cfg.monitors[k.monitor].name.clone(),
                            up: h.up,
                            reason: h.reason.to_string(),
                            last_code: h.last_code,
                            last_rtt_ms: h.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                            last_ok_ago_ms: h
                                .last_ok
                                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                        })
                        .collect(),
                    packets_in: c.member_in[mi].packets,
                    packets_out: c.member_out[mi].packets,
                })
                .collect(),
            packets_in: c.vip_in.packets,
            bytes_in: c.vip_in.bytes,
            packets_out: c.vip_out.packets,
            bytes_out: c.vip_out.bytes,
        });
    }
    s
}

/// Starts the monitors and the supervisor for one configuration.
fn start(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    installed: &[Installed],
    instance: &str,
) -> Generation {
    let actives: Vec<Option<usize>> = installed.iter().map(|i| i.active).collect();
    let now = Instant::now();
    let specs = probe_specs(&cfg);
    let mut health = std::collections::BTreeMap::new();
    for s in &specs {
        // The adopted active member starts up, with a full timeout to prove itself; others
        // must answer first.
        let up = actives[s.key.vip] == Some(s.key.member);
        health.insert(s.key, s.health(now, up));
    }
    let vips = cfg
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
                let longest = v
                    .members
                    .iter()
                    .flat_map(|m| cfg.member_monitors(v, m))
                    .map(|m| m.interval.0)
                    .max()
                    .unwrap_or_default();
                st.settle_until = Some(now + longest);
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
        cfg: cfg.clone(),
        shared: shared.clone(),
    };
    let supervisor = tokio::spawn(async move { failover::run(&mut sup, &mut rx, &mut act).await });
    let refresh = cfg.garp.refresh.map(|every| {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every.0);
            loop {
                t.tick().await;
                for v in &cfg.vips {
                    let _ = garp::send(&cfg.interfaces.external, v.address);
                }
            }
        })
    });
    let nexthops = {
        let every = cfg.forwarding.nexthop_refresh.0;
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
        cfg,
        tx,
        supervisor,
        probes,
        refresh,
        nexthops,
        stats,
    }
}

impl Generation {
    async fn stop(self) {
        for p in &self.probes {
            p.abort();
        }
        if let Some(r) = &self.refresh {
            r.abort();
        }
        self.nexthops.abort();
        let _ = self.tx.send(Event::Stop).await;
        let _ = self.supervisor.await;
    }
}

/// Asks the running generation something, with the supervisor and actuator in hand.
async fn ask<T: Send + 'static>(
    tx: &mpsc::Sender<Event>,
    f: impl FnOnce(&mut Supervisor, &mut dyn FnMut(&Supervisor, &Flip)) -> T + Send + 'static,
) -> Option<T> {
    let (otx, orx) = oneshot::channel();
    tx.send(Event::With(Box::new(move |sup, flip| {
        let _ = otx.send(f(sup, flip));
    })))
    .await
    .ok()?;
    orx.await.ok()
}

struct Current {
    cfg: Arc<Config>,
    tx: mpsc::Sender<Event>,
    stats: Arc<Vec<Arc<ProbeStats>>>,
}

async fn handle(
    req: Request,
    cur: &Current,
    shared: &Arc<Shared>,
    reload: &mpsc::Sender<oneshot::Sender<Response>>,
) -> Response {
    let cfg = cur.cfg.clone();
    let find = |name: &str| -> Option<(usize, usize)> {
        cfg.vips.iter().enumerate().find_map(|(vi, v)| {
            v.members
                .iter()
                .position(|m| m.name == name)
                .map(|mi| (vi, mi))
        })
    };
    let disable = matches!(req, Request::Disable { .. });
    match req {
        Request::Status => {
            let (c, sh, st) = (cur.cfg.clone(), shared.clone(), cur.stats.clone());
            match ask(&cur.tx, move |sup, _| status(&c, &sh, sup, &st)).await {
                Some(s) => Response {
                    ok: true,
                    error: None,
                    message: None,
                    status: Some(s),
                },
                None => Response::err("the supervisor is restarting; try again"),
            }
        }
        Request::Disable { member } | Request::Enable { member } if find(&member).is_none() => {
            Response::err(format!("no member named {member:?}"))
        }
        Request::Disable { member } | Request::Enable { member } => {
            let (vi, mi) = find(&member).expect("checked");
            ask(&cur.tx, move |sup, flip| {
                if let Some(f) = sup.set_disabled(vi, mi, disable, Instant::now()) {
                    flip(sup, &f);
                }
            })
            .await;
            Response::ok(if disable {
                format!("{member} forced offline")
            } else {
                format!("{member} enabled")
            })
        }
        Request::Failover { vip, to } => {
            let Some(vi) = cfg
                .vips
                .iter()
                .position(|v| v.name == vip || v.address.to_string() == vip)
            else {
                return Response::err(format!("no VIP named {vip:?}"));
            };
            let Some(mi) = cfg.vips[vi]
                .members
                .iter()
                .position(|m| m.name == to || m.address.to_string() == to)
            else {
                return Response::err(format!("VIP {vip} has no member {to:?}"));
            };
            let r = ask(&cur.tx, move |sup, flip| {
                match sup.vips[vi].force(vi, mi, Instant::now()) {
                    Ok(Some(f)) => {
                        flip(sup, &f);
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await;
            match r {
                Some(Ok(true)) => Response::ok(format!("{vip} now steers to {to}")),
                Some(Ok(false)) => Response::ok(format!("{to} is already active")),
                Some(Err(e)) => Response::err(e),
                None => Response::err("the supervisor is restarting; try again"),
            }
        }
        Request::Reload => {
            let (otx, orx) = oneshot::channel();
            if reload.send(otx).await.is_err() {
                return Response::err("shutting down");
            }
            orx.await
                .unwrap_or_else(|_| Response::err("reload aborted"))
        }
    }
}

async fn control(
    path: PathBuf,
    cur: watch::Receiver<Arc<Current>>,
    shared: Arc<Shared>,
    reload: mpsc::Sender<oneshot::Sender<Response>>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)
        .with_context(|| format!("bind control socket {}", path.display()))?;
    loop {
        let (s, _) = l.accept().await?;
        let (cur, shared, reload) = (cur.clone(), shared.clone(), reload.clone());
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            if let Ok(Some(line)) = lines.next_line().await {
                let resp = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let c = cur.borrow().clone();
                        handle(req, &c, &shared, &reload).await
                    }
                    Err(e) => Response::err(format!("bad request: {e}")),
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_default();
                out.push('\n');
                let _ = w.write_all(out.as_bytes()).await;
            }
        });
    }
}

async fn metrics(
    addr: String,
    cur: watch::Receiver<Arc<Current>>,
    shared: Arc<Shared>,
) -> Result<()> {
    let l = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("bind metrics {addr}"))?;
    loop {
        let (mut s, _) = l.accept().await?;
        let (cur, shared) = (cur.clone(), shared.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncReadExt::read(&mut s, &mut buf),
            )
            .await;
            let c = cur.borrow().clone();
            let (cfg, sh, st) = (c.cfg.clone(), shared.clone(), c.stats.clone());
            let body = ask(&c.tx, move |sup, _| {
                api::metrics(&status(&cfg, &sh, sup, &st))
            })
            .await
            .unwrap_or_default();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// Runs the daemon until SIGTERM or SIGINT. The datapath stays pinned and forwarding.
pub async fn run(path: &Path, replace: bool, datapath_debug: bool) -> Result<()> {
    let cfg = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut dp, adopted) = open_datapath(&cfg, replace, datapath_debug)?;
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
    let actives = install(&cfg, &mut dp)?;
    let shared = Arc::new(Shared {
        dp: Mutex::new(dp),
        adopted,
        installed_exclusions: excl,
    });
    let instance = sipvip::monitor::sip::token(6);
    let cfg = Arc::new(cfg);
    let mut gen = start(cfg.clone(), shared.clone(), &actives, &instance);
    let (cur_tx, cur_rx) = watch::channel(Arc::new(Current {
        cfg: cfg.clone(),
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
        tokio::spawn(metrics(
            cfg.admin.metrics.clone(),
            cur_rx.clone(),
            shared.clone(),
        ))
    });
    tracing::info!(config = %path.display(), adopted, vips = cfg.vips.len(), "sipvip running");

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let reply: Option<oneshot::Sender<Response>> = tokio::select! {
            _ = hup.recv() => None,
            r = reload_rx.recv() => r,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let resp = match Config::load(path) {
            Err(e) => {
                tracing::error!(problems = %e, "reload rejected; the running configuration stays");
                Response::err(format!("reload rejected:\n{e}"))
            }
            Ok(new) => {
                let r = (|| -> Result<Vec<Installed>> {
                    let mut dp = shared.dp.lock().expect("lock");
                    // VIPs and members that left the configuration.
                    for (i, v) in gen.cfg.vips.iter().enumerate() {
                        if !new.vips.iter().any(|n| n.address == v.address) {
                            dp.remove_vip(&gen.cfg.vip_spec(i, None))?;
                        }
                    }
                    prepare(&new, &mut dp, &shared.installed_exclusions)?;
                    install(&new, &mut dp)
                })();
                match r {
                    Ok(actives) => {
                        let old = std::mem::replace(
                            &mut gen,
                            start(Arc::new(new), shared.clone(), &actives, &instance),
                        );
                        old.stop().await;
                        let _ = cur_tx.send(Arc::new(Current {
                            cfg: gen.cfg.clone(),
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
        if let Some(r) = reply {
            let _ = r.send(resp);
        }
    }
    tracing::info!(
        "stopping; the datapath stays pinned and keeps forwarding (`sipvip down` removes it)"
    );
    gen.stop().await;
    ctl.abort();
    if let Some(m) = met {
        m.abort();
    }
    let _ = std::fs::remove_file(&cfg.admin.socket);
    Ok(())
}
