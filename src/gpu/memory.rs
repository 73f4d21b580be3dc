//! Tensors from the pool: allocation, upload, trimming.
use super::context::{lock, Gpu};
use super::pool::Pool;
use super::tensor::{DType, Shape, Tensor};
use crate::error::{Error, Result};

impl Gpu {
    /// Start measuring a new peak from the current total (and new largest dispatch /
    /// command buffer figures).
    pub fn reset_peak(&self) {
        let mut p = lock(&self.0.pool);
        p.stats.peak_bytes = p.stats.total_bytes;
        p.stats.largest_dispatch_flops = 0.0;
        p.stats.largest_command_buffer_flops = 0.0;
    }
    /// Drop every free buffer of the pool.
    pub fn trim_pool(&self) {
        // Recorded work may still use freed buffers: submit it first (wgpu keeps a destroyed
        // buffer alive until submitted work that uses it is done).
        let _ = self.flush();
        let plan = self.is_plan();
        lock(&self.0.staging).clear();
        let n = lock(&self.0.pool).trim(!plan);
        if n > 0 {
            // Cached bind groups may bind the destroyed buffers.
            lock(&self.0.rec).clear_bind_groups();
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
        let shape_inline = Shape::new(shape)?;
        let buf = Pool::take(&self.0.pool, bytes, || match &self.0.plan_buffer {
            Some(b) => b.clone(),
            None => self.0.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tensor"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        });
        Ok(Tensor::new(buf, shape_inline, dtype))
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

}
