//! Samplers (diffusers "schedulers") as plans of linear combinations.
//!
//! Every sampler here reproduces one diffusers 0.42 scheduler: its timesteps, its tables and
//! its `step`, configured from a diffusers `scheduler/scheduler_config.json`:
//!
//! | name | diffusers class | notes |
//! |---|---|---|
//! | `ddpm` | `DDPMScheduler` | variance `fixed_small` (also `fixed_small_log`, `fixed_large`), no clipping |
//! | `ddim` | `DDIMScheduler` | eta 0 (what the SD pipelines pass), no clipping |
//! | `pndm` | `PNDMScheduler` | PLMS (`skip_prk_steps` true, the SD-1.5 value); PRK warm-up when the config says false |
//! | `euler` | `EulerDiscreteScheduler` | no churn (the pipelines' defaults) |
//! | `euler_a` | `EulerAncestralDiscreteScheduler` | |
//! | `dpmpp_2m_karras` | `DPMSolverMultistepScheduler` | `dpmsolver++`, order 2, Karras sigmas, `lower_order_final` |
//! | `lcm` | `LCMScheduler` | `original_inference_steps` schedule, `c_skip`/`c_out` boundary conditions, re-noise with the generator but after the last step |
//!
//! The GPU does the per-element latent update, so a sampler never sees a tensor: each step
//! is a [`StepPlan`], a few linear combinations of the current sample, the model output,
//! fresh noise and a handful of stored vectors ("slots": PNDM's ε history, DPM-Solver's x₀
//! predictions). The tables and coefficients are f64 on the CPU.
//!
//! # The denoising loop, as diffusers' StableDiffusion pipelines run it
//! ```text
//! s = from_config(name, config_json, steps)?;
//! txt2img: begin = 0;                      latents = randn * s.init_noise_sigma()
//! img2img: begin = s.img2img_begin(strength)?; (a, b) = s.add_noise_coeffs(begin);
//!          latents = a * init_latents + b * randn          (noise drawn after the VAE encode)
//! for i in begin..s.timesteps().len():
//!     eps  = unet(latents * s.scale_model_input(i), s.timesteps()[i])  (+ CFG)
//!     plan = s.step(i)
//!     latents = apply(plan, latents, eps, slots, if plan.uses_noise { Some(randn) } else { None })
//! ```
//! `step` must be called once per index, in order (it keeps the history counters that
//! diffusers keeps: PNDM's `counter`, DPM-Solver's `lower_order_nums`, the slot rotation).
//!
//! # Plan semantics (followed exactly by [`apply_cpu`], and to be followed by the GPU)
//! 1. Every `store` combination is evaluated with the slots as they were **before** this step
//!    (its stores do not see each other); then slot `k` := value. A plan stores each slot at
//!    most once.
//! 2. `next` is evaluated **after** the stores: `Slot(k)` in `next` is the value just stored
//!    if `k` was stored by this plan, else the value kept from earlier steps.
//!    [`StepPlan::next_from_old_slots`] rewrites `next` in terms of the pre-step slots only
//!    (for a kernel that reads every input once).
//! 3. `Noise` is one fresh standard-normal tensor of the latent shape, the same in every
//!    combination of the plan; it appears only when `uses_noise` is true. `uses_noise` says
//!    that diffusers draws `randn(latent shape)` from the pipeline's generator in this step,
//!    even when its coefficient is (nearly) zero (DDPM's last step, Euler ancestral's last
//!    step) — so seeds stay in step with diffusers.
//! 4. A plan never reads a slot that no earlier plan (of this sampler since creation or
//!    [`Sampler::reset`]) stored, not even with a zero coefficient.
//!
//! For a batch (e.g. CFG halves already merged, or several images) the same plan applies to
//! every element; slots are per latent tensor.
mod config;
mod ddim;
mod ddpm;
mod dpmpp;
mod euler;
mod lcm;
mod pndm;
mod tables;

pub use config::{class_of, Prediction, SchedulerConfig, Spacing, SD15_SCHEDULER_CONFIG, SD21_SCHEDULER_CONFIG, SDXL_SCHEDULER_CONFIG};

use crate::error::{Error, Result};

/// One input of a linear combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Term {
    /// The current latents `x_t` (unscaled: what the loop carries, not the UNet input).
    Sample,
    /// The model output for this step (after classifier-free guidance).
    ModelOutput,
    /// A stored vector (see the module docs for when stores happen).
    Slot(usize),
    /// Fresh `randn` of the latent shape (one draw per plan with `uses_noise`).
    Noise,
}

/// `Σ coefficient · term`. Built with [`Combo::add`], which merges repeated terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Combo(pub Vec<(Term, f64)>);

impl Combo {
    /// The empty combination (zero).
    pub fn zero() -> Self {
        Combo(Vec::new())
    }

    /// `c · t`.
    pub fn of(t: Term, c: f64) -> Self {
        Combo(vec![(t, c)])
    }

    /// `self + c · t` (merged with an existing entry of the same term).
    pub fn add(mut self, t: Term, c: f64) -> Self {
        match self.0.iter_mut().find(|(u, _)| *u == t) {
            Some(e) => e.1 += c,
            None => self.0.push((t, c)),
        }
        self
    }

    /// `self + s · other`.
    pub fn plus(mut self, other: &Combo, s: f64) -> Self {
        for &(t, c) in &other.0 {
            self = self.add(t, s * c);
        }
        self
    }

    /// `s · self`.
    pub fn scaled(&self, s: f64) -> Self {
        Combo(self.0.iter().map(|&(t, c)| (t, s * c)).collect())
    }

    /// The coefficient of `t` (0 when absent).
    pub fn coeff(&self, t: Term) -> f64 {
        self.0.iter().filter(|(u, _)| *u == t).map(|(_, c)| c).sum()
    }

    /// Whether `t` appears (with any coefficient).
    pub fn uses(&self, t: Term) -> bool {
        self.0.iter().any(|(u, _)| *u == t)
    }
}

/// What one denoising step does to the latents (see the module docs for the semantics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepPlan {
    /// Before `next`: slot `k` := combination (evaluated on the pre-step slots).
    pub store: Vec<(usize, Combo)>,
    /// The new sample (evaluated after the stores).
    pub next: Combo,
    /// The step draws one `randn(latent shape)` from the pipeline's generator.
    pub uses_noise: bool,
}

impl StepPlan {
    /// `next` with every slot stored by this plan replaced by its stored combination, so the
    /// result reads only the inputs of the step (pre-step slots, sample, model output, noise).
    pub fn next_from_old_slots(&self) -> Combo {
        let mut out = Combo::zero();
        for &(t, c) in &self.next.0 {
            match t {
                Term::Slot(k) => match self.store.iter().find(|(s, _)| *s == k) {
                    Some((_, stored)) => out = out.plus(stored, c),
                    None => out = out.add(t, c),
                },
                _ => out = out.add(t, c),
            }
        }
        out
    }

    /// Highest slot index read or written, plus one (0 when none).
    pub fn slots_used(&self) -> usize {
        let in_combo = |c: &Combo| {
            c.0.iter().filter_map(|(t, _)| if let Term::Slot(k) = t { Some(k + 1) } else { None }).max().unwrap_or(0)
        };
        let stores = self.store.iter().map(|(k, c)| (k + 1).max(in_combo(c))).max().unwrap_or(0);
        stores.max(in_combo(&self.next))
    }
}

/// A configured sampler for a fixed number of inference steps.
pub trait Sampler: Send + std::fmt::Debug {
    /// The sampler's name as accepted by [`from_config`].
    fn name(&self) -> &'static str;
    /// What the UNet gets at each step index (diffusers' `scheduler.timesteps`; PNDM/PLMS
    /// has one more entry than steps, its warm-up repeats a timestep).
    fn timesteps(&self) -> &[f64];
    /// The `num_inference_steps` it was built for.
    fn num_inference_steps(&self) -> usize;
    /// diffusers' `scheduler.order` (1 for every sampler here).
    fn order(&self) -> usize {
        1
    }
    /// Initial latents = `randn · init_noise_sigma` (txt2img).
    fn init_noise_sigma(&self) -> f64;
    /// Factor applied to the sample before the UNet (`scale_model_input`).
    fn scale_model_input(&self, step_index: usize) -> f64;
    /// The update after the UNet ran at `timesteps()[step_index]`. Call once per index, in
    /// order; advances the history. Panics if `step_index >= timesteps().len()`.
    fn step(&mut self, step_index: usize) -> StepPlan;
    /// How many slots the plans use (slot indices are `0..slots()`).
    fn slots(&self) -> usize;
    /// img2img: noisy latents = `a · sample + b · noise` for starting at `step_index`
    /// (diffusers' `add_noise` with `timesteps[step_index]` / `set_begin_index`): for the
    /// variance-preserving samplers `(sqrt(ᾱ), sqrt(1 − ᾱ))` at [`Sampler::alpha_bar`].
    fn add_noise_coeffs(&self, step_index: usize) -> (f64, f64) {
        let a = self.alpha_bar(step_index);
        (a.sqrt(), (1.0 - a).sqrt())
    }
    /// Forget the history (as a fresh `set_timesteps`): the next call is a first step.
    fn reset(&mut self);
    /// img2img: the first step index for `strength` (see [`img2img_begin_index`]).
    fn img2img_begin(&self, strength: f64) -> Result<usize> {
        img2img_begin_index(self.num_inference_steps(), strength, self.order())
    }
    /// What the model output means (`prediction_type`).
    fn prediction(&self) -> Prediction;
    /// ᾱ of the noise level the UNet input has at `step_index`: the UNet always sees a
    /// variance-preserving sample `scale_model_input(i) · x = sqrt(ᾱ)·x₀ + sqrt(1 − ᾱ)·ε`
    /// (for the sigma-space samplers ᾱ = 1 / (σ² + 1)).
    fn alpha_bar(&self, step_index: usize) -> f64;
    /// The current estimate of the clean latents x₀ after the UNet ran at `step_index`
    /// (diffusers' `pred_original_sample`; LCM's `denoised`), as a combination of the sample
    /// and the model output: what a live preview decodes. Does not advance the history.
    fn denoised(&self, step_index: usize) -> Combo {
        vp_x0(self.prediction(), self.alpha_bar(step_index), self.scale_model_input(step_index))
    }
}

/// x₀ from a variance-preserving UNet input `s · Sample` at ᾱ = `a` and the model output.
pub(crate) fn vp_x0(prediction: Prediction, a: f64, s: f64) -> Combo {
    match prediction {
        Prediction::Epsilon => Combo::of(Term::Sample, s / a.sqrt()).add(Term::ModelOutput, -(1.0 - a).sqrt() / a.sqrt()),
        Prediction::VPrediction => Combo::of(Term::Sample, s * a.sqrt()).add(Term::ModelOutput, -(1.0 - a).sqrt()),
    }
}

/// The sampler names [`from_config`] accepts.
pub const SAMPLERS: [&str; 7] = ["ddpm", "ddim", "pndm", "euler", "euler_a", "dpmpp_2m_karras", "lcm"];

/// Build sampler `name` (one of [`SAMPLERS`]) from a diffusers `scheduler_config.json` (the
/// real SD-1.5 file, [`SD15_SCHEDULER_CONFIG`], when `None`) for `steps` inference steps, as
/// `Class.from_config(file)` does: fields the file lacks take the class's own defaults.
pub fn from_config(name: &str, config_json: Option<&str>, steps: usize) -> Result<Box<dyn Sampler>> {
    let cfg = SchedulerConfig::from_json_for(name, config_json.unwrap_or(SD15_SCHEDULER_CONFIG))?;
    from_parsed(name, &cfg, steps)
}

/// What a user may override in a model's scheduler config (CLI `--timestep-spacing`,
/// `--prediction-type`; JS `timestepSpacing`, `predictionType`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overrides {
    pub timestep_spacing: Option<Spacing>,
    pub prediction_type: Option<Prediction>,
}

/// [`from_config`] with `overrides` applied to the parsed config (as
/// `Class.from_config(file, timestep_spacing=…, prediction_type=…)`).
pub fn from_config_with(name: &str, config_json: Option<&str>, steps: usize, overrides: &Overrides) -> Result<Box<dyn Sampler>> {
    let mut cfg = SchedulerConfig::from_json_for(name, config_json.unwrap_or(SD15_SCHEDULER_CONFIG))?;
    if let Some(sp) = overrides.timestep_spacing {
        cfg.timestep_spacing = sp;
    }
    if let Some(pr) = overrides.prediction_type {
        cfg.prediction_type = pr;
    }
    from_parsed(name, &cfg, steps)
}

/// [`from_config`] with an already parsed config.
pub fn from_parsed(name: &str, cfg: &SchedulerConfig, steps: usize) -> Result<Box<dyn Sampler>> {
    if steps == 0 {
        return Err(unsupported("the number of inference steps must be at least 1"));
    }
    if steps > cfg.num_train_timesteps {
        return Err(unsupported(format!(
            "{steps} inference steps is more than num_train_timesteps {}",
            cfg.num_train_timesteps
        )));
    }
    Ok(match name {
        "ddpm" => Box::new(ddpm::Ddpm::new(cfg, steps)?),
        "ddim" => Box::new(ddim::Ddim::new(cfg, steps)?),
        "pndm" => Box::new(pndm::Pndm::new(cfg, steps)?),
        "euler" => Box::new(euler::Euler::new(cfg, steps, false)?),
        "euler_a" => Box::new(euler::Euler::new(cfg, steps, true)?),
        "dpmpp_2m_karras" => Box::new(dpmpp::DpmPp2m::new(cfg, steps)?),
        "lcm" => Box::new(lcm::Lcm::new(cfg, steps)?),
        other => {
            return Err(unsupported(format!("unknown sampler {other:?}; expected one of {}", SAMPLERS.join(", "))))
        }
    })
}

/// diffusers' `StableDiffusionImg2ImgPipeline.get_timesteps`: `init = min(int(steps ·
/// strength), steps)`, `t_start = max(steps − init, 0)`; the loop starts at index
/// `t_start · order`. Errors when strength is outside [0, 1] or leaves no step to run.
pub fn img2img_begin_index(num_inference_steps: usize, strength: f64, order: usize) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(unsupported(format!("img2img strength must be in [0, 1], got {strength}")));
    }
    let init = ((num_inference_steps as f64 * strength).trunc() as usize).min(num_inference_steps);
    if init == 0 {
        return Err(unsupported(format!(
            "img2img strength {strength} with {num_inference_steps} steps leaves no denoising step"
        )));
    }
    Ok((num_inference_steps - init) * order)
}

/// The CPU reference of a step (f64 accumulation), following the module's plan semantics.
/// `slots` grows (zero-filled) to the slots the plan uses. Panics when `noise` is `None` but
/// the plan uses noise, or when lengths differ.
pub fn apply_cpu(
    plan: &StepPlan,
    sample: &[f32],
    model_output: &[f32],
    slots: &mut Vec<Vec<f32>>,
    noise: Option<&[f32]>,
) -> Vec<f32> {
    let n = sample.len();
    assert_eq!(model_output.len(), n, "apply_cpu: model output length");
    if let Some(z) = noise {
        assert_eq!(z.len(), n, "apply_cpu: noise length");
    }
    while slots.len() < plan.slots_used() {
        slots.push(vec![0.0; n]);
    }
    let eval = |c: &Combo, slots: &[Vec<f32>]| -> Vec<f32> {
        let inputs: Vec<(&[f32], f64)> =
            c.0.iter()
                .map(|&(t, w)| {
                    let v: &[f32] = match t {
                        Term::Sample => sample,
                        Term::ModelOutput => model_output,
                        Term::Slot(k) => &slots[k],
                        Term::Noise => noise.expect("apply_cpu: the plan uses noise but none was given"),
                    };
                    assert_eq!(v.len(), n, "apply_cpu: length of {t:?}");
                    (v, w)
                })
                .collect();
        (0..n).map(|i| inputs.iter().map(|(v, w)| w * v[i] as f64).sum::<f64>() as f32).collect()
    };
    let stored: Vec<(usize, Vec<f32>)> = plan.store.iter().map(|(k, c)| (*k, eval(c, slots))).collect();
    for (k, v) in stored {
        slots[k] = v;
    }
    eval(&plan.next, slots)
}

pub(crate) fn unsupported(detail: impl Into<String>) -> Error {
    Error::Unsupported { op: "scheduler", detail: detail.into() }
}
