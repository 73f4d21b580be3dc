//! `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler` (k-diffusion's Euler
//! samplers in sigma space). The sample is `x = x₀ + σ·ε`; the UNet gets `x / sqrt(σ² + 1)`.
//! Sigmas: the float32 training sigmas interpolated at the (float32) timesteps, optionally
//! Karras (Euler only, `use_karras_sigmas`), then the final sigma (0, or σ_min with
//! `final_sigmas_type` "sigma_min"; ancestral: always 0).
use super::config::{Prediction, SchedulerConfig, Spacing};
use super::tables::{self, f32r};
use super::{unsupported, Combo, Sampler, StepPlan, Term};
use crate::error::Result;

#[derive(Debug)]
pub(crate) struct Euler {
    ancestral: bool,
    timesteps: Vec<f64>,
    /// `len = steps + 1`, float32 values.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: Prediction,
}

impl Euler {
    pub(crate) fn new(cfg: &SchedulerConfig, steps: usize, ancestral: bool) -> Result<Self> {
        cfg.validate()?;
        let name = if ancestral { "euler_a" } else { "euler" };
        if !ancestral {
            if cfg.interpolation_type != "linear" {
                return Err(unsupported(format!(
                    "euler: interpolation_type {:?} is not supported (linear)",
                    cfg.interpolation_type
                )));
            }
            if cfg.timestep_type != "discrete" {
                return Err(unsupported(format!(
                    "euler: timestep_type {:?} is not supported (discrete)",
                    cfg.timestep_type
                )));
            }
            if cfg.use_exponential_sigmas || cfg.use_beta_sigmas {
                return Err(unsupported("euler: exponential / beta sigmas are not supported"));
            }
        }
        let acp = cfg.alphas_cumprod();
        let train = tables::train_sigmas(&acp);
        let mut timesteps = tables::float_timesteps(cfg, steps)?;
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| tables::np_interp_index(t, &train)).collect();
        let karras = !ancestral && cfg.use_karras_sigmas;
        if karras {
            let sigma_min = cfg.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = cfg.sigma_max.unwrap_or(sigmas[0]);
            sigmas = tables::karras_sigmas(sigma_min, sigma_max, steps);
            let to_t = tables::SigmaToT::new(&train);
            timesteps = sigmas.iter().map(|&s| f32r(to_t.t(s))).collect();
        }
        let last = if !ancestral && cfg.final_sigmas_sigma_min { train[0] } else { 0.0 };
        sigmas.push(last);
        let sigmas: Vec<f64> = sigmas.into_iter().map(f32r).collect();
        if let Some(s) = sigmas[..steps].iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(unsupported(format!("{name}: the schedule has sigma {s}; check the beta schedule")));
        }
        // diffusers: sigmas.max() (float32), and sqrt(max² + 1) for "leading" spacing
        let max = sigmas.iter().copied().fold(0.0, f64::max) as f32;
        let init_noise_sigma = match cfg.timestep_spacing {
            Spacing::Linspace | Spacing::Trailing => max as f64,
            Spacing::Leading => (max * max + 1.0).sqrt() as f64,
        };
        Ok(Euler { ancestral, timesteps, sigmas, init_noise_sigma, prediction: cfg.prediction_type })
    }

    /// The model's x₀ prediction as a combination of the sample and the model output.
    fn x0(&self, sigma: f64) -> Combo {
        match self.prediction {
            Prediction::Epsilon => Combo::of(Term::Sample, 1.0).add(Term::ModelOutput, -sigma),
            Prediction::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                Combo::of(Term::ModelOutput, -sigma / s2.sqrt()).add(Term::Sample, 1.0 / s2)
            }
        }
    }
}

impl Sampler for Euler {
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn alpha_bar(&self, i: usize) -> f64 {
        let s = self.sigmas[i];
        1.0 / (s * s + 1.0)
    }
    fn name(&self) -> &'static str {
        if self.ancestral {
            "euler_a"
        } else {
            "euler"
        }
    }
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn num_inference_steps(&self) -> usize {
        self.timesteps.len()
    }
    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }
    fn scale_model_input(&self, step_index: usize) -> f64 {
        let s = self.sigmas[step_index];
        1.0 / (s * s + 1.0).sqrt()
    }
    fn slots(&self) -> usize {
        0
    }
    fn reset(&mut self) {}

    /// diffusers' `add_noise` with `begin_index` set: `x + σ_begin · noise`.
    fn add_noise_coeffs(&self, step_index: usize) -> (f64, f64) {
        (1.0, self.sigmas[step_index])
    }

    fn step(&mut self, i: usize) -> StepPlan {
        assert!(i < self.timesteps.len(), "{}: step index {i} out of range", self.name());
        let sigma = self.sigmas[i];
        let sigma_next = self.sigmas[i + 1];
        // derivative = (x - x₀) / σ
        let derivative = Combo::of(Term::Sample, 1.0 / sigma).plus(&self.x0(sigma), -1.0 / sigma);
        if self.ancestral {
            let (from, to) = (sigma, sigma_next);
            let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
            let sigma_down = (to * to - sigma_up * sigma_up).max(0.0).sqrt();
            let next = Combo::of(Term::Sample, 1.0).plus(&derivative, sigma_down - sigma).add(Term::Noise, sigma_up);
            StepPlan { store: vec![], next, uses_noise: true }
        } else {
            // s_churn = 0 (the pipelines' default): sigma_hat = sigma, no noise
            let next = Combo::of(Term::Sample, 1.0).plus(&derivative, sigma_next - sigma);
            StepPlan { store: vec![], next, uses_noise: false }
        }
    }
}
