//! `DDIMScheduler` with eta = 0 (deterministic; what the SD pipelines pass). As in diffusers
//! the previous timestep is always `t - num_train_timesteps // steps` (whatever the spacing),
//! and below 0 ᾱ_prev is `final_alpha_cumprod` (ᾱ[0], or 1 with `set_alpha_to_one`).
use super::config::{Prediction, SchedulerConfig};
use super::{tables, unsupported, Combo, Sampler, StepPlan, Term};
use crate::error::Result;

#[derive(Debug)]
pub(crate) struct Ddim {
    acp: Vec<f64>,
    final_acp: f64,
    ratio: i64,
    ts: Vec<i64>,
    timesteps: Vec<f64>,
    prediction: Prediction,
}

impl Ddim {
    pub(crate) fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        if cfg.clip_sample {
            return Err(unsupported("ddim: clip_sample true is not supported (not a linear update); set it to false"));
        }
        let ts = tables::int_timesteps(cfg, steps)?;
        let acp = cfg.alphas_cumprod();
        let ratio = (cfg.num_train_timesteps / steps) as i64;
        let n = acp.len() as i64;
        if let Some(t) = ts.iter().map(|t| t - ratio).find(|&p| p >= n) {
            return Err(unsupported(format!("ddim: previous timestep {t} is outside 0..{n}")));
        }
        Ok(Ddim {
            final_acp: if cfg.set_alpha_to_one { 1.0 } else { acp[0] },
            acp,
            ratio,
            timesteps: ts.iter().map(|&t| t as f64).collect(),
            ts,
            prediction: cfg.prediction_type,
        })
    }
}

impl Sampler for Ddim {
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn alpha_bar(&self, i: usize) -> f64 {
        self.acp[self.ts[i] as usize]
    }
    fn name(&self) -> &'static str {
        "ddim"
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
        let prev = t - self.ratio;
        let a_t = self.acp[t as usize];
        let a_prev = if prev >= 0 { self.acp[prev as usize] } else { self.final_acp };
        let b_t = 1.0 - a_t;
        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => (
                Combo::of(Term::Sample, 1.0 / a_t.sqrt()).add(Term::ModelOutput, -b_t.sqrt() / a_t.sqrt()),
                Combo::of(Term::ModelOutput, 1.0),
            ),
            Prediction::VPrediction => (
                Combo::of(Term::Sample, a_t.sqrt()).add(Term::ModelOutput, -b_t.sqrt()),
                Combo::of(Term::ModelOutput, a_t.sqrt()).add(Term::Sample, b_t.sqrt()),
            ),
        };
        // eta = 0: std_dev_t = 0, direction = sqrt(1 - ᾱ_prev) · ε
        let next = x0.scaled(a_prev.sqrt()).plus(&eps, (1.0 - a_prev).sqrt());
        StepPlan { store: vec![], next, uses_noise: false }
    }
}
