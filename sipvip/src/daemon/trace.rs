//! `sipvip trace`'s side effects (`sipvip::trace` decides and formats): a trace is a
//! control-socket connection. The daemon installs the datapath's filter, reads the ring
//! buffer and streams one JSON line per event (`sipvip::trace::Line`), with the datapath's
//! counts every second; when the connection ends (the command finished, was interrupted or
//! killed with SIGKILL), it removes the filter. One trace at a time: the ring buffer has
//! one reader, and a second trace is refused while the first runs.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sipvip::{
    api::Response,
    plan::Plan,
    trace::{self, Line, Namer, TraceRequest},
};
use sipvip_common::TraceEvent;
use tokio::{
    io::unix::AsyncFd,
    io::{AsyncWriteExt, BufReader, Lines},
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
};

use super::Shared;

async fn send<T: serde::Serialize>(w: &mut OwnedWriteHalf, v: &T) -> bool {
    let mut out = serde_json::to_string(v).unwrap_or_default();
    out.push('\n');
    w.write_all(out.as_bytes()).await.is_ok()
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` now (the datapath stamps events with the latter).
fn epoch_offset_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec for the kernel to fill.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Serves one trace until its connection ends.
pub(super) async fn serve(
    req: TraceRequest,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    mut lines: Lines<BufReader<OwnedReadHalf>>,
    mut w: OwnedWriteHalf,
) {
    let filter = match trace::filter(&req, &plan) {
        Ok(f) => f,
        Err(e) => {
            send(&mut w, &Response::err(e)).await;
            return;
        }
    };
    let Some(ring) = shared.trace_ring.lock().expect("lock").take() else {
        send(
            &mut w,
            &Response::err(
                "another trace is running (one at a time: it ends when its command does)",
            ),
        )
        .await;
        return;
    };
    let started = shared.dp.lock().expect("lock").start_trace(filter);
    if let Err(e) = started {
        *shared.trace_ring.lock().expect("lock") = Some(ring);
        send(
            &mut w,
            &Response::err(format!("cannot start the trace: {e}")),
        )
        .await;
        return;
    }
    tracing::info!(event = "trace_start", request = ?req, "a trace started");
    // SAFETY: the ring buffer owns its fd for its whole life inside the AsyncFd.
    let mut fd =
        match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(error = %e, "the trace's ring buffer cannot be polled");
                let _ = shared.dp.lock().expect("lock").stop_trace();
                send(&mut w, &Response::err(format!("ring buffer: {e}"))).await;
                return;
            }
        };
    let interfaces: BTreeMap<u32, String> = plan
        .attachments
        .iter()
        .filter_map(|(_, i)| Some((sipvip::netif::index_of(i).ok()?, i.clone())))
        .collect();
    let namer = Namer {
        plan: &plan,
        interfaces,
        epoch_offset_ns: epoch_offset_ns(),
    };
    let mut open = send(&mut w, &Response::ok("tracing")).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let counts = |shared: &Shared| {
        let c = shared
            .dp
            .lock()
            .expect("lock")
            .trace_counters()
            .unwrap_or_default();
        Line::Counts {
            matched: c.matched,
            emitted: c.emitted,
            rate_limited: c.rate_limited,
            lost: c.lost,
        }
    };
    while open {
        tokio::select! {
            r = fd.readable_mut() => {
                let batch = {
                    let Ok(mut g) = r else { break };
                    let mut batch = Vec::new();
                    while let Some(item) = g.get_inner_mut().next() {
                        if item.len() >= std::mem::size_of::<TraceEvent>() {
                            // SAFETY: the datapath wrote a whole TraceEvent (repr(C), any
                            // bit pattern valid); read unaligned from the ring's memory.
                            let e: TraceEvent = unsafe {
                                std::ptr::read_unaligned(item.as_ptr() as *const TraceEvent)
                            };
                            batch.push(trace::record(&e, &namer));
                        }
                    }
                    g.clear_ready();
                    batch
                };
                for r in batch {
                    if !send(&mut w, &Line::Event(Box::new(r))).await {
                        open = false;
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                open = send(&mut w, &counts(&shared)).await;
            }
            l = lines.next_line() => {
                // The command sends nothing more: its end (or death) closes the connection.
                if !matches!(l, Ok(Some(_))) {
                    break;
                }
            }
        }
    }
    let _ = shared.dp.lock().expect("lock").stop_trace();
    // What the datapath had emitted is not for the next trace.
    let mut ring = fd.into_inner();
    while ring.next().is_some() {}
    *shared.trace_ring.lock().expect("lock") = Some(ring);
    let _ = send(&mut w, &counts(&shared)).await;
    tracing::info!(
        event = "trace_end",
        "the trace ended; its filter is removed"
    );
}
