//! GPU runtime: device, limits, tensors, buffer pool, pipeline cache, readback.
//! Knows nothing about Stable Diffusion.
mod context;
mod memory;
mod pipelines;
mod pool;
mod profile;
mod readback;
mod recorder;
mod shader;
mod tensor;

pub use context::{AttentionVariant, GemmVariant, Gpu, GpuInfo, GpuOptions};
pub use pipelines::PipelineInfo;
pub use pool::PoolStats;
pub use readback::Readback;
pub use recorder::Dispatch;
pub use shader::{assemble, assemble_variant, kernel_list, shader_files, Access, Binding, ShaderVariant, SUBGROUPS_ENABLE};
pub use tensor::{DType, Tensor, MAX_RANK};
