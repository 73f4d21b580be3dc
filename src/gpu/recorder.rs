//! Dispatch recording. Every dispatch's parameters go into one byte array (the uniform
//! data of the next flush) and its buffers into one list, both kept across flushes, so a
//! warmed-up recorder allocates nothing per dispatch. A flush writes the uniform data
//! once, finds each dispatch's bind group in a cache kept across flushes (a repeated step
//! with the same buffers creates none), and submits the work as one command buffer, or as
//! several where its FLOPs pass the budget (`GpuOptions::max_command_buffer_gflop`: a
//! GPU watchdog then never sees one huge submission).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::pipelines::{Pipe, MAX_BINDINGS};
use super::pool::Pool;
use super::tensor::Tensor;

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

/// A recorded dispatch: its parameters are `data[param_off..][..param_len]`, its buffers
/// `buffers[buf_start..][..buf_len]`.
struct Pending {
    /// `None` on a planning GPU (nothing is created there).
    pipe: Option<Arc<Pipe>>,
    file: &'static str,
    kernel: &'static str,
    param_off: usize,
    param_len: usize,
    buf_start: usize,
    buf_len: usize,
    groups: [u32; 3],
    flops: f64,
}

/// Timestamps of one profiled chunk of dispatches: a mappable copy of the resolved query
/// set and the label (`file:kernel`) of each dispatch.
pub(crate) struct ProfileReadback {
    pub(crate) staging: wgpu::Buffer,
    pub(crate) labels: Vec<String>,
}

/// Dispatches per query set (two timestamps each).
const PROFILE_CHUNK: usize = (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize;

/// Bind groups kept at most; past it the cache starts again (it is refilled by one step).
const BIND_GROUP_CACHE: usize = 16384;

#[derive(PartialEq, Eq, Hash)]
struct BgKey {
    pipe: u64,
    param_off: usize,
    param_len: usize,
    buffers: [Option<wgpu::Buffer>; MAX_BINDINGS],
}

/// Where a flush goes.
pub(crate) struct Target<'a> {
    /// `None` on a planning GPU: only the statistics are kept.
    pub(crate) gpu: Option<(&'a wgpu::Device, &'a wgpu::Queue)>,
    pub(crate) pool: &'a Mutex<Pool>,
    /// FLOPs per command buffer (a single larger dispatch gets one of its own).
    pub(crate) budget_flops: f64,
    pub(crate) profiling: bool,
    pub(crate) profile: &'a Mutex<Vec<ProfileReadback>>,
}

pub(crate) struct Recorder {
    pending: Vec<Pending>,
    data: Vec<u8>,
    buffers: Vec<wgpu::Buffer>,
    /// FLOPs announced by `Gpu::add_flops` for the next dispatch.
    next_flops: f64,
    align: usize,
    /// The uniform buffer of the last flush, reused (and only grown) by the next ones:
    /// `queue.write_buffer` is ordered after the work already submitted.
    uniforms: Option<wgpu::Buffer>,
    bind_groups: HashMap<BgKey, wgpu::BindGroup>,
    /// This flush's bind groups, in dispatch order (kept for its capacity).
    groups: Vec<wgpu::BindGroup>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    pub(crate) fn new(min_uniform_offset_alignment: u32) -> Recorder {
        Recorder {
            pending: Vec::new(),
            data: Vec::new(),
            buffers: Vec::new(),
            next_flops: 0.0,
            align: min_uniform_offset_alignment.max(16) as usize,
            uniforms: None,
            bind_groups: HashMap::new(),
            groups: Vec::new(),
        }
    }

    /// FLOPs of the next recorded dispatch.
    pub(crate) fn add_flops(&mut self, flops: f64) {
        self.next_flops += flops;
    }

    /// Record a dispatch (`pipe` `None` on a planning GPU); returns its FLOPs.
    pub(crate) fn record(&mut self, pipe: Option<Arc<Pipe>>, d: &Dispatch<'_>, groups: [u32; 3]) -> f64 {
        let flops = std::mem::take(&mut self.next_flops);
        let (param_off, param_len, buf_start) = (self.data.len().div_ceil(self.align) * self.align, (d.params.len() * 4).max(16).div_ceil(16) * 16, self.buffers.len());
        if pipe.is_some() {
            self.data.resize(param_off, 0);
            self.data.extend_from_slice(bytemuck::cast_slice(d.params));
            self.data.resize(param_off + param_len, 0);
            self.buffers.extend(d.tensors.iter().map(|t| t.buffer().clone()));
        }
        self.pending.push(Pending {
            pipe,
            file: d.file,
            kernel: d.kernel,
            param_off,
            param_len,
            buf_start,
            buf_len: d.tensors.len(),
            groups,
            flops,
        });
        flops
    }

    /// Forget the cached bind groups (their buffers are being destroyed).
    pub(crate) fn clear_bind_groups(&mut self) {
        self.bind_groups.clear();
    }

    /// Submit everything recorded, in command buffers of at most `budget_flops` each.
    pub(crate) fn flush(&mut self, t: &Target<'_>) {
        if self.pending.is_empty() {
            return;
        }
        if let Some((dev, queue)) = t.gpu {
            self.bind(dev, queue, t.pool);
        }
        let (mut start, mut acc, mut submits, mut largest) = (0, 0.0f64, 0u64, 0.0f64);
        let n = self.pending.len();
        for i in 0..=n {
            let cut = i == n || (i > start && acc + self.pending[i].flops > t.budget_flops);
            if cut {
                if let Some((dev, queue)) = t.gpu {
                    self.submit(dev, queue, start..i, t);
                }
                submits += 1;
                largest = largest.max(acc);
                start = i;
                acc = 0.0;
            }
            if i < n {
                acc += self.pending[i].flops;
            }
        }
        {
            let mut pool = lock(t.pool);
            pool.stats.submits += submits;
            pool.stats.largest_command_buffer_flops = pool.stats.largest_command_buffer_flops.max(largest);
        }
        self.pending.clear();
        self.data.clear();
        self.buffers.clear();
        self.groups.clear();
    }

    /// Write the uniform data and find (or create) every pending dispatch's bind group.
    fn bind(&mut self, dev: &wgpu::Device, queue: &wgpu::Queue, pool: &Mutex<Pool>) {
        let need = self.data.len().max(16) as u64;
        if self.uniforms.as_ref().is_none_or(|b| b.size() < need) {
            self.uniforms = Some(dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: need.next_power_of_two().max(4096),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            // The cached groups bind the old buffer.
            self.bind_groups.clear();
            lock(pool).stats.uniform_buffers_created += 1;
        }
        let ubuf = self.uniforms.as_ref().expect("made above");
        if !self.data.is_empty() {
            queue.write_buffer(ubuf, 0, &self.data);
        }
        if self.bind_groups.len() > BIND_GROUP_CACHE {
            self.bind_groups.clear();
        }
        self.groups.clear();
        let mut created = 0;
        for p in &self.pending {
            let pipe = p.pipe.as_ref().expect("a real GPU records pipelines");
            let mut key = BgKey { pipe: pipe.id, param_off: p.param_off, param_len: p.param_len, buffers: Default::default() };
            for (slot, b) in key.buffers.iter_mut().zip(&self.buffers[p.buf_start..p.buf_start + p.buf_len]) {
                *slot = Some(b.clone());
            }
            let g = match self.bind_groups.get(&key) {
                Some(g) => g.clone(),
                None => {
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: ubuf,
                            offset: p.param_off as u64,
                            size: std::num::NonZeroU64::new(p.param_len as u64),
                        }),
                    }];
                    for (i, b) in self.buffers[p.buf_start..p.buf_start + p.buf_len].iter().enumerate() {
                        entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
                    }
                    let g = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(p.kernel), layout: &pipe.layout, entries: &entries });
                    created += 1;
                    self.bind_groups.insert(key, g.clone());
                    g
                }
            };
            self.groups.push(g);
        }
        if created > 0 {
            lock(pool).stats.bind_groups_created += created;
        }
    }

    fn submit(&self, dev: &wgpu::Device, queue: &wgpu::Queue, range: std::ops::Range<usize>, t: &Target<'_>) {
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") });
        if t.profiling {
            self.encode_profiled(dev, &mut enc, range, t.profile);
        } else {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("ops"), timestamp_writes: None });
            for i in range {
                let p = &self.pending[i];
                if p.groups[0] == 0 {
                    continue;
                }
                pass.set_pipeline(&p.pipe.as_ref().expect("a real GPU records pipelines").pipeline);
                pass.set_bind_group(0, &self.groups[i], &[]);
                pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
            }
        }
        queue.submit(Some(enc.finish()));
    }

    /// Profiling mode: every dispatch in its own compute pass with timestamps at its
    /// beginning and end; the query sets are resolved and copied to mappable buffers
    /// read by `Gpu::take_profile`.
    fn encode_profiled(&self, dev: &wgpu::Device, enc: &mut wgpu::CommandEncoder, range: std::ops::Range<usize>, sink: &Mutex<Vec<ProfileReadback>>) {
        let live: Vec<usize> = range.filter(|&i| self.pending[i].groups[0] != 0).collect();
        let mut readbacks = Vec::new();
        for chunk in live.chunks(PROFILE_CHUNK) {
            let count = 2 * chunk.len() as u32;
            let qs = dev.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count });
            let mut labels = Vec::with_capacity(chunk.len());
            for (j, &i) in chunk.iter().enumerate() {
                let p = &self.pending[i];
                let label = format!("{}:{}", p.file, p.kernel);
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &qs,
                        beginning_of_pass_write_index: Some(2 * j as u32),
                        end_of_pass_write_index: Some(2 * j as u32 + 1),
                    }),
                });
                pass.set_pipeline(&p.pipe.as_ref().expect("a real GPU records pipelines").pipeline);
                pass.set_bind_group(0, &self.groups[i], &[]);
                pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
                drop(pass);
                labels.push(label);
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
            readbacks.push(ProfileReadback { staging, labels });
        }
        lock(sink).extend(readbacks);
    }
}
