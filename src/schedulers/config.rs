//! `scheduler_config.json` → [`SchedulerConfig`], as diffusers' `Class.from_config(file)`:
//! a field the file has is used (whatever sampler class the file was written for); a field
//! it lacks (or sets to `null`) takes **the default of the sampler class that reads it**
//! (each class's `__init__`, see [`SchedulerConfig::defaults_of`]). The real SD-1.5 file has
//! no `timestep_spacing`, so Euler, Euler a and DPM++ get `linspace` while DDPM, DDIM and
//! PNDM get `leading`. Fields a sampler does not know are ignored.
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

impl Spacing {
    /// `leading`, `trailing` or `linspace`.
    pub fn parse(s: &str) -> Option<Spacing> {
        match s {
            "leading" => Some(Spacing::Leading),
            "trailing" => Some(Spacing::Trailing),
            "linspace" => Some(Spacing::Linspace),
            _ => None,
        }
    }
}

impl Prediction {
    /// `epsilon` or `v_prediction`.
    pub fn parse(s: &str) -> Option<Prediction> {
        match s {
            "epsilon" => Some(Prediction::Epsilon),
            "v_prediction" => Some(Prediction::VPrediction),
            _ => None,
        }
    }
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
    /// LCM: the distillation schedule's length (default 50): the timesteps are picked from
    /// `k·(1..=N) − 1`, `k = num_train_timesteps / N`.
    pub original_inference_steps: usize,
    /// LCM: `c_skip`/`c_out` use `t · timestep_scaling` (default 10).
    pub timestep_scaling: f64,
}

impl Default for SchedulerConfig {
    /// SD-1.5's `scheduler_config.json` ([`SD15_SCHEDULER_CONFIG`]) as PNDM (and DDPM / DDIM)
    /// read it: `leading` spacing. Samplers are built with [`SchedulerConfig::from_json_for`],
    /// which applies each class's own defaults.
    fn default() -> Self {
        Self::from_json_for("pndm", SD15_SCHEDULER_CONFIG).expect("the built-in SD-1.5 scheduler config parses")
    }
}

/// `scheduler/scheduler_config.json` of `stabilityai/stable-diffusion-2-1` (DDIM, v-prediction),
/// verbatim: what an SD-2.x single-file checkpoint is run with (`--prediction-type epsilon` for
/// the 512² base models).
pub const SD21_SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "DDIMScheduler",
  "_diffusers_version": "0.8.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "v_prediction",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
}"#;

/// `scheduler/scheduler_config.json` of `stabilityai/stable-diffusion-xl-base-1.0`, verbatim (as
/// the sdxl reference bundle records it): Euler, `leading` spacing, `steps_offset` 1; what an
/// SDXL single-file checkpoint is run with when no config folder is given.
pub const SDXL_SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "EulerDiscreteScheduler",
  "_diffusers_version": "0.19.0.dev0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "interpolation_type": "linear",
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "sample_max_value": 1.0,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "trained_betas": null,
  "use_karras_sigmas": false
}"#;

/// `scheduler/scheduler_config.json` of `stable-diffusion-v1-5/stable-diffusion-v1-5`, verbatim:
/// what a model without a scheduler config (a single-file checkpoint) is run with.
pub const SD15_SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

/// The diffusers class behind each sampler name.
pub fn class_of(sampler: &str) -> Option<&'static str> {
    Some(match sampler {
        "ddpm" => "DDPMScheduler",
        "ddim" => "DDIMScheduler",
        "pndm" => "PNDMScheduler",
        "euler" => "EulerDiscreteScheduler",
        "euler_a" => "EulerAncestralDiscreteScheduler",
        "dpmpp_2m_karras" => "DPMSolverMultistepScheduler",
        "lcm" => "LCMScheduler",
        _ => return None,
    })
}

impl SchedulerConfig {
    /// The constructor defaults of the diffusers class behind `sampler` (diffusers 0.42
    /// `__init__` signatures): what `Class.from_config` uses for a field the file lacks.
    /// Every class defaults to `linear` betas 0.0001 → 0.02 over 1000 steps, `steps_offset`
    /// 0 and epsilon prediction; they differ in the spacing (`leading` for DDPM / DDIM /
    /// PNDM, `linspace` for Euler / Euler a / DPM-Solver), `clip_sample` (true for DDPM and
    /// DDIM), `set_alpha_to_one` (true for DDIM) and `skip_prk_steps` (false for PNDM).
    /// `dpmpp_2m_karras` is `DPMSolverMultistepScheduler` with `use_karras_sigmas` true.
    pub fn defaults_of(sampler: &str) -> Result<Self> {
        let base = SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            steps_offset: 0,
            timestep_spacing: Spacing::Linspace,
            prediction_type: Prediction::Epsilon,
            clip_sample: false,
            set_alpha_to_one: false,
            skip_prk_steps: false,
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
            original_inference_steps: 50,
            timestep_scaling: 10.0,
        };
        Ok(match sampler {
            "ddpm" => SchedulerConfig { timestep_spacing: Spacing::Leading, clip_sample: true, variance_type: Some("fixed_small".into()), ..base },
            "ddim" => SchedulerConfig { timestep_spacing: Spacing::Leading, clip_sample: true, set_alpha_to_one: true, ..base },
            "pndm" => SchedulerConfig { timestep_spacing: Spacing::Leading, ..base },
            "euler" | "euler_a" => base,
            "dpmpp_2m_karras" => SchedulerConfig { use_karras_sigmas: true, ..base },
            "lcm" => SchedulerConfig {
                beta_start: 0.00085,
                beta_end: 0.012,
                beta_schedule: "scaled_linear".into(),
                timestep_spacing: Spacing::Leading,
                set_alpha_to_one: true,
                ..base
            },
            other => {
                return Err(unsupported(format!("unknown sampler {other:?}; expected one of {}", super::SAMPLERS.join(", "))))
            }
        })
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
    /// Parse a diffusers `scheduler_config.json` for the class it names (`_class_name`;
    /// PNDM, SD-1.5's, when it names none we know): see [`SchedulerConfig::from_json_for`].
    pub fn from_json(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| unsupported(format!("scheduler_config.json is not valid JSON: {e}")))?;
        let class = v.get("_class_name").and_then(|c| c.as_str()).unwrap_or("");
        let sampler = super::SAMPLERS.iter().find(|s| class_of(s) == Some(class)).copied().unwrap_or("pndm");
        Self::from_value(&v, &Self::defaults_of(sampler)?)
    }

    /// Parse a diffusers `scheduler_config.json` as `sampler`'s class reads it: absent or
    /// `null` fields take that class's defaults ([`SchedulerConfig::defaults_of`]), as
    /// `Class.from_config(file)` does. Errors name the field and the value.
    pub fn from_json_for(sampler: &str, json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| unsupported(format!("scheduler_config.json is not valid JSON: {e}")))?;
        let mut cfg = Self::from_value(&v, &Self::defaults_of(sampler)?)?;
        // DPM++ 2M Karras is DPMSolverMultistepScheduler.from_config(file, use_karras_sigmas=True).
        if sampler == "dpmpp_2m_karras" {
            cfg.use_karras_sigmas = true;
        }
        Ok(cfg)
    }

    fn from_value(v: &Value, d: &SchedulerConfig) -> Result<Self> {
        let map = v.as_object().ok_or_else(|| unsupported("scheduler_config.json must be a JSON object"))?;
        let f = Fields(map);
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
        let spacing_default = match d.timestep_spacing {
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        };
        let spacing = match f.str("timestep_spacing", spacing_default)?.as_str() {
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
        let final_sigmas = f.str("final_sigmas_type", if d.final_sigmas_sigma_min { "sigma_min" } else { "zero" })?;
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
            variance_type: match f.get("variance_type") {
                None => d.variance_type.clone(),
                Some(_) => Some(f.str("variance_type", "")?),
            },
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
            original_inference_steps: {
                let n = f.int("original_inference_steps", d.original_inference_steps as i64)?;
                if !(1..=100_000).contains(&n) {
                    return Err(unsupported(format!("scheduler_config.json: original_inference_steps {n} is outside 1..=100000")));
                }
                n as usize
            },
            timestep_scaling: f.f64("timestep_scaling", d.timestep_scaling)?,
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
}
