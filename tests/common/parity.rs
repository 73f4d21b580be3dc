//! The pipeline parity metric shared by tests/pipeline.rs and tests/families.rs: final
//! latents max |ours − diffusers| relative to max|ref| (≤ 1e-4 with f32 storage, 2e-2 with
//! f16) and the [0, 1] image, mean ≤ 2e-3 and max ≤ 2/255 (f32) or mean ≤ 2e-2 (f16).
#![allow(dead_code)]
use sd_webgpu::gpu::DType;

/// Max |got − want| (and its index) and max |want|.
pub fn max_err(got: &[f32], want: &[f32]) -> (f64, usize, f64) {
    assert_eq!(got.len(), want.len(), "lengths");
    let (mut e, mut at, mut m) = (0f64, 0, 0f64);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let d = (a as f64 - b as f64).abs();
        if d > e || d.is_nan() {
            e = if d.is_nan() { f64::INFINITY } else { d };
            at = i;
        }
        m = m.max((b as f64).abs());
    }
    (e, at, m)
}

/// Max error relative to max|ref|, and its index.
pub fn rel_err(got: &[f32], want: &[f32]) -> (f64, usize) {
    let (e, i, m) = max_err(got, want);
    (e / m.max(1e-12), i)
}

/// A component's output against the reference: ≤ `tol`·max|ref|; prints one
/// `COMPONENT|label|runner|rel …` line, and on failure the worst element and its index.
pub fn assert_close(label: &str, got: &[f32], want: &[f32], tol: f64) {
    let (rel, i) = rel_err(got, want);
    crate::log!("COMPONENT|{label}|{}|rel {rel:.2e}", crate::common::runner());
    assert!(rel <= tol, "{label}: max error {rel:.3e}·max|ref| > {tol:.0e} at index {i} (ours {}, reference {})", got[i], want[i]);
}

/// Compares a generation's final latents and images with diffusers'; prints one
/// `PARITY|label|storage|runner|…` line and returns the failures.
pub fn compare(label: &str, dtype: DType, got_lat: &[f32], want_lat: &[f32], got_img: &[f32], want_img: &[f32]) -> Vec<String> {
    compare_tol(label, dtype, None, got_lat, want_lat, got_img, want_img)
}

/// [`compare`] with another final-latents goal for f32 storage, for a case whose measured
/// sensitivity to float rounding makes 1e-4 unreachable (the caller says why).
pub fn compare_tol(label: &str, dtype: DType, f32_latents_tol: Option<f64>, got_lat: &[f32], want_lat: &[f32], got_img: &[f32], want_img: &[f32]) -> Vec<String> {
    let mut fails = Vec::new();
    let (el, li, ml) = max_err(got_lat, want_lat);
    let rel = el / ml.max(1e-12);
    let lat_tol = if dtype == DType::F32 { f32_latents_tol.unwrap_or(1e-4) } else { 2e-2 };
    let (emax, ii, _) = max_err(got_img, want_img);
    let mean = got_img.iter().zip(want_img).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / want_img.len() as f64;
    let (mean_tol, max_tol) = if dtype == DType::F32 { (2e-3, 2.0 / 255.0) } else { (2e-2, f64::INFINITY) };
    let runner = crate::common::runner();
    crate::log!("PARITY|{label}|{}|{runner}|latents_rel {rel:.2e}|image_mean {mean:.2e}|image_max {emax:.2e}", dtype.name());
    if !(rel <= lat_tol) {
        fails.push(format!("{label} ({}): final latents max error {el:.3e} = {rel:.3e}·max|ref| > {lat_tol:.0e} (worst index {li}: ours {}, diffusers {})", dtype.name(), got_lat[li], want_lat[li]));
    }
    if !(mean <= mean_tol) || !(emax <= max_tol) {
        fails.push(format!("{label} ({}): image mean error {mean:.3e} (goal {mean_tol:.0e}), max {emax:.3e} (goal {max_tol:.1e}) at index {ii}", dtype.name()));
    }
    fails
}

/// A v2 bundle case's pipeline parameters as a user passes them (`cases.json`: prompt,
/// negative prompt — null = not passed —, steps, guidance, seed, sampler, size, batch,
/// strength); the case's inputs (init image, decoder, overrides) are the caller's. The cases
/// reproduce diffusers' plain StableDiffusionPipeline: prompt weighting off (tests/prompts.rs
/// sets it for the LPW cases).
pub fn v2_params(c: &serde_json::Value) -> sd_webgpu::pipeline::Params {
    let d = sd_webgpu::pipeline::Params::default();
    sd_webgpu::pipeline::Params {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().map(String::from),
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance"].as_f64().unwrap(),
        seed: c["seed"].as_u64().unwrap(),
        sampler: c["sampler"].as_str().unwrap().into(),
        width: c["width"].as_u64().unwrap() as usize,
        height: c["height"].as_u64().unwrap() as usize,
        batch: c["batch"].as_u64().unwrap_or(1) as usize,
        strength: c["strength"].as_f64().unwrap_or(d.strength),
        prompt_weighting: false,
        ..d
    }
}
