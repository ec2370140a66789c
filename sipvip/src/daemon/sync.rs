//! The flow-state sync's side effects (`sipvip::sync` is the format): every
//! `ha.sync_interval`, the conntrack entries this datapath gained since the last round go to
//! the other gateways (every entry again every `FULL_EVERY` rounds, so that a gateway that
//! restarted catches up); what the others send is added where this datapath has no entry
//! for the flow. Datagrams come only from the other gateways' sync addresses, and records
//! only for members of this configuration.
//!
//! Every round also carries a hello (this gateway's external MAC, and whether it holds an
//! internal floating address, `ha.floating`: the members' return path). From the others'
//! hellos the datapath learns where to hand a packet without flow state (`SV_RETPATH_V1`,
//! `sipvip::sync::return_path`).

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Instant,
};

use sipvip::{api::SyncStatus, plan::Plan, sync};
use tokio::{net::UdpSocket, task::JoinHandle};

use super::Shared;

/// Every entry is sent again every this many rounds.
const FULL_EVERY: u32 = 20;

/// Starts the sync, if `ha.sync` names gateways.
pub(super) fn start(plan: Arc<Plan>, shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    if plan.sync.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        if let Err(e) = run(&plan, &shared).await {
            tracing::error!(error = %e, "flow-state sync stopped");
            shared.sync.lock().expect("lock").last_error = Some(e);
        }
    }))
}

async fn run(plan: &Plan, shared: &Shared) -> Result<(), String> {
    let locals: HashSet<IpAddr> = sipvip::netif::local_addresses()
        .into_iter()
        .map(IpAddr::V4)
        .chain(
            sipvip::netif::local_addresses6()
                .into_iter()
                .map(IpAddr::V6),
        )
        .collect();
    let Some(me) = plan.sync.iter().find(|a| locals.contains(&a.ip())).copied() else {
        return Err(format!(
            "none of ha.sync ({:?}) is an address of this gateway",
            plan.sync
        ));
    };
    let peers: Vec<SocketAddr> = plan.sync.iter().filter(|a| **a != me).copied().collect();
    let sock = UdpSocket::bind(me)
        .await
        .map_err(|e| format!("bind {me}: {e}"))?;
    shared.sync.lock().expect("lock").listen = Some(me.to_string());
    tracing::info!(listen = %me, peers = ?peers, "flow-state sync");
    let members: HashSet<IpAddr> = plan
        .vips
        .iter()
        .flat_map(|v| &v.members)
        .flat_map(|m| [m.address.map(IpAddr::V4), m.address6.map(IpAddr::V6)])
        .flatten()
        .collect();
    let mut hand = HandOver::new(plan)?;
    let mut sent: HashSet<sync::Entry> = HashSet::new();
    let mut round = 0u32;
    let mut t = tokio::time::interval(plan.sync_interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = t.tick() => {
                round = round.wrapping_add(1);
                let now = entries(shared);
                let fresh: Vec<sync::Entry> = if round % FULL_EVERY == 1 {
                    now.iter().copied().collect()
                } else {
                    now.difference(&sent).copied().collect()
                };
                sent = now;
                send(&sock, &peers, &fresh, &shared.sync).await;
                let hello = hand.hello(plan);
                for p in &peers {
                    let _ = sock.send_to(&sync::encode_hello(&hello), p).await;
                }
                hand.update(plan, shared);
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if let Some(h) = receive(&buf[..n], from, &peers, &members, shared) {
                    let changed = hand.heard.insert(from.ip(), (h, Instant::now()))
                        .is_none_or(|(was, _)| was != h);
                    if changed {
                        hand.update(plan, shared);
                    }
                }
            }
        }
    }
}

/// This datapath's conntrack entries, both families (an unreadable map gives none).
fn entries(shared: &Shared) -> HashSet<sync::Entry> {
    let dp = shared.dp.lock().expect("lock");
    let v4 = dp.conntrack().unwrap_or_default();
    let v6 = dp.conntrack6().unwrap_or_default();
    v4.into_iter()
        .map(|(k, v)| sync::Entry::V4(k, v))
        .chain(v6.into_iter().map(|(k, v)| sync::Entry::V6(k, v)))
        .collect()
}

async fn send(
    sock: &UdpSocket,
    peers: &[SocketAddr],
    fresh: &[sync::Entry],
    stats: &Mutex<SyncStatus>,
) {
    if fresh.is_empty() {
        return;
    }
    for d in sync::encode(fresh) {
        for p in peers {
            match sock.send_to(&d, p).await {
                Ok(_) => stats.lock().expect("lock").sent_datagrams += 1,
                // A peer that is down refuses (ICMP port unreachable): it catches up with
                // the next full round once it is back.
                Err(e) => {
                    tracing::debug!(peer = %p, error = %e, "sync datagram not sent");
                }
            }
        }
    }
    stats.lock().expect("lock").sent_records += fresh.len() as u64;
}

/// Behind ECMP: which gateway carries the members' return path, from this gateway's own
/// addresses and the others' hellos, and what the datapath was last told.
struct HandOver {
    ifindex: u32,
    mac: [u8; 6],
    heard: BTreeMap<IpAddr, (sync::Hello, Instant)>,
    fresh: std::time::Duration,
    written: Option<Option<sipvip_common::ReturnPath>>,
}

impl HandOver {
    fn new(plan: &Plan) -> Result<Self, String> {
        let ifindex = sipvip::netif::index_of(&plan.external)
            .map_err(|e| format!("the external interface {}: {e}", plan.external))?;
        let (mac, _) = sipvip::netif::mac_and_ipv4(ifindex)
            .map_err(|e| format!("the external interface {}: {e}", plan.external))?;
        Ok(HandOver {
            ifindex,
            mac,
            heard: BTreeMap::new(),
            // A claim lapses after three missed hellos (a gateway that died).
            fresh: plan.sync_interval * 3,
            written: None,
        })
    }

    /// Whether this gateway holds an internal floating address.
    fn here(plan: &Plan) -> bool {
        !plan.return_path.is_empty() && {
            let v4 = sipvip::netif::local_addresses();
            let v6 = sipvip::netif::local_addresses6();
            plan.return_path.iter().any(|a| match a {
                IpAddr::V4(a) => v4.contains(a),
                IpAddr::V6(a) => v6.contains(a),
            })
        }
    }

    fn hello(&self, plan: &Plan) -> sync::Hello {
        sync::Hello {
            mac: self.mac,
            return_path: Self::here(plan),
        }
    }

    /// Tells the datapath where packets without flow state go, when that changed.
    fn update(&mut self, plan: &Plan, shared: &Shared) {
        let now = Instant::now();
        let here = Self::here(plan);
        let peers: Vec<sync::Peer> = self
            .heard
            .values()
            .map(|(h, at)| sync::Peer {
                hello: *h,
                age: now.duration_since(*at),
            })
            .collect();
        let want = sync::return_path(here, &peers, self.fresh).map(|dmac| {
            let mut rp = sipvip_common::ReturnPath {
                ifindex: self.ifindex,
                dmac,
                smac: self.mac,
                ..Default::default()
            };
            for (slot, h) in rp.peers.iter_mut().zip(self.heard.values()) {
                *slot = h.0.mac;
            }
            rp
        });
        if self.written == Some(want) {
            return;
        }
        let holder = if here {
            Some("here".to_string())
        } else {
            want.and_then(|rp| {
                self.heard
                    .iter()
                    .find(|(_, (h, _))| h.mac == rp.dmac)
                    .map(|(a, _)| a.to_string())
            })
        };
        let r = shared.dp.lock().expect("lock").set_return_path(want);
        let mut st = shared.sync.lock().expect("lock");
        match r {
            Ok(()) => {
                tracing::info!(return_path = ?holder, "packets without flow state go to the members' return path");
                self.written = Some(want);
                st.return_path = holder;
            }
            Err(e) => st.last_error = Some(format!("hand-over: {e}")),
        }
    }
}

/// Applies a flow datagram, or returns a hello.
fn receive(
    d: &[u8],
    from: SocketAddr,
    peers: &[SocketAddr],
    members: &HashSet<IpAddr>,
    shared: &Shared,
) -> Option<sync::Hello> {
    // The datapath's lock is never taken while the statistics' is held: the status takes
    // them the other way round.
    let verdict = if !peers.iter().any(|p| p.ip() == from.ip()) {
        Err(format!("a datagram from {from}, which is not in ha.sync"))
    } else {
        match sync::decode_any(d) {
            Ok(sync::Datagram::Hello(h)) => return Some(h),
            Ok(sync::Datagram::Flows(es)) => Ok(es),
            Err(e) => Err(format!("from {from}: {e}")),
        }
    };
    let (mut inserted, mut present, mut rejected, mut error) = (0, 0, 0, None);
    if let Ok(es) = &verdict {
        let mut dp = shared.dp.lock().expect("lock");
        for e in es {
            if !members.contains(&e.member()) {
                rejected += 1;
                continue;
            }
            match dp.sync_flow(e) {
                Ok(true) => inserted += 1,
                Ok(false) => present += 1,
                Err(err) => error = Some(err.to_string()),
            }
        }
    }
    let mut st = shared.sync.lock().expect("lock");
    st.received_datagrams += 1;
    match verdict {
        Err(e) => {
            st.rejected_datagrams += 1;
            st.last_error = Some(e);
        }
        Ok(_) => {
            st.inserted += inserted;
            st.present += present;
            st.rejected_records += rejected;
            if error.is_some() {
                st.last_error = error;
            }
        }
    }
    None
}
