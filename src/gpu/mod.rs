//! GPU runtime: device, limits, tensors, buffer pool, pipeline cache, readback.
//! Knows nothing about Stable Diffusion.
mod context;
mod shader;
mod tensor;

pub use context::{Dispatch, GemmVariant, Gpu, GpuInfo, GpuOptions, PoolStats, Readback};
pub use shader::{assemble, kernel_list, shader_files, Access, Binding};
pub use tensor::{DType, Tensor};
