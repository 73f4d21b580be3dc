//! The whole pipeline against diffusers: every txt2img_* and img2img_* case of golden.json,
//! reproduced from its seed and parameters alone (tiny reference model, both runners).
//! Metric: mean and max |ours − diffusers| on the [0, 1] image.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::model::{fp32_files, load_bytes, tokenizer};
use sd_webgpu::gpu::DType;
use sd_webgpu::pipeline::{self, Params};

fn case(name: &str) -> serde_json::Value {
    let g: serde_json::Value = serde_json::from_str(&fixtures::text("golden.json")).unwrap();
    g["cases"][name].clone()
}

/// The model's scheduler config with the case's `scheduler_extra` merged in.
fn scheduler_config(c: &serde_json::Value) -> String {
    let mut cfg: serde_json::Value = serde_json::from_str(&fixtures::text("model/scheduler/scheduler_config.json")).unwrap();
    if let Some(extra) = c["scheduler_extra"].as_object() {
        for (k, v) in extra {
            cfg[k] = v.clone();
        }
    }
    cfg.to_string()
}

async fn run_case(name: &'static str, dtype: DType) {
    let c = case(name);
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, dtype, &fp32_files());
    let tok = tokenizer();
    let init_image = c["init_image"].as_str().map(|f| sd_webgpu::image::decode_png(&fixtures::bytes(f), f).unwrap());
    let p = Params {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().map(String::from),
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap(),
        seed: c["seed"].as_u64().unwrap(),
        sampler: c["sampler"].as_str().unwrap().into(),
        width: c["width"].as_u64().unwrap_or(64) as usize,
        height: c["height"].as_u64().unwrap_or(64) as usize,
        batch: 1,
        init_image,
        strength: c["strength"].as_f64().unwrap_or(1.0),
    };
    let mut steps_seen = 0;
    let out = pipeline::generate(&gpu, &sd, &tok, Some(&scheduler_config(&c)), &p, &mut |pr| {
        steps_seen = pr.step;
        true
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = fixtures::bytes("golden.safetensors");
    let (want, shape) = golden(&g, &format!("{name}_image"));
    let got = &out.images[0].data;
    assert_eq!(got.len(), want.len(), "{name}: image size {:?}", shape);
    let (mut sum, mut max, mut wi) = (0f64, 0f64, 0);
    for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
        let e = (a as f64 - b as f64).abs();
        sum += e;
        if e > max {
            max = e;
            wi = i;
        }
    }
    let mean = sum / want.len() as f64;
    let goal = if dtype == DType::F32 { 2e-3 } else { 2e-2 };
    // Final latents, where the case has them (before the VAE).
    let name_l = format!("{name}_latents");
    let st = safetensors::SafeTensors::deserialize(&g).unwrap();
    let lat = if st.names().iter().any(|n| **n == name_l) {
        let (wl, _) = golden(&g, &name_l);
        let ml = wl.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let el = out.latents.iter().zip(&wl).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
        format!(", latents max err {el:.2e} (rel {:.2e})", el / ml)
    } else {
        String::new()
    };
    log!(
        "[{} storage] {} {name}: image mean abs err {mean:.3e} (goal {goal:.0e}), max {max:.3e} at {wi}{lat}; {steps_seen} steps",
        dtype.name(),
        if mean <= goal { "PASS" } else { "FAIL" }
    );
    assert!(steps_seen > 0, "{name}: no progress reported");
    assert!(mean <= goal, "{name} ({} storage): mean abs error {mean:.3e} > {goal:.0e}; max {max:.3e} at index {wi}", dtype.name());
}

macro_rules! golden_case {
    ($f32:ident, $f16:ident, $name:literal) => {
        gpu_test!($f32, run_case($name, DType::F32));
        gpu_test!($f16, run_case($name, DType::F16));
    };
}

golden_case!(txt2img_ddpm_f32, txt2img_ddpm_f16, "txt2img_ddpm");
golden_case!(txt2img_ddim_f32, txt2img_ddim_f16, "txt2img_ddim");
golden_case!(txt2img_pndm_f32, txt2img_pndm_f16, "txt2img_pndm");
golden_case!(txt2img_euler_f32, txt2img_euler_f16, "txt2img_euler");
golden_case!(txt2img_euler_a_f32, txt2img_euler_a_f16, "txt2img_euler_a");
golden_case!(txt2img_dpmpp_2m_karras_f32, txt2img_dpmpp_2m_karras_f16, "txt2img_dpmpp_2m_karras");
golden_case!(txt2img_ddim_nocfg_wide_f32, txt2img_ddim_nocfg_wide_f16, "txt2img_ddim_nocfg_wide");
golden_case!(img2img_ddpm_f32, img2img_ddpm_f16, "img2img_ddpm");

/// Every pipeline case of golden.json has a test above.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_golden_pipeline_case_is_tested() {
    let g: serde_json::Value = serde_json::from_str(&fixtures::text("golden.json")).unwrap();
    let src = include_str!("pipeline.rs");
    for (name, _) in g["cases"].as_object().unwrap() {
        if name.starts_with("txt2img_") || name.starts_with("img2img_") {
            assert!(src.contains(&format!("\"{name}\")")), "golden case {name} has no test");
        }
    }
}

/// After the first steps the denoising loop allocates nothing: no tensor buffer, no
/// uniform buffer (one command buffer per step; buffers come from the pool).
async fn no_allocation_in_the_loop() {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, DType::F32, &fp32_files());
    let tok = tokenizer();
    for sampler in ["euler_a", "dpmpp_2m_karras", "pndm"] {
        let p = Params { prompt: "a cat".into(), steps: 8, sampler: sampler.into(), width: 64, height: 64, seed: 1, ..Default::default() };
        let mut seen: Vec<(u64, u64)> = Vec::new();
        pipeline::generate(&gpu, &sd, &tok, None, &p, &mut |_| {
            let s = gpu.pool_stats();
            seen.push((s.buffers_created, s.uniform_buffers_created));
            true
        })
        .await
        .unwrap();
        log!("{sampler}: (tensor buffers, uniform buffers) created after each step: {seen:?}");
        // Multistep samplers fill their history (up to 5 slots for PNDM) during the first steps.
        assert!(seen[5..].iter().all(|s| *s == seen[5]), "{sampler}: allocations inside the loop: {seen:?}");
    }
}
gpu_test!(denoising_loop_allocates_nothing_after_warmup, no_allocation_in_the_loop());
