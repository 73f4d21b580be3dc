//! Inpainting against diffusers' `StableDiffusionInpaintPipeline`: every case of the v2
//! reference bundle `inpaint/` (tests/fixtures/inpaint), reproduced from each case's
//! parameters as a user passes them, with its init.png and soft-edged mask.png:
//! - `mask_processing`: the binarised mask, the latent mask and the masked image (CPU);
//! - the 9-channel inpainting UNet (`model-inpaint`) with DDIM and Euler a, strength 1 and
//!   0.75 (the draws in diffusers' order: [image sample,] noise, masked-image sample);
//! - the 4-channel model (`sd15-realconfig`) on diffusers' blending path, whose final latents
//!   outside the latent mask equal the init image's latents.
//!
//! Asserted as the real-world parity tests: final latents max |ours − diffusers| ≤
//! 1e-4·max|ref| (f32), image mean ≤ 2e-3 and max ≤ 2/255. CI runs every case natively; in the
//! browser (SwiftShader: ~15 s per CFG step) CI runs the mask processing and the strength-0.75
//! DDIM case (7 steps), the others are `#[ignore]`d there with their reason and run with
//! `wasm-pack test --headless --chrome --release --test inpaint -- --include-ignored`.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::model::{load_named, realconfig_tokenizer};
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::image::{ResizeMode, Rgb};
use sd_webgpu::model::config::UnetConfig;
use sd_webgpu::model::{StableDiffusion, COMPONENTS};
use sd_webgpu::pipeline::{self, Params};
use sd_webgpu::weights::Layout;

bundle_files!(
    "inpaint/cases.json",
    "inpaint/golden.safetensors",
    "inpaint/init.png",
    "inpaint/mask.png",
    "inpaint/model-inpaint/scheduler/scheduler_config.json",
    "inpaint/model-inpaint/unet/config.json",
    "inpaint/model-inpaint/unet/diffusion_pytorch_model.safetensors",
);

fn case(name: &str) -> serde_json::Value {
    fixtures::case(&fx("inpaint/cases.json"), "inpaint", name)
}

fn init_png() -> Rgb {
    sd_webgpu::image::decode_png(&fx("inpaint/init.png"), "init.png").unwrap()
}

fn mask_png() -> Rgb {
    sd_webgpu::inpaint::decode_mask(&fx("inpaint/mask.png"), "mask.png").unwrap()
}

/// The inpainting model: model-inpaint's UNet (9 input channels) with sd15-realconfig's text
/// encoder and VAE (model-inpaint's are hard links to those).
fn load_inpaint_model(gpu: &Gpu, dtype: DType) -> StableDiffusion {
    let mut cfg = common::model::configs();
    cfg.unet = UnetConfig::from_json("unet/config.json", &fx_text("inpaint/model-inpaint/unet/config.json")).unwrap();
    assert_eq!(cfg.unet.in_channels, 9);
    let te = "sd15-realconfig/model/text_encoder/model.safetensors";
    let un = "inpaint/model-inpaint/unet/diffusion_pytorch_model.safetensors";
    let files = vec![
        (te.to_string(), fixtures::file(te), Layout::Component("text_encoder".into())),
        (un.to_string(), fx(un), Layout::Component("unet".into())),
        ("model/vae/diffusion_pytorch_model.safetensors".to_string(), fixtures::bytes("model/vae/diffusion_pytorch_model.safetensors"), Layout::Component("vae".into())),
    ];
    load_named(gpu, dtype, cfg, &COMPONENTS, files)
}

cpu_test!(mask_processing, || {
    let c = case("mask_processing");
    let g = fx("inpaint/golden.safetensors");
    let (w, h) = (c["width"].as_u64().unwrap() as usize, c["height"].as_u64().unwrap() as usize);
    let prep = sd_webgpu::inpaint::prepare(&init_png(), &mask_png(), w, h, 8, ResizeMode::default());
    let (bin, _) = golden(&g, "mask_binarized");
    let (lat, _) = golden(&g, "mask_latent");
    let (masked, _) = golden(&g, "masked_image_nchw");
    assert_eq!(prep.binary, bin, "binarised mask");
    assert_eq!(prep.latent, lat, "latent mask");
    let frac = prep.binary.iter().sum::<f32>() as f64 / prep.binary.len() as f64;
    assert!((frac - c["checks"]["binarized_fraction"].as_f64().unwrap()).abs() < 1e-6, "binarised fraction {frac}");
    common::parity::assert_close("inpaint/masked_image", &prep.masked_chw, &masked, 1e-6);
    // A mask with alpha reads composited on black; opaque grey reads as PIL's convert("L").
    assert_eq!(sd_webgpu::inpaint::mask_grey(255, 255, 255, 0), 0.0);
    assert_eq!(sd_webgpu::inpaint::mask_grey(128, 128, 128, 255), 128.0 / 255.0);
    assert_eq!(sd_webgpu::inpaint::mask_grey(255, 0, 0, 255), 76.0 / 255.0);
});

async fn run_case(name: &'static str, dtype: DType) {
    let c = case(name);
    assert_eq!(c["kind"], "pipeline");
    assert_eq!(c["pipeline"], "StableDiffusionInpaintPipeline");
    let from = c["scheduler"]["from_config"].as_str().unwrap();
    let sched = fx_text(&match from.strip_prefix("../") {
        Some(rest) => rest.to_string(),
        None => format!("inpaint/{from}"),
    });
    assert!(c["scheduler"]["overrides"].as_object().unwrap().is_empty());
    let p = Params { init_image: Some(init_png()), mask: Some(mask_png()), ..common::parity::v2_params(&c) };
    let gpu = common::gpu(true).await;
    let t0 = common::now_ms();
    let nine = c["model"] == "model-inpaint";
    let sd = if nine { load_inpaint_model(&gpu, dtype) } else { common::model::load_realconfig(&gpu, dtype) };
    let tok = realconfig_tokenizer();
    let want_ts: Vec<f64> = c["scheduler"]["timesteps_visited"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let mut steps_seen = 0;
    let out = pipeline::generate(&gpu, &sd, &tok, Some(&sched), &p, &mut |pr| {
        steps_seen = pr.step;
        true
    })
    .await
    .unwrap_or_else(|e| panic!("inpaint/{name}: {e}"));
    log!("inpaint/{name} ({}): loaded and generated in {:.1} s", dtype.name(), (common::now_ms() - t0) / 1000.0);
    assert_eq!(steps_seen, want_ts.len(), "{name}: steps run");
    assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
    let g = fx("inpaint/golden.safetensors");
    let (want_img, _) = golden(&g, c["golden"]["image"].as_str().unwrap());
    let (want_lat, _) = golden(&g, c["golden"]["latents"].as_str().unwrap());
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    let fails = common::parity::compare(&format!("inpaint/{name}"), dtype, &out.latents, &want_lat, &got_img, &want_img);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    // The parameters say it was inpainted.
    let text = pipeline::a1111_parameters(&p, p.seed, "model-inpaint", 0);
    assert!(text.contains("Mask blur: 0, Denoising strength: "), "{text}");
}

gpu_test!(inpaint9_partial_ddim_f32, run_case("inpaint9_partial_ddim", DType::F32));
native_test!(inpaint9_full_ddim_f32, run_case("inpaint9_full_ddim", DType::F32));
native_test!(inpaint9_full_euler_a_f32, run_case("inpaint9_full_euler_a", DType::F32));
native_test!(inpaint9_partial_euler_a_f32, run_case("inpaint9_partial_euler_a", DType::F32));
native_test!(inpaint4_legacy_f32, run_case("inpaint4_legacy", DType::F32));
