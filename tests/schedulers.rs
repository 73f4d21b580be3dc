//! Samplers: tables and timesteps against diffusers 0.42 (golden tensors and values computed
//! with diffusers' numpy code), and every sampler's linear step plans (run through
//! `apply_cpu`) against a direct transcription of the diffusers `step` formulas written
//! here, on a toy model, for txt2img (the golden cases' step counts) and img2img (0.75).
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use sd_webgpu::rng::TorchRng;
use sd_webgpu::schedulers::{self, apply_cpu, img2img_begin_index, Combo, Sampler, StepPlan, Term};

const N: usize = 1000;
/// Latent elements of the toy runs (1×4×8×8).
const LAT: usize = 256;

fn config() -> String {
    fixtures::text("model/scheduler/scheduler_config.json")
}

/// The scheduler config with some fields replaced (`"key": value` JSON pairs).
fn config_with(pairs: &[(&str, &str)]) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&config()).unwrap();
    for (k, val) in pairs {
        v[*k] = serde_json::from_str(val).unwrap();
    }
    v.to_string()
}

fn sampler(name: &str, cfg: &str, steps: usize) -> Box<dyn Sampler> {
    schedulers::from_config(name, Some(cfg), steps).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Steps of the golden txt2img case of a sampler (golden.json `cases`).
fn golden_steps(name: &str) -> usize {
    let j: serde_json::Value = serde_json::from_str(&fixtures::text("golden.json")).unwrap();
    j["cases"][format!("txt2img_{name}")]["steps"].as_u64().expect("steps") as usize
}

/// Max |a − b| / max |b|.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| {
        let e = (x - y).abs();
        if e.is_nan() {
            f64::INFINITY
        } else {
            m.max(e / scale)
        }
    })
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let e = rel_err(got, want);
    let head = |v: &[f64]| v.iter().take(12).copied().collect::<Vec<f64>>();
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}\n got  {:?}…\n want {:?}…", head(got), head(want));
}

// ---------------------------------------------------------------------------------------
// Golden tables

/// alphas_cumprod (float32 in diffusers) from the golden file.
fn golden_acp() -> Vec<f64> {
    let b = fixtures::bytes("golden.safetensors");
    let (v, shape) = golden(&b, "alphas_cumprod");
    assert_eq!(shape, vec![N]);
    v.iter().map(|&x| x as f64).collect()
}

cpu_test!(alphas_cumprod_matches_golden, || {
    let cfg = schedulers::SchedulerConfig::from_json(&config()).unwrap();
    let ours = cfg.alphas_cumprod();
    let want = golden_acp();
    assert_eq!(ours.len(), N);
    let mut worst = 0f64;
    let mut exact = 0;
    for (o, w) in ours.iter().zip(&want) {
        worst = worst.max((o - w).abs() / w);
        exact += (*o as f32 == *w as f32) as usize;
    }
    log!("alphas_cumprod: {exact}/{N} bit-exact float32, worst relative error {worst:e}");
    // float32 values; torch's linspace / cumprod kernels may differ in the last bit
    assert!(worst < 2.5e-7, "alphas_cumprod relative error {worst:e}");
    // the SD-1.5 defaults when the config is absent are the same schedule
    assert_eq!(schedulers::SchedulerConfig::default().alphas_cumprod(), ours);
});

cpu_test!(ddpm_timesteps_match_golden, || {
    let b = fixtures::bytes("golden.safetensors");
    for n in [4, 20, 50] {
        let (want, shape) = golden(&b, &format!("ddpm_timesteps_{n}"));
        assert_eq!(shape, vec![n]);
        let s = sampler("ddpm", &config(), n);
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        assert_eq!(s.timesteps(), &want[..], "ddpm_timesteps_{n}");
        // no config at all = SD-1.5 defaults
        let d = schedulers::from_config("ddpm", None, n).unwrap();
        assert_eq!(d.timesteps(), &want[..]);
    }
});

/// Values from diffusers 0.42's numpy code on the golden alphas_cumprod (SD-1.5 config).
mod diffusers_values {
    pub const LEADING_10: [f64; 10] = [901., 801., 701., 601., 501., 401., 301., 201., 101., 1.];
    pub const PLMS_10: [f64; 11] = [901., 801., 801., 701., 601., 501., 401., 301., 201., 101., 1.];
    pub const KARRAS_TS_10: [f64; 10] = [999., 916., 815., 687., 523., 327., 146., 41., 7., 0.];
    pub const KARRAS_TS_20: [f64; 20] =
        [999., 962., 921., 876., 827., 772., 710., 640., 561., 474., 380., 285., 197., 123., 69., 35., 15., 6., 2., 0.];
    pub const KARRAS_SIGMAS_10: [f64; 11] = [
        14.614646911621094,
        9.102936744689941,
        5.478401184082031,
        3.1686110496520996,
        1.7494231462478638,
        0.9140765070915222,
        0.44692090153694153,
        0.20139986276626587,
        0.08191104978322983,
        0.029167532920837402,
        0.0,
    ];
    pub const EULER_SIGMAS_10: [f64; 11] = [
        8.390686988830566,
        5.134433269500732,
        3.3477649688720703,
        2.2928547859191895,
        1.6236929893493652,
        1.1682164669036865,
        0.8356532454490662,
        0.5740507245063782,
        0.3461872935295105,
        0.04131447896361351,
        0.0,
    ];
    pub const EULER_INIT_NOISE_SIGMA_10: f64 = 8.450067;
    pub const EULER_KARRAS_TS_10: [f64; 10] = [
        901.0,
        815.0175170898438,
        710.50048828125,
        581.6551513671875,
        426.5304260253906,
        260.24298095703125,
        121.14097595214844,
        40.272430419921875,
        9.30146598815918,
        1.0000001192092896,
    ];
    pub const EULER_KARRAS_SIGMAS_10: [f64; 10] = [
        8.390686988830566,
        5.477698802947998,
        3.478407144546509,
        2.1403043270111084,
        1.2701091766357422,
        0.7226703763008118,
        0.3913528323173523,
        0.19980022311210632,
        0.09496716409921646,
        0.04131447896361351,
    ];
}

cpu_test!(timesteps_and_sigmas_10_steps, || {
    use diffusers_values::*;
    let cfg = config();
    for name in ["ddpm", "ddim", "euler", "euler_a"] {
        assert_eq!(sampler(name, &cfg, 10).timesteps(), &LEADING_10[..], "{name}");
    }
    assert_eq!(sampler("pndm", &cfg, 10).timesteps(), &PLMS_10[..]);
    assert_eq!(sampler("dpmpp_2m_karras", &cfg, 10).timesteps(), &KARRAS_TS_10[..]);
    assert_eq!(sampler("dpmpp_2m_karras", &cfg, 20).timesteps(), &KARRAS_TS_20[..]);

    for name in ["euler", "euler_a"] {
        let s = sampler(name, &cfg, 10);
        let sig: Vec<f64> = (0..10).map(|i| s.add_noise_coeffs(i).1).collect();
        assert_close(&sig, &EULER_SIGMAS_10[..10], 3e-7, "euler sigmas");
        assert!((s.init_noise_sigma() - EULER_INIT_NOISE_SIGMA_10).abs() < 1e-5, "{}", s.init_noise_sigma());
        let scale0 = 1.0 / (EULER_SIGMAS_10[0].powi(2) + 1.0).sqrt();
        assert!((s.scale_model_input(0) - scale0).abs() < 1e-7);
        assert_eq!(s.add_noise_coeffs(3).0, 1.0);
    }
    let d = sampler("dpmpp_2m_karras", &cfg, 10);
    let sig: Vec<f64> = (0..10)
        .map(|i| {
            let (a, b) = d.add_noise_coeffs(i);
            assert!((a * a + b * b - 1.0).abs() < 1e-12, "VP: α² + σ_t² = 1");
            b / a
        })
        .collect();
    assert_close(&sig, &KARRAS_SIGMAS_10[..10], 3e-7, "karras sigmas");
    assert_eq!(d.init_noise_sigma(), 1.0);
    assert_eq!(d.scale_model_input(4), 1.0);

    // Euler with use_karras_sigmas (float timesteps from _sigma_to_t)
    let ek = sampler("euler", &config_with(&[("use_karras_sigmas", "true")]), 10);
    assert_close(ek.timesteps(), &EULER_KARRAS_TS_10, 1e-6, "euler karras timesteps");
    let sig: Vec<f64> = (0..10).map(|i| ek.add_noise_coeffs(i).1).collect();
    assert_close(&sig, &EULER_KARRAS_SIGMAS_10, 3e-7, "euler karras sigmas");

    // DDPM-family add_noise: sqrt(ᾱ_t), sqrt(1 − ᾱ_t)
    let acp = golden_acp();
    for name in ["ddpm", "ddim", "pndm"] {
        let s = sampler(name, &cfg, 10);
        let (a, b) = s.add_noise_coeffs(2);
        let t = s.timesteps()[2] as usize;
        assert!((a - acp[t].sqrt()).abs() < 1e-7 && (b - (1.0 - acp[t]).sqrt()).abs() < 1e-7, "{name}");
        assert_eq!(s.init_noise_sigma(), 1.0);
    }
});

cpu_test!(timestep_spacings, || {
    let lin = config_with(&[("timestep_spacing", "\"linspace\"")]);
    let trail = config_with(&[("timestep_spacing", "\"trailing\"")]);
    let f = |v: &[i64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    assert_eq!(sampler("ddpm", &lin, 10).timesteps(), &f(&[999, 888, 777, 666, 555, 444, 333, 222, 111, 0])[..]);
    assert_eq!(sampler("ddim", &lin, 7).timesteps(), &f(&[999, 832, 666, 500, 333, 166, 0])[..]);
    assert_eq!(sampler("ddpm", &trail, 10).timesteps(), &f(&[999, 899, 799, 699, 599, 499, 399, 299, 199, 99])[..]);
    assert_eq!(sampler("ddim", &trail, 7).timesteps(), &f(&[999, 856, 713, 570, 428, 285, 142])[..]);
    assert_eq!(sampler("euler", &lin, 7).timesteps(), &[999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0][..]);
    assert_eq!(sampler("euler_a", &trail, 7).timesteps(), &f(&[999, 856, 713, 570, 428, 285, 142])[..]);
    assert_eq!(
        sampler("pndm", &trail, 10).timesteps(),
        &f(&[999, 899, 899, 799, 699, 599, 499, 399, 299, 199, 99])[..]
    );
    assert_eq!(
        sampler("pndm", &config_with(&[("skip_prk_steps", "false")]), 10).timesteps(),
        &f(&[901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1])[..]
    );
    assert_eq!(sampler("ddpm", &config(), 7).timesteps(), &f(&[853, 711, 569, 427, 285, 143, 1])[..]);
    // linspace / trailing: init_noise_sigma is the largest sigma itself
    let e = sampler("euler", &trail, 10);
    assert!((e.init_noise_sigma() - e.add_noise_coeffs(0).1).abs() < 1e-12);
    // np.arange(1000, 0, -1000/61) has 62 values in numpy: diffusers' trailing schedule breaks
    assert!(schedulers::from_config("ddim", Some(&trail), 61).is_err());
});

// ---------------------------------------------------------------------------------------
// Plans vs direct transcriptions of diffusers' step()

/// The toy "UNet": a function of the (scaled) model input and the timestep.
fn toy_model(x_in: &[f64], t: f64) -> Vec<f64> {
    x_in.iter().enumerate().map(|(k, &x)| 0.1 * x + 0.3 * (0.37 * k as f64 + t / 150.0).sin()).collect()
}

/// Initial "image latents" for img2img.
fn init_latents() -> Vec<f64> {
    (0..LAT).map(|k| 0.8 * (0.11 * k as f64).cos()).collect()
}

/// Run a sampler's plans through `apply_cpu` (f32 tensors, as the GPU holds them), checking
/// the plan invariants on the way. `strength`: None = txt2img.
fn run_plans(s: &mut dyn Sampler, strength: Option<f64>, seed: u64) -> Vec<f64> {
    let mut rng = TorchRng::new(seed);
    let (begin, mut x): (usize, Vec<f32>) = match strength {
        None => {
            let z = rng.randn(LAT);
            (0, z.iter().map(|&v| (v as f64 * s.init_noise_sigma()) as f32).collect())
        }
        Some(st) => {
            let begin = s.img2img_begin(st).unwrap();
            let (a, b) = s.add_noise_coeffs(begin);
            let z = rng.randn(LAT);
            (begin, init_latents().iter().zip(&z).map(|(x, n)| (a * x + b * *n as f64) as f32).collect())
        }
    };
    // NaN: a plan that reads a slot before any plan stored it poisons the result
    let mut slots = vec![vec![f32::NAN; LAT]; s.slots()];
    let ts = s.timesteps().to_vec();
    for (i, &t) in ts.iter().enumerate().skip(begin) {
        let f = s.scale_model_input(i);
        let x_in: Vec<f64> = x.iter().map(|&v| v as f64 * f).collect();
        let mo: Vec<f32> = toy_model(&x_in, t).iter().map(|&v| v as f32).collect();
        let plan = s.step(i);
        assert!(plan.slots_used() <= s.slots(), "{}: plan uses slot beyond slots()", s.name());
        let noise_in = |c: &Combo| c.uses(Term::Noise);
        assert!(
            plan.uses_noise || !(noise_in(&plan.next) || plan.store.iter().any(|(_, c)| noise_in(c))),
            "{}: Noise term without uses_noise",
            s.name()
        );
        let mut stored: Vec<usize> = plan.store.iter().map(|(k, _)| *k).collect();
        stored.sort();
        stored.dedup();
        assert_eq!(stored.len(), plan.store.len(), "{}: a slot stored twice in one plan", s.name());
        let noise = plan.uses_noise.then(|| rng.randn(LAT));
        // the flattened form (pre-step slots only) gives the same sample
        let flat = StepPlan { store: vec![], next: plan.next_from_old_slots(), uses_noise: plan.uses_noise };
        let mut old = slots.clone();
        let x_flat = apply_cpu(&flat, &x, &mo, &mut old, noise.as_deref());
        x = apply_cpu(&plan, &x, &mo, &mut slots, noise.as_deref());
        let (xf, xp): (Vec<f64>, Vec<f64>) = x_flat.iter().zip(&x).map(|(&a, &b)| (a as f64, b as f64)).unzip();
        assert_close(&xf, &xp, 1e-5, &format!("{} step {i}: flattened plan", s.name()));
    }
    x.iter().map(|&v| v as f64).collect()
}

/// diffusers' SD pipelines around a step function: initial latents (txt2img: randn ·
/// init_noise_sigma; img2img: the scheduler's add_noise at the first timestep), then
/// scale → model → step. The step closure gets (index, sample, model output, rng).
struct Direct<'a> {
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
    scale: &'a dyn Fn(usize) -> f64,
    add_noise: &'a AddNoise<'a>,
}

/// `add_noise(step index, original, noise)`.
type AddNoise<'a> = dyn Fn(usize, &[f64], &[f64]) -> Vec<f64> + 'a;
/// `step(step index, sample, model output, generator)` → the new sample.
type StepFn<'a> = dyn FnMut(usize, &[f64], &[f64], &mut TorchRng) -> Vec<f64> + 'a;

fn run_direct(
    d: &Direct,
    steps: usize,
    strength: Option<f64>,
    seed: u64,
    step: &mut StepFn<'_>,
) -> Vec<f64> {
    let mut rng = TorchRng::new(seed);
    let (begin, mut x) = match strength {
        None => (0, rng.randn(LAT).iter().map(|&v| v as f64 * d.init_noise_sigma).collect::<Vec<f64>>()),
        Some(st) => {
            // StableDiffusionImg2ImgPipeline.get_timesteps (order 1)
            let init_timestep = ((steps as f64 * st) as usize).min(steps);
            let t_start = steps.saturating_sub(init_timestep);
            let z: Vec<f64> = rng.randn(LAT).iter().map(|&v| v as f64).collect();
            (t_start, (d.add_noise)(t_start, &init_latents(), &z))
        }
    };
    for i in begin..d.timesteps.len() {
        let f = (d.scale)(i);
        let x_in: Vec<f64> = x.iter().map(|v| v * f).collect();
        let mo = toy_model(&x_in, d.timesteps[i]);
        x = step(i, &x, &mo, &mut rng);
    }
    x
}

fn randn64(rng: &mut TorchRng) -> Vec<f64> {
    rng.randn(LAT).iter().map(|&v| v as f64).collect()
}

/// `a·u + b·v` elementwise.
fn lin(a: f64, u: &[f64], b: f64, v: &[f64]) -> Vec<f64> {
    u.iter().zip(v).map(|(x, y)| a * x + b * y).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Pred {
    Eps,
    V,
}

/// The leading timesteps of the SD-1.5 config (steps_offset 1).
fn leading(steps: usize) -> Vec<i64> {
    (0..steps as i64).rev().map(|i| i * (N / steps) as i64 + 1).collect()
}

/// sqrt((1 − ᾱ)/ᾱ) of the golden table, in f64.
fn sigma_table(acp: &[f64]) -> Vec<f64> {
    acp.iter().map(|a| ((1.0 - a) / a).sqrt()).collect()
}

fn ddpm_like_add_noise<'a>(acp: &'a [f64], ts: &'a [i64]) -> impl Fn(usize, &[f64], &[f64]) -> Vec<f64> + 'a {
    move |i, x, z| {
        let a = acp[ts[i] as usize];
        lin(a.sqrt(), x, (1.0 - a).sqrt(), z)
    }
}

fn direct_ddpm(steps: usize, pred: Pred, strength: Option<f64>, seed: u64) -> Vec<f64> {
    let acp = golden_acp();
    let ts = leading(steps);
    let one = |_: usize| 1.0;
    let add = ddpm_like_add_noise(&acp, &ts);
    let d = Direct {
        timesteps: ts.iter().map(|&t| t as f64).collect(),
        init_noise_sigma: 1.0,
        scale: &one,
        add_noise: &add,
    };
    run_direct(&d, steps, strength, seed, &mut |i, sample, mo, rng| {
        let t = ts[i];
        let prev_t = if i + 1 < ts.len() { ts[i + 1] } else { -1 };
        let alpha_prod_t = acp[t as usize];
        let alpha_prod_t_prev = if prev_t >= 0 { acp[prev_t as usize] } else { 1.0 };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let pred_original_sample: Vec<f64> = match pred {
            Pred::Eps => {
                sample.iter().zip(mo).map(|(x, e)| (x - beta_prod_t.sqrt() * e) / alpha_prod_t.sqrt()).collect()
            }
            Pred::V => lin(alpha_prod_t.sqrt(), sample, -beta_prod_t.sqrt(), mo),
        };
        let pred_original_sample_coeff = alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t;
        let current_sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut prev = lin(pred_original_sample_coeff, &pred_original_sample, current_sample_coeff, sample);
        if t > 0 {
            let noise = randn64(rng);
            let variance = ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
            prev = lin(1.0, &prev, variance.sqrt(), &noise);
        }
        prev
    })
}

fn direct_ddim(steps: usize, pred: Pred, strength: Option<f64>, seed: u64) -> Vec<f64> {
    let acp = golden_acp();
    let ts = leading(steps);
    let final_alpha_cumprod = acp[0]; // set_alpha_to_one false
    let one = |_: usize| 1.0;
    let add = ddpm_like_add_noise(&acp, &ts);
    let d = Direct {
        timesteps: ts.iter().map(|&t| t as f64).collect(),
        init_noise_sigma: 1.0,
        scale: &one,
        add_noise: &add,
    };
    run_direct(&d, steps, strength, seed, &mut |i, sample, mo, _rng| {
        let timestep = ts[i];
        let prev_timestep = timestep - (N / steps) as i64;
        let alpha_prod_t = acp[timestep as usize];
        let alpha_prod_t_prev = if prev_timestep >= 0 { acp[prev_timestep as usize] } else { final_alpha_cumprod };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (pred_original_sample, pred_epsilon) = match pred {
            Pred::Eps => (
                sample
                    .iter()
                    .zip(mo)
                    .map(|(x, e)| (x - beta_prod_t.sqrt() * e) / alpha_prod_t.sqrt())
                    .collect::<Vec<f64>>(),
                mo.to_vec(),
            ),
            Pred::V => (
                lin(alpha_prod_t.sqrt(), sample, -beta_prod_t.sqrt(), mo),
                lin(alpha_prod_t.sqrt(), mo, beta_prod_t.sqrt(), sample),
            ),
        };
        // eta = 0: std_dev_t = 0
        lin(alpha_prod_t_prev.sqrt(), &pred_original_sample, (1.0 - alpha_prod_t_prev).sqrt(), &pred_epsilon)
    })
}

fn direct_pndm(steps: usize, pred: Pred, skip_prk: bool, strength: Option<f64>, seed: u64) -> Vec<f64> {
    let acp = golden_acp();
    let asc: Vec<i64> = leading(steps).into_iter().rev().collect(); // _timesteps
    let ratio = (N / steps) as i64;
    let (prk_ts, plms_ts): (Vec<i64>, Vec<i64>) = if skip_prk {
        let k = asc.len();
        let mut v: Vec<i64> = asc[..k - 1].iter().chain(&asc[k - 2..k - 1]).chain(&asc[k - 1..]).copied().collect();
        v.reverse();
        (vec![], v)
    } else {
        let mut prk = vec![];
        for &t in &asc[asc.len() - 4..] {
            prk.push(t);
            prk.push(t + ratio / 2);
        }
        prk.pop();
        let prk: Vec<i64> = prk.iter().flat_map(|&t| [t, t]).collect();
        let mut prk = prk[1..prk.len() - 1].to_vec();
        prk.reverse();
        (prk, asc[..asc.len() - 3].iter().rev().copied().collect())
    };
    let ts: Vec<i64> = prk_ts.iter().chain(&plms_ts).copied().collect();
    let final_alpha_cumprod = acp[0];
    let get_prev_sample = |sample: &[f64], timestep: i64, prev_timestep: i64, model_output: &[f64]| {
        let alpha_prod_t = acp[timestep as usize];
        let alpha_prod_t_prev = if prev_timestep >= 0 { acp[prev_timestep as usize] } else { final_alpha_cumprod };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let model_output = match pred {
            Pred::Eps => model_output.to_vec(),
            Pred::V => lin(alpha_prod_t.sqrt(), model_output, beta_prod_t.sqrt(), sample),
        };
        let sample_coeff = (alpha_prod_t_prev / alpha_prod_t).sqrt();
        let model_output_denom_coeff =
            alpha_prod_t * beta_prod_t_prev.sqrt() + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt();
        lin(sample_coeff, sample, -(alpha_prod_t_prev - alpha_prod_t) / model_output_denom_coeff, &model_output)
    };
    let mut counter = 0usize;
    let mut ets: Vec<Vec<f64>> = vec![];
    let mut cur_sample: Option<Vec<f64>> = None;
    let mut cur_model_output: Option<Vec<f64>> = None; // None = the integer 0
    let one = |_: usize| 1.0;
    let add = ddpm_like_add_noise(&acp, &ts);
    let d = Direct {
        timesteps: ts.iter().map(|&t| t as f64).collect(),
        init_noise_sigma: 1.0,
        scale: &one,
        add_noise: &add,
    };
    run_direct(&d, steps, strength, seed, &mut |i, sample, mo, _rng| {
        let passed = ts[i];
        let out;
        if counter < prk_ts.len() && !skip_prk {
            // step_prk
            let diff_to_prev = if counter % 2 == 1 { 0 } else { ratio / 2 };
            let prev_timestep = passed - diff_to_prev;
            let timestep = prk_ts[counter / 4 * 4];
            let acc = |w: f64, c: &Option<Vec<f64>>| match c {
                None => mo.iter().map(|m| w * m).collect::<Vec<f64>>(),
                Some(c) => lin(1.0, c, w, mo),
            };
            let mut model_output = mo.to_vec();
            match counter % 4 {
                0 => {
                    cur_model_output = Some(acc(1.0 / 6.0, &cur_model_output));
                    ets.push(mo.to_vec());
                    cur_sample = Some(sample.to_vec());
                }
                1 | 2 => cur_model_output = Some(acc(1.0 / 3.0, &cur_model_output)),
                _ => {
                    model_output = acc(1.0 / 6.0, &cur_model_output);
                    cur_model_output = None;
                }
            }
            let cs = cur_sample.clone().unwrap_or_else(|| sample.to_vec());
            out = get_prev_sample(&cs, timestep, prev_timestep, &model_output);
        } else {
            // step_plms
            let mut timestep = passed;
            let mut prev_timestep = timestep - ratio;
            if counter != 1 {
                if ets.len() > 3 {
                    ets.remove(0);
                }
                ets.push(mo.to_vec());
            } else {
                prev_timestep = timestep;
                timestep += ratio;
            }
            let mut sample = sample.to_vec();
            let n = ets.len();
            let model_output: Vec<f64> = if n == 1 && counter == 0 {
                cur_sample = Some(sample.clone());
                mo.to_vec()
            } else if n == 1 && counter == 1 {
                sample = cur_sample.take().unwrap();
                lin(0.5, mo, 0.5, &ets[n - 1])
            } else if n == 2 {
                lin(1.5, &ets[n - 1], -0.5, &ets[n - 2])
            } else if n == 3 {
                let a = lin(23.0 / 12.0, &ets[n - 1], -16.0 / 12.0, &ets[n - 2]);
                lin(1.0, &a, 5.0 / 12.0, &ets[n - 3])
            } else {
                let a = lin(55.0 / 24.0, &ets[n - 1], -59.0 / 24.0, &ets[n - 2]);
                let b = lin(37.0 / 24.0, &ets[n - 3], -9.0 / 24.0, &ets[n - 4]);
                lin(1.0, &a, 1.0, &b)
            };
            out = get_prev_sample(&sample, timestep, prev_timestep, &model_output);
        }
        counter += 1;
        out
    })
}

/// Euler / Euler ancestral: sigmas interpolated at the leading timesteps (or Karras).
fn direct_euler(steps: usize, pred: Pred, ancestral: bool, karras: bool, strength: Option<f64>, seed: u64) -> Vec<f64> {
    let table = sigma_table(&golden_acp());
    let mut ts: Vec<f64> = leading(steps).iter().map(|&t| t as f64).collect();
    // integer timesteps: np.interp is the table entry
    let mut sigmas: Vec<f64> = ts.iter().map(|&t| table[t as usize]).collect();
    if karras {
        sigmas = karras_sigmas(sigmas[steps - 1], sigmas[0], steps);
        ts = sigmas.iter().map(|&s| sigma_to_t(s, &table)).collect();
    }
    sigmas.push(0.0);
    let max = sigmas.iter().cloned().fold(0.0, f64::max);
    let sig = sigmas.clone();
    let scale = move |i: usize| 1.0 / (sig[i] * sig[i] + 1.0).sqrt();
    let sig = sigmas.clone();
    let add = move |i: usize, x: &[f64], z: &[f64]| lin(1.0, x, sig[i], z);
    let d = Direct { timesteps: ts, init_noise_sigma: (max * max + 1.0).sqrt(), scale: &scale, add_noise: &add };
    run_direct(&d, steps, strength, seed, &mut |i, sample, mo, rng| {
        let sigma = sigmas[i];
        let pred_original_sample = match pred {
            Pred::Eps => lin(1.0, sample, -sigma, mo),
            Pred::V => lin(-sigma / (sigma * sigma + 1.0).sqrt(), mo, 1.0 / (sigma * sigma + 1.0), sample),
        };
        let derivative: Vec<f64> = sample.iter().zip(&pred_original_sample).map(|(x, x0)| (x - x0) / sigma).collect();
        if ancestral {
            let (sigma_from, sigma_to) = (sigmas[i], sigmas[i + 1]);
            let sigma_up = (sigma_to.powi(2) * (sigma_from.powi(2) - sigma_to.powi(2)) / sigma_from.powi(2)).sqrt();
            let sigma_down = (sigma_to.powi(2) - sigma_up.powi(2)).sqrt();
            let dt = sigma_down - sigma;
            let prev = lin(1.0, sample, dt, &derivative);
            let noise = randn64(rng);
            lin(1.0, &prev, sigma_up, &noise)
        } else {
            let dt = sigmas[i + 1] - sigma;
            lin(1.0, sample, dt, &derivative)
        }
    })
}

fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv_rho, max_inv_rho) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    (0..steps)
        .map(|i| {
            let ramp = if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
            (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho)
        })
        .collect()
}

fn sigma_to_t(sigma: f64, table: &[f64]) -> f64 {
    let log_sigmas: Vec<f64> = table.iter().map(|s| s.ln()).collect();
    let log_sigma = sigma.max(1e-10).ln();
    let low_idx = log_sigmas.iter().rposition(|&l| log_sigma >= l).unwrap_or(0).min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx], log_sigmas[low_idx + 1]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

fn direct_dpmpp(steps: usize, pred: Pred, heun: bool, strength: Option<f64>, seed: u64) -> Vec<f64> {
    let table = sigma_table(&golden_acp());
    let karras = karras_sigmas(table[0], table[N - 1], steps);
    let ts: Vec<f64> = karras.iter().map(|&s| sigma_to_t(s, &table).round()).collect();
    let mut sigmas = karras.clone();
    sigmas.push(0.0);
    let alpha_sigma_t = |sigma: f64| {
        let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
        (alpha_t, sigma * alpha_t)
    };
    let sig = sigmas.clone();
    let add = move |i: usize, x: &[f64], z: &[f64]| {
        let (a, s) = alpha_sigma_t(sig[i]);
        lin(a, x, s, z)
    };
    let one = |_: usize| 1.0;
    let d = Direct { timesteps: ts.clone(), init_noise_sigma: 1.0, scale: &one, add_noise: &add };
    let mut model_outputs: Vec<Option<Vec<f64>>> = vec![None, None];
    let mut lower_order_nums = 0;
    run_direct(&d, steps, strength, seed, &mut |step_index, sample, mo, _rng| {
        let n = ts.len();
        let lower_order_final = step_index == n - 1; // final_sigmas_type "zero"
                                                     // convert_model_output
        let (alpha_t, sigma_t) = alpha_sigma_t(sigmas[step_index]);
        let x0_pred = match pred {
            Pred::Eps => sample.iter().zip(mo).map(|(x, e)| (x - sigma_t * e) / alpha_t).collect::<Vec<f64>>(),
            Pred::V => lin(alpha_t, sample, -sigma_t, mo),
        };
        model_outputs[0] = model_outputs[1].take();
        model_outputs[1] = Some(x0_pred);
        let prev_sample = if lower_order_nums < 1 || lower_order_final {
            let (alpha_t, sigma_t) = alpha_sigma_t(sigmas[step_index + 1]);
            let (alpha_s, sigma_s) = alpha_sigma_t(sigmas[step_index]);
            let lambda_t = alpha_t.ln() - sigma_t.ln();
            let lambda_s = alpha_s.ln() - sigma_s.ln();
            let h = lambda_t - lambda_s;
            lin(sigma_t / sigma_s, sample, -(alpha_t * ((-h).exp() - 1.0)), model_outputs[1].as_ref().unwrap())
        } else {
            let (alpha_t, sigma_t) = alpha_sigma_t(sigmas[step_index + 1]);
            let (alpha_s0, sigma_s0) = alpha_sigma_t(sigmas[step_index]);
            let (alpha_s1, sigma_s1) = alpha_sigma_t(sigmas[step_index - 1]);
            let lambda_t = alpha_t.ln() - sigma_t.ln();
            let lambda_s0 = alpha_s0.ln() - sigma_s0.ln();
            let lambda_s1 = alpha_s1.ln() - sigma_s1.ln();
            let m0 = model_outputs[1].as_ref().unwrap();
            let m1 = model_outputs[0].as_ref().unwrap();
            let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
            let r0 = h_0 / h;
            let d1 = lin(1.0 / r0, m0, -1.0 / r0, m1);
            let a = lin(sigma_t / sigma_s0, sample, -(alpha_t * ((-h).exp() - 1.0)), m0);
            if heun {
                lin(1.0, &a, alpha_t * (((-h).exp() - 1.0) / h + 1.0), &d1)
            } else {
                lin(1.0, &a, -0.5 * (alpha_t * ((-h).exp() - 1.0)), &d1)
            }
        };
        if lower_order_nums < 2 {
            lower_order_nums += 1;
        }
        prev_sample
    })
}

/// Compare the plan loop with the direct transcription, txt2img and img2img (0.75).
fn check(name: &str, cfg: &str, steps: usize, direct: &dyn Fn(Option<f64>, u64) -> Vec<f64>, what: &str) {
    for (strength, seed) in [(None, 42u64), (Some(0.75), 7)] {
        let mut s = sampler(name, cfg, steps);
        let got = run_plans(s.as_mut(), strength, seed);
        let want = direct(strength, seed);
        let e = rel_err(&got, &want);
        log!("{name} {what} {steps} steps, strength {strength:?}: relative error {e:e}");
        assert!(e < 2e-6, "{name} {what} {steps} steps strength {strength:?}: relative error {e:e}");
        assert!(want.iter().all(|v| v.is_finite()));
        // reset() gives a fresh history: the same run again
        s.reset();
        let again = run_plans(s.as_mut(), strength, seed);
        assert_eq!(again, got, "{name}: reset");
    }
}

cpu_test!(ddpm_plans_match_diffusers_step, || {
    let n = golden_steps("ddpm");
    assert_eq!(n, 20);
    check("ddpm", &config(), n, &|st, seed| direct_ddpm(n, Pred::Eps, st, seed), "epsilon");
    let v = config_with(&[("prediction_type", "\"v_prediction\"")]);
    check("ddpm", &v, n, &|st, seed| direct_ddpm(n, Pred::V, st, seed), "v_prediction");
});

cpu_test!(ddim_plans_match_diffusers_step, || {
    let n = golden_steps("ddim");
    assert_eq!(n, 10);
    check("ddim", &config(), n, &|st, seed| direct_ddim(n, Pred::Eps, st, seed), "epsilon");
    let v = config_with(&[("prediction_type", "\"v_prediction\"")]);
    check("ddim", &v, n, &|st, seed| direct_ddim(n, Pred::V, st, seed), "v_prediction");
    check("ddim", &config(), 8, &|st, seed| direct_ddim(8, Pred::Eps, st, seed), "epsilon");
});

cpu_test!(pndm_plans_match_diffusers_step, || {
    let n = golden_steps("pndm");
    assert_eq!(n, 10);
    check("pndm", &config(), n, &|st, seed| direct_pndm(n, Pred::Eps, true, st, seed), "plms epsilon");
    let v = config_with(&[("prediction_type", "\"v_prediction\"")]);
    check("pndm", &v, n, &|st, seed| direct_pndm(n, Pred::V, true, st, seed), "plms v_prediction");
    let prk = config_with(&[("skip_prk_steps", "false")]);
    check("pndm", &prk, n, &|st, seed| direct_pndm(n, Pred::Eps, false, st, seed), "prk+plms epsilon");
    check("pndm", &config(), 3, &|st, seed| direct_pndm(3, Pred::Eps, true, st, seed), "plms epsilon");
});

cpu_test!(euler_plans_match_diffusers_step, || {
    let n = golden_steps("euler");
    assert_eq!(n, 10);
    check("euler", &config(), n, &|st, seed| direct_euler(n, Pred::Eps, false, false, st, seed), "epsilon");
    let v = config_with(&[("prediction_type", "\"v_prediction\"")]);
    check("euler", &v, n, &|st, seed| direct_euler(n, Pred::V, false, false, st, seed), "v_prediction");
    let k = config_with(&[("use_karras_sigmas", "true")]);
    check("euler", &k, n, &|st, seed| direct_euler(n, Pred::Eps, false, true, st, seed), "karras epsilon");
});

cpu_test!(euler_a_plans_match_diffusers_step, || {
    let n = golden_steps("euler_a");
    assert_eq!(n, 10);
    check("euler_a", &config(), n, &|st, seed| direct_euler(n, Pred::Eps, true, false, st, seed), "epsilon");
    let v = config_with(&[("prediction_type", "\"v_prediction\"")]);
    check("euler_a", &v, n, &|st, seed| direct_euler(n, Pred::V, true, false, st, seed), "v_prediction");
    // every step draws noise (the last with sigma_up = 0), as diffusers does
    let mut s = sampler("euler_a", &config(), n);
    let plans: Vec<StepPlan> = (0..n).map(|i| s.step(i)).collect();
    assert!(plans.iter().all(|p| p.uses_noise));
    assert_eq!(plans[n - 1].next.coeff(Term::Noise), 0.0);
});

cpu_test!(dpmpp_2m_karras_plans_match_diffusers_step, || {
    let n = golden_steps("dpmpp_2m_karras");
    assert_eq!(n, 10);
    check("dpmpp_2m_karras", &config(), n, &|st, seed| direct_dpmpp(n, Pred::Eps, false, st, seed), "epsilon");
    let v = config_with(&[("prediction_type", "\"v_prediction\"")]);
    check("dpmpp_2m_karras", &v, n, &|st, seed| direct_dpmpp(n, Pred::V, false, st, seed), "v_prediction");
    let h = config_with(&[("solver_type", "\"heun\"")]);
    check("dpmpp_2m_karras", &h, n, &|st, seed| direct_dpmpp(n, Pred::Eps, true, st, seed), "heun epsilon");
    check("dpmpp_2m_karras", &config(), 25, &|st, seed| direct_dpmpp(25, Pred::Eps, false, st, seed), "epsilon");
    // the last step returns the x₀ prediction (final sigma 0)
    let mut s = sampler("dpmpp_2m_karras", &config(), n);
    let last = (0..n).map(|i| s.step(i)).last().unwrap();
    assert_eq!(last.next.coeff(Term::Sample), 0.0);
    assert_eq!(last.next_from_old_slots(), last.store[0].1.clone().add(Term::Sample, 0.0));
});

cpu_test!(ddpm_noise_draws, || {
    // DDPM draws noise while t > 0: every step of the SD-1.5 schedule (the last, t = 1,
    // with standard deviation 1e-10); a linspace schedule ends at t = 0 without a draw
    let mut s = sampler("ddpm", &config(), 20);
    let plans: Vec<StepPlan> = (0..20).map(|i| s.step(i)).collect();
    assert!(plans.iter().all(|p| p.uses_noise));
    assert!((plans[19].next.coeff(Term::Noise) - 1e-10).abs() < 1e-15);
    let mut s = sampler("ddpm", &config_with(&[("timestep_spacing", "\"linspace\"")]), 20);
    let plans: Vec<StepPlan> = (0..20).map(|i| s.step(i)).collect();
    assert!(plans[..19].iter().all(|p| p.uses_noise) && !plans[19].uses_noise);
    for name in ["ddim", "pndm", "euler", "dpmpp_2m_karras"] {
        let mut s = sampler(name, &config(), 10);
        assert!((0..s.timesteps().len()).all(|i| !s.step(i).uses_noise), "{name}");
    }
});

// ---------------------------------------------------------------------------------------
// Plan semantics, img2img, errors

cpu_test!(apply_cpu_slot_semantics, || {
    // stores read the slots as they were before the step; next reads them after
    let plan = StepPlan {
        store: vec![(0, Combo::of(Term::Slot(1), 1.0).add(Term::ModelOutput, 1.0)), (1, Combo::of(Term::Slot(0), 2.0))],
        next: Combo::of(Term::Slot(0), 1.0).add(Term::Slot(1), 10.0).add(Term::Sample, 100.0),
        uses_noise: false,
    };
    let mut slots = vec![vec![1.0f32, 2.0], vec![3.0, 4.0]];
    let out = apply_cpu(&plan, &[1.0, 1.0], &[0.5, 0.25], &mut slots, None);
    assert_eq!(slots, vec![vec![3.5, 4.25], vec![2.0, 4.0]]);
    assert_eq!(out, vec![3.5 + 20.0 + 100.0, 4.25 + 40.0 + 100.0]);
    // flattened: in terms of the old slots only
    let flat = plan.next_from_old_slots();
    assert_eq!(flat.coeff(Term::Slot(1)), 1.0);
    assert_eq!(flat.coeff(Term::Slot(0)), 20.0);
    assert_eq!(flat.coeff(Term::ModelOutput), 1.0);
    assert_eq!(flat.coeff(Term::Sample), 100.0);
    // slots grow on demand; noise is one tensor for every combination
    let plan = StepPlan {
        store: vec![(2, Combo::of(Term::Noise, 1.0))],
        next: Combo::of(Term::Noise, 2.0).add(Term::Slot(2), 1.0),
        uses_noise: true,
    };
    let mut slots = vec![];
    let out = apply_cpu(&plan, &[0.0], &[0.0], &mut slots, Some(&[1.5]));
    assert_eq!(slots.len(), 3);
    assert_eq!(out, vec![4.5]);
    assert_eq!(plan.slots_used(), 3);
});

cpu_test!(img2img_begin, || {
    assert_eq!(img2img_begin_index(20, 0.75, 1).unwrap(), 5);
    assert_eq!(img2img_begin_index(10, 0.75, 1).unwrap(), 3); // int(7.5) = 7
    assert_eq!(img2img_begin_index(10, 1.0, 1).unwrap(), 0);
    assert_eq!(img2img_begin_index(10, 0.1, 1).unwrap(), 9);
    assert_eq!(img2img_begin_index(10, 0.5, 2).unwrap(), 10);
    assert!(img2img_begin_index(10, 0.05, 1).is_err()); // no step left
    assert!(img2img_begin_index(10, 1.5, 1).is_err());
    assert!(img2img_begin_index(10, f64::NAN, 1).is_err());
    let s = sampler("pndm", &config(), 10);
    assert_eq!(s.img2img_begin(0.75).unwrap(), 3);
    assert_eq!(s.timesteps()[3], 701.0);
    let s = sampler("dpmpp_2m_karras", &config(), 10);
    assert_eq!(s.img2img_begin(0.75).unwrap(), 3);
});

cpu_test!(errors_not_panics, || {
    let cfg = config();
    let err = |name: &str, c: Option<&str>, steps: usize| {
        let e = schedulers::from_config(name, c, steps).expect_err(name);
        log!("{name}: {e}");
        e.to_string()
    };
    assert!(err("lms", Some(&cfg), 10).contains("unknown sampler"));
    err("ddim", Some("not json"), 10);
    err("ddim", Some("[1, 2]"), 10);
    err("ddim", Some(&config_with(&[("timestep_spacing", "\"sideways\"")])), 10);
    err("ddim", Some(&config_with(&[("beta_schedule", "\"squaredcos_cap_v2\"")])), 10);
    err("ddim", Some(&config_with(&[("prediction_type", "\"sample\"")])), 10);
    err("ddim", Some(&config_with(&[("num_train_timesteps", "\"1000\"")])), 10);
    err("ddim", Some(&config_with(&[("beta_end", "2.0")])), 10);
    err("ddim", Some(&config_with(&[("trained_betas", "[0.1, 0.2]")])), 10);
    err("ddim", Some(&config_with(&[("steps_offset", "5000")])), 10);
    assert!(err("ddpm", Some(&config_with(&[("clip_sample", "true")])), 10).contains("clip_sample"));
    err("ddim", Some(&config_with(&[("clip_sample", "true")])), 10);
    err("dpmpp_2m_karras", Some(&config_with(&[("thresholding", "true")])), 10);
    err("dpmpp_2m_karras", Some(&config_with(&[("solver_type", "\"bogus\"")])), 10);
    err("ddpm", Some(&config_with(&[("variance_type", "\"learned_range\"")])), 10);
    err("euler", Some(&config_with(&[("interpolation_type", "\"log_linear\"")])), 10);
    err("pndm", Some(&config_with(&[("skip_prk_steps", "false")])), 3);
    for name in schedulers::SAMPLERS {
        err(name, Some(&cfg), 0);
        err(name, Some(&cfg), 1001);
        // null fields mean "absent" (the SD-1.5 value), as diffusers' defaults would apply
        let c = config_with(&[("trained_betas", "null"), ("variance_type", "null")]);
        assert_eq!(sampler(name, &c, 10).timesteps(), sampler(name, &cfg, 10).timesteps());
        // a one-step schedule works
        let mut s = sampler(name, &cfg, 1);
        for i in 0..s.timesteps().len() {
            s.step(i);
        }
    }
    // trained_betas replace the schedule (diffusers casts them to float32)
    let betas: Vec<String> = (0..N).map(|i| format!("{}", 0.0001 + (0.02 - 0.0001) * i as f64 / 999.0)).collect();
    let c = config_with(&[("trained_betas", &format!("[{}]", betas.join(",")))]);
    let lin = config_with(&[("beta_schedule", "\"linear\""), ("beta_start", "0.0001"), ("beta_end", "0.02")]);
    let (a, b) = (
        schedulers::SchedulerConfig::from_json(&c).unwrap().alphas_cumprod(),
        schedulers::SchedulerConfig::from_json(&lin).unwrap().alphas_cumprod(),
    );
    assert_close(&a, &b, 1e-6, "trained_betas vs linear");
});

// ---------------------------------------------------------------------------------------
// The real repos' scheduler files (../shared/reference/v2): fields a file lacks take the
// default of the sampler class that reads it, as diffusers' `Class.from_config(file)`.

/// `(bundle, case)` for every case of the real-config bundles that names a sampler.
fn real_config_cases() -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::new();
    for bundle in ["sd15-realconfig", "sd2"] {
        let j: serde_json::Value = serde_json::from_str(&fixtures::file_text(&format!("{bundle}/cases.json"))).unwrap();
        for c in j["cases"].as_array().unwrap() {
            let known = c["sampler"].as_str().is_some_and(|s| schedulers::SAMPLERS.contains(&s));
            if known && c["scheduler"].is_object() {
                out.push((bundle, c.clone()));
            }
        }
    }
    out
}

/// The case's config file with its `overrides` merged in, as the reference built it.
fn real_config_json(bundle: &str, c: &serde_json::Value) -> String {
    let s = &c["scheduler"];
    let mut cfg: serde_json::Value = serde_json::from_str(&fixtures::file_text(&format!("{bundle}/{}", s["from_config"].as_str().unwrap()))).unwrap();
    for (k, v) in s["overrides"].as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

cpu_test!(real_configs_take_each_class_defaults, || {
    use schedulers::{Prediction, SchedulerConfig, Spacing};
    let cases = real_config_cases();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut checked = 0;
    for (bundle, c) in &cases {
        let name = c["name"].as_str().unwrap();
        let sampler_name = c["sampler"].as_str().unwrap();
        let json = real_config_json(bundle, c);
        let cfg = SchedulerConfig::from_json_for(sampler_name, &json).unwrap_or_else(|e| panic!("{bundle}/{name}: {e}"));
        for (field, want) in c["scheduler"]["effective"].as_object().unwrap() {
            let got: serde_json::Value = match field.as_str() {
                "prediction_type" => match cfg.prediction_type {
                    Prediction::Epsilon => "epsilon".into(),
                    Prediction::VPrediction => "v_prediction".into(),
                },
                "timestep_spacing" => match cfg.timestep_spacing {
                    Spacing::Leading => "leading".into(),
                    Spacing::Linspace => "linspace".into(),
                    Spacing::Trailing => "trailing".into(),
                },
                "steps_offset" => cfg.steps_offset.into(),
                "clip_sample" => cfg.clip_sample.into(),
                "set_alpha_to_one" => cfg.set_alpha_to_one.into(),
                "skip_prk_steps" => cfg.skip_prk_steps.into(),
                "variance_type" => cfg.variance_type.clone().map_or(serde_json::Value::Null, Into::into),
                "use_karras_sigmas" => cfg.use_karras_sigmas.into(),
                "timestep_type" => cfg.timestep_type.clone().into(),
                "interpolation_type" => cfg.interpolation_type.clone().into(),
                "final_sigmas_type" => (if cfg.final_sigmas_sigma_min { "sigma_min" } else { "zero" }).into(),
                "lower_order_final" => cfg.lower_order_final.into(),
                "euler_at_final" => cfg.euler_at_final.into(),
                "rescale_betas_zero_snr" => cfg.rescale_betas_zero_snr.into(),
                // The only DPM-Solver variant implemented (dpmpp_2m_karras).
                "algorithm_type" => "dpmsolver++".into(),
                "solver_order" => 2.into(),
                other => panic!("{bundle}/{name}: effective field {other} is not checked"),
            };
            assert_eq!(&got, want, "{bundle}/{name} ({sampler_name}): {field}");
            checked += 1;
        }
        // The timesteps the UNet sees and the initial noise scale.
        let steps = c["steps"].as_u64().unwrap() as usize;
        let s = sampler(sampler_name, &json, steps);
        let begin = match c["strength"].as_f64() {
            Some(st) => s.img2img_begin(st).unwrap(),
            None => 0,
        };
        if let Some(want) = c["scheduler"]["timesteps_visited"].as_array() {
            let want: Vec<f64> = want.iter().map(|v| v.as_f64().unwrap()).collect();
            let got = &s.timesteps()[begin..];
            assert_eq!(got.len(), want.len(), "{bundle}/{name}: timesteps {got:?} vs {want:?}");
            // cases.json rounds to 6 significant digits
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-3 + 1e-5 * w.abs(), "{bundle}/{name}: timesteps {got:?} vs {want:?}");
            }
        }
        if let Some(w) = c["scheduler"]["init_noise_sigma"].as_f64() {
            let g = s.init_noise_sigma();
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{bundle}/{name}: init_noise_sigma {g} vs {w}");
        }
        log!("{bundle}/{name} ({sampler_name}): effective config and timesteps match");
    }
    log!("{} real-config cases, {checked} effective fields checked", cases.len());
});

cpu_test!(real_sd15_config_schedules_match_golden, || {
    let g = fixtures::file("sd15-realconfig/golden.safetensors");
    let json = fixtures::file_text("sd15-realconfig/model/scheduler/scheduler_config.json");
    // The bundle has schedule goldens for the six samplers of diffusers' SD pipelines; LCM's
    // schedules are checked against every case of the lcm bundle (tests/families.rs,
    // every_schedule_is_diffusers).
    for name in schedulers::SAMPLERS.iter().copied().filter(|n| *n != "lcm") {
        let s = sampler(name, &json, 12);
        let (want, _) = golden(&g, &format!("sched_{name}_timesteps"));
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        // diffusers keeps the timesteps as float32 (PLMS repeats one: 13 entries for 12 steps)
        let got: Vec<f64> = s.timesteps().iter().map(|&t| t as f32 as f64).collect();
        assert_eq!(got, want, "{name}: timesteps");
        // no config at all = the real SD-1.5 file
        let d = schedulers::from_config(name, None, 12).unwrap();
        assert_eq!(d.timesteps(), s.timesteps(), "{name}: no config vs the SD-1.5 file");
        let st = safetensors::SafeTensors::deserialize(&g).unwrap();
        let key = format!("sched_{name}_sigmas");
        if st.names().iter().any(|n| **n == key) {
            let (sig, _) = golden(&g, &key);
            assert_eq!(sig.len(), 13, "{name}: sigmas");
            // with linspace spacing diffusers' init_noise_sigma is the largest sigma, sigmas[0]
            let init = if name == "dpmpp_2m_karras" { 1.0 } else { sig[0] as f64 };
            assert!((s.init_noise_sigma() - init).abs() <= 1e-5 * init, "{name}: init_noise_sigma {} vs {init}", s.init_noise_sigma());
        }
        log!("{name}: real SD-1.5 config timesteps {:?}", s.timesteps());
    }
    // the golden alphas_cumprod of this bundle too
    let (acp, _) = golden(&g, "alphas_cumprod");
    let ours = schedulers::SchedulerConfig::from_json(&json).unwrap().alphas_cumprod();
    let worst = ours.iter().zip(&acp).fold(0f64, |m, (o, w)| m.max((o - *w as f64).abs() / *w as f64));
    assert!(worst < 2.5e-7, "alphas_cumprod relative error {worst:e}");
});

cpu_test!(empty_config_is_each_class_default, || {
    // `{}` gives diffusers' constructor defaults: linear 0.0001 → 0.02, steps_offset 0.
    for (name, spacing) in [("ddpm", "leading"), ("ddim", "leading"), ("pndm", "leading"), ("euler", "linspace"), ("euler_a", "linspace"), ("dpmpp_2m_karras", "linspace")] {
        let c = schedulers::SchedulerConfig::from_json_for(name, "{}").unwrap();
        assert_eq!((c.beta_start, c.beta_end, c.beta_schedule.as_str(), c.steps_offset), (0.0001, 0.02, "linear", 0), "{name}");
        let want = match spacing {
            "leading" => schedulers::Spacing::Leading,
            _ => schedulers::Spacing::Linspace,
        };
        assert_eq!(c.timestep_spacing, want, "{name}");
    }
    // DDPM and DDIM default to clip_sample true, which is refused with a message (not a linear update).
    for name in ["ddpm", "ddim"] {
        let e = schedulers::from_config(name, Some("{}"), 10).expect_err(name).to_string();
        assert!(e.contains("clip_sample"), "{name}: {e}");
    }
    let ddim = schedulers::SchedulerConfig::from_json_for("ddim", "{}").unwrap();
    assert!(ddim.set_alpha_to_one && ddim.clip_sample);
    let pndm = schedulers::SchedulerConfig::from_json_for("pndm", "{}").unwrap();
    assert!(!pndm.skip_prk_steps && !pndm.set_alpha_to_one);
    assert_eq!(schedulers::SchedulerConfig::from_json_for("ddpm", "{}").unwrap().variance_type.as_deref(), Some("fixed_small"));
});
