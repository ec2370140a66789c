//! The control socket (status, member, failover, reload), the status snapshot, and the HTTP
//! listener: `/metrics`, and the kubelet's probes `/healthz` and `/readyz`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use sipvip::{
    api::{self, Request, Response, Status},
    config::HaMode,
    failover::{Event, Flip, Supervisor},
    monitor::{probe::ProbeStats, Health, MonitorKey},
    plan::Plan,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener},
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use super::{Current, Shared};

pub(super) fn status(
    plan: &Plan,
    shared: &Shared,
    sup: &Supervisor,
    stats: &[Arc<ProbeStats>],
) -> Status {
    use std::sync::atomic::Ordering::Relaxed;
    let now = Instant::now();
    let resolve_errors = shared.resolve_errors.lock().expect("lock").clone();
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
        ready: ready(sup),
        config: shared.config.lock().expect("lock").clone(),
        ha_state: (plan.ha == HaMode::Keepalived)
            .then(|| shared.ha_state.lock().expect("lock").clone()),
        sync: (!plan.sync.is_empty()).then(|| shared.sync.lock().expect("lock").clone()),
        bgp: plan
            .bgp
            .is_some()
            .then(|| shared.bgp.lock().expect("lock").clone()),
        tracing: dp.trace_filter().is_some_and(|t| t.on != 0),
        ..Default::default()
    };
    // Every VIP's counters in one read of the flow cache's slots.
    let counters = dp
        .vips_counters(0..plan.vips.len() as u32)
        .unwrap_or_default();
    for (vi, (v, st)) in plan.vips.iter().zip(&sup.vips).enumerate() {
        let c = counters.get(vi).copied().unwrap_or_default();
        let proto = |n: u8| {
            sipvip::proto::Protocol::from_number(n)
                .map_or_else(|| n.to_string(), |p| p.name().to_string())
        };
        s.vips.push(api::VipStatus {
            name: v.name.clone(),
            address: v.spec.addr.map(|a| a.to_string()),
            address6: v.spec.addr6.map(|a| a.to_string()),
            active: st.active.map(|a| v.members[a].name.clone()),
            draining: st.draining.map(|d| v.members[d].name.clone()),
            active_for_s: now.saturating_duration_since(st.active_since).as_secs_f64(),
            owner: shared.owners.lock().expect("lock").get(&v.name).copied(),
            failovers: st.failovers,
            last_failover_ms: st.last_failover_time.map(|d| d.as_secs_f64() * 1000.0),
            services: v
                .spec
                .services
                .iter()
                .enumerate()
                .map(|(i, sv)| api::ServiceStatus {
                    protocol: proto(sv.proto),
                    port: sv.port,
                    member_port: sv.member_port,
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
                    address: m.address.map(|a| a.to_string()),
                    address6: m.address6.map(|a| a.to_string()),
                    host: m.host.clone(),
                    resolve_error: resolve_errors.get(&m.name).cloned(),
                    priority: m.priority,
                    up: st.members[mi].up,
                    disabled: st.members[mi].disabled,
                    active: st.active == Some(mi),
                    monitors: sup
                        .health
                        .iter()
                        .filter(|(k, _)| k.vip == vi && k.member == mi)
                        .map(|(k, h): (&MonitorKey, &Health)| api::MonitorStatus {
                            name: if k.v6 {
                                format!("{} (IPv6)", plan.monitors[k.monitor])
                            } else {
                                plan.monitors[k.monitor].clone()
                            },
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

/// Ready once every monitor has given its first result: before that the supervisor has not
/// chosen from real answers.
fn ready(sup: &Supervisor) -> bool {
    sup.health.values().all(|h| h.results > 0)
}

/// Alive: every link the plan names is pinned, and the datapath's maps can be read. The
/// answer's body says what is missing.
pub(super) fn healthy(plan: &Plan, shared: &Shared) -> std::result::Result<(), String> {
    for pin in plan.link_pins() {
        if !pin.exists() {
            return Err(format!("not attached: {} is missing", pin.display()));
        }
    }
    shared
        .dp
        .lock()
        .expect("lock")
        .reasons()
        .map(|_| ())
        .map_err(|e| format!("datapath maps unreadable: {e}"))
}

/// Asks the running generation something, with the supervisor and actuator in hand.
pub(super) async fn ask<T: Send + 'static>(
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

pub(super) async fn handle(
    req: Request,
    cur: &Current,
    shared: &Arc<Shared>,
    reload: &mpsc::Sender<oneshot::Sender<Response>>,
) -> Response {
    let plan = cur.plan.clone();
    let find = |name: &str| plan.member_named(name);
    let disable = matches!(req, Request::Disable { .. });
    match req {
        Request::Status => {
            let (c, sh, st) = (cur.plan.clone(), shared.clone(), cur.stats.clone());
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
            let Some(vi) = plan.vips.iter().position(|v| {
                v.name == vip
                    || v.spec.addr.is_some_and(|a| a.to_string() == vip)
                    || v.spec.addr6.is_some_and(|a| a.to_string() == vip)
            }) else {
                return Response::err(format!("no VIP named {vip:?}"));
            };
            let Some(mi) = plan.vips[vi].members.iter().position(|m| {
                m.name == to
                    || m.address.is_some_and(|a| a.to_string() == to)
                    || m.address6.is_some_and(|a| a.to_string() == to)
            }) else {
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
        Request::HaState { state } => {
            if !matches!(state.as_str(), "master" | "backup" | "fault" | "stop") {
                return Response::err(format!(
                    "{state:?} is not a VRRP state: master, backup, fault or stop"
                ));
            }
            if plan.ha != HaMode::Keepalived {
                return Response::err(
                    "ha.mode is not \"keepalived\": this gateway owns its VIPs' addresses itself",
                );
            }
            let was = std::mem::replace(&mut *shared.ha_state.lock().expect("lock"), state.clone());
            tracing::info!(event = "ha_state", from = %was, to = %state, "keepalived reported this gateway's VRRP state");
            if state == "master" {
                // The new master announces every VIP at once.
                super::announce_all(&plan);
                return Response::ok(format!(
                    "master (was {was}): announcing {} VIP(s)",
                    plan.vips.len()
                ));
            }
            Response::ok(format!("{state} (was {was})"))
        }
        Request::Announce => {
            super::announce_all(&plan);
            Response::ok(format!("announcing {} VIP(s)", plan.vips.len()))
        }
        Request::Trace(_) => Response::err("a trace is served on its own connection"),
        Request::Health => match healthy(&plan, shared) {
            Ok(()) => Response::ok("healthy: the datapath is attached and its maps readable"),
            Err(e) => Response::err(format!("unhealthy: {e}")),
        },
    }
}

pub(super) async fn control(
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
                // A trace keeps its connection: events until the command goes.
                if let Ok(Request::Trace(req)) = serde_json::from_str::<Request>(&line) {
                    let plan = cur.borrow().plan.clone();
                    super::trace::serve(req, plan, shared, lines, w).await;
                    return;
                }
                let resp = match serde_json::from_str::<Request>(&line) {
                    // A status asked while a reload swaps the supervisor is asked again of
                    // the next one (for up to 2 s), rather than answered "try again".
                    Ok(Request::Status) => {
                        let mut resp = Response::err("the supervisor is restarting; try again");
                        for _ in 0..40 {
                            let c = cur.borrow().clone();
                            resp = handle(Request::Status, &c, &shared, &reload).await;
                            if resp.ok {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        resp
                    }
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

/// The HTTP listener of `admin.metrics`: `GET /metrics` (and `/`), `GET /healthz`, `GET
/// /readyz`; anything else is 404.
pub(super) async fn metrics(
    addr: String,
    cur: watch::Receiver<Arc<Current>>,
    shared: Arc<Shared>,
) -> Result<()> {
    let l = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("bind metrics {addr}"))?;
    loop {
        // A failed accept (a connection reset before it was taken, no file descriptors
        // left) must not end the listener the kubelet probes.
        let mut s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (cur, shared) = (cur.clone(), shared.clone());
        tokio::spawn(async move {
            // The request may come in pieces: read until the end of its headers (or 1 KiB,
            // or 2 s), so a request line split across reads is not taken for garbage.
            let mut buf = [0u8; 1024];
            let mut n = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout_at(
                    deadline,
                    tokio::io::AsyncReadExt::read(&mut s, &mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(m)) if m > 0 => n += m,
                    _ => break,
                }
            }
            let path = request_path(&buf[..n]);
            let c = cur.borrow().clone();
            let (code, ty, body) = match path.as_deref() {
                Some("/metrics") | Some("/") => {
                    let (plan, sh, st) = (c.plan.clone(), shared.clone(), c.stats.clone());
                    let body = ask(&c.tx, move |sup, _| {
                        api::metrics(&status(&plan, &sh, sup, &st))
                    })
                    .await
                    .unwrap_or_default();
                    ("200 OK", "text/plain; version=0.0.4", body)
                }
                Some("/healthz") => match healthy(&c.plan, &shared) {
                    Ok(()) => ("200 OK", "text/plain", "ok\n".to_string()),
                    Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
                },
                Some("/readyz") => match ask(&c.tx, |sup, _| ready(sup)).await {
                    Some(true) => ("200 OK", "text/plain", "ready\n".to_string()),
                    Some(false) => (
                        "503 Service Unavailable",
                        "text/plain",
                        "waiting for every monitor's first result\n".to_string(),
                    ),
                    None => (
                        "503 Service Unavailable",
                        "text/plain",
                        "the supervisor is restarting\n".to_string(),
                    ),
                },
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ty}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// The path of an HTTP request's first line (`GET /path HTTP/1.x`), without a query.
fn request_path(req: &[u8]) -> Option<String> {
    let line = req.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let (_method, target) = (words.next()?, words.next()?);
    Some(target.split('?').next().unwrap_or(target).to_string())
}

#[cfg(test)]
mod tests {
    use super::request_path;

    #[test]
    fn request_paths() {
        assert_eq!(
            request_path(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            request_path(b"GET /metrics?x=1 HTTP/1.0\r\n").as_deref(),
            Some("/metrics")
        );
        assert_eq!(request_path(b"garbage"), None);
        assert_eq!(request_path(b""), None);
    }
}
