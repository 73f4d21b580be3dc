//! The buffer pool: storage buffers by size, handed out to tensors and taken back when the
//! last clone of a tensor is dropped. The pool keeps each buffer's `Arc` (its heap cell)
//! on the free list, so a warmed-up pool hands out tensors without allocating.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub live_bytes: u64,
    /// Bytes of all buffers the pool owns (live + free).
    pub total_bytes: u64,
    /// Highest `total_bytes` seen.
    pub peak_bytes: u64,
    pub buffers_created: u64,
    /// Largest single tensor buffer allocated.
    pub max_buffer_bytes: u64,
    /// Uniform (parameter) buffers created: only when a flush needs more than the last one.
    pub uniform_buffers_created: u64,
    /// Dispatches recorded.
    pub dispatches: u64,
    /// Command buffers submitted with recorded work (a flush submits one or more, see
    /// [`crate::gpu::GpuOptions::max_command_buffer_gflop`]); on a planning GPU, the ones
    /// it would submit.
    pub submits: u64,
    /// Floating-point operations of the recorded conv / matmul / attention dispatches,
    /// counted analytically from their shapes by the ops ([`crate::gpu::Gpu::add_flops`]).
    pub flops: f64,
    /// Most FLOPs of one dispatch since the last [`crate::gpu::Gpu::reset_peak`].
    pub largest_dispatch_flops: f64,
    /// Most FLOPs of one submitted command buffer since the last
    /// [`crate::gpu::Gpu::reset_peak`].
    pub largest_command_buffer_flops: f64,
    /// Bind groups created (the recorder keeps them across flushes: a repeated step with
    /// the same buffers creates none).
    pub bind_groups_created: u64,
}

/// One pooled storage buffer. `live` while a tensor holds it.
pub(crate) struct PooledBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) bytes: u64,
    /// Creation order: the pool hands out the lowest free one.
    id: u64,
    live: bool,
    pool: Weak<Mutex<Pool>>,
}

impl Drop for PooledBuffer {
    /// Only reached for a buffer that was live when its last holder went away without
    /// returning it (two clones dropped at once on two threads), or when the pool is
    /// trimmed / gone: keep the byte counts true.
    fn drop(&mut self) {
        if self.live {
            if let Some(pool) = self.pool.upgrade() {
                let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
                p.stats.live_bytes -= self.bytes;
                p.stats.total_bytes -= self.bytes;
            }
        }
    }
}

/// A tensor's hold on a pooled buffer; the last one to go returns the buffer (and its
/// `Arc`) to the pool.
pub(crate) struct BufRef(Option<Arc<PooledBuffer>>);

impl BufRef {
    pub(crate) fn get(&self) -> &PooledBuffer {
        self.0.as_ref().expect("a live tensor holds its buffer")
    }
}

impl Clone for BufRef {
    fn clone(&self) -> Self {
        BufRef(self.0.clone())
    }
}

impl Drop for BufRef {
    fn drop(&mut self) {
        let Some(mut arc) = self.0.take() else { return };
        // Unique: no other tensor can see this buffer any more (race-free: nobody else
        // holds a reference to clone it from).
        if let Some(pb) = Arc::get_mut(&mut arc) {
            if let Some(pool) = pb.pool.upgrade() {
                pb.live = false;
                pool.lock().unwrap_or_else(|e| e.into_inner()).release(arc);
            }
        }
    }
}

pub(crate) struct Pool {
    /// Free buffers by size, highest id first (`pop` gives the lowest): a step that asks
    /// for the same sizes in the same order as the last one, from the same set of free
    /// buffers, gets the same buffers whatever order they were freed in, so its cached
    /// bind groups are found again.
    free: HashMap<u64, Vec<Arc<PooledBuffer>>>,
    pub(crate) stats: PoolStats,
}

impl Pool {
    pub(crate) fn new() -> Arc<Mutex<Pool>> {
        Arc::new(Mutex::new(Pool { free: HashMap::new(), stats: PoolStats::default() }))
    }

    fn release(&mut self, pb: Arc<PooledBuffer>) {
        self.stats.live_bytes -= pb.bytes;
        let list = self.free.entry(pb.bytes).or_default();
        let at = list.partition_point(|q| q.id > pb.id);
        list.insert(at, pb);
    }

    /// A free buffer of exactly `bytes`, or one made by `create` (counted).
    pub(crate) fn take(this: &Arc<Mutex<Pool>>, bytes: u64, create: impl FnOnce() -> wgpu::Buffer) -> BufRef {
        let mut pool = this.lock().unwrap_or_else(|e| e.into_inner());
        let reused = pool.free.get_mut(&bytes).and_then(|v| v.pop());
        let mut arc = match reused {
            Some(a) => a,
            None => {
                pool.stats.total_bytes += bytes;
                pool.stats.buffers_created += 1;
                pool.stats.peak_bytes = pool.stats.peak_bytes.max(pool.stats.total_bytes);
                pool.stats.max_buffer_bytes = pool.stats.max_buffer_bytes.max(bytes);
                let id = pool.stats.buffers_created;
                Arc::new(PooledBuffer { buffer: create(), bytes, id, live: false, pool: Arc::downgrade(this) })
            }
        };
        if let Some(pb) = Arc::get_mut(&mut arc) {
            pb.live = true;
        }
        pool.stats.live_bytes += bytes;
        BufRef(Some(arc))
    }

    /// Drop every free buffer (`destroy`: also destroy the GPU buffers). Returns how many.
    pub(crate) fn trim(&mut self, destroy: bool) -> usize {
        let mut n = 0;
        let mut freed = 0;
        for (bytes, v) in self.free.drain() {
            for pb in v {
                if destroy {
                    pb.buffer.destroy();
                }
                freed += bytes;
                n += 1;
            }
        }
        self.stats.total_bytes -= freed;
        n
    }
}
