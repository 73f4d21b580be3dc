//! GPU timestamp profiling: one timestamped pass per dispatch while on (the recorder
//! encodes them), read back per kernel.
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::context::{lock, Gpu};
use super::recorder::ProfileReadback;
use crate::error::{Error, Result};

impl Gpu {
    /// Whether [`Gpu::set_profiling`] can work here: the adapter has `TIMESTAMP_QUERY`
    /// (requested by [`Gpu::new`]) and this is not a planning GPU.
    pub fn can_profile(&self) -> bool {
        self.0.info.timestamp_query && !self.is_plan()
    }

    /// Turn GPU timestamp profiling on or off; returns whether it is now on (never
    /// where [`Gpu::can_profile`] is false). While on, each flush puts every dispatch in
    /// its own compute pass with beginning / end timestamps; [`Gpu::take_profile`] reads
    /// them. Off (the default), flushes record one pass as always. Work already
    /// recorded is flushed first so that it is not attributed to the new mode.
    pub fn set_profiling(&self, on: bool) -> Result<bool> {
        self.flush()?;
        let on = on && self.can_profile();
        self.0.profiling.store(on, Ordering::SeqCst);
        Ok(on)
    }

    pub fn profiling(&self) -> bool {
        self.0.profiling.load(Ordering::SeqCst)
    }

    /// GPU time per kernel (`file:kernel`, nanoseconds, dispatch count) of every dispatch
    /// profiled since the last call, most expensive first. Flushes and waits for the
    /// GPU. Empty when profiling was never on.
    pub async fn take_profile(&self) -> Result<Vec<(String, u64, u64)>> {
        self.flush()?;
        let pending: Vec<ProfileReadback> = std::mem::take(&mut *lock(&self.0.profile));
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let mut waits = Vec::with_capacity(pending.len());
        for r in &pending {
            let (tx, rx) = futures_channel::oneshot::channel();
            r.staging.map_async(wgpu::MapMode::Read, .., move |res| {
                let _ = tx.send(res);
            });
            waits.push(rx);
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.0.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(e.to_string()))?;
        let period = self.0.queue.get_timestamp_period() as f64;
        let mut acc: HashMap<String, (f64, u64)> = HashMap::new();
        for (r, rx) in pending.iter().zip(waits) {
            rx.await
                .map_err(|_| Error::Readback("the GPU dropped the map request".into()))?
                .map_err(|e| Error::Readback(e.to_string()))?;
            {
                let view = r.staging.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
                let ticks: &[u64] = bytemuck::cast_slice(&view);
                for (label, pair) in r.labels.iter().zip(ticks.chunks_exact(2)) {
                    let e = acc.entry(label.clone()).or_insert((0.0, 0));
                    e.0 += pair[1].saturating_sub(pair[0]) as f64 * period;
                    e.1 += 1;
                }
            }
            r.staging.unmap();
            r.staging.destroy();
        }
        self.take_error()?;
        let mut out: Vec<(String, u64, u64)> = acc.into_iter().map(|(k, (ns, n))| (k, ns.round() as u64, n)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

}
