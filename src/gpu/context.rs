//! The GPU: adapter + device with the adapter's real limits, options, errors and lost
//! hooks, and the facade the ops call (`dispatch`, `map`, `flush`). The parts live beside
//! it by concern: [`super::pool`] (buffer pool, statistics), [`super::memory`] (tensor
//! allocation and upload), [`super::pipelines`] (parsed kernels, pipeline cache),
//! [`super::recorder`] (uniform data, bind group cache, command buffers within a FLOP
//! budget), [`super::profile`] (timestamps), [`super::readback`] (readback, sync, pacing).
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::pipelines::Pipelines;
use super::pool::{Pool, PoolStats};
use super::recorder::{Dispatch, ProfileReadback, Recorder, Target};
use super::tensor::{DType, Tensor};
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
    /// The adapter offers `subgroups`.
    pub subgroups: bool,
    /// Norm / softmax reductions use subgroup operations (`subgroups` present and not
    /// disabled by [`GpuOptions::subgroups`]).
    pub subgroup_kernels: bool,
    pub timestamp_query: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    /// PCI vendor / device ids (0 where the backend does not say).
    pub vendor_id: u32,
    pub device_id: u32,
    /// Subgroup sizes the adapter may use (0 where unknown).
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_compute_workgroup_size_x: u32,
    pub min_uniform_buffer_offset_alignment: u32,
    /// Every feature the adapter offers (wgpu's names).
    pub adapter_features: String,
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
    /// Attention kernels (see [`AttentionVariant`]).
    pub attention: AttentionVariant,
    /// Largest GEMM / conv / attention dispatch in GFLOP: larger ones are recorded as
    /// several dispatches over ranges of output tiles (a GPU watchdog's margin).
    pub max_dispatch_gflop: f64,
    /// Most GFLOP per command buffer: a flush with more work submits several, cut between
    /// dispatches (a watchdog sees short submissions). A single larger dispatch gets a
    /// command buffer of its own.
    pub max_command_buffer_gflop: f64,
    /// Use subgroup operations in the kernels that have a subgroup variant (norm and softmax
    /// reductions) when the adapter has `subgroups`; `false` forces the shared-memory path.
    pub subgroups: bool,
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

/// Which attention kernel family the attention ops use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionVariant {
    /// 64 query rows × 16-key blocks (D <= 80) / score tile summed over head-dim chunks
    /// (D > 80): shaders/attention.wgsl.
    V1,
    /// Register-tiled, one kernel per head-dim bucket, f16 K/V tiles with `shader-f16`,
    /// 2–3 barriers per key block: shaders/attention_v2.wgsl.
    #[default]
    V2,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { native_f16: true, low_power: false, max_binding_override: None, plan_only: false, gemm: GemmVariant::default(), attention: AttentionVariant::default(), max_dispatch_gflop: 25.0, max_command_buffer_gflop: 250.0, subgroups: true }
    }
}

pub(super) struct Inner {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: GpuInfo,
    pub(super) limits: wgpu::Limits,
    pub(super) native_f16: bool,
    /// Kernels are assembled with their subgroup variant ([`GpuInfo::subgroup_kernels`]).
    pub(super) subgroups: bool,
    pub(super) max_binding: u64,
    pub(super) pipelines: Mutex<Pipelines>,
    pub(super) pool: Arc<Mutex<Pool>>,
    pub(super) rec: Mutex<Recorder>,
    /// [`GpuOptions::max_command_buffer_gflop`] in FLOPs.
    pub(super) budget_flops: f64,
    pub(super) error: Arc<Mutex<Option<String>>>,
    /// Planning mode: the one buffer every tensor points at.
    pub(super) plan_buffer: Option<wgpu::Buffer>,
    /// Profiling mode ([`Gpu::set_profiling`]): one timestamped pass per dispatch.
    pub(super) profiling: AtomicBool,
    /// Timestamps submitted but not yet read ([`Gpu::take_profile`]).
    pub(super) profile: Mutex<Vec<ProfileReadback>>,
    /// Set when the device is lost (message), and who to tell.
    pub(super) lost: Arc<Mutex<Option<String>>>,
    pub(super) lost_hooks: Arc<Mutex<Vec<LostHook>>>,
    /// Completion of the work submitted before the last [`Gpu::pace`] call.
    pub(super) pace: Mutex<Option<futures_channel::oneshot::Receiver<()>>>,
    /// Mappable buffers of finished readbacks, for the next ones.
    pub(super) staging: Mutex<Vec<wgpu::Buffer>>,
    pub(super) gemm: GemmVariant,
    pub(super) attention: AttentionVariant,
    pub(super) max_dispatch_gflop: f64,
}

type LostHook = Box<dyn Fn(&str) + Send + Sync>;

/// The GPU: cheap to clone, shared by everything that records work.
#[derive(Clone)]
pub struct Gpu(pub(super) Arc<Inner>);

/// Most parameters (after `numel`) and tensors (inputs + output) of a map kernel.
const MAP_MAX_PARAMS: usize = 15;
const MAP_MAX_TENSORS: usize = 8;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
            subgroup_kernels: subgroups && opts.subgroups,
            timestamp_query,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            vendor_id: ai.vendor,
            device_id: ai.device,
            subgroup_min_size: ai.subgroup_min_size,
            subgroup_max_size: ai.subgroup_max_size,
            max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
            min_uniform_buffer_offset_alignment: limits.min_uniform_buffer_offset_alignment,
            adapter_features: format!("{afeat:?}"),
        };
        let plan_buffer = opts.plan_only.then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("plan placeholder"),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let uniform_align = limits.min_uniform_buffer_offset_alignment;
        Ok(Gpu(Arc::new(Inner {
            device,
            queue,
            info,
            limits,
            native_f16,
            subgroups: subgroups && opts.subgroups,
            max_binding,
            pipelines: Mutex::new(Pipelines::default()),
            pool: Pool::new(),
            rec: Mutex::new(Recorder::new(uniform_align)),
            budget_flops: opts.max_command_buffer_gflop * 1e9,
            error,
            plan_buffer,
            profiling: AtomicBool::new(false),
            profile: Mutex::new(Vec::new()),
            lost,
            lost_hooks,
            pace: Mutex::new(None),
            staging: Mutex::new(Vec::new()),
            gemm: opts.gemm,
            attention: opts.attention,
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
    /// Kernels use their subgroup variant ([`GpuInfo::subgroup_kernels`]).
    pub fn subgroups(&self) -> bool {
        self.0.subgroups
    }
    /// The pipelines created so far and the variant of each (tests check which ran).
    pub fn pipelines_created(&self) -> Vec<super::pipelines::PipelineInfo> {
        lock(&self.0.pipelines).created()
    }
    /// The GEMM kernel family ([`GpuOptions::gemm`]).
    pub fn gemm(&self) -> GemmVariant {
        self.0.gemm
    }
    /// The attention kernel family ([`GpuOptions::attention`]).
    pub fn attention(&self) -> AttentionVariant {
        self.0.attention
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
    /// Count floating-point operations of the next recorded dispatch (see
    /// [`PoolStats::flops`], [`PoolStats::largest_dispatch_flops`]): ops call it right
    /// before [`Gpu::dispatch`].
    pub fn add_flops(&self, flops: f64) {
        lock(&self.0.pool).stats.flops += flops;
        lock(&self.0.rec).add_flops(flops);
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

    pub(super) fn take_error(&self) -> Result<()> {
        if let Some(m) = self.lost() {
            return Err(Error::DeviceLost(m));
        }
        match lock(&self.0.error).take() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
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
        let k = lock(&self.0.pipelines).kernel(d.file, d.kernel)?;
        if k.bindings.len() != d.tensors.len() {
            return Err(Error::Shader(
                d.file.into(),
                format!("kernel {} takes {} tensors, {} given", d.kernel, k.bindings.len(), d.tensors.len()),
            ));
        }
        let groups = self.split_workgroups(d.workgroups)?;
        let pipe = if self.is_plan() {
            None
        } else {
            let mut dtypes = [DType::F32; super::pipelines::MAX_BINDINGS];
            let n = d.tensors.len().min(dtypes.len());
            for (slot, t) in dtypes.iter_mut().zip(d.tensors) {
                *slot = t.dtype();
            }
            if d.tensors.len() > n {
                return Err(Error::Shader(d.file.into(), format!("kernel {} binds more than {n} tensors", d.kernel)));
            }
            Some(lock(&self.0.pipelines).pipeline(&self.0.device, &k, d.kernel, &dtypes[..n], self.0.native_f16, self.0.subgroups)?)
        };
        let flops = lock(&self.0.rec).record(pipe, &d, groups);
        let mut pool = lock(&self.0.pool);
        pool.stats.dispatches += 1;
        pool.stats.largest_dispatch_flops = pool.stats.largest_dispatch_flops.max(flops);
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

    /// Submit everything recorded so far: one command buffer, or several of at most
    /// [`GpuOptions::max_command_buffer_gflop`] each (on a planning GPU only counted).
    pub fn flush(&self) -> Result<()> {
        {
            let mut rec = lock(&self.0.rec);
            let target = Target {
                gpu: (!self.is_plan()).then_some((&self.0.device, &self.0.queue)),
                pool: &self.0.pool,
                budget_flops: self.0.budget_flops,
                profiling: self.profiling(),
                profile: &self.0.profile,
            };
            rec.flush(&target);
        }
        self.take_error()
    }
}
