//! The flow-state sync's side effects (`sipvip::sync` is the format): every
//! `ha.sync_interval`, the conntrack entries this datapath gained since the last round go to
//! the other gateways (every entry again every `FULL_EVERY` rounds, so that a gateway that
//! restarted catches up); what the others send is added where this datapath has no entry
//! for the flow. Datagrams come only from the other gateways' sync addresses, and records
//! only for members of this configuration.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
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
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                receive(&buf[..n], from, &peers, &members, shared);
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

fn receive(
    d: &[u8],
    from: SocketAddr,
    peers: &[SocketAddr],
    members: &HashSet<IpAddr>,
    shared: &Shared,
) {
    // The datapath's lock is never taken while the statistics' is held: the status takes
    // them the other way round.
    let verdict = if !peers.iter().any(|p| p.ip() == from.ip()) {
        Err(format!("a datagram from {from}, which is not in ha.sync"))
    } else {
        sync::decode(d).map_err(|e| format!("from {from}: {e}"))
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
}
