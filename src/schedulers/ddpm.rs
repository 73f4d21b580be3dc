//! `DDPMScheduler` (Ho et al. 2020, formula 7) with diffusers' `previous_timestep`: the
//! previous timestep is the next entry of the inference schedule (−1 after the last, where
//! ᾱ_prev = 1). Noise is drawn whenever `t > 0` (so also on the last step of the SD-1.5
//! schedule, t = 1, with standard deviation `sqrt(1e-20)`).
use super::config::{Prediction, SchedulerConfig};
use super::{tables, unsupported, Combo, Sampler, StepPlan, Term};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variance {
    FixedSmall,
    FixedLarge,
}

#[derive(Debug)]
pub(crate) struct Ddpm {
    acp: Vec<f64>,
    ts: Vec<i64>,
    timesteps: Vec<f64>,
    prediction: Prediction,
    variance: Variance,
}

impl Ddpm {
    pub(crate) fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        if cfg.clip_sample {
            return Err(unsupported("ddpm: clip_sample true is not supported (not a linear update); set it to false"));
        }
        let variance = match cfg.variance_type.as_deref().unwrap_or("fixed_small") {
            // fixed_small_log: exp(0.5 · log(v)) = sqrt(v), the same as fixed_small
            "fixed_small" | "fixed_small_log" => Variance::FixedSmall,
            "fixed_large" => Variance::FixedLarge,
            other => return Err(unsupported(format!("ddpm: variance_type {other:?} is not supported"))),
        };
        let ts = tables::int_timesteps(cfg, steps)?;
        Ok(Ddpm {
            acp: cfg.alphas_cumprod(),
            timesteps: ts.iter().map(|&t| t as f64).collect(),
            ts,
            prediction: cfg.prediction_type,
            variance,
        })
    }
}

impl Sampler for Ddpm {
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn alpha_bar(&self, i: usize) -> f64 {
        self.acp[self.ts[i] as usize]
    }
    fn name(&self) -> &'static str {
        "ddpm"
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

    fn step(&mut self, i: usize) -> StepPlan {
        let t = self.ts[i];
        let a_t = self.acp[t as usize];
        let a_prev = match self.ts.get(i + 1) {
            Some(&p) => self.acp[p as usize],
            None => 1.0,
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let x0 = match self.prediction {
            Prediction::Epsilon => {
                Combo::of(Term::Sample, 1.0 / a_t.sqrt()).add(Term::ModelOutput, -b_t.sqrt() / a_t.sqrt())
            }
            Prediction::VPrediction => Combo::of(Term::Sample, a_t.sqrt()).add(Term::ModelOutput, -b_t.sqrt()),
        };
        let c_x0 = a_prev.sqrt() * cur_beta / b_t;
        let c_x = cur_alpha.sqrt() * b_prev / b_t;
        let mut next = x0.scaled(c_x0).add(Term::Sample, c_x);
        let uses_noise = t > 0;
        if uses_noise {
            let std = match self.variance {
                Variance::FixedSmall => (b_prev / b_t * cur_beta).max(1e-20).sqrt(),
                Variance::FixedLarge => cur_beta.sqrt(),
            };
            next = next.add(Term::Noise, std);
        }
        StepPlan { store: vec![], next, uses_noise }
    }
}
