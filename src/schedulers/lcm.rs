//! `LCMScheduler` (latent consistency models, arXiv:2310.04378), as diffusers 0.42 runs it.
//! Timesteps: the distillation schedule `k·(1..=N) − 1` (N = `original_inference_steps`,
//! k = `num_train_timesteps / N`) reversed, sampled at `floor(linspace(0, N, steps,
//! endpoint=False))`; `timestep_spacing` and `steps_offset` do not apply. Each step: x₀ from
//! the model output, `denoised = c_out·x₀ + c_skip·x` (boundary conditions at
//! `t·timestep_scaling`, σ_data = 0.5), then re-noised to the next timestep with a fresh
//! draw from the generator — except after the last step, where the result is `denoised`.
use super::config::{Prediction, SchedulerConfig};
use super::{unsupported, vp_x0, Combo, Sampler, StepPlan, Term};
use crate::error::Result;

#[derive(Debug)]
pub(crate) struct Lcm {
    acp: Vec<f64>,
    ts: Vec<i64>,
    timesteps: Vec<f64>,
    prediction: Prediction,
    timestep_scaling: f64,
}

impl Lcm {
    pub(crate) fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        if cfg.clip_sample {
            return Err(unsupported("lcm: clip_sample true is not supported (not a linear update); set it to false"));
        }
        let n = cfg.original_inference_steps;
        if steps > n {
            return Err(unsupported(format!(
                "lcm: {steps} steps is more than the model's original_inference_steps {n} (LCM picks its timesteps from those)"
            )));
        }
        let k = cfg.num_train_timesteps / n;
        if k == 0 {
            return Err(unsupported(format!("lcm: original_inference_steps {n} is more than num_train_timesteps {}", cfg.num_train_timesteps)));
        }
        let origin: Vec<i64> = (1..=n).rev().map(|i| (i * k) as i64 - 1).collect();
        let step = n as f64 / steps as f64;
        let ts: Vec<i64> = (0..steps).map(|i| origin[((i as f64 * step).floor() as usize).min(n - 1)]).collect();
        Ok(Lcm {
            acp: cfg.alphas_cumprod(),
            timesteps: ts.iter().map(|&t| t as f64).collect(),
            ts,
            prediction: cfg.prediction_type,
            timestep_scaling: cfg.timestep_scaling,
        })
    }

    /// diffusers' `get_scalings_for_boundary_condition_discrete` (σ_data = 0.5), float32.
    fn boundary(&self, t: i64) -> (f64, f64) {
        let s = (t as f64 * self.timestep_scaling) as f32;
        let sd2 = 0.25f32;
        let c_skip = sd2 / (s * s + sd2);
        let c_out = s / (s * s + sd2).sqrt();
        (c_skip as f64, c_out as f64)
    }
}

impl Sampler for Lcm {
    fn name(&self) -> &'static str {
        "lcm"
    }
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn num_inference_steps(&self) -> usize {
        self.ts.len()
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn scale_model_input(&self, _step_index: usize) -> f64 {
        1.0
    }
    fn slots(&self) -> usize {
        0
    }
    fn reset(&mut self) {}
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn alpha_bar(&self, i: usize) -> f64 {
        self.acp[self.ts[i] as usize]
    }

    fn denoised(&self, i: usize) -> Combo {
        let (c_skip, c_out) = self.boundary(self.ts[i]);
        vp_x0(self.prediction, self.alpha_bar(i), 1.0).scaled(c_out).add(Term::Sample, c_skip)
    }

    fn step(&mut self, i: usize) -> StepPlan {
        assert!(i < self.ts.len(), "lcm: step index {i} out of range");
        let denoised = self.denoised(i);
        match self.ts.get(i + 1) {
            // Not the last step: re-noise the denoised sample to the next timestep.
            Some(&prev) => {
                let a_prev = self.acp[prev as usize];
                StepPlan { store: vec![], next: denoised.scaled(a_prev.sqrt()).add(Term::Noise, (1.0 - a_prev).sqrt()), uses_noise: true }
            }
            None => StepPlan { store: vec![], next: denoised, uses_noise: false },
        }
    }
}
