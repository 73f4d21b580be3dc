//! `PNDMScheduler`. With `skip_prk_steps` (SD-1.5) it is PLMS: linear multistep on the ε
//! history with a Heun-like warm-up — the schedule repeats its second timestep, the first
//! step predicts ahead with ε₀, the second redoes it from the saved sample with the mean of
//! ε₀ and ε₁, then the 2-, 3- and 4-term Adams–Bashforth combinations follow. Without
//! `skip_prk_steps` the first 12 evaluations are diffusers' pseudo Runge–Kutta steps.
//!
//! Slots: 0..4 hold the ε history (diffusers' `ets`, rotated), 4 the saved sample
//! (`cur_sample`), 5 the Runge–Kutta accumulator (`cur_model_output`).
use super::config::{Prediction, SchedulerConfig};
use super::{tables, unsupported, Combo, Sampler, StepPlan, Term};
use crate::error::Result;

const CUR_SAMPLE: usize = 4;
const CUR_MODEL_OUTPUT: usize = 5;
const PNDM_ORDER: usize = 4;

#[derive(Debug)]
pub(crate) struct Pndm {
    acp: Vec<f64>,
    final_acp: f64,
    /// `num_train_timesteps // num_inference_steps`
    ratio: i64,
    steps: usize,
    prk_ts: Vec<i64>,
    ts: Vec<i64>,
    timesteps: Vec<f64>,
    prediction: Prediction,
    skip_prk: bool,
    // history
    counter: usize,
    /// Slot of each entry of diffusers' `ets`, oldest first.
    ets: Vec<usize>,
    /// `cur_model_output` is the integer 0 (nothing accumulated).
    cmo_zero: bool,
}

impl Pndm {
    pub(crate) fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.validate()?;
        // diffusers' `_timesteps`, ascending (the same values as DDPM's, reversed)
        let mut asc = tables::int_timesteps(cfg, steps)?;
        asc.reverse();
        let ratio = (cfg.num_train_timesteps / steps) as i64;
        let (prk_ts, plms_ts): (Vec<i64>, Vec<i64>) = if cfg.skip_prk_steps {
            // _timesteps[:-1] ++ _timesteps[-2:-1] ++ _timesteps[-1:], reversed
            let k = asc.len();
            let mut v: Vec<i64> = asc[..k - 1].to_vec();
            if k >= 2 {
                v.push(asc[k - 2]);
            }
            v.push(asc[k - 1]);
            v.reverse();
            (vec![], v)
        } else {
            if steps < PNDM_ORDER {
                return Err(unsupported(format!(
                    "pndm with skip_prk_steps false needs at least {PNDM_ORDER} steps, got {steps}"
                )));
            }
            // _timesteps[-4:].repeat(2) + tile([0, ratio // 2], 4); [:-1].repeat(2)[1:-1], reversed
            let half = ratio / 2;
            let base: Vec<i64> = asc[asc.len() - PNDM_ORDER..].iter().flat_map(|&t| [t, t + half]).collect();
            let rep: Vec<i64> = base[..base.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            let mut prk = rep[1..rep.len() - 1].to_vec();
            prk.reverse();
            let mut plms = asc[..asc.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        let ts: Vec<i64> = prk_ts.iter().chain(plms_ts.iter()).copied().collect();
        let acp = cfg.alphas_cumprod();
        let n = acp.len() as i64;
        // every table index a step can use: the timesteps, the PLMS warm-up's t + ratio
        let mut used: Vec<i64> = ts.clone();
        if cfg.skip_prk_steps && ts.len() > 1 {
            used.push(ts[1] + ratio);
        }
        if let Some(t) = used.iter().find(|&&t| t < 0 || t >= n) {
            return Err(unsupported(format!("pndm: timestep {t} is outside 0..{n}")));
        }
        Ok(Pndm {
            final_acp: if cfg.set_alpha_to_one { 1.0 } else { acp[0] },
            acp,
            ratio,
            steps,
            prk_ts,
            timesteps: ts.iter().map(|&t| t as f64).collect(),
            ts,
            prediction: cfg.prediction_type,
            skip_prk: cfg.skip_prk_steps,
            counter: 0,
            ets: vec![],
            cmo_zero: true,
        })
    }

    /// diffusers' `_get_prev_sample` (formula 9 of the PNDM paper) as a combination.
    fn prev_sample(&self, sample: &Combo, t: i64, prev: i64, model_output: &Combo) -> Combo {
        let a_t = self.acp[t as usize];
        let a_prev = if prev >= 0 { self.acp[prev as usize] } else { self.final_acp };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let eps = match self.prediction {
            Prediction::Epsilon => model_output.clone(),
            Prediction::VPrediction => model_output.scaled(a_t.sqrt()).plus(sample, b_t.sqrt()),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        sample.scaled(sample_coeff).plus(&eps, -(a_prev - a_t) / denom)
    }

    /// Append the current model output to `ets` (keeping at most 4): the slot to store into.
    fn push_ets(&mut self) -> usize {
        let slot = if self.ets.len() >= PNDM_ORDER {
            self.ets.remove(0)
        } else {
            (0..PNDM_ORDER).find(|s| !self.ets.contains(s)).expect("a free ets slot")
        };
        self.ets.push(slot);
        slot
    }

    fn step_prk(&mut self, i: usize) -> StepPlan {
        let c = self.counter;
        let diff_to_prev = if c % 2 == 1 { 0 } else { self.ratio / 2 };
        let prev = self.ts[i] - diff_to_prev;
        let t = self.prk_ts[c / 4 * 4];
        let mo = Combo::of(Term::ModelOutput, 1.0);
        let cmo_plus = |zero: bool, w: f64| {
            let base = if zero { Combo::zero() } else { Combo::of(Term::Slot(CUR_MODEL_OUTPUT), 1.0) };
            base.add(Term::ModelOutput, w)
        };
        let mut store = vec![];
        let (sample, model_output) = match c % 4 {
            0 => {
                store.push((CUR_MODEL_OUTPUT, cmo_plus(self.cmo_zero, 1.0 / 6.0)));
                self.cmo_zero = false;
                let k = self.push_ets();
                store.push((k, mo.clone()));
                store.push((CUR_SAMPLE, Combo::of(Term::Sample, 1.0)));
                (Combo::of(Term::Sample, 1.0), mo)
            }
            1 | 2 => {
                store.push((CUR_MODEL_OUTPUT, cmo_plus(self.cmo_zero, 1.0 / 3.0)));
                self.cmo_zero = false;
                (Combo::of(Term::Slot(CUR_SAMPLE), 1.0), mo)
            }
            _ => {
                let m = cmo_plus(self.cmo_zero, 1.0 / 6.0);
                self.cmo_zero = true;
                (Combo::of(Term::Slot(CUR_SAMPLE), 1.0), m)
            }
        };
        let next = self.prev_sample(&sample, t, prev, &model_output);
        self.counter += 1;
        StepPlan { store, next, uses_noise: false }
    }

    fn step_plms(&mut self, i: usize) -> StepPlan {
        let mut t = self.ts[i];
        let mut prev = t - self.ratio;
        let mut store = vec![];
        if self.counter != 1 {
            let k = self.push_ets();
            store.push((k, Combo::of(Term::ModelOutput, 1.0)));
        } else {
            prev = t;
            t += self.ratio;
        }
        let e = |j: usize| Term::Slot(self.ets[j]);
        let sample = Combo::of(Term::Sample, 1.0);
        let (sample, model_output) = match (self.ets.len(), self.counter) {
            (1, 0) => {
                store.push((CUR_SAMPLE, Combo::of(Term::Sample, 1.0)));
                (sample, Combo::of(Term::ModelOutput, 1.0))
            }
            (1, 1) => (Combo::of(Term::Slot(CUR_SAMPLE), 1.0), Combo::of(Term::ModelOutput, 0.5).add(e(0), 0.5)),
            // the newest entry of `ets` is this step's model output
            (2, _) => (sample, Combo::of(Term::ModelOutput, 1.5).add(e(0), -0.5)),
            (3, _) => (sample, Combo::of(Term::ModelOutput, 23.0 / 12.0).add(e(1), -16.0 / 12.0).add(e(0), 5.0 / 12.0)),
            _ => (
                sample,
                Combo::of(Term::ModelOutput, 55.0 / 24.0)
                    .add(e(2), -59.0 / 24.0)
                    .add(e(1), 37.0 / 24.0)
                    .add(e(0), -9.0 / 24.0),
            ),
        };
        let next = self.prev_sample(&sample, t, prev, &model_output);
        self.counter += 1;
        StepPlan { store, next, uses_noise: false }
    }
}

impl Sampler for Pndm {
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn alpha_bar(&self, i: usize) -> f64 {
        self.acp[self.ts[i] as usize]
    }
    fn name(&self) -> &'static str {
        "pndm"
    }
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn num_inference_steps(&self) -> usize {
        self.steps
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn scale_model_input(&self, _step_index: usize) -> f64 {
        1.0
    }
    fn slots(&self) -> usize {
        if self.skip_prk {
            5
        } else {
            6
        }
    }
    fn reset(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.cmo_zero = true;
    }

    fn step(&mut self, i: usize) -> StepPlan {
        assert!(i < self.ts.len(), "pndm: step index {i} out of range ({} timesteps)", self.ts.len());
        if !self.skip_prk && self.counter < self.prk_ts.len() {
            self.step_prk(i)
        } else {
            self.step_plms(i)
        }
    }
}
