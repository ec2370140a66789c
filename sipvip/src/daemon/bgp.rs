//! Scale-out's side effects (`sipvip::bgp` decides and formats): every `TICK`, which VIPs
//! this gateway can serve (the datapath healthy, the VIP's active member up); when that
//! changes, the routes file is rewritten (atomically) and the routing daemon reloaded. A
//! failed write or reload is retried every tick until it succeeds.

use std::{net::IpAddr, sync::Arc, time::Duration};

use sipvip::plan::Plan;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{control, Shared};
use sipvip::failover::Event;

const TICK: Duration = Duration::from_millis(200);
/// How long the routing daemon's reload may take.
const RELOAD_LIMIT: Duration = Duration::from_secs(5);

pub(super) fn start(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
) -> Option<JoinHandle<()>> {
    let bgp = plan.bgp.clone()?;
    let (file, reload) = (bgp.routes_file, bgp.reload);
    Some(tokio::spawn(async move {
        let mut written: Option<String> = None;
        let mut t = tokio::time::interval(TICK);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let healthy = control::healthy(&plan, &shared).is_ok();
            let Some(up) = control::ask(&tx, |sup, _| {
                sup.vips
                    .iter()
                    .map(|v| v.active.map(|a| v.members[a].up && !v.members[a].disabled))
                    .collect::<Vec<Option<bool>>>()
            })
            .await
            else {
                continue;
            };
            let served: Vec<usize> = (0..plan.vips.len())
                .filter(|&i| sipvip::bgp::announces(healthy, up.get(i).copied().flatten()))
                .collect();
            let mut routes: Vec<(IpAddr, u8)> = served
                .iter()
                .flat_map(|&i| {
                    let s = &plan.vips[i].spec;
                    [
                        s.addr.map(|a| (IpAddr::V4(a), 32)),
                        s.addr6.map(|a| (IpAddr::V6(a), 128)),
                    ]
                })
                .flatten()
                .collect();
            let members = sipvip::bgp::announces_members(healthy);
            if members {
                routes.extend(&bgp.member_subnets);
            }
            let text = sipvip::bgp::render_bird(&routes);
            if written.as_deref() == Some(text.as_str()) {
                continue;
            }
            let names: Vec<String> = served.iter().map(|&i| plan.vips[i].name.clone()).collect();
            match apply(&file, &text, &reload).await {
                Ok(()) => {
                    tracing::info!(event = "bgp_routes", announced = ?names, "the routing daemon reloaded the VIP routes");
                    let mut st = shared.bgp.lock().expect("lock");
                    st.announced = names;
                    st.member_subnets = if members {
                        bgp.member_subnets
                            .iter()
                            .map(|(a, l)| format!("{a}/{l}"))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    st.reloads += 1;
                    st.last_error = None;
                    written = Some(text);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update the VIP routes; retrying");
                    shared.bgp.lock().expect("lock").last_error = Some(e);
                }
            }
        }
    }))
}

/// Writes `text` to `file` (a temporary file renamed over it) and runs `reload`.
async fn apply(file: &std::path::Path, text: &str, reload: &[String]) -> Result<(), String> {
    let tmp = file.with_extension("sipvip-tmp");
    tokio::fs::write(&tmp, text)
        .await
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, file)
        .await
        .map_err(|e| format!("rename to {}: {e}", file.display()))?;
    let (program, args) = reload.split_first().ok_or("bgp.reload is empty")?;
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(RELOAD_LIMIT, run).await {
        Err(_) => Err(format!("{reload:?} took longer than {RELOAD_LIMIT:?}")),
        Ok(Err(e)) => Err(format!("{reload:?}: {e}")),
        Ok(Ok(o)) if !o.status.success() => Err(format!(
            "{reload:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(Ok(_)) => Ok(()),
    }
}
