//! `scheduler_config.json` → [`SchedulerConfig`]. Absent (or `null`) fields take SD-1.5's
//! values (`scaled_linear` 0.00085 → 0.012 over 1000 steps, `steps_offset` 1, `leading`
//! spacing, epsilon prediction, no clipping, PLMS), which is what every SD-1.x checkpoint's
//! config says; fields a sampler does not know are ignored, as diffusers' `from_config` does.
use super::unsupported;
use crate::error::Result;
use serde_json::{Map, Value};

/// How inference timesteps are spread over the training timesteps (diffusers'
/// `timestep_spacing`, Table 2 of arXiv:2305.08891).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// What the UNet predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

/// The fields of a diffusers scheduler config that these samplers read.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    /// `"linear"` or `"scaled_linear"`.
    pub beta_schedule: String,
    /// Overrides the beta schedule when present (one per training timestep).
    pub trained_betas: Option<Vec<f64>>,
    pub steps_offset: i64,
    pub timestep_spacing: Spacing,
    pub prediction_type: Prediction,
    /// DDPM / DDIM: must be false (clamping x₀ is not a linear update).
    pub clip_sample: bool,
    /// DDIM / PNDM: `alphas_cumprod` after the last step is 1 instead of `alphas_cumprod[0]`.
    pub set_alpha_to_one: bool,
    /// PNDM: true = PLMS only (SD-1.5); false = 12 Runge-Kutta warm-up evaluations first.
    pub skip_prk_steps: bool,
    /// Must be false (dynamic thresholding is not linear).
    pub thresholding: bool,
    /// Must be false (not implemented).
    pub rescale_betas_zero_snr: bool,
    /// DDPM: `fixed_small` (default), `fixed_small_log` or `fixed_large`.
    pub variance_type: Option<String>,
    /// Euler: `"linear"` (default).
    pub interpolation_type: String,
    /// Euler: Karras sigmas (dpmpp_2m_karras always uses them).
    pub use_karras_sigmas: bool,
    /// Euler: must be false.
    pub use_exponential_sigmas: bool,
    /// Euler: must be false.
    pub use_beta_sigmas: bool,
    /// Euler (Karras sigmas): override the schedule's smallest / largest sigma.
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// Euler: `"discrete"` (default).
    pub timestep_type: String,
    /// Euler / DPM-Solver: the sigma after the last step is 0 (`"zero"`, default) or the
    /// schedule's smallest (`"sigma_min"`).
    pub final_sigmas_sigma_min: bool,
    /// DPM-Solver: `"midpoint"` (default) or `"heun"`.
    pub solver_type: String,
    /// DPM-Solver: first order for the last step when fewer than 15 steps (default true).
    pub lower_order_final: bool,
    /// DPM-Solver: first order for the last step always (default false).
    pub euler_at_final: bool,
}

impl Default for SchedulerConfig {
    /// SD-1.5's `scheduler_config.json`.
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            steps_offset: 1,
            timestep_spacing: Spacing::Leading,
            prediction_type: Prediction::Epsilon,
            clip_sample: false,
            set_alpha_to_one: false,
            skip_prk_steps: true,
            thresholding: false,
            rescale_betas_zero_snr: false,
            variance_type: None,
            interpolation_type: "linear".into(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_type: "discrete".into(),
            final_sigmas_sigma_min: false,
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The value of `key`, `None` when absent or null.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad(key, v, "a number")),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|_| self.f64(key, 0.0)).transpose()
    }
    fn int(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 1e15).map(|x| x as i64))
                .ok_or_else(|| bad(key, v, "an integer")),
        }
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| bad(key, v, "true or false")),
        }
    }
    fn str(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(v) => v.as_str().map(str::to_string).ok_or_else(|| bad(key, v, "a string")),
        }
    }
}

fn bad(key: &str, v: &Value, want: &str) -> crate::error::Error {
    unsupported(format!("scheduler_config.json: {key} is {v}, expected {want}"))
}

impl SchedulerConfig {
    /// Parse a diffusers `scheduler_config.json`. Errors name the field and the value.
    pub fn from_json(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| unsupported(format!("scheduler_config.json is not valid JSON: {e}")))?;
        let map = v.as_object().ok_or_else(|| unsupported("scheduler_config.json must be a JSON object"))?;
        let f = Fields(map);
        let d = SchedulerConfig::default();
        let n = f.int("num_train_timesteps", d.num_train_timesteps as i64)?;
        if !(2..=100_000).contains(&n) {
            return Err(unsupported(format!("scheduler_config.json: num_train_timesteps {n} is outside 2..=100000")));
        }
        let trained_betas = match f.get("trained_betas") {
            None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_f64().ok_or_else(|| bad("trained_betas", x, "numbers")))
                    .collect::<Result<Vec<f64>>>()?,
            ),
            Some(other) => return Err(bad("trained_betas", other, "null or an array of numbers")),
        };
        let spacing = match f.str("timestep_spacing", "leading")?.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => {
                return Err(unsupported(format!(
                    "scheduler_config.json: timestep_spacing {other:?} is not one of leading, trailing, linspace"
                )))
            }
        };
        let prediction = match f.str("prediction_type", "epsilon")?.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            other => {
                return Err(unsupported(format!(
                    "scheduler_config.json: prediction_type {other:?} is not supported (epsilon, v_prediction)"
                )))
            }
        };
        let final_sigmas = f.str("final_sigmas_type", "zero")?;
        let final_sigmas_sigma_min = match final_sigmas.as_str() {
            "zero" => false,
            "sigma_min" => true,
            other => {
                return Err(unsupported(format!(
                    "scheduler_config.json: final_sigmas_type {other:?} is not one of zero, sigma_min"
                )))
            }
        };
        let cfg = SchedulerConfig {
            num_train_timesteps: n as usize,
            beta_start: f.f64("beta_start", d.beta_start)?,
            beta_end: f.f64("beta_end", d.beta_end)?,
            beta_schedule: f.str("beta_schedule", &d.beta_schedule)?,
            trained_betas,
            steps_offset: f.int("steps_offset", d.steps_offset)?,
            timestep_spacing: spacing,
            prediction_type: prediction,
            clip_sample: f.bool("clip_sample", d.clip_sample)?,
            set_alpha_to_one: f.bool("set_alpha_to_one", d.set_alpha_to_one)?,
            skip_prk_steps: f.bool("skip_prk_steps", d.skip_prk_steps)?,
            thresholding: f.bool("thresholding", d.thresholding)?,
            rescale_betas_zero_snr: f.bool("rescale_betas_zero_snr", d.rescale_betas_zero_snr)?,
            variance_type: f.get("variance_type").map(|_| f.str("variance_type", "")).transpose()?,
            interpolation_type: f.str("interpolation_type", &d.interpolation_type)?,
            use_karras_sigmas: f.bool("use_karras_sigmas", d.use_karras_sigmas)?,
            use_exponential_sigmas: f.bool("use_exponential_sigmas", d.use_exponential_sigmas)?,
            use_beta_sigmas: f.bool("use_beta_sigmas", d.use_beta_sigmas)?,
            sigma_min: f.opt_f64("sigma_min")?,
            sigma_max: f.opt_f64("sigma_max")?,
            timestep_type: f.str("timestep_type", &d.timestep_type)?,
            final_sigmas_sigma_min,
            solver_type: f.str("solver_type", &d.solver_type)?,
            lower_order_final: f.bool("lower_order_final", d.lower_order_final)?,
            euler_at_final: f.bool("euler_at_final", d.euler_at_final)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks shared by every sampler (the beta schedule must give 0 < ᾱ ≤ 1).
    pub fn validate(&self) -> Result<()> {
        if self.num_train_timesteps < 2 {
            return Err(unsupported("num_train_timesteps must be at least 2"));
        }
        match &self.trained_betas {
            Some(b) => {
                if b.len() != self.num_train_timesteps {
                    return Err(unsupported(format!(
                        "scheduler_config.json: trained_betas has {} values for num_train_timesteps {}",
                        b.len(),
                        self.num_train_timesteps
                    )));
                }
                if let Some(x) = b.iter().find(|x| !(0.0..1.0).contains(*x)) {
                    return Err(unsupported(format!(
                        "scheduler_config.json: trained_betas value {x} is outside [0, 1)"
                    )));
                }
            }
            None => {
                if self.beta_schedule != "linear" && self.beta_schedule != "scaled_linear" {
                    return Err(unsupported(format!(
                        "scheduler_config.json: beta_schedule {:?} is not supported (linear, scaled_linear)",
                        self.beta_schedule
                    )));
                }
                for (k, v) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                    if !(0.0..1.0).contains(&v) {
                        return Err(unsupported(format!("scheduler_config.json: {k} {v} is outside [0, 1)")));
                    }
                }
            }
        }
        if self.thresholding {
            return Err(unsupported("scheduler_config.json: thresholding is not supported (not a linear update)"));
        }
        if self.rescale_betas_zero_snr {
            return Err(unsupported("scheduler_config.json: rescale_betas_zero_snr is not supported"));
        }
        Ok(())
    }

    /// `alphas_cumprod` exactly as diffusers builds it (see [`super::tables`]).
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        super::tables::alphas_cumprod(self)
    }
}
