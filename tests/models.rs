//! Parity of the text encoder, UNet and VAE with diffusers / transformers on the tiny
//! reference model (golden tensors from ../shared/reference, copied to tests/fixtures).
//! Error metric: max |ours − reference| / max |reference| per output.
//! Native: every load path (diffusers fp32, diffusers .fp16 variant, sharded UNet,
//! single-file checkpoint). Browser: the fp32 diffusers files embedded in the test
//! module and streamed through the loader in chunks, with f32 and f16 storage.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::parity::rel_err;
use common::model::{configs, fp32_files, load_bytes, load_named, realconfig_tokenizer};
use sd_webgpu::weights::Layout;
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::{StableDiffusion, COMPONENTS};

/// Component parity with f32 storage of fp32 weights: the kernels reach 1e-6…1e-5 of
/// max|ref| on these goldens (printed by every test), so a missing bias or a wrong
/// epsilon cannot pass.
const F32_TOL: f64 = 5e-5;

/// Run every component on its golden inputs; returns (case, rel_err) and asserts the goal.
/// Goal: [`F32_TOL`] with f32 storage of fp32 weights, 2e-2 when weights or storage are f16.
async fn parity(gpu: &Gpu, sd: &StableDiffusion, label: &str, fp16_weights: bool) {
    let tol = if sd.dtypes.unet == DType::F32 && !fp16_weights { F32_TOL } else { 2e-2 };
    let g = fixtures::bytes("golden.safetensors");
    let c = sd.ctx(gpu);
    let dt = sd.dtypes.unet;
    let up = |name: &str| {
        let (v, s) = golden(&g, name);
        gpu.upload(&s, dt, &v).unwrap()
    };
    let mut results: Vec<(String, f64, usize)> = Vec::new();

    // Text encoder: ids of (prompt, negative prompt, "").
    let (ids, ishape) = golden(&g, "text_ids");
    let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
    let ids = gpu.upload_u32(&ishape, &ids).unwrap();
    let hs = sd.clip.forward(&c, &ids).unwrap();
    let (want, _) = golden(&g, "text_hidden");
    let (e, i) = rel_err(&gpu.read(&hs).await.unwrap(), &want);
    results.push(("text_encoder last_hidden_state [3,77,64]".into(), e, i));

    for case in ["unet_8x8_t981", "unet_8x8_t1", "unet_8x16_t500", "unet_16x8_t250"] {
        let x = up(&format!("{case}_in"));
        let ctx = up(&format!("{case}_context"));
        let t: u32 = case.rsplit("_t").next().unwrap().parse().unwrap();
        let tt = gpu.upload(&[2], DType::F32, &[t as f32, t as f32]).unwrap();
        let y = sd.unet.forward(&c, &x, &tt, &ctx).unwrap();
        let (want, _) = golden(&g, &format!("{case}_out"));
        let (e, i) = rel_err(&gpu.read(&y).await.unwrap(), &want);
        results.push((format!("{case} noise prediction {:?}", x.shape()), e, i));
    }

    // vae_decode_out = decoder(vae_decode_in / 0.18215): decode() divides by the factor.
    let z = up("vae_decode_in");
    let img = sd.vae.decode(&c, &z).unwrap();
    let (want, _) = golden(&g, "vae_decode_out");
    let (e, i) = rel_err(&gpu.read(&img).await.unwrap(), &want);
    results.push(("vae decode [1,4,8,8] -> [1,3,64,64]".into(), e, i));

    let x = up("vae_encode_in");
    let (mean, logvar) = sd.vae.encode(&c, &x).unwrap();
    for (name, t) in [("mean", mean), ("logvar", logvar)] {
        let (want, _) = golden(&g, &format!("vae_encode_{name}"));
        let (e, i) = rel_err(&gpu.read(&t).await.unwrap(), &want);
        results.push((format!("vae encode {name} [1,3,64,64] -> [1,4,8,8]"), e, i));
    }

    let mut fails = Vec::new();
    for (case, e, i) in &results {
        let ok = *e <= tol;
        log!("[{label}, {} storage] {} {case}: rel_err {e:.3e} (goal {tol:.0e}) worst index {i}", dt.name(), if ok { "PASS" } else { "FAIL" });
        if !ok {
            fails.push(format!("{case}: {e:.3e} at {i}"));
        }
    }
    assert!(fails.is_empty(), "[{label}] parity failures:\n{}", fails.join("\n"));
}

/// The diffusers fp32 files streamed from memory in 1 MiB chunks (the browser path).
async fn streamed_fp32(dtype: DType) {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, dtype, &fp32_files());
    parity(&gpu, &sd, "diffusers fp32 streamed from memory", false).await;
}
gpu_test!(streamed_diffusers_fp32_f32_storage, streamed_fp32(DType::F32));
// f16 storage in the browser (packed, no shader-f16): the f16 pipeline case and the
// wide-head UNet below cover the same kernels there.
native_test!(streamed_diffusers_fp32_f16_storage, streamed_fp32(DType::F16));

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::{Path, PathBuf};

    use super::*;
    use sd_webgpu::model::Source;

    fn root() -> PathBuf {
        PathBuf::from(fixtures::ROOT)
    }

    async fn run(src: Source, dtype: DType, overrides: &[(&str, &Path)], label: &str, native_f16: bool) {
        let fp16_weights = matches!(&src, Source::Diffusers { variant: Some(_), .. });
        let gpu = common::gpu(native_f16).await;
        let sd = StableDiffusion::load_components(&gpu, &src, dtype, &COMPONENTS, overrides).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(sd.warnings.is_empty(), "{label}: {:?}", sd.warnings);
        parity(&gpu, &sd, label, fp16_weights).await;
    }

    fn diffusers(variant: Option<&str>) -> Source {
        Source::Diffusers { dir: root().join("model"), variant: variant.map(String::from) }
    }

    #[test]
    fn diffusers_fp16_variant_f32_storage() {
        pollster::block_on(run(diffusers(Some("fp16")), DType::F32, &[], "diffusers .fp16 (weights rounded to f16)", true));
    }
    #[test]
    fn diffusers_fp32_f16_storage() {
        pollster::block_on(run(diffusers(None), DType::F16, &[], "diffusers fp32", true));
    }
    #[test]
    fn diffusers_fp32_f16_packed_storage() {
        pollster::block_on(run(diffusers(None), DType::F16, &[], "diffusers fp32, f16 packed (no shader-f16)", false));
    }
    #[test]
    fn diffusers_fp16_variant_f16_storage() {
        pollster::block_on(run(diffusers(Some("fp16")), DType::F16, &[], "diffusers .fp16", true));
    }
    #[test]
    fn sharded_unet_f32_storage() {
        let shards = root().join("unet-sharded");
        pollster::block_on(run(diffusers(None), DType::F32, &[("unet", &shards)], "sharded UNet", true));
    }
    #[test]
    fn single_file_checkpoint_f32_storage() {
        pollster::block_on(run(Source::SingleFile(root().join("model.safetensors"), Some(configs())), DType::F32, &[], "single-file", true));
    }
    #[test]
    fn single_file_checkpoint_f16_storage() {
        pollster::block_on(run(Source::SingleFile(root().join("model.safetensors"), Some(configs())), DType::F16, &[], "single-file", true));
    }
}

/// The planning pass allocates exactly what a real run allocates: same buffers, same
/// peak, same dispatch count (tiny model, one CFG UNet step + VAE decode).
async fn plan_equals_real() {
    use sd_webgpu::gpu::GpuOptions;
    let mut stats = Vec::new();
    for plan in [false, true] {
        let gpu = Gpu::new(GpuOptions { plan_only: plan, ..Default::default() }).await.expect("gpu");
        let sd = if plan {
            let cfg = configs();
            let weights = sd_webgpu::plan::placeholder_weights(&gpu, &cfg, DType::F32, &COMPONENTS).unwrap();
            StableDiffusion::new(&gpu, cfg, DType::F32, weights, vec![]).unwrap()
        } else {
            load_bytes(&gpu, DType::F32, &fp32_files())
        };
        let w = gpu.pool_stats();
        let c = sd.ctx(&gpu);
        let x = gpu.upload(&[2, 4, 8, 8], DType::F32, &[0.1; 512]).unwrap();
        let ctx = gpu.upload(&[2, 77, 64], DType::F32, &vec![0.2; 2 * 77 * 64]).unwrap();
        let t = gpu.upload(&[2], DType::F32, &[500.0, 500.0]).unwrap();
        let eps = sd.unet.forward(&c, &x, &t, &ctx).unwrap();
        let img = sd.vae.decode(&c, &eps.reshape(&[2, 4, 8, 8]).unwrap()).unwrap();
        let _ = gpu.read(&img).await.unwrap();
        let s = gpu.pool_stats();
        log!("plan_only={plan}: weights {} B; after: buffers {}, peak {} B, dispatches {}", w.total_bytes, s.buffers_created, s.peak_bytes, s.dispatches);
        stats.push((w.total_bytes, s.buffers_created, s.peak_bytes, s.dispatches));
    }
    assert_eq!(stats[0], stats[1], "real vs plan: (weights bytes, buffers created, peak bytes, dispatches)");
}
gpu_test!(plan_allocates_exactly_like_a_real_run, plan_equals_real());

/// Tiled VAE decode (latent tiles overlapping, blended with linear ramps) against the
/// untiled decode of the same latents: the bound below is what the tiny model holds.
async fn tiled_vae() {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, DType::F32, &fp32_files());
    let c = sd.ctx(&gpu);
    let mut rng = sd_webgpu::rng::TorchRng::new(11);
    let z = gpu.upload(&[1, 4, 16, 16], DType::F32, &rng.randn(1024)).unwrap();
    let full = sd_webgpu::ops::to_image(&gpu, &sd.vae.decode(&c, &z).unwrap()).unwrap();
    let full = gpu.read(&full).await.unwrap();
    // (tile, overlap, bound on mean, bound on max) — tiles see their own group-norm statistics
    // and attention context, so they differ from the whole-image decode; the ramps hide seams.
    for (tile, overlap, mean_bound, max_bound) in [(8usize, 4usize, 0.05, 0.35), (12, 4, 0.03, 0.2), (16, 4, 1e-6, 1e-5)] {
        let tiled = sd.vae.decode_tiled(&c, &z, tile, overlap).unwrap();
        let tiled = gpu.read(&sd_webgpu::ops::to_image(&gpu, &tiled).unwrap()).await.unwrap();
        let (mut max, mut sum) = (0f64, 0f64);
        for (a, b) in full.iter().zip(&tiled) {
            let e = (*a as f64 - *b as f64).abs();
            max = max.max(e);
            sum += e;
        }
        let mean = sum / full.len() as f64;
        log!("tiled VAE decode, 16×16 latents, tile {tile} overlap {overlap}: [0,1] image vs untiled: mean abs diff {mean:.3e}, max {max:.3e}");
        assert!(mean <= mean_bound && max <= max_bound, "tile {tile}: mean {mean:.3e} (bound {mean_bound}), max {max:.3e} (bound {max_bound})");
    }
}
// Natively: the tiling is CPU orchestration of kernels the browser runs in the other tests
// (SwiftShader takes ~8 min for these seven 128×128 decodes).
native_test!(tiled_vae_decode_matches_untiled, tiled_vae());

fn check_rel(label: &str, got: &[f32], want: &[f32], tol: f64) {
    let (e, i) = rel_err(got, want);
    log!("{label}: rel_err {e:.3e} (goal {tol:.0e}) worst index {i}: ours {}, reference {}", got[i], want[i]);
    assert!(e <= tol, "{label}: rel_err {e:.3e} > {tol:.0e} at index {i}: ours {}, reference {}", got[i], want[i]);
}

/// The real repos' text encoder file (keys prefixed `text_model.`) and tokenizer files
/// (AddedToken layout) against transformers on a non-Latin-1 and a >77-token prompt.
async fn realconfig_text_encoder(dtype: DType) {
    let gpu = common::gpu(true).await;
    let te = "sd15-realconfig/model/text_encoder/model.safetensors";
    let sd = load_named(&gpu, dtype, configs(), &["text_encoder"], vec![(te.into(), fixtures::file(te), Layout::Component("text_encoder".into()))]);
    assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
    let tok = realconfig_tokenizer();
    let g = fixtures::file("sd15-realconfig/golden.safetensors");
    let cases: serde_json::Value = serde_json::from_str(&fixtures::file_text("sd15-realconfig/cases.json")).unwrap();
    for (case, key) in [("text_encoder_unicode", "te_unicode_hidden"), ("text_encoder_long_prompt", "te_long_prompt_hidden")] {
        let c = cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == case).unwrap();
        let enc = tok.encode(c["prompt"].as_str().unwrap()).unwrap();
        let want_ids: Vec<u32> = c["checks"]["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(enc.ids, want_ids, "{case}: token ids");
        let ids = gpu.upload_u32(&[1, enc.ids.len()], &enc.ids).unwrap();
        let hs = sd.clip.forward(&sd.ctx(&gpu), &ids).unwrap();
        let (want, _) = golden(&g, key);
        check_rel(&format!("[{} storage] sd15-realconfig {case}", dtype.name()), &gpu.read(&hs).await.unwrap(), &want, if dtype == DType::F32 { F32_TOL } else { 2e-2 });
    }
}
gpu_test!(realconfig_text_encoder_f32, realconfig_text_encoder(DType::F32));
gpu_test!(realconfig_text_encoder_f16, realconfig_text_encoder(DType::F16));

/// A VAE saved by diffusers before the attention-processor rename (mid-block attention as
/// query / key / value / proj_attn) loads with no missing or unexpected tensor and decodes
/// as diffusers does.
async fn legacy_vae_names(dtype: DType) {
    let gpu = common::gpu(true).await;
    let f = "sd15-realconfig/vae-legacy-names/diffusion_pytorch_model.safetensors";
    let mut cfg = configs();
    cfg.vae = sd_webgpu::model::config::VaeConfig::from_json("vae-legacy-names/config.json", &fixtures::file_text("sd15-realconfig/vae-legacy-names/config.json")).unwrap();
    let sd = load_named(&gpu, dtype, cfg, &["vae"], vec![(f.into(), fixtures::file(f), Layout::Component("vae".into()))]);
    assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
    let g = fixtures::file("sd15-realconfig/golden.safetensors");
    let (z, zs) = golden(&g, "vae_legacy_decode_in");
    let z = gpu.upload(&zs, dtype, &z).unwrap();
    let img = sd.vae.decode(&sd.ctx(&gpu), &z).unwrap();
    let (want, _) = golden(&g, "vae_legacy_decode_out");
    check_rel(&format!("[{} storage] legacy-named VAE decode", dtype.name()), &gpu.read(&img).await.unwrap(), &want, if dtype == DType::F32 { F32_TOL } else { 2e-2 });
}
gpu_test!(legacy_vae_names_f32, legacy_vae_names(DType::F32));
gpu_test!(legacy_vae_names_f16, legacy_vae_names(DType::F16));

/// The weights of `extra/wide-heads-unet` as scripts/make_extra_goldens.py drew them
/// (torch.Generator().manual_seed(160), parameter by parameter), as a safetensors file.
fn wide_unet_file() -> Vec<u8> {
    let cases: serde_json::Value = serde_json::from_str(&fixtures::file_text("extra/cases.json")).unwrap();
    let c = &cases["cases"]["wide_unet"];
    let mut rng = sd_webgpu::rng::TorchRng::new(c["weights_seed"].as_u64().unwrap());
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for p in c["parameters"].as_array().unwrap() {
        let name = p[0].as_str().unwrap();
        let shape: Vec<usize> = p[1].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let n: usize = shape.iter().product();
        let r = rng.randn(n);
        let v: Vec<f32> = if shape.len() > 1 {
            let fan_in = (n / shape[0]) as f64;
            let s = fan_in.sqrt() as f32;
            r.iter().map(|x| x / s).collect()
        } else if name.contains("norm") && name.ends_with("weight") {
            r.iter().map(|x| 1.0 + 0.1 * x).collect()
        } else {
            r.iter().map(|x| 0.1 * x).collect()
        };
        header.insert(name.into(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [data.len(), data.len() + 4 * n]}));
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    fixtures::safetensors_bytes(&serde_json::to_vec(&header).unwrap(), &data)
}

/// SD-1.5's head widths 40 / 80 / 160 (the tiny model's are 4-8): the wide-head attention
/// kernel inside a UNet, against diffusers.
async fn wide_head_unet(dtype: DType) {
    let gpu = common::gpu(true).await;
    let mut cfg = configs();
    cfg.unet = sd_webgpu::model::config::UnetConfig::from_json("wide-heads-unet/config.json", &fixtures::file_text("extra/wide-heads-unet/config.json")).unwrap();
    let heads: Vec<usize> = (0..3).map(|i| cfg.unet.block_out_channels[i] / cfg.unet.heads(i)).collect();
    assert_eq!(heads, vec![40, 80, 160], "head widths");
    let sd = load_named(&gpu, dtype, cfg, &["unet"], vec![("wide-heads-unet (drawn)".into(), wide_unet_file(), Layout::Component("unet".into()))]);
    assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
    let g = fixtures::file("extra/golden.safetensors");
    let up = |k: &str| {
        let (v, s) = golden(&g, k);
        gpu.upload(&s, dtype, &v).unwrap()
    };
    let (x, ctx) = (up("wide_unet_in"), up("wide_unet_context"));
    let t = gpu.upload(&[2], DType::F32, &[700.0, 700.0]).unwrap();
    let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &ctx).unwrap();
    let (want, _) = golden(&g, "wide_unet_out");
    check_rel(&format!("[{} storage] UNet with 40/80/160-wide heads [2,4,16,16]", dtype.name()), &gpu.read(&y).await.unwrap(), &want, if dtype == DType::F32 { F32_TOL } else { 2e-2 });
}
gpu_test!(wide_head_unet_f32, wide_head_unet(DType::F32));
gpu_test!(wide_head_unet_f16, wide_head_unet(DType::F16));

/// The real-config diffusers folder as the CLI loads it (native paths).
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn realconfig_folder_loads() {
    pollster::block_on(async {
        let gpu = common::gpu(true).await;
        let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd15-realconfig/model"));
        let sd = StableDiffusion::load(&gpu, &dir, DType::F32, Some("fp16")).unwrap();
        assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
        parity(&gpu, &sd, "sd15-realconfig folder (text_model. keys)", false).await;
    });
}
