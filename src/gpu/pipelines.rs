//! Parsed kernels and compute pipelines, cached: each shader file is parsed once (on the
//! first dispatch of one of its kernels), each pipeline is created once per
//! (file, kernel, binding dtypes, native f16, subgroups) and found again with a structured key
//! (no string is formatted per dispatch).
use std::collections::HashMap;
use std::sync::Arc;

use super::shader::{assemble_variant, kernels_of, Access, KernelSource, ShaderVariant};
use super::tensor::DType;
use crate::error::{Error, Result};

/// Most tensor bindings of one kernel.
pub const MAX_BINDINGS: usize = 12;

/// A compute pipeline and its bind group layout; `id` tells pipelines apart in the bind
/// group cache.
pub(crate) struct Pipe {
    pub(crate) id: u64,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PipeKey {
    file: &'static str,
    kernel: &'static str,
    dtypes: [Option<DType>; MAX_BINDINGS],
    native_f16: bool,
    /// The `//#if subgroups` variant (only for kernels that have one).
    subgroups: bool,
}

/// One pipeline created so far: which variant of which kernel ([`super::Gpu::pipelines_created`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineInfo {
    pub file: &'static str,
    pub kernel: &'static str,
    pub native_f16: bool,
    /// Assembled with its `//#if subgroups` sections.
    pub subgroups: bool,
}

#[derive(Default)]
pub(crate) struct Pipelines {
    /// The kernels of each parsed file.
    files: HashMap<&'static str, Vec<Arc<KernelSource>>>,
    pipes: HashMap<PipeKey, Arc<Pipe>>,
}

impl Pipelines {
    /// The parsed kernel `file:kernel` (the file is parsed on first use only).
    pub(crate) fn kernel(&mut self, file: &'static str, kernel: &str) -> Result<Arc<KernelSource>> {
        if !self.files.contains_key(file) {
            let ks = kernels_of(file)?.into_iter().map(Arc::new).collect();
            self.files.insert(file, ks);
        }
        self.files[file]
            .iter()
            .find(|k| k.name == kernel)
            .cloned()
            .ok_or_else(|| Error::Shader(file.into(), format!("no kernel `{kernel}`")))
    }

    /// The pipeline of kernel `k` for tensors of `dtypes` (created on first use).
    pub(crate) fn pipeline(
        &mut self,
        dev: &wgpu::Device,
        k: &KernelSource,
        kernel: &'static str,
        dtypes: &[DType],
        native_f16: bool,
        subgroups: bool,
    ) -> Result<Arc<Pipe>> {
        if dtypes.len() > MAX_BINDINGS {
            return Err(Error::Shader(k.file.into(), format!("kernel {kernel} binds {} tensors, at most {MAX_BINDINGS}", dtypes.len())));
        }
        let subgroups = subgroups && k.subgroup_variant;
        let mut key = PipeKey { file: k.file, kernel, dtypes: [None; MAX_BINDINGS], native_f16, subgroups };
        for (slot, d) in key.dtypes.iter_mut().zip(dtypes) {
            *slot = Some(*d);
        }
        if let Some(p) = self.pipes.get(&key) {
            return Ok(p.clone());
        }
        let label = format!("{}:{}:{:?}:{}{}", k.file, k.name, dtypes, native_f16, if subgroups { ":subgroups" } else { "" });
        let src = assemble_variant(k, dtypes, ShaderVariant { native_f16, subgroups })?;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
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
        let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let p = Arc::new(Pipe { id: self.pipes.len() as u64, pipeline, layout });
        self.pipes.insert(key, p.clone());
        Ok(p)
    }

    /// The pipelines created so far (which variant each kernel ran as).
    pub(crate) fn created(&self) -> Vec<PipelineInfo> {
        self.pipes
            .keys()
            .map(|k| PipelineInfo { file: k.file, kernel: k.kernel, native_f16: k.native_f16, subgroups: k.subgroups })
            .collect()
    }
}
