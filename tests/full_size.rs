//! SD-1.5 at full size without downloading it: synthetic random weights with the exact
//! SD-1.5 shapes are written as a diffusers folder (fp16), loaded (every shape checked)
//! and one UNet step runs at 64×64 pixels (8×8 latents) with the full widths.
//! Native only: it writes ~2.1 GB to a temporary folder (lavapipe: about 2 minutes).
#![cfg(not(target_arch = "wasm32"))]
mod common;

use sd_webgpu::gpu::DType;
use sd_webgpu::model::{Configs, Source, StableDiffusion};

#[test]
fn sd15_full_size_unet_step_runs() {
    let dir = std::env::temp_dir().join(format!("sd-webgpu-synth-{}", std::process::id()));
    let cfg = Configs::default();
    let written = sd_webgpu::weights::synth::write_model(&dir, &cfg, true).expect("write synthetic SD-1.5");
    let result = std::panic::catch_unwind(|| {
        pollster::block_on(async {
            let gpu = common::gpu(true).await;
            let src = Source::Diffusers { dir: dir.clone(), variant: Some("fp16".into()) };
            let sd = StableDiffusion::load_components(&gpu, &src, DType::F16, &["unet"], &[]).expect("load (shape-checked)");
            // Every UNet weight of SD-1.5 is there, with the planner's byte count.
            let (_, _, _, specs) = sd_webgpu::model::build(&cfg);
            let n_unet = specs.iter().filter(|s| s.name.starts_with("unet/")).count();
            // q/k/v (and cross-attention k/v) projections are concatenated after loading.
            let merged: usize = sd_webgpu::model::build_fusions(&cfg).iter().filter(|f| f.name.starts_with("unet/")).map(|f| f.parts.len() - 1).sum();
            assert_eq!(sd.weights.len(), n_unet - merged);
            let params: usize = specs.iter().filter(|s| s.name.starts_with("unet/")).map(|s| s.shape.iter().product::<usize>()).sum();
            log!("SD-1.5 UNet: {} tensors, {} parameters, {} bytes on the GPU; files {:?}", n_unet, params, sd.weights.bytes(), written);
            assert_eq!(params, 859_520_964, "SD-1.5 UNet parameter count");
            let x = gpu.upload(&[1, 4, 8, 8], DType::F16, &[0.5; 256]).unwrap();
            let ctx = gpu.upload(&[1, 77, 768], DType::F16, &vec![0.1; 77 * 768]).unwrap();
            let t = gpu.upload(&[1], DType::F32, &[500.0]).unwrap();
            let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &ctx).expect("unet step");
            let out = gpu.read(&y).await.unwrap();
            assert_eq!(out.len(), 256);
            assert!(out.iter().all(|v| v.is_finite()), "non-finite output");
            let spread = out.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(spread > 0.0, "output is all zero");
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
