//! Adapter + device with the adapter's real limits, the pipeline cache, the
//! buffer pool, dispatch recording (one uniform buffer and one command buffer
//! per flush) and the async readback used on native and on the web.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::shader::{assemble, find_kernel, Access, KernelSource};
use super::tensor::{DType, PooledBuffer, Tensor};
use crate::error::{Error, Result};

/// What the page and the CLI show about the adapter.
#[derive(Clone, Debug, Serialize)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// The adapter offers `shader-f16`.
    pub shader_f16: bool,
    /// Kernels use native f16 storage (`shader-f16` present and not disabled).
    pub native_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Use `shader-f16` when the adapter has it (otherwise f16 is packed in u32).
    pub native_f16: bool,
    /// Ask for a low-power adapter instead of the high-performance one.
    pub low_power: bool,
    /// Pretend the adapter allows at most this many bytes per buffer / binding
    /// (to test the splitting paths on a big adapter). `None`: the adapter's.
    pub max_binding_override: Option<u64>,
    /// Planning mode: allocate exactly as a real run (same pool, same sizes) but create
    /// no real buffers, upload nothing and dispatch nothing; see [`Gpu::pool_stats`].
    pub plan_only: bool,
    /// GEMM kernels for matmul / linear / conv (see [`GemmVariant`]).
    pub gemm: GemmVariant,
    /// Largest GEMM / conv / attention dispatch in GFLOP: larger ones are recorded as
    /// several dispatches over ranges of output tiles (a GPU watchdog's margin).
    pub max_dispatch_gflop: f64,
}

/// Which GEMM kernel family matmul / linear / conv use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmVariant {
    /// 64×64×16 tiles, 4×4 outputs per thread (shaders/gemm_tile.wgsl).
    V1,
    /// 128×128 / 128×64 tiles, 8×8 / 8×4 outputs per thread, double-buffered, split-K
    /// (shaders/gemm_v2.wgsl).
    #[default]
    V2,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { native_f16: true, low_power: false, max_binding_override: None, plan_only: false, gemm: GemmVariant::default(), max_dispatch_gflop: 25.0 }
    }
}

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
    pub dispatches: u64,
    pub submits: u64,
    /// Floating-point operations of the recorded conv / matmul / attention dispatches,
    /// counted analytically from their shapes by the ops ([`Gpu::add_flops`]).
    pub flops: f64,
}

pub(crate) struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

impl Pool {
    pub(crate) fn release(&mut self, buffer: wgpu::Buffer, bytes: u64) {
        self.stats.live_bytes -= bytes;
        self.free.entry(bytes).or_default().push(buffer);
    }
}

struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

struct Pending {
    pipe: Arc<Pipe>,
    params: Vec<u32>,
    buffers: Vec<wgpu::Buffer>,
    groups: [u32; 3],
    label: String,
}

/// Timestamps of one profiled flush (a chunk of at most [`PROFILE_CHUNK`] dispatches):
/// a mappable copy of the resolved query set and the label of each dispatch.
struct ProfileReadback {
    staging: wgpu::Buffer,
    labels: Vec<String>,
}

/// Dispatches per query set (two timestamps each).
const PROFILE_CHUNK: usize = (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize;

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: GpuInfo,
    limits: wgpu::Limits,
    native_f16: bool,
    max_binding: u64,
    pipelines: Mutex<HashMap<String, Arc<Pipe>>>,
    pool: Arc<Mutex<Pool>>,
    pending: Mutex<Vec<Pending>>,
    error: Arc<Mutex<Option<String>>>,
    /// Planning mode: the one buffer every tensor points at.
    plan_buffer: Option<wgpu::Buffer>,
    /// Profiling mode ([`Gpu::set_profiling`]): one timestamped pass per dispatch.
    profiling: AtomicBool,
    /// Timestamps submitted but not yet read ([`Gpu::take_profile`]).
    profile: Mutex<Vec<ProfileReadback>>,
    /// The uniform buffer of the last flush, reused (and only grown) by the next ones:
    /// `queue.write_buffer` is ordered after the work already submitted.
    uniforms: Mutex<Option<wgpu::Buffer>>,
    /// Set when the device is lost (message), and who to tell.
    lost: Arc<Mutex<Option<String>>>,
    lost_hooks: Arc<Mutex<Vec<LostHook>>>,
    /// Completion of the work submitted before the last [`Gpu::pace`] call.
    pace: Mutex<Option<futures_channel::oneshot::Receiver<()>>>,
    /// Mappable buffers of finished readbacks, for the next ones.
    staging: Mutex<Vec<wgpu::Buffer>>,
    gemm: GemmVariant,
    max_dispatch_gflop: f64,
}

type LostHook = Box<dyn Fn(&str) + Send + Sync>;

/// The GPU: cheap to clone, shared by everything that records work.
#[derive(Clone)]
pub struct Gpu(Arc<Inner>);

/// One kernel launch: `workgroups` is a linear count, split over x/y so no
/// dimension exceeds the adapter's limit; kernels rebuild the linear index as
/// `wid.x + wid.y * nwg.x` and ignore indices past the count.
pub struct Dispatch<'a> {
    pub file: &'static str,
    pub kernel: &'static str,
    pub params: &'a [u32],
    pub tensors: &'a [&'a Tensor],
    pub workgroups: u64,
}

/// Most parameters (after `numel`) and tensors (inputs + output) of a map kernel.
const MAP_MAX_PARAMS: usize = 15;
const MAP_MAX_TENSORS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gpu {
    /// Open the default adapter: WebGPU in the browser (never WebGL), natively
    /// Vulkan / Metal / DX12 (`WGPU_BACKEND` is honoured).
    pub async fn new(opts: GpuOptions) -> Result<Gpu> {
        #[cfg(target_arch = "wasm32")]
        let desc = wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        };
        #[cfg(not(target_arch = "wasm32"))]
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: if opts.low_power {
                    wgpu::PowerPreference::LowPower
                } else {
                    wgpu::PowerPreference::HighPerformance
                },
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let afeat = adapter.features();
        let mut features = wgpu::Features::empty();
        let shader_f16 = afeat.contains(wgpu::Features::SHADER_F16);
        let native_f16 = shader_f16 && opts.native_f16;
        if native_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let subgroups = afeat.contains(wgpu::Features::SUBGROUP);
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let timestamp_query = afeat.contains(wgpu::Features::TIMESTAMP_QUERY);
        if timestamp_query {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // The adapter's real limits, not wgpu's conservative defaults.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("sd-webgpu"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        let error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let e2 = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = lock(&e2);
            if slot.is_none() {
                *slot = Some(match e {
                    wgpu::Error::OutOfMemory { .. } => "the GPU ran out of memory. This adapter is too small for this model at this size: close other GPU-heavy tabs or apps, use f16 storage, a smaller image or batch".to_string(),
                    e => e.to_string(),
                });
            }
        }));
        let e3 = error.clone();
        let lost: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let lost_hooks: Arc<Mutex<Vec<LostHook>>> = Arc::new(Mutex::new(Vec::new()));
        let (l2, h2) = (lost.clone(), lost_hooks.clone());
        device.set_device_lost_callback(move |reason, msg| {
            let m = format!("the GPU device was lost ({reason:?}){}", if msg.is_empty() { String::new() } else { format!(": {msg}") });
            *lock(&e3) = Some(m.clone());
            *lock(&l2) = Some(m.clone());
            for h in lock(&h2).iter() {
                h(&m);
            }
        });
        let ai = adapter.get_info();
        let max_binding = opts
            .max_binding_override
            .unwrap_or(u64::MAX)
            .min(limits.max_storage_buffer_binding_size as u64)
            .min(limits.max_buffer_size);
        let info = GpuInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: format!("{} {}", ai.driver, ai.driver_info).trim().to_string(),
            shader_f16,
            native_f16,
            subgroups,
            timestamp_query,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        };
        let plan_buffer = opts.plan_only.then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("plan placeholder"),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(Gpu(Arc::new(Inner {
            device,
            queue,
            info,
            limits,
            native_f16,
            max_binding,
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(Pool { free: HashMap::new(), stats: PoolStats::default() })),
            pending: Mutex::new(Vec::new()),
            error,
            plan_buffer,
            profiling: AtomicBool::new(false),
            profile: Mutex::new(Vec::new()),
            uniforms: Mutex::new(None),
            lost,
            lost_hooks,
            pace: Mutex::new(None),
            staging: Mutex::new(Vec::new()),
            gemm: opts.gemm,
            max_dispatch_gflop: opts.max_dispatch_gflop,
        })))
    }

    pub fn info(&self) -> &GpuInfo {
        &self.0.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.0.limits
    }
    /// Planning mode (see [`GpuOptions::plan_only`]).
    pub fn is_plan(&self) -> bool {
        self.0.plan_buffer.is_some()
    }
    pub fn native_f16(&self) -> bool {
        self.0.native_f16
    }
    /// The GEMM kernel family ([`GpuOptions::gemm`]).
    pub fn gemm(&self) -> GemmVariant {
        self.0.gemm
    }
    /// [`GpuOptions::max_dispatch_gflop`].
    pub fn max_dispatch_gflop(&self) -> f64 {
        self.0.max_dispatch_gflop
    }
    pub fn device(&self) -> &wgpu::Device {
        &self.0.device
    }
    /// Largest buffer a kernel may bind (the smaller of max buffer and binding size).
    pub fn max_binding(&self) -> u64 {
        self.0.max_binding
    }
    pub fn pool_stats(&self) -> PoolStats {
        lock(&self.0.pool).stats
    }
    /// Count floating-point operations of a recorded op (see [`PoolStats::flops`]).
    pub fn add_flops(&self, flops: f64) {
        lock(&self.0.pool).stats.flops += flops;
    }

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

    /// Profiling mode: every dispatch in its own compute pass with timestamps at its
    /// beginning and end; the query sets are resolved and copied to mappable buffers
    /// read by [`Gpu::take_profile`].
    fn encode_profiled(&self, enc: &mut wgpu::CommandEncoder, pending: &[Pending], groups: &[wgpu::BindGroup]) {
        let dev = &self.0.device;
        let live: Vec<usize> = (0..pending.len()).filter(|&i| pending[i].groups[0] != 0).collect();
        let mut readbacks = Vec::new();
        for chunk in live.chunks(PROFILE_CHUNK) {
            let count = 2 * chunk.len() as u32;
            let qs = dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            for (j, &i) in chunk.iter().enumerate() {
                let p = &pending[i];
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&p.label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &qs,
                        beginning_of_pass_write_index: Some(2 * j as u32),
                        end_of_pass_write_index: Some(2 * j as u32 + 1),
                    }),
                });
                pass.set_pipeline(&p.pipe.pipeline);
                pass.set_bind_group(0, &groups[i], &[]);
                pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
            }
            let bytes = count as u64 * wgpu::QUERY_SIZE as u64;
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            enc.resolve_query_set(&qs, 0..count, &resolve, 0);
            let staging = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
            readbacks.push(ProfileReadback { staging, labels: chunk.iter().map(|&i| pending[i].label.clone()).collect() });
        }
        lock(&self.0.profile).extend(readbacks);
    }

    /// Why the device was lost, once it was.
    pub fn lost(&self) -> Option<String> {
        lock(&self.0.lost).clone()
    }

    /// Call `f` with the reason when the device is lost (once).
    pub fn on_lost(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        lock(&self.0.lost_hooks).push(Box::new(f));
    }

    /// Destroy the device (what a driver reset does to a page): every later use fails and
    /// the lost hooks run. For testing recovery.
    pub fn destroy(&self) {
        self.0.device.destroy();
    }

    /// Keep at most one flush of work queued ahead of the GPU without blocking it: waits
    /// for the work submitted before the previous `pace()` call, then marks what is
    /// submitted now. In the browser this also yields to the event loop (messages such
    /// as a cancel are handled). Natively it returns at once.
    pub async fn pace(&self) -> Result<()> {
        self.flush()?;
        if cfg!(not(target_arch = "wasm32")) || self.is_plan() {
            return Ok(());
        }
        let (tx, rx) = futures_channel::oneshot::channel();
        self.0.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        let prev = lock(&self.0.pace).replace(rx);
        if let Some(prev) = prev {
            // A dropped sender (device lost) also ends the wait; the error is reported below.
            let _ = prev.await;
        }
        self.take_error()
    }

    /// Start measuring a new peak from the current total.
    pub fn reset_peak(&self) {
        let mut p = lock(&self.0.pool);
        p.stats.peak_bytes = p.stats.total_bytes;
    }
    /// Drop every free buffer of the pool.
    pub fn trim_pool(&self) {
        // Recorded work may still use freed buffers: submit it first (wgpu keeps a destroyed
        // buffer alive until submitted work that uses it is done).
        let _ = self.flush();
        let plan = self.is_plan();
        lock(&self.0.staging).clear();
        let mut p = lock(&self.0.pool);
        let mut freed = 0;
        for (bytes, v) in p.free.drain() {
            for b in v {
                if !plan {
                    b.destroy();
                }
                freed += bytes;
            }
        }
        p.stats.total_bytes -= freed;
    }

    fn take_error(&self) -> Result<()> {
        if let Some(m) = self.lost() {
            return Err(Error::DeviceLost(m));
        }
        match lock(&self.0.error).take() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// An uninitialised tensor from the pool.
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel == 0 {
            return crate::error::shape_err("alloc", format!("tensor of shape {shape:?} is empty"));
        }
        // Round to 256 bytes so similar shapes share buffers.
        let bytes = dtype.buffer_bytes(numel).div_ceil(256) * 256;
        if bytes > self.0.max_binding && !self.is_plan() {
            return Err(Error::Limit {
                what: format!("a {} tensor of shape {shape:?}", dtype.name()),
                needed: bytes,
                limit: self.0.max_binding,
                limit_name: "maxStorageBufferBindingSize / maxBufferSize",
            });
        }
        let mut pool = lock(&self.0.pool);
        let reused = pool.free.get_mut(&bytes).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => b,
            None => {
                pool.stats.total_bytes += bytes;
                pool.stats.buffers_created += 1;
                pool.stats.peak_bytes = pool.stats.peak_bytes.max(pool.stats.total_bytes);
                pool.stats.max_buffer_bytes = pool.stats.max_buffer_bytes.max(bytes);
                if let Some(b) = &self.0.plan_buffer {
                    b.clone()
                } else {
                self.0.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tensor"),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
                }
            }
        };
        pool.stats.live_bytes += bytes;
        drop(pool);
        let pb = Arc::new(PooledBuffer { buffer, bytes, pool: self.0.pool.clone() });
        Ok(Tensor::new(pb, shape.to_vec(), dtype))
    }

    /// Upload bytes already in the tensor's storage format.
    pub fn upload_raw(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let t = self.empty(shape, dtype)?;
        let want = dtype.buffer_bytes(t.numel()) as usize;
        let raw_len = match dtype {
            DType::F16 => 2 * t.numel(),
            _ => want,
        };
        if bytes.len() != raw_len {
            return Err(Error::DataLength { shape: shape.to_vec(), expected: raw_len, got: bytes.len() });
        }
        if self.is_plan() {
            return Ok(t);
        }
        // Work recorded earlier may still read a recycled buffer: submit it first.
        self.flush()?;
        if bytes.len() % 4 == 0 {
            self.0.queue.write_buffer(t.buffer(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(want, 0);
            self.0.queue.write_buffer(t.buffer(), 0, &padded);
        }
        Ok(t)
    }

    /// Upload f32 data, converted to `dtype` (f32 or f16).
    pub fn upload(&self, shape: &[usize], dtype: DType, data: &[f32]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::DataLength { shape: shape.to_vec(), expected: n, got: data.len() });
        }
        match dtype {
            DType::F32 => self.upload_raw(shape, dtype, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                self.upload_raw(shape, dtype, bytemuck::cast_slice(&h))
            }
            DType::U32 => Err(Error::Unsupported { op: "upload", detail: "use upload_u32 for u32 tensors".into() }),
        }
    }

    pub fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        self.upload_raw(shape, DType::U32, bytemuck::cast_slice(data))
    }

    fn pipeline(&self, k: &KernelSource, dtypes: &[DType]) -> Result<Arc<Pipe>> {
        let key = format!("{}:{}:{:?}:{}", k.file, k.name, dtypes, self.0.native_f16);
        if let Some(p) = lock(&self.0.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let src = assemble(k, dtypes, self.0.native_f16)?;
        let dev = &self.0.device;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&key),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, b) in k.bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: b.access == Access::Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&key),
            entries: &entries,
        });
        let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&key),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let p = Arc::new(Pipe { pipeline, layout });
        lock(&self.0.pipelines).insert(key, p.clone());
        Ok(p)
    }

    /// Split a linear workgroup count over x and y.
    pub fn split_workgroups(&self, count: u64) -> Result<[u32; 3]> {
        let maxd = self.0.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        if count == 0 {
            return Ok([0, 1, 1]);
        }
        let x = count.min(maxd);
        let y = count.div_ceil(x);
        if y > maxd {
            return Err(Error::Limit {
                what: "a dispatch".into(),
                needed: count,
                limit: maxd * maxd,
                limit_name: "maxComputeWorkgroupsPerDimension²",
            });
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Record one dispatch; it runs at the next flush (in recording order).
    pub fn dispatch(&self, d: Dispatch<'_>) -> Result<()> {
        let k = find_kernel(d.file, d.kernel)?;
        if k.bindings.len() != d.tensors.len() {
            return Err(Error::Shader(
                d.file.into(),
                format!("kernel {} takes {} tensors, {} given", d.kernel, k.bindings.len(), d.tensors.len()),
            ));
        }
        let dtypes: Vec<DType> = d.tensors.iter().map(|t| t.dtype()).collect();
        if self.is_plan() {
            self.split_workgroups(d.workgroups)?;
            lock(&self.0.pool).stats.dispatches += 1;
            return Ok(());
        }
        let pipe = self.pipeline(&k, &dtypes)?;
        let groups = self.split_workgroups(d.workgroups)?;
        let buffers = d.tensors.iter().map(|t| t.buffer().clone()).collect();
        lock(&self.0.pending).push(Pending {
            pipe,
            params: d.params.to_vec(),
            buffers,
            groups,
            label: format!("{}:{}", d.file, d.kernel),
        });
        Ok(())
    }

    /// Record a map kernel (one output element per invocation, pairs for f16):
    /// `params` follow `numel` in the kernel's `Params`.
    pub fn map(
        &self,
        file: &'static str,
        kernel: &'static str,
        params: &[u32],
        inputs: &[&Tensor],
        out: &Tensor,
    ) -> Result<()> {
        let numel = out.numel() as u64;
        let threads = if out.dtype() == DType::F16 { numel.div_ceil(2) } else { numel };
        // On the stack: map kernels take a few parameters and at most a few inputs.
        let mut p = [0u32; MAP_MAX_PARAMS + 1];
        let mut tensors: [&Tensor; MAP_MAX_TENSORS] = [out; MAP_MAX_TENSORS];
        if params.len() > MAP_MAX_PARAMS || inputs.len() >= MAP_MAX_TENSORS {
            return Err(Error::Shader(file.into(), format!("map kernel {kernel}: too many parameters or inputs")));
        }
        p[0] = numel as u32;
        p[1..=params.len()].copy_from_slice(params);
        tensors[..inputs.len()].copy_from_slice(inputs);
        self.dispatch(Dispatch {
            file,
            kernel,
            params: &p[..=params.len()],
            tensors: &tensors[..=inputs.len()],
            workgroups: threads.div_ceil(super::shader::MAP_WG as u64),
        })
    }

    /// Submit everything recorded so far as one command buffer.
    pub fn flush(&self) -> Result<()> {
        let pending: Vec<Pending> = std::mem::take(&mut *lock(&self.0.pending));
        if pending.is_empty() {
            return self.take_error();
        }
        let dev = &self.0.device;
        let align = self.0.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let mut offsets = Vec::with_capacity(pending.len());
        let mut data: Vec<u8> = Vec::new();
        for p in &pending {
            let off = data.len().div_ceil(align) * align;
            data.resize(off, 0);
            offsets.push(off as u64);
            data.extend_from_slice(bytemuck::cast_slice(&p.params));
            let padded = (data.len() - off).max(16).div_ceil(16) * 16;
            data.resize(off + padded, 0);
        }
        let ubuf = {
            let mut slot = lock(&self.0.uniforms);
            match slot.as_ref() {
                Some(b) if b.size() >= data.len() as u64 => b.clone(),
                _ => {
                    let b = dev.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("params"),
                        size: (data.len() as u64).next_power_of_two().max(4096),
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    lock(&self.0.pool).stats.uniform_buffers_created += 1;
                    *slot = Some(b.clone());
                    b
                }
            }
        };
        self.0.queue.write_buffer(&ubuf, 0, &data);
        let groups: Vec<wgpu::BindGroup> = pending
            .iter()
            .zip(&offsets)
            .map(|(p, &off)| {
                let size = (p.params.len() * 4).max(16).div_ceil(16) as u64 * 16;
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &ubuf,
                        offset: off,
                        size: std::num::NonZeroU64::new(size),
                    }),
                }];
                for (i, b) in p.buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: b.as_entire_binding(),
                    });
                }
                dev.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&p.label),
                    layout: &p.pipe.layout,
                    entries: &entries,
                })
            })
            .collect();
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") });
        if self.profiling() {
            self.encode_profiled(&mut enc, &pending, &groups);
        } else {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("ops"),
                timestamp_writes: None,
            });
            for (p, g) in pending.iter().zip(&groups) {
                if p.groups[0] == 0 {
                    continue;
                }
                pass.set_pipeline(&p.pipe.pipeline);
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
            }
        }
        self.0.queue.submit(Some(enc.finish()));
        {
            let mut pool = lock(&self.0.pool);
            pool.stats.dispatches += pending.len() as u64;
            pool.stats.submits += 1;
        }
        self.take_error()
    }

    /// Wait until the GPU finished everything submitted (native: blocks; web: a readback).
    pub async fn sync(&self) -> Result<()> {
        self.flush()?;
        let t = self.empty(&[1], DType::F32)?;
        self.read_bytes(&t).await.map(|_| ())
    }

    /// Read a tensor's raw storage bytes.
    pub async fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        self.read_later(t)?.bytes().await
    }

    /// Start reading a tensor back without waiting: the copy is submitted after everything
    /// recorded so far and the staging buffer is mapped when the GPU gets there. Staging
    /// buffers are reused, so a readback per step allocates nothing after the first.
    pub fn read_later(&self, t: &Tensor) -> Result<Readback> {
        let (size, dtype, numel) = (t.bytes(), t.dtype(), t.numel());
        if self.is_plan() {
            return Ok(Readback { gpu: self.clone(), staging: None, rx: None, size, dtype, numel });
        }
        self.flush()?;
        let dev = &self.0.device;
        let staging = {
            let mut free = lock(&self.0.staging);
            match free.iter().position(|b| b.size() >= size) {
                Some(i) => free.swap_remove(i),
                None => dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            }
        };
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, size);
        self.0.queue.submit(Some(enc.finish()));
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, ..size, move |r| {
            let _ = tx.send(r);
        });
        Ok(Readback { gpu: self.clone(), staging: Some(staging), rx: Some(rx), size, dtype, numel })
    }

    /// Read a tensor as f32 (f16 storage is widened).
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.read_later(t)?.f32().await
    }
}

/// A readback in flight ([`Gpu::read_later`]).
pub struct Readback {
    gpu: Gpu,
    staging: Option<wgpu::Buffer>,
    rx: Option<futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
    size: u64,
    dtype: DType,
    numel: usize,
}

impl Readback {
    /// The tensor's raw storage bytes (waits for the GPU to reach the copy).
    pub async fn bytes(mut self) -> Result<Vec<u8>> {
        let (Some(staging), Some(rx)) = (self.staging.take(), self.rx.take()) else {
            return Ok(vec![0; self.size as usize]);
        };
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu.0.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| Error::Readback("the GPU dropped the map request".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let out = {
            let view = staging.get_mapped_range(..self.size).map_err(|e| Error::Readback(e.to_string()))?;
            view.to_vec()
        };
        staging.unmap();
        lock(&self.gpu.0.staging).push(staging);
        self.gpu.take_error()?;
        Ok(out)
    }

    /// As f32 (f16 storage is widened).
    pub async fn f32(self) -> Result<Vec<f32>> {
        let (n, dtype) = (self.numel, self.dtype);
        let bytes = self.bytes().await?;
        Ok(match dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes)[..n].to_vec(),
            DType::F16 => bytemuck::cast_slice::<u8, half::f16>(&bytes)[..n].iter().map(|h| h.to_f32()).collect(),
            DType::U32 => bytemuck::cast_slice::<u8, u32>(&bytes)[..n].iter().map(|&u| u as f32).collect(),
        })
    }
}
