//! `DPMSolverMultistepScheduler` as "DPM++ 2M Karras": `algorithm_type` dpmsolver++,
//! `solver_order` 2, `use_karras_sigmas` (these three are what the name means and override
//! the config); `solver_type`, `lower_order_final`, `euler_at_final`, `final_sigmas_type`
//! come from the config (diffusers' defaults: midpoint, true, false, "zero").
//!
//! Timesteps: Karras sigmas (ρ = 7) between the training schedule's extremes, mapped back to
//! timesteps with `_sigma_to_t` and rounded (so `timestep_spacing` does not matter). The
//! sample is in VP form (no input scaling, `init_noise_sigma` 1); the model output becomes
//! an x₀ prediction `m`, stored in slot `k % 2` at the k-th call, and
//! `x_next = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·(m₀ + ½(m₀ − m₁)/r₀)` (midpoint), first order on
//! the first step and (with a zero final sigma, or fewer than 15 steps) on the last.
use super::config::{Prediction, SchedulerConfig};
use super::tables::{self, f32r};
use super::{unsupported, Combo, Sampler, StepPlan, Term};
use crate::error::Result;

#[derive(Debug)]
pub(crate) struct DpmPp2m {
    timesteps: Vec<f64>,
    /// `len = steps + 1`, float32 values.
    sigmas: Vec<f64>,
    prediction: Prediction,
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    // history
    lower_order_nums: usize,
    calls: usize,
}

/// diffusers' `_sigma_to_alpha_sigma_t`: α = 1/sqrt(σ² + 1), σ_t = σ·α.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = log α − log σ_t (+∞ at σ = 0).
fn lambda(alpha: f64, sigma_t: f64) -> f64 {
    alpha.ln() - sigma_t.ln()
}

impl DpmPp2m {
    pub(crate) fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        let heun = match cfg.solver_type.as_str() {
            "midpoint" => false,
            "heun" => true,
            other => {
                return Err(unsupported(format!(
                    "dpmpp_2m_karras: solver_type {other:?} is not supported (midpoint, heun)"
                )))
            }
        };
        let acp = cfg.alphas_cumprod();
        let train = tables::train_sigmas(&acp);
        // in_sigmas = flip(train): sigma_min = train[0], sigma_max = train[N-1]
        let karras = tables::karras_sigmas(train[0], train[train.len() - 1], steps);
        let to_t = tables::SigmaToT::new(&train);
        let timesteps: Vec<f64> = karras.iter().map(|&s| to_t.t(s).round_ties_even()).collect();
        let last = if cfg.final_sigmas_sigma_min { train[0] } else { 0.0 };
        let sigmas: Vec<f64> = karras.iter().copied().chain([last]).map(f32r).collect();
        if let Some(s) = sigmas[..steps].iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(unsupported(format!("dpmpp_2m_karras: the schedule has sigma {s}; check the beta schedule")));
        }
        Ok(DpmPp2m {
            timesteps,
            sigmas,
            prediction: cfg.prediction_type,
            heun,
            lower_order_final: cfg.lower_order_final,
            euler_at_final: cfg.euler_at_final,
            final_zero: !cfg.final_sigmas_sigma_min,
            lower_order_nums: 0,
            calls: 0,
        })
    }
}

impl Sampler for DpmPp2m {
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn alpha_bar(&self, i: usize) -> f64 {
        let s = self.sigmas[i];
        1.0 / (s * s + 1.0)
    }
    fn name(&self) -> &'static str {
        "dpmpp_2m_karras"
    }
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn num_inference_steps(&self) -> usize {
        self.timesteps.len()
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn scale_model_input(&self, _step_index: usize) -> f64 {
        1.0
    }
    fn slots(&self) -> usize {
        2
    }
    fn reset(&mut self) {
        self.lower_order_nums = 0;
        self.calls = 0;
    }

    /// diffusers' `add_noise` with `begin_index` set: `α·x + σ_t·noise` at σ_begin.
    fn add_noise_coeffs(&self, step_index: usize) -> (f64, f64) {
        alpha_sigma(self.sigmas[step_index])
    }

    fn step(&mut self, i: usize) -> StepPlan {
        let n = self.timesteps.len();
        assert!(i < n, "dpmpp_2m_karras: step index {i} out of range ({n} timesteps)");
        let lower_order_final =
            i == n - 1 && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_zero);

        // convert_model_output: the x₀ prediction
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let x0 = match self.prediction {
            Prediction::Epsilon => Combo::of(Term::Sample, 1.0 / alpha_s0).add(Term::ModelOutput, -sigma_s0 / alpha_s0),
            Prediction::VPrediction => Combo::of(Term::Sample, alpha_s0).add(Term::ModelOutput, -sigma_s0),
        };
        let cur = self.calls % 2;
        let prev = 1 - cur;
        let store = vec![(cur, x0)];

        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s0, sigma_s0);
        let em1 = (-h).exp() - 1.0; // e^{-h} - 1
        let first_order = self.lower_order_nums < 1 || lower_order_final;
        let next = if first_order {
            // x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·m₀
            Combo::of(Term::Sample, sigma_t / sigma_s0).add(Term::Slot(cur), -alpha_t * em1)
        } else {
            let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i.saturating_sub(1)]);
            let h0 = lambda(alpha_s0, sigma_s0) - lambda(alpha_s1, sigma_s1);
            let r0 = h0 / h;
            // D1 = (m₀ − m₁) / r₀
            let d1 = if self.heun { alpha_t * (em1 / h + 1.0) } else { -0.5 * alpha_t * em1 } / r0;
            Combo::of(Term::Sample, sigma_t / sigma_s0)
                .add(Term::Slot(cur), -alpha_t * em1 + d1)
                .add(Term::Slot(prev), -d1)
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        self.calls += 1;
        StepPlan { store, next, uses_noise: false }
    }
}
