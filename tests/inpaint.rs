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
//! 1e-4·max|ref| (f32), image mean ≤ 2e-3 and max ≤ 2/255. CI runs every case natively, and
//! the strength-0.75 DDIM case once more from a single-file checkpoint; in the browser
//! (SwiftShader: ~15 s per CFG step) CI runs the mask processing and the checkpoint-header
//! reading, e2e `ui_inpaint` the 9-channel pipeline through the page against a 4-step golden
//! of the same case; the generations are `#[ignore]`d there with their reason and run with
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
    let nine = case(name)["model"] == "model-inpaint";
    run_case_on(name, dtype, |gpu| if nine { load_inpaint_model(gpu, dtype) } else { common::model::load_realconfig(gpu, dtype) }).await
}

/// One case of the bundle on the model `load` gives.
async fn run_case_on(name: &'static str, dtype: DType, load: impl FnOnce(&Gpu) -> StableDiffusion) {
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
    let sd = load(&gpu);
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

// In the browser (SwiftShader, ~15 s per CFG step) e2e ui_inpaint runs the 9-channel pipeline
// through the page against diffusers' 4-step golden of this case (tests/fixtures/e2e-short);
// these five run there on demand (`-- --include-ignored`).
native_test!(inpaint9_partial_ddim_f32, run_case("inpaint9_partial_ddim", DType::F32));
native_test!(inpaint9_full_ddim_f32, run_case("inpaint9_full_ddim", DType::F32));
native_test!(inpaint9_full_euler_a_f32, run_case("inpaint9_full_euler_a", DType::F32));
native_test!(inpaint9_partial_euler_a_f32, run_case("inpaint9_partial_euler_a", DType::F32));
native_test!(inpaint4_legacy_f32, run_case("inpaint4_legacy", DType::F32));

/// A safetensors header of a checkpoint with the given first convolution and text-encoder key.
fn checkpoint_bytes(conv_in: [usize; 4], te_key: &str) -> Vec<u8> {
    let n = conv_in.iter().product::<usize>() * 4;
    let header = serde_json::json!({
        "model.diffusion_model.input_blocks.0.0.weight": {"dtype": "F32", "shape": conv_in, "data_offsets": [0, n]},
        te_key: {"dtype": "F32", "shape": [1], "data_offsets": [n, n + 4]},
    })
    .to_string();
    fixtures::safetensors_bytes(header.as_bytes(), &vec![0; n + 4])
}

// A single-file checkpoint's configs come from its header, read as the browser streams the
// file (in chunks that split the length field and the header): a 9-channel first convolution
// is an inpainting UNet, OpenCLIP text-encoder keys SD 2.x; an unreadable header is SD 1.5's
// (the loader reports the file).
cpu_test!(single_file_configs_from_the_streamed_header, || {
    use sd_webgpu::model::{checkpoint_configs, CheckpointSniffer, Configs};
    let sd15_te = "cond_stage_model.transformer.text_model.final_layer_norm.weight";
    let sd2_te = "cond_stage_model.model.transformer.resblocks.0.ln_1.weight";
    let sniff = |b: &[u8], chunk: usize, total: Option<u64>| -> (Configs, usize) {
        let mut s = CheckpointSniffer::default();
        for (i, c) in b.chunks(chunk).enumerate() {
            if let Some(cfg) = s.push(c, total, false) {
                let read = ((i + 1) * chunk).min(b.len());
                assert_eq!(s.into_held(), &b[..read], "the held bytes are what was pushed, in order");
                return (cfg, (i + 1) * chunk);
            }
        }
        (s.push(&[], total, true).expect("the end decides"), b.len())
    };
    for (conv, te, channels, sd2) in [([320, 9, 3, 3], sd15_te, 9, false), ([320, 4, 3, 3], sd15_te, 4, false), ([320, 9, 3, 3], sd2_te, 9, true), ([320, 4, 3, 3], sd2_te, 4, true)] {
        let b = checkpoint_bytes(conv, te);
        for chunk in [3, 7, 64, 1 << 20] {
            let (cfg, read) = sniff(&b, chunk, Some(b.len() as u64));
            assert_eq!(cfg.unet.in_channels, channels, "{conv:?} {te} in chunks of {chunk}");
            assert_eq!(cfg.is_sd2(), sd2, "{te}: SD 2.x");
            let header = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            assert!(read >= header && read < header + chunk, "decided after {read} bytes, header ends at {header}");
        }
        let h = String::from_utf8(b[8..8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize].to_vec()).unwrap();
        assert_eq!(checkpoint_configs(Some(&h)).unet.in_channels, channels);
    }
    let sd15 = Configs::default();
    // A length field beyond the file or over 100 MiB, a file that ends inside its header or its
    // length field: SD 1.5's configs, decided at once or at the end.
    let b = checkpoint_bytes([320, 9, 3, 3], sd15_te);
    let mut huge = b.clone();
    huge[..8].copy_from_slice(&(200u64 << 20).to_le_bytes());
    assert_eq!(sniff(&huge, 64, None).0.unet.in_channels, sd15.unet.in_channels);
    assert_eq!(sniff(&huge, 64, None).1, 64, "an implausible length is decided at once");
    assert_eq!(sniff(&b, 64, Some(100)).0.unet.in_channels, 4, "a header longer than the file");
    assert_eq!(sniff(&b[..40], 7, None).0.unet.in_channels, 4, "a file cut inside its header");
    assert_eq!(sniff(&b[..5], 2, None).0.unet.in_channels, 4, "a file cut inside its length");
    assert_eq!(checkpoint_configs(None).unet.in_channels, 4);
});

/// model-inpaint as one original single-file checkpoint (as the stable-diffusion-inpainting
/// repo's `sd-v1-5-inpainting.safetensors`): tiny-sd15's single file (its text encoder and VAE
/// are model-inpaint's) with every UNet tensor replaced by model-inpaint's under the original
/// name the single-file loader translates (`input_blocks.0.0.weight` [32, 9, 3, 3]).
#[cfg(not(target_arch = "wasm32"))]
fn inpaint_single_file() -> Vec<u8> {
    use safetensors::tensor::TensorView;
    let base = fixtures::file("tiny-sd15/model.safetensors");
    let base = safetensors::SafeTensors::deserialize(&base).unwrap();
    let unet = fx("inpaint/model-inpaint/unet/diffusion_pytorch_model.safetensors");
    let unet = safetensors::SafeTensors::deserialize(&unet).unwrap();
    let cfg = common::model::configs();
    let (ul, vl) = (cfg.unet_layout(), sd_webgpu::weights::keymap::VaeLayout { levels: cfg.vae.block_out_channels.len() });
    let mut replaced = 0;
    let mut out = Vec::new();
    for (name, t) in base.tensors() {
        let t = match name.strip_prefix("model.diffusion_model.") {
            Some(_) => {
                let d = sd_webgpu::weights::keymap::single_file(&name, &ul, &vl).unwrap_or_else(|| panic!("{name}: no diffusers name"));
                let u = unet.tensor(d.strip_prefix("unet/").unwrap()).unwrap_or_else(|e| panic!("{d}: {e}"));
                replaced += 1;
                let shape = if u.shape().iter().product::<usize>() == t.shape().iter().product::<usize>() { t.shape().to_vec() } else { u.shape().to_vec() };
                TensorView::new(u.dtype(), shape, u.data()).unwrap()
            }
            None => t,
        };
        out.push((name, t));
    }
    assert_eq!(replaced, unet.len(), "every UNet tensor of model-inpaint");
    safetensors::serialize(out, None).unwrap()
}

/// The strength-0.75 DDIM case on model-inpaint loaded from one single-file checkpoint: the
/// 9 input channels are read from its header (the CLI's path; the browser's worker gets the
/// same configs from the same header, tested above), the image is diffusers'.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn inpaint9_single_file_checkpoint_f32() {
    use sd_webgpu::model::Source;
    let path = std::env::temp_dir().join(format!("sd-webgpu-inpaint-{}.safetensors", std::process::id()));
    std::fs::write(&path, inpaint_single_file()).unwrap();
    let detected = sd_webgpu::model::single_file_configs(&path);
    let result = std::panic::catch_unwind(|| {
        let detected = detected.expect("read the header");
        assert_eq!(detected.unet.in_channels, 9, "input_blocks.0.0.weight [32, 9, 3, 3]: an inpainting UNet");
        assert!(!sd_webgpu::model::single_file_is_sd2(&path).unwrap());
        // The tiny widths are not in a checkpoint (a real one has SD 1.5's): the tiny configs
        // with the channels the header gave.
        let mut cfg = common::model::configs();
        cfg.unet.in_channels = detected.unet.in_channels;
        pollster::block_on(run_case_on("inpaint9_partial_ddim", DType::F32, |gpu| {
            StableDiffusion::load_components(gpu, &Source::SingleFile(path.clone(), Some(cfg)), DType::F32, &COMPONENTS, &[]).expect("load the single file")
        }));
    });
    let _ = std::fs::remove_file(&path);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
