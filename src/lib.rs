//! sd-webgpu: Stable Diffusion 1.x with WGSL compute shaders, in the browser through
//! WebGPU and natively through wgpu.
//!
//! Layers: [`gpu`] (device, tensors, pipelines; knows nothing of SD) → [`ops`]
//! (one module per shader family) → models and pipeline; [`reference`] holds
//! naive CPU versions of every op for the tests; `web` is the only wasm-bindgen layer.
#[cfg(not(target_arch = "wasm32"))]
pub mod alloc_count;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench_kernels;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod error;
pub mod gpu;
pub mod image;
pub mod inpaint;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod prompt;
pub mod reference;
pub mod rng;
pub mod schedulers;
pub mod selftest;
pub mod tokenizer;
pub mod weights;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
