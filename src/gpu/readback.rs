//! Reading tensors back (one async path for native and the web), waiting for the GPU,
//! and pacing the work queued ahead of it.
use super::context::{lock, Gpu};
use super::tensor::{DType, Tensor};
use crate::error::{Error, Result};

impl Gpu {
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
