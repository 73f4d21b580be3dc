//! What people really bring, end to end on the GPU (tiny model, both runners): photos of any
//! size for img2img (resize modes; the VAE encode tiled under a binding limit), an f16 VAE
//! that overflows (re-run in f32, said so, never a silent black image), and GPU memory that
//! returns to the weights after every generation, whatever its size or batch, with the peak
//! equal to the planner's.
//!
//! Few steps (the signal is in the resizing, the tiling, the retry and the pool, not in the
//! denoising). CI runs them natively; in the browser (SwiftShader, minutes per generation) it
//! runs the f16-VAE retry and the size limits, and the e2e tests cover the first rows of the
//! photo and memory tables through the page (each says which at its place); `--include-ignored`
//! runs the first rows in the browser.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::model::{configs, fp32_files, load_bytes, tokenizer};
use sd_webgpu::gpu::DType;
use sd_webgpu::image::{resize_to, ResizeMode, Rgb};
use sd_webgpu::model::Dtypes;
use sd_webgpu::pipeline::{self, Params};

/// SwiftShader: the browser runs the first rows of the tables below.
const BROWSER: bool = cfg!(target_arch = "wasm32");

fn src_60x44() -> Rgb {
    let g = fixtures::file("extra/golden.safetensors");
    let (v, s) = golden(&g, "resize_src_crop60x44");
    Rgb { width: s[1], height: s[0], data: v.iter().map(|x| x / 255.0).collect() }
}

fn img2img(init: Rgb, w: usize, h: usize, mode: ResizeMode) -> Params {
    Params { prompt: "a red house".into(), steps: 2, sampler: "ddim".into(), seed: 5, width: w, height: h, init_image: Some(init), strength: 0.5, resize_mode: mode, ..Default::default() }
}

/// A 60×44 photo: the default size is its size rounded to 64 (64×64); any size and mode
/// works, and gives exactly what the same run gives on the image fitted beforehand.
async fn img2img_any_photo() {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, DType::F32, &fp32_files());
    let tok = tokenizer();
    let src = src_60x44();
    assert_eq!(pipeline::default_size(&sd, Some(&src)), (64, 64));
    let modes = [(128, 64, ResizeMode::Fit), (64, 64, ResizeMode::Crop), (64, 128, ResizeMode::Stretch)];
    for (w, h, mode) in modes.into_iter().take(if BROWSER { 1 } else { 3 }) {
        let out = pipeline::generate(&gpu, &sd, &tok, None, &img2img(src.clone(), w, h, mode), &mut |_| true).await.unwrap_or_else(|e| panic!("{w}×{h} {mode:?}: {e}"));
        assert_eq!((out.images[0].width, out.images[0].height), (w, h));
        let fitted = resize_to(&src, w, h, mode);
        let same = pipeline::generate(&gpu, &sd, &tok, None, &img2img(fitted, w, h, mode), &mut |_| true).await.unwrap();
        assert!(out.latents == same.latents, "{w}×{h} {mode:?}: the pipeline's fitting differs from resize_to");
        log!("img2img 60×44 → {w}×{h} ({mode:?}): ok, latents mean |x| {:.3}", out.latents.iter().map(|v| v.abs() as f64).sum::<f64>() / out.latents.len() as f64);
    }
    let text = pipeline::a1111_parameters(&img2img(src.clone(), 128, 64, ResizeMode::Fit), 5, "tiny", 0);
    assert!(text.contains("Size: 128x64") && text.contains("Denoising strength: 0.5") && text.contains("Resize mode: Resize and fill"), "{text}");
    // Sizes the model cannot take are a message, not a panic.
    let e = pipeline::generate(&gpu, &sd, &tok, None, &img2img(src, 100, 64, ResizeMode::Crop), &mut |_| true).await.err().expect("100 wide").to_string();
    assert!(e.contains("multiples of 64"), "{e}");
}
// In the browser e2e `ui_img2img_any_size` fits a 100×70 photo to 128×64 through the page
// (the first row here); the fitting itself is the same Rust code natively.
native_test!(img2img_accepts_any_photo, img2img_any_photo());

/// The VAE encode in overlapping tiles (blended latent distributions) against the untiled
/// encode of a 128×128 image (16×16 latents); the bounds are what the tiny model holds.
async fn tiled_encode() {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, DType::F32, &fp32_files());
    let c = sd.ctx(&gpu);
    let g = fixtures::bytes("golden.safetensors");
    let (img, _) = golden(&g, "vae_encode_in"); // [1, 3, 64, 64] in [-1, 1]
    // 128×128: the 64×64 image tiled 2×2 with mirrored copies (smooth across the seams).
    let mut big = vec![0f32; 3 * 128 * 128];
    for ch in 0..3 {
        for y in 0..128 {
            for x in 0..128 {
                let (sy, sx) = (if y < 64 { y } else { 127 - y }, if x < 64 { x } else { 127 - x });
                big[(ch * 128 + y) * 128 + x] = img[(ch * 64 + sy) * 64 + sx];
            }
        }
    }
    let x = gpu.upload(&[1, 3, 128, 128], DType::F32, &big).unwrap();
    let (m0, l0) = sd.vae.encode(&c, &x).unwrap();
    let (m0, l0) = (gpu.read(&m0).await.unwrap(), gpu.read(&l0).await.unwrap());
    // (tile, overlap, bound on the mean error relative to max |ref|): tiles see their own
    // group-norm statistics and attention context, so they differ from the whole-image
    // encode; one tile covering the image is the untiled encode.
    let mut fails = Vec::new();
    for (tile, overlap, bound) in [(8usize, 4usize, 0.1), (12, 4, 0.07), (16, 4, 1e-6)] {
        let (m, l) = sd.vae.encode_tiled(&c, &x, tile, overlap).unwrap();
        let (m, l) = (gpu.read(&m).await.unwrap(), gpu.read(&l).await.unwrap());
        let err = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            let max = a.iter().zip(b).fold(0f64, |m, (p, q)| m.max((p - q).abs() as f64)) / scale;
            let mean = a.iter().zip(b).map(|(p, q)| (p - q).abs() as f64).sum::<f64>() / a.len() as f64 / scale;
            (mean, max)
        };
        let ((mm, mx), (lm, lx)) = (err(&m, &m0), err(&l, &l0));
        log!("tiled VAE encode 128×128, tile {tile} latents, overlap {overlap}, relative to max |ref|: mean: mean err {mm:.3e}, max {mx:.3e}; logvar: mean {lm:.3e}, max {lx:.3e}");
        if mm > bound || lm > bound {
            fails.push(format!("tile {tile}: mean errors {mm:.3e} / {lm:.3e} > {bound}"));
        }
    }
    assert!(fails.is_empty(), "{fails:?}");
    // encode_auto tiles only when the binding limit asks for it.
    let need = sd.vae.encode_largest_buffer(1, 128, 128, DType::F32);
    let (m1, _) = sd.vae.encode_auto(&c, &x, need).unwrap();
    assert!(gpu.read(&m1).await.unwrap() == m0, "untiled when it fits");
    let (m2, _) = sd.vae.encode_auto(&c, &x, need / 2).unwrap();
    assert!(gpu.read(&m2).await.unwrap() != m0, "tiled when it does not");
}
// Natively, like the tiled decode in tests/models.rs (SwiftShader: ~10 min for these 128×128
// encodes); the browser's img2img below encodes untiled.
native_test!(tiled_vae_encode_matches_untiled, tiled_encode());

/// Multiply one VAE weight by `s` (in its storage type).
async fn scale_weight(gpu: &sd_webgpu::gpu::Gpu, sd: &mut sd_webgpu::model::StableDiffusion, name: &str, s: f32) {
    let t = sd.weights.get(name).unwrap().clone();
    let v: Vec<f32> = gpu.read(&t).await.unwrap().iter().map(|x| x * s).collect();
    let n = gpu.upload(t.shape(), t.dtype(), &v).unwrap();
    sd.weights.insert(name.into(), n);
}

/// An f16 VAE that overflows (a fine-tune's large activations; here the post-quant conv
/// scaled so its f16 output is infinite): the image is decoded again in f32, the result
/// says so, and it matches the f32 VAE; a VAE broken even in f32 is a clear error.
async fn f16_vae_overflow() {
    let gpu = common::gpu(true).await;
    let tok = tokenizer();
    let p = Params { prompt: "a lighthouse".into(), steps: 1, sampler: "euler".into(), seed: 9, width: 64, height: 64, ..Default::default() };
    let w = "vae/post_quant_conv.weight";
    let run = |vae: DType, scale: f32| {
        let gpu = gpu.clone();
        let tok = &tok;
        let p = p.clone();
        async move {
            let mut sd = load_bytes(&gpu, Dtypes { vae, ..Dtypes::all(DType::F16) }, &fp32_files());
            let t = gpu.read(sd.weights.get(w).unwrap()).await.unwrap();
            let max = t.iter().fold(0f32, |m, v| m.max(v.abs()));
            if scale > 0.0 {
                scale_weight(&gpu, &mut sd, w, scale / max).await;
            }
            pipeline::generate(&gpu, &sd, tok, None, &p, &mut |_| true).await
        }
    };
    if !BROWSER {
        let plain = run(DType::F16, 0.0).await.unwrap();
        assert!(!plain.vae_upcast && plain.warnings.is_empty());
    }
    // max |w| = 6e4 fits f16 (≤ 65504); its outputs (latents/0.18215 times 6e4, after one step) do not.
    let retried = run(DType::F16, 6e4).await.unwrap();
    let reference = run(DType::F32, 6e4).await.unwrap();
    assert!(retried.vae_upcast, "the f16 VAE should have overflowed");
    assert!(retried.warnings.iter().any(|w| w.contains("f32")), "{:?}", retried.warnings);
    assert!(!reference.vae_upcast && reference.warnings.is_empty());
    let (a, b) = (&retried.images[0].data, &reference.images[0].data);
    let mean = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / a.len() as f64;
    let black = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
    log!("f16 VAE overflow: decoded again in f32; vs the f32 VAE: mean |Δ| {mean:.2e}; exact zeros {:.1} %; warning: {:?}", 100.0 * black, retried.warnings);
    assert!(mean < 2e-2, "{mean}");
    if BROWSER {
        return;
    }
    let e = run(DType::F32, 3e38).await.err().expect("non-finite in f32 too").to_string();
    log!("f32 VAE overflow: {e}");
    assert!(e.contains("non-finite") && e.contains("f32"), "{e}");
}
// In both runners (one step: the retry is after the loop); the browser skips the plain f16
// run and the VAE broken in f32 too (two more generations), checked natively.
gpu_test!(f16_vae_overflow_is_decoded_again_in_f32, f16_vae_overflow());

/// Several sizes and batches in a row: after each generation the GPU holds the weights and
/// nothing else, and the generation's peak is the one the planner gives for its settings.
async fn memory_returns() {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, DType::F32, &fp32_files());
    let tok = tokenizer();
    let weights = gpu.pool_stats().total_bytes;
    let init = src_60x44();
    let runs = [
        // One step where the sampler keeps no history (the loop's own allocations are
        // pipeline::denoising_loop_allocates_nothing_after_warmup' business).
        Params { prompt: "a".into(), steps: 1, width: 64, height: 64, ..Default::default() },
        Params { prompt: "b".into(), steps: 1, width: 128, height: 64, batch: 2, ..Default::default() },
        Params { prompt: "a".into(), steps: 1, width: 64, height: 64, ..Default::default() },
        Params { prompt: "c".into(), steps: 3, width: 64, height: 128, sampler: "pndm".into(), ..Default::default() },
        Params { prompt: "d".into(), steps: 4, width: 64, height: 64, init_image: Some(init), sampler: "dpmpp_2m_karras".into(), ..Default::default() },
        Params { prompt: "e".into(), steps: 2, width: 128, height: 128, guidance_scale: 1.0, ..Default::default() },
    ];
    for p in runs.iter().take(if BROWSER { 2 } else { runs.len() }) {
        pipeline::generate(&gpu, &sd, &tok, None, p, &mut |_| true).await.unwrap();
        let s = gpu.pool_stats();
        let plan = sd_webgpu::plan::plan_generation(&configs(), DType::F32, p, Some(gpu.max_binding())).await.unwrap();
        log!(
            "{}×{} batch {}{}: after {} B live / {} B held (weights {weights} B); peak {} B, planned {} B; plan holds {} B after",
            p.width, p.height, p.batch, if p.init_image.is_some() { " img2img" } else { "" }, s.live_bytes, s.total_bytes, s.peak_bytes, plan.peak_bytes, plan.after_bytes
        );
        // The UNet's timestep-frequency table (768 B) is made on its first call and kept.
        assert!(s.total_bytes == s.live_bytes && s.total_bytes <= weights + 1024, "GPU memory not returned: {} B held, weights {weights} B", s.total_bytes);
        assert_eq!(s.peak_bytes, plan.peak_bytes, "peak of the real run vs the plan");
    }
}
// In the browser e2e `batch2_matches_diffusers` checks the memory returned after a batch of
// 2 (64², like the second row's batch here at 128×64) and `plan_allocates_exactly_like_a_real_run`
// the planner's peak.
native_test!(gpu_memory_returns_to_the_weights, memory_returns());

/// Sizes that cannot fit are clear errors before any work: the start image's side and
/// megapixels (a 16385-pixel side, a 42-megapixel photo; checked before its pixels are
/// looked at), and batch × width × height of output beyond what the readback can hold
/// (sizes in multiples of the tiny model's 64).
async fn size_limits() {
    let gpu = common::gpu(true).await;
    let sd = load_bytes(&gpu, DType::F32, &fp32_files());
    let err = |p: &Params| match pipeline::validate(&sd, p) {
        Ok(_) => panic!("{}×{} batch {} with init {:?} was accepted", p.width, p.height, p.batch, p.init_image.as_ref().map(|i| (i.width, i.height))),
        Err(e) => e.to_string(),
    };
    let base = Params { prompt: "x".into(), steps: 1, width: 64, height: 64, ..Default::default() };
    // No pixels at all: the size alone must be refused (a 42-megapixel f32 image would be 500 MB).
    let huge = |w: usize, h: usize| Params { init_image: Some(Rgb { width: w, height: h, data: Vec::new() }), strength: 0.5, ..base.clone() };
    for (p, want) in [
        (huge(16_385, 1), "between 1 and 16384 pixels on a side"),
        (huge(7_000, 6_000), "42.0 megapixels): at most 40 megapixels"),
        (Params { batch: 16, width: 1024, height: 1088, ..base.clone() }, "17.8 megapixels of output: at most 16.8"),
        (Params { batch: 5, width: 2048, height: 2048, ..base.clone() }, "21.0 megapixels of output"),
    ] {
        let e = err(&p);
        log!("{}×{} batch {} init {:?}: {e}", p.width, p.height, p.batch, p.init_image.as_ref().map(|i| (i.width, i.height)));
        assert!(e.contains(want), "error {e:?} does not say {want:?}");
    }
    for p in [Params { batch: 16, width: 1024, height: 1024, ..base.clone() }, Params { batch: 4, width: 2048, height: 2048, ..base.clone() }] {
        assert!(pipeline::validate(&sd, &p).is_ok(), "batch {} of {}×{} (at the limit) was refused", p.batch, p.width, p.height);
    }
}
gpu_test!(size_limits_are_clear_errors_before_any_work, size_limits());
