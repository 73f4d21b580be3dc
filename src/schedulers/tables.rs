//! Tables shared by the samplers, built the way diffusers builds them. diffusers keeps
//! `betas`, `alphas_cumprod` and `sigmas` as float32 tensors; where it stores a float32
//! table we compute that table with the same float32 operations (IEEE, so identical) or
//! round to f32, and hold it in f64. Everything derived on the fly is f64.
use super::config::{SchedulerConfig, Spacing};
use super::unsupported;
use crate::error::Result;

/// Round to the nearest f32 (diffusers stores this table as float32).
pub(crate) fn f32r(x: f64) -> f64 {
    x as f32 as f64
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` (CPU scalar kernel: float32
/// step, the first half counted from `start`, the second half back from `end`).
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { s + step * i as f32 } else { e - step * (steps - 1 - i) as f32 }).collect()
}

impl SchedulerConfig {
    /// `alphas_cumprod` exactly as diffusers builds it ([`alphas_cumprod`]; defined here,
    /// not in `config`, so that the tables depend on the config and not the other way round).
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        alphas_cumprod(self)
    }
}

/// diffusers' `alphas_cumprod`: float32 betas (`linear`: linspace; `scaled_linear`:
/// linspace of square roots, squared; or `trained_betas`), float32 `1 - beta`, and torch's
/// CPU `cumprod` (accumulates in double, stores float32).
pub(crate) fn alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f64> {
    let n = cfg.num_train_timesteps;
    let betas: Vec<f32> = match &cfg.trained_betas {
        Some(b) => b.iter().map(|&x| x as f32).collect(),
        None if cfg.beta_schedule == "linear" => torch_linspace_f32(cfg.beta_start, cfg.beta_end, n),
        None => torch_linspace_f32(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n).into_iter().map(|b| b * b).collect(),
    };
    let mut acc = 1f64;
    betas
        .iter()
        .map(|&b| {
            acc *= (1f32 - b) as f64;
            f32r(acc)
        })
        .collect()
}

/// Karras-style noise levels of the training schedule, `sqrt((1 - ᾱ) / ᾱ)` computed in
/// float32 like diffusers (`((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`).
pub(crate) fn train_sigmas(acp: &[f64]) -> Vec<f64> {
    acp.iter()
        .map(|&a| {
            let a = a as f32;
            ((1f32 - a) / a).sqrt() as f64
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (float64: `i * step + start`, last = `stop`).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let div = (num - 1) as f64;
            let delta = stop - start;
            let step = delta / div;
            let mut v: Vec<f64> = (0..num)
                .map(|i| if step == 0.0 { i as f64 / div * delta + start } else { i as f64 * step + start })
                .collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// `np.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values,
/// `start + i * delta` with `delta = (start + step) - start` (numpy's fill).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub(crate) fn np_interp_index(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j];
    }
    let slope = fp[j + 1] - fp[j];
    slope * (x - j as f64) + fp[j]
}

/// The integer timesteps of DDPM / DDIM (descending), diffusers' three spacings:
/// `linspace`: `round(linspace(0, N-1, n))`; `leading`: `arange(n) * (N // n) + offset`;
/// `trailing`: `round(arange(N, 0, -N/n)) - 1`. PNDM uses the same values ascending.
pub(crate) fn int_timesteps(cfg: &SchedulerConfig, steps: usize) -> Result<Vec<i64>> {
    let n = cfg.num_train_timesteps;
    let ts: Vec<i64> = match cfg.timestep_spacing {
        Spacing::Linspace => {
            np_linspace(0.0, (n - 1) as f64, steps).iter().rev().map(|x| x.round_ties_even() as i64).collect()
        }
        Spacing::Leading => {
            let ratio = (n / steps) as i64;
            (0..steps as i64).rev().map(|i| i * ratio + cfg.steps_offset).collect()
        }
        Spacing::Trailing => np_arange(n as f64, 0.0, -(n as f64 / steps as f64))
            .iter()
            .map(|x| x.round_ties_even() as i64 - 1)
            .collect(),
    };
    check_timesteps(cfg, steps, &ts)?;
    Ok(ts)
}

/// Euler's float32 timesteps: like [`int_timesteps`] but `linspace` is not rounded.
pub(crate) fn float_timesteps(cfg: &SchedulerConfig, steps: usize) -> Result<Vec<f64>> {
    match cfg.timestep_spacing {
        Spacing::Linspace => {
            let n = cfg.num_train_timesteps;
            Ok(np_linspace(0.0, (n - 1) as f64, steps).iter().rev().map(|&x| f32r(x)).collect())
        }
        _ => Ok(int_timesteps(cfg, steps)?.iter().map(|&t| t as f64).collect()),
    }
}

fn check_timesteps(cfg: &SchedulerConfig, steps: usize, ts: &[i64]) -> Result<()> {
    let n = cfg.num_train_timesteps as i64;
    if ts.len() != steps {
        return Err(unsupported(format!(
            "timestep_spacing {:?} gives {} timesteps for {steps} steps (diffusers' schedule is broken here); \
             choose another step count",
            cfg.timestep_spacing,
            ts.len()
        )));
    }
    if let Some(t) = ts.iter().find(|&&t| t < 0 || t >= n) {
        return Err(unsupported(format!(
            "timestep {t} is outside 0..{n} (timestep_spacing {:?}, steps_offset {}, {steps} steps)",
            cfg.timestep_spacing, cfg.steps_offset
        )));
    }
    Ok(())
}

/// diffusers' `_convert_to_karras` (ρ = 7) between `sigma_max` and `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, steps).iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose log-sigma (float32
/// table) brackets `ln sigma`, interpolated linearly in log-sigma.
pub(crate) struct SigmaToT {
    log_sigmas: Vec<f32>,
}

impl SigmaToT {
    pub(crate) fn new(train_sigmas: &[f64]) -> Self {
        SigmaToT { log_sigmas: train_sigmas.iter().map(|&s| s.ln() as f32).collect() }
    }

    pub(crate) fn t(&self, sigma: f64) -> f64 {
        let ls = &self.log_sigmas;
        let log_sigma = sigma.max(1e-10).ln();
        // cumsum(dists >= 0).argmax(): the last index with log_sigmas[i] <= log_sigma (0 if none)
        let count = ls.iter().rposition(|&l| log_sigma - l as f64 >= 0.0);
        let low_idx = count.unwrap_or(0).min(ls.len() - 2);
        let high_idx = low_idx + 1;
        let (low, high) = (ls[low_idx], ls[high_idx]);
        let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
        (1.0 - w) * low_idx as f64 + w * high_idx as f64
    }
}
