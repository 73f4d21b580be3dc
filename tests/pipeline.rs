//! The whole pipeline against diffusers, reproduced from each case's seed and parameters
//! alone: every txt2img_* / img2img_* case of tiny-sd15's golden.json, and every pipeline
//! case of the v2 `sd15-realconfig` bundle (the real SD-1.5 scheduler file verbatim, batch 2,
//! a non-Latin-1 prompt, a >77-token prompt, non-square). CI runs the cases marked so in
//! `golden_case!` / `real_case!` in each runner (SwiftShader is slow, CI has 90 minutes);
//! every case runs on demand in both (`-- --ignored` / `-- --include-ignored`).
//!
//! Asserted where the signal is: the final latents (before the VAE; the tiny random VAE
//! squeezes latent differences ~200×), max |ours − diffusers| ≤ 1e-4·max|ref| with f32
//! storage and ≤ 2e-2·max|ref| with f16; and the [0, 1] image, mean ≤ 2e-3 and max ≤ 2/255
//! (f32) or mean ≤ 2e-2 (f16). Each run prints one `PARITY` line (collected for the notes).
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::model::{fp32_files, load_bytes, load_realconfig, realconfig_tokenizer, tokenizer};
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::StableDiffusion;
use sd_webgpu::pipeline::{self, Output, Params};
use sd_webgpu::tokenizer::ClipTokenizer;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Bundle {
    /// ../shared/reference/tiny-sd15 (golden.json; latents of two cases from tests/fixtures/extra)
    Tiny,
    /// ../shared/reference/v2/sd15-realconfig
    Real,
}

fn tiny_case(name: &str) -> serde_json::Value {
    let g: serde_json::Value = serde_json::from_str(&fixtures::text("golden.json")).unwrap();
    g["cases"][name].clone()
}

fn real_cases() -> Vec<serde_json::Value> {
    let j: serde_json::Value = serde_json::from_str(&fixtures::file_text("sd15-realconfig/cases.json")).unwrap();
    j["cases"].as_array().unwrap().clone()
}

fn real_case(name: &str) -> serde_json::Value {
    real_cases().into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("sd15-realconfig case {name}"))
}

/// The tiny model's scheduler config with the case's `scheduler_extra` merged in.
fn tiny_scheduler_config(c: &serde_json::Value) -> String {
    let mut cfg: serde_json::Value = serde_json::from_str(&fixtures::text("model/scheduler/scheduler_config.json")).unwrap();
    if let Some(extra) = c["scheduler_extra"].as_object() {
        for (k, v) in extra {
            cfg[k] = v.clone();
        }
    }
    cfg.to_string()
}

/// The parameters as a user passes them, the scheduler config file, the golden tensors.
struct Setup {
    params: Params,
    scheduler: String,
    golden: Vec<u8>,
    image_key: String,
    /// (golden file, key) of the final latents.
    latents: (Vec<u8>, String),
}

fn setup(bundle: Bundle, name: &str) -> Setup {
    match bundle {
        Bundle::Tiny => {
            let c = tiny_case(name);
            let init_image = c["init_image"].as_str().map(|f| sd_webgpu::image::decode_png(&fixtures::bytes(f), f).unwrap());
            let params = Params {
                prompt: c["prompt"].as_str().unwrap().into(),
                negative_prompt: c["negative_prompt"].as_str().map(String::from),
                steps: c["steps"].as_u64().unwrap() as usize,
                guidance_scale: c["guidance_scale"].as_f64().unwrap(),
                seed: c["seed"].as_u64().unwrap(),
                sampler: c["sampler"].as_str().unwrap().into(),
                width: c["width"].as_u64().unwrap_or(64) as usize,
                height: c["height"].as_u64().unwrap_or(64) as usize,
                strength: c["strength"].as_f64().unwrap_or(1.0),
                init_image,
                ..Default::default()
            };
            let golden = fixtures::bytes("golden.safetensors");
            let key = format!("{name}_latents");
            let st = safetensors::SafeTensors::deserialize(&golden).unwrap();
            let latents = if st.names().iter().any(|n| **n == key) {
                (golden.clone(), key)
            } else {
                // Made by scripts/make_extra_goldens.py from the same runs (the bundle has only the image).
                (fixtures::file("extra/golden.safetensors"), key)
            };
            Setup { params, scheduler: tiny_scheduler_config(&c), golden, image_key: format!("{name}_image"), latents }
        }
        Bundle::Real => {
            let c = real_case(name);
            assert_eq!(c["kind"], "pipeline");
            let params = common::parity::v2_params(&c);
            let golden = fixtures::file("sd15-realconfig/golden.safetensors");
            let key = c["golden"]["latents"].as_str().unwrap().to_string();
            Setup {
                params,
                scheduler: fixtures::file_text("sd15-realconfig/model/scheduler/scheduler_config.json"),
                golden: golden.clone(),
                image_key: c["golden"]["image"].as_str().unwrap().into(),
                latents: (golden, key),
            }
        }
    }
}

fn load(gpu: &Gpu, bundle: Bundle, dtype: DType) -> (StableDiffusion, ClipTokenizer) {
    match bundle {
        Bundle::Tiny => (load_bytes(gpu, dtype, &fp32_files()), tokenizer()),
        Bundle::Real => (load_realconfig(gpu, dtype), realconfig_tokenizer()),
    }
}

/// Checks `out` (images `first..first + out.images.len()` of the case's batch) against the
/// goldens; returns the failures.
fn check(label: &str, dtype: DType, s: &Setup, out: &Output, first: usize) -> Vec<String> {
    let (want_img, ishape) = golden(&s.golden, &s.image_key);
    let (want_lat, lshape) = golden(&s.latents.0, &s.latents.1);
    let per_img = ishape[1..].iter().product::<usize>();
    let per_lat = lshape[1..].iter().product::<usize>();
    let n = out.images.len();
    let want_img = &want_img[first * per_img..(first + n) * per_img];
    let want_lat = &want_lat[first * per_lat..(first + n) * per_lat];
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    common::parity::compare(label, dtype, &out.latents, want_lat, &got_img, want_img)
}

async fn run_case(bundle: Bundle, name: &'static str, dtype: DType) {
    let s = setup(bundle, name);
    let gpu = common::gpu(true).await;
    let t0 = common::now_ms();
    let (sd, tok) = load(&gpu, bundle, dtype);
    let mut steps_seen = 0;
    let out = pipeline::generate(&gpu, &sd, &tok, Some(&s.scheduler), &s.params, &mut |pr| {
        steps_seen = pr.step;
        true
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    log!("{bundle:?}/{name} ({}): loaded and generated in {:.1} s", dtype.name(), (common::now_ms() - t0) / 1000.0);
    assert!(steps_seen > 0, "{name}: no progress reported");
    assert_eq!(out.images.len(), s.params.batch, "{name}: images");
    assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
    let label = format!("{bundle:?}/{name}");
    let fails = check(&label, dtype, &s, &out, 0);
    if bundle == Bundle::Real {
        let c = real_case(name);
        // The tokens diffusers gave the UNet (the long prompt is cut to BOS + 75 + EOS).
        if let Some(ids) = c["checks"]["token_ids"].as_array() {
            let want: Vec<u32> = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(&s.params.prompt).unwrap().ids, want, "{name}: token ids");
        }
        if let Some(n) = c["checks"]["n_tokens_without_bos_eos"].as_u64() {
            assert_eq!(out.dropped_tokens.0, (n as usize).saturating_sub(75), "{name}: dropped tokens");
        }
        // The image's PNG carries the exact prompt back (iTXt when it is not Latin-1).
        let text = pipeline::a1111_parameters(&s.params, s.params.seed, "tiny", 0);
        let png = sd_webgpu::image::encode_png(&out.images[0], Some(&text)).unwrap();
        assert!(png.warning.is_none(), "{name}: {:?}", png.warning);
        let back = sd_webgpu::image::png_parameters(&png.bytes).expect("parameters chunk");
        assert_eq!(back, text, "{name}: PNG parameters");
        assert!(back.starts_with(&s.params.prompt));
        let chunk = sd_webgpu::image::png_parameters_chunk(&png.bytes).unwrap();
        assert_eq!(chunk, if sd_webgpu::image::is_latin1(&text) { "tEXt" } else { "iTXt" }, "{name}");
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

/// Item 4: the batch's image `pos` (1-based, as the CLI's `--batch-pos` and the PNG's
/// parameters give it) generated alone equals its place in diffusers' batch, and nothing
/// else is produced.
async fn run_batch_pos(name: &'static str, pos: usize, dtype: DType) {
    let s = setup(Bundle::Real, name);
    assert!(s.params.batch >= pos && pos >= 1, "{name}: batch {} has no position {pos}", s.params.batch);
    let gpu = common::gpu(true).await;
    let t0 = common::now_ms();
    let (sd, tok) = load(&gpu, Bundle::Real, dtype);
    let p = Params { batch_pos: Some(pos), ..s.params.clone() };
    let one = pipeline::generate(&gpu, &sd, &tok, Some(&s.scheduler), &p, &mut |_| true).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    log!("Real/{name}@batch_pos={pos} ({}): loaded and generated in {:.1} s", dtype.name(), (common::now_ms() - t0) / 1000.0);
    assert_eq!((one.images.len(), one.batch_positions.clone()), (1, vec![pos - 1]), "{name}: batch_pos {pos}");
    let fails = check(&format!("Real/{name}@batch_pos={pos}"), dtype, &s, &one, pos - 1);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
// The last image of the real-config batch of 2, alone (f32). In the browser CI checks
// `batchPos` through the module instead (e2e batch2_matches_diffusers, 3 steps).
native_test!(real_batch2_pos2_alone_f32, run_batch_pos("txt2img_batch2", 2, DType::F32));

/// The tiny-sd15 table. Natively CI runs f32 and f16 storage of the cases that exercise
/// something the real-config table below does not: img2img, no CFG at a non-square size,
/// DPM++ 2M Karras with the tiny folder's explicit scheduler config (in f16 only: `f16_only`;
/// its f32 twin is real_dpmpp_2m_karras_f32 with another scheduler file) (`dup` marks the
/// others: the same sampler on the same weights and kernels as the real-config case CI runs,
/// and their f16 twins; CI skips them in both runners with that reason to stay inside its
/// time, `cargo test --release --test pipeline -- --ignored` runs them, ~40 s each on
/// lavapipe). In the browser (SwiftShader: ~13 s per CFG step of the tiny UNet, ~2.5 min
/// per generation) every case is `#[ignore]`d in CI with its reason (the components run there
/// in f32 and packed f16 in tests/models.rs, and e2e runs generations through the module
/// against diffusers' goldens); the whole table runs there on demand:
/// `wasm-pack test --headless --chrome --release --test pipeline -- --include-ignored`.
macro_rules! golden_case {
    ($f32:ident, $f16:ident, $bundle:expr, $name:literal, dup) => {
        ignored_test!($f32, "same sampler, weights and kernels as the Real/ case of this sampler that CI runs; run with --ignored (native) / --include-ignored (browser)", run_case($bundle, $name, DType::F32));
        ignored_test!($f16, "f16 twin repeating the f16 path of the cases that run f16; run with --ignored (native) / --include-ignored (browser)", run_case($bundle, $name, DType::F16));
    };
    ($f32:ident, $f16:ident, $bundle:expr, $name:literal, f16) => {
        native_test!($f32, run_case($bundle, $name, DType::F32));
        native_test!($f16, run_case($bundle, $name, DType::F16));
    };
    ($f32:ident, $f16:ident, $bundle:expr, $name:literal, f16_only) => {
        ignored_test!($f32, "same sampler, weights and kernels as the Real/ case of this sampler that CI runs (the scheduler file differs: tests/schedulers.rs checks its tables); run with --ignored (native) / --include-ignored (browser)", run_case($bundle, $name, DType::F32));
        native_test!($f16, run_case($bundle, $name, DType::F16));
    };
}

/// The real-config table (the tiny-sd15 weights with the real SD-1.5 scheduler and
/// tokenizer files; the same kernels at the same sizes as the tiny-sd15 table above).
/// Natively: f32 for every case, f16 for the case marked `f16` (the batch); the other f16 twins are `#[ignore]`d with their reason
/// (`cargo test --release --test pipeline -- --ignored` runs them: ~35 s each on lavapipe).
/// In the browser every case is `#[ignore]`d in CI and runs with `-- --include-ignored` as
/// above; the e2e tests run the real-config batch (and `batchPos` alone), Unicode and long
/// prompts through the module.
macro_rules! real_case {
    ($f32:ident, $f16:ident, $name:literal) => {
        native_test!($f32, run_case(Bundle::Real, $name, DType::F32));
        ignored_test!($f16, "f16 twin of a tiny-sd15 case (same kernels, sizes and sampler); run with --ignored (native) / --include-ignored (browser)", run_case(Bundle::Real, $name, DType::F16));
    };
    ($f32:ident, $f16:ident, $name:literal, f16) => {
        native_test!($f32, run_case(Bundle::Real, $name, DType::F32));
        native_test!($f16, run_case(Bundle::Real, $name, DType::F16));
    };
}

golden_case!(txt2img_ddpm_f32, txt2img_ddpm_f16, Bundle::Tiny, "txt2img_ddpm", dup);
golden_case!(txt2img_ddim_f32, txt2img_ddim_f16, Bundle::Tiny, "txt2img_ddim", dup);
golden_case!(txt2img_pndm_f32, txt2img_pndm_f16, Bundle::Tiny, "txt2img_pndm", dup);
golden_case!(txt2img_euler_f32, txt2img_euler_f16, Bundle::Tiny, "txt2img_euler", dup);
golden_case!(txt2img_euler_a_f32, txt2img_euler_a_f16, Bundle::Tiny, "txt2img_euler_a", dup);
golden_case!(txt2img_dpmpp_2m_karras_f32, txt2img_dpmpp_2m_karras_f16, Bundle::Tiny, "txt2img_dpmpp_2m_karras", f16_only);
golden_case!(txt2img_ddim_nocfg_wide_f32, txt2img_ddim_nocfg_wide_f16, Bundle::Tiny, "txt2img_ddim_nocfg_wide", f16);
golden_case!(img2img_ddpm_f32, img2img_ddpm_f16, Bundle::Tiny, "img2img_ddpm", f16);

real_case!(real_ddpm_f32, real_ddpm_f16, "txt2img_ddpm");
real_case!(real_ddim_f32, real_ddim_f16, "txt2img_ddim");
real_case!(real_pndm_f32, real_pndm_f16, "txt2img_pndm");
real_case!(real_euler_f32, real_euler_f16, "txt2img_euler");
real_case!(real_euler_a_f32, real_euler_a_f16, "txt2img_euler_a");
real_case!(real_dpmpp_2m_karras_f32, real_dpmpp_2m_karras_f16, "txt2img_dpmpp_2m_karras");
real_case!(real_batch2_f32, real_batch2_f16, "txt2img_batch2", f16);
// The Unicode prompt is the tokenizer's business: its f16 twin repeats the f16 path.
real_case!(real_unicode_f32, real_unicode_f16, "txt2img_unicode");
real_case!(real_long_prompt_f32, real_long_prompt_f16, "txt2img_long_prompt");
real_case!(real_nonsquare_f32, real_nonsquare_f16, "txt2img_nonsquare");

/// Every pipeline case of both bundles has a test above.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_golden_pipeline_case_is_tested() {
    let g: serde_json::Value = serde_json::from_str(&fixtures::text("golden.json")).unwrap();
    let src = include_str!("pipeline.rs");
    for (name, _) in g["cases"].as_object().unwrap() {
        if name.starts_with("txt2img_") || name.starts_with("img2img_") {
            assert!(src.contains(&format!("Bundle::Tiny, \"{name}\"")), "tiny-sd15 golden case {name} has no test");
        }
    }
    for c in real_cases() {
        if c["kind"] == "pipeline" {
            let name = c["name"].as_str().unwrap();
            assert!(src.contains(&format!("_f16, \"{name}\"")), "sd15-realconfig case {name} has no test");
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
// Natively (the loop's allocations are the same Rust in both runners; SwiftShader would
// take ~6 min for these 24 steps).
native_test!(denoising_loop_allocates_nothing_after_warmup, no_allocation_in_the_loop());
