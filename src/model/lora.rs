//! LoRA: kohya / A1111 files (`lora_unet_*`, `lora_te_*` / SDXL's `lora_te1_*` and `lora_te2_*`, with `lora_down` / `lora_up` /
//! `alpha`, module names in diffusers' or the original SD spelling, 3×3 conv LoRA in resnets)
//! and diffusers / PEFT files (`unet.….lora_A` / `lora_B`, alpha from the file's metadata or
//! the rank), streamed from safetensors onto the GPU and merged into the weights there:
//! `W += scale · (alpha / rank) · up @ down` in f32, stored back in the weight's storage type,
//! into this project's fused layouts (q/k/v and cross-attention k/v concatenated, GEGLU halves
//! interleaved).
//!
//! Undo is exact: the first merge into a weight keeps the weight as it was (its *base*, on the
//! GPU, same storage), and every change of the active LoRAs or their scales rebuilds each
//! affected weight from its base — nothing is subtracted, nothing reloaded. The memory cost is
//! one copy of every weight some active LoRA changes ([`LoraState::bytes`]); the base copies go
//! when no active LoRA changes the weight any more. Callers that never undo (the CLI) merge in
//! place without a base ([`LoraState::keep_base`] false).
use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{build, build_fusions, Configs, Dtypes};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::ops::{self, MergeRows};
use crate::weights::keymap::{stored_interleaved, unet_original_module};
use crate::weights::stream::{Event, SrcDType, StreamParser};
use crate::weights::{convert, WeightError, Weights};

/// How a LoRA file names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraFormat {
    /// kohya-ss / A1111: `lora_unet_…`, `lora_te_…` + `.lora_down.weight` / `.lora_up.weight` / `.alpha`.
    Kohya,
    /// diffusers / PEFT: `unet.….lora_A.weight` / `.lora_B.weight`.
    Peft,
    /// diffusers' older attention-processor files (`….processor.to_q_lora.down.weight`).
    Diffusers,
}

impl LoraFormat {
    pub fn name(self) -> &'static str {
        match self {
            LoraFormat::Kohya => "kohya",
            LoraFormat::Peft => "peft",
            LoraFormat::Diffusers => "diffusers",
        }
    }
}

/// One low-rank update of one weight.
pub struct LoraModule {
    /// The weight it changes, by the model's (unfused) diffusers name: `unet/…attn1.to_q.weight`.
    pub target: String,
    /// [out, rank] and [rank, in · kh · kw], in the storage type of the target's component.
    pub up: Tensor,
    pub down: Tensor,
    /// The file's `alpha` (None: alpha = rank).
    pub alpha: Option<f32>,
}

impl LoraModule {
    pub fn rank(&self) -> usize {
        self.down.shape()[0]
    }
    /// alpha / rank.
    pub fn factor(&self) -> f32 {
        self.alpha.map_or(1.0, |a| a / self.rank() as f32)
    }
}

/// A loaded LoRA file (its factors on the GPU; not merged until activated).
pub struct Lora {
    pub name: String,
    pub file: String,
    pub format: LoraFormat,
    pub modules: Vec<LoraModule>,
    /// A1111's short hash ("AutoV3"): the first 12 hex digits of the SHA-256 of the file after
    /// its header, as in the `Lora hashes` field of A1111's PNG parameters.
    pub hash: String,
    /// Keys that match no module of the model, and other notes.
    pub warnings: Vec<String>,
}

impl Lora {
    /// GPU bytes of the factors.
    pub fn bytes(&self) -> u64 {
        self.modules.iter().map(|m| m.up.bytes() + m.down.bytes()).sum()
    }
    /// Modules changing the UNet and the text encoder.
    pub fn counts(&self) -> (usize, usize) {
        let te = self.modules.iter().filter(|m| m.target.starts_with("text_encoder")).count();
        (self.modules.len() - te, te)
    }
    /// Smallest and largest rank.
    pub fn ranks(&self) -> (usize, usize) {
        let r = self.modules.iter().map(|m| m.rank());
        (r.clone().min().unwrap_or(0), r.max().unwrap_or(0))
    }
    /// A short JSON-able summary.
    pub fn info(&self) -> serde_json::Value {
        let (unet, te) = self.counts();
        let (rmin, rmax) = self.ranks();
        let alphas: HashSet<String> = self.modules.iter().map(|m| m.alpha.map_or("rank".to_string(), |a| format!("{a}"))).collect();
        let mut alphas: Vec<String> = alphas.into_iter().collect();
        alphas.sort();
        serde_json::json!({
            "name": self.name, "file": self.file, "format": self.format.name(), "hash": self.hash,
            "modules": { "unet": unet, "textEncoder": te }, "rank": if rmin == rmax { serde_json::json!(rmax) } else { serde_json::json!([rmin, rmax]) },
            "alpha": alphas, "bytes": self.bytes(), "warnings": self.warnings,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
}

/// Key suffixes of the supported formats: (suffix, part, format).
const SUFFIXES: &[(&str, Part, LoraFormat)] = &[
    (".lora_down.weight", Part::Down, LoraFormat::Kohya),
    (".lora_up.weight", Part::Up, LoraFormat::Kohya),
    (".alpha", Part::Alpha, LoraFormat::Kohya),
    (".lora_A.weight", Part::Down, LoraFormat::Peft),
    (".lora_B.weight", Part::Up, LoraFormat::Peft),
    (".lora_A.default.weight", Part::Down, LoraFormat::Peft),
    (".lora_B.default.weight", Part::Up, LoraFormat::Peft),
    (".lora.down.weight", Part::Down, LoraFormat::Diffusers),
    (".lora.up.weight", Part::Up, LoraFormat::Diffusers),
    (".lora_linear_layer.down.weight", Part::Down, LoraFormat::Diffusers),
    (".lora_linear_layer.up.weight", Part::Up, LoraFormat::Diffusers),
    ("_lora.down.weight", Part::Down, LoraFormat::Diffusers),
    ("_lora.up.weight", Part::Up, LoraFormat::Diffusers),
];

/// Key fragments of network types that are not plain LoRA (LyCORIS LoHa / LoKr / full diff /
/// OFT / GLoRA, DoRA, LoCon's Tucker middle): (fragment, what it is).
const UNSUPPORTED: &[(&str, &str)] = &[
    ("hada_w", "LyCORIS LoHa"),
    ("hada_t", "LyCORIS LoHa"),
    ("lokr_w", "LyCORIS LoKr"),
    ("lokr_t", "LyCORIS LoKr"),
    (".lora_mid.", "LoCon with a Tucker middle (lora_mid)"),
    ("dora_scale", "DoRA"),
    ("lora_magnitude_vector", "DoRA"),
    (".oft_", "OFT"),
    ("oft_blocks", "OFT"),
    (".a1.weight", "GLoRA"),
    (".b1.weight", "GLoRA"),
    (".diff", "LyCORIS full diff"),
    (".w_norm", "LyCORIS norm"),
    (".b_norm", "LyCORIS norm"),
];

/// Split a LoRA key into (module key, part); Err(what) for unsupported network types.
fn split_key(key: &str) -> std::result::Result<Option<(String, Part, LoraFormat)>, &'static str> {
    if let Some((_, what)) = UNSUPPORTED.iter().find(|(frag, _)| key.contains(frag)) {
        return Err(what);
    }
    for (suffix, part, format) in SUFFIXES {
        if let Some(m) = key.strip_suffix(suffix) {
            let mut m = m.to_string();
            if *format == LoraFormat::Diffusers && suffix.starts_with('_') {
                // attention processors: `….attn1.processor.to_q_lora` → `….attn1.to_q`
                m = m.replace(".processor.", ".");
                if m.ends_with(".to_out") {
                    m.push_str(".0");
                }
            }
            let m = m.strip_prefix("base_model.model.").map(String::from).unwrap_or(m);
            return Ok(Some((m, *part, *format)));
        }
    }
    Ok(None)
}

/// Every module a LoRA can change, by every name a LoRA file may give it.
pub struct Targets {
    /// module key → (weight name, shape)
    by_key: HashMap<String, (String, Vec<usize>)>,
}

impl Targets {
    pub fn new(cfg: &Configs) -> Targets {
        let (_, _, _, specs) = build(cfg);
        let layout = cfg.unet_layout();
        let mut by_key = HashMap::new();
        for s in specs {
            if s.shape.len() != 2 && s.shape.len() != 4 {
                continue;
            }
            let Some(full) = s.name.strip_suffix(".weight") else { continue };
            let Some((comp, m)) = full.split_once('/') else { continue };
            let t = (s.name.clone(), s.shape.clone());
            let mut keys = Vec::new();
            match comp {
                "unet" => {
                    keys.push(format!("lora_unet_{}", m.replace('.', "_")));
                    if let Some(o) = unet_original_module(m, &layout) {
                        keys.push(format!("lora_unet_{}", o.replace('.', "_")));
                    }
                    keys.push(format!("unet.{m}"));
                    keys.push(m.to_string());
                }
                "text_encoder" => {
                    keys.push(format!("lora_te_text_model_{}", m.replace('.', "_")));
                    keys.push(format!("lora_te1_text_model_{}", m.replace('.', "_")));
                    keys.push(format!("text_encoder.text_model.{m}"));
                    keys.push(format!("text_encoder.{m}"));
                }
                // SDXL's second text encoder (OpenCLIP bigG as CLIPTextModelWithProjection):
                // kohya `lora_te2_…`, diffusers / PEFT `text_encoder_2.…`.
                "text_encoder_2" => {
                    keys.push(format!("lora_te2_text_model_{}", m.replace('.', "_")));
                    keys.push(format!("text_encoder_2.text_model.{m}"));
                    keys.push(format!("text_encoder_2.{m}"));
                }
                _ => continue,
            }
            for k in keys {
                by_key.insert(k, t.clone());
            }
        }
        Targets { by_key }
    }
    fn get(&self, module_key: &str) -> Option<&(String, Vec<usize>)> {
        self.by_key.get(module_key)
    }
}

#[derive(Default)]
struct Pending {
    target: String,
    shape: Vec<usize>,
    up: Option<Tensor>,
    down: Option<Tensor>,
    alpha: Option<f32>,
}

/// Streams one LoRA file onto the GPU (like the weight [`crate::weights::Loader`]).
pub struct LoraLoader {
    gpu: Gpu,
    name: String,
    file: String,
    targets: Targets,
    dtypes: Dtypes,
    parser: StreamParser,
    /// tensor key → (module key, part)
    plan: HashMap<String, (String, Part)>,
    modules: BTreeMap<String, Pending>,
    format: Option<LoraFormat>,
    unmatched: Vec<String>,
    /// PEFT metadata: the file's lora_alpha (and per-module alpha_pattern).
    meta_alpha: Option<f32>,
    alpha_pattern: HashMap<String, f32>,
    hasher: Sha256,
    /// Bytes seen and the file's first 8 bytes (the header length).
    seen: u64,
    len_bytes: Vec<u8>,
}

fn scalar(src: SrcDType, b: &[u8]) -> Option<f32> {
    match src {
        SrcDType::F32 if b.len() == 4 => Some(f32::from_le_bytes(b.try_into().ok()?)),
        SrcDType::F16 if b.len() == 2 => Some(half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        SrcDType::BF16 if b.len() == 2 => Some(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        _ => None,
    }
}

fn format_err(file: &str, detail: String) -> Error {
    WeightError::Format { file: file.into(), detail }.into()
}

fn listed(keys: &[String], n: usize) -> String {
    let shown: Vec<&str> = keys.iter().take(n).map(|s| s.as_str()).collect();
    format!("{}{}", shown.join(", "), if keys.len() > n { ", …" } else { "" })
}

impl LoraLoader {
    /// A loader for a LoRA of the model with configs `cfg` and storage `dtypes`.
    pub fn new(gpu: &Gpu, cfg: &Configs, dtypes: Dtypes, name: &str, file: &str, total_len: Option<u64>) -> LoraLoader {
        LoraLoader {
            gpu: gpu.clone(),
            name: name.into(),
            file: file.into(),
            targets: Targets::new(cfg),
            dtypes,
            parser: StreamParser::new(file, total_len),
            plan: HashMap::new(),
            modules: BTreeMap::new(),
            format: None,
            unmatched: Vec::new(),
            meta_alpha: None,
            alpha_pattern: HashMap::new(),
            hasher: Sha256::new(),
            seen: 0,
            len_bytes: Vec::new(),
        }
    }

    fn hash_bytes(&mut self, chunk: &[u8]) {
        // The file's first 8 bytes give the header length; the hash covers what follows it.
        let mut c = chunk;
        while self.len_bytes.len() < 8 && !c.is_empty() {
            self.len_bytes.push(c[0]);
            c = &c[1..];
            self.seen += 1;
        }
        if self.len_bytes.len() < 8 {
            return;
        }
        let data_start = 8u64.saturating_add(u64::from_le_bytes(self.len_bytes[..8].try_into().unwrap()));
        let skip = data_start.saturating_sub(self.seen).min(c.len() as u64) as usize;
        self.hasher.update(&c[skip..]);
        self.seen += c.len() as u64;
    }

    fn on_header(&mut self, h: &crate::weights::stream::Header) -> Result<Vec<String>> {
        if let Some(m) = h.metadata.get("lora_adapter_metadata") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(m) {
                for k in ["lora_alpha", "unet.lora_alpha", "text_encoder.lora_alpha", "text_encoder_2.lora_alpha"] {
                    if let Some(a) = v.get(k).and_then(|a| a.as_f64()) {
                        self.meta_alpha = Some(a as f32);
                    }
                }
                for k in ["alpha_pattern", "unet.alpha_pattern"] {
                    if let Some(p) = v.get(k).and_then(|p| p.as_object()) {
                        for (m, a) in p {
                            if let Some(a) = a.as_f64() {
                                self.alpha_pattern.insert(m.clone(), a as f32);
                            }
                        }
                    }
                }
            }
        }
        let mut unsupported: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut skip = Vec::new();
        for t in &h.tensors {
            match split_key(&t.name) {
                Err(what) => unsupported.entry(what).or_default().push(t.name.clone()),
                Ok(None) => unknown.push(t.name.clone()),
                Ok(Some((m, part, format))) => {
                    if self.format.is_none() || format == LoraFormat::Kohya && m.starts_with("lora_") {
                        self.format = Some(format);
                    }
                    let Some((target, shape)) = self.targets.get(&m) else {
                        self.unmatched.push(t.name.clone());
                        skip.push(t.name.clone());
                        continue;
                    };
                    if !t.dtype.is_float() {
                        return Err(WeightError::DType { file: self.file.clone(), tensor: t.name.clone(), dtype: format!("{:?}", t.dtype) }.into());
                    }
                    let p = self.modules.entry(m.clone()).or_default();
                    p.target = target.clone();
                    p.shape = shape.clone();
                    let bad = |why: String| -> Result<Vec<String>> {
                        Err(format_err(&self.file, format!("tensor {} has shape {:?}, but {} is {:?}: {why} (a LoRA for another model?)", t.name, t.shape, target, shape)))
                    };
                    let cols: usize = shape[1..].iter().product();
                    match part {
                        Part::Alpha if t.shape.iter().product::<usize>() != 1 => return bad("alpha must be one number".into()),
                        Part::Down if t.shape.len() < 2 || t.shape[1..].iter().product::<usize>() != cols => return bad(format!("lora_down must be [rank, {}]", shape[1..].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))),
                        Part::Up if t.shape.len() < 2 || t.shape[0] != shape[0] || t.shape[2..].iter().any(|&d| d != 1) => return bad(format!("lora_up must be [{}, rank] (1×1 kernels)", shape[0])),
                        _ => {}
                    }
                    if t.shape.first() == Some(&0) || t.shape.get(1) == Some(&0) {
                        return bad("a LoRA of rank 0".into());
                    }
                    self.plan.insert(t.name.clone(), (m, part));
                }
            }
        }
        if let Some((what, keys)) = unsupported.iter().next() {
            let n: usize = unsupported.values().map(|v| v.len()).sum();
            return Err(format_err(
                &self.file,
                format!("{what} is not supported (only LoRA: lora_down/lora_up/alpha or lora_A/lora_B): {n} such key(s), e.g. {}", listed(keys, 3)),
            ));
        }
        if !unknown.is_empty() {
            return Err(format_err(
                &self.file,
                format!("not a LoRA file this version understands: {} key(s) of no known LoRA pattern, e.g. {} (supported: kohya lora_down/lora_up/alpha, PEFT lora_A/lora_B, diffusers lora.down/lora.up)", unknown.len(), listed(&unknown, 3)),
            ));
        }
        if self.plan.is_empty() {
            return Err(format_err(
                &self.file,
                if self.unmatched.is_empty() {
                    "the file holds no LoRA tensors".into()
                } else {
                    format!("none of its {} LoRA keys matches a module of this model (a LoRA for another model family?): {}", self.unmatched.len(), listed(&self.unmatched, 5))
                },
            ));
        }
        Ok(skip)
    }

    /// The next bytes of the file.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        self.hash_bytes(chunk);
        let events = self.parser.feed(chunk)?;
        for ev in events {
            match ev {
                Event::Header(h) => {
                    for s in self.on_header(&h)? {
                        self.parser.skip(&s);
                    }
                }
                Event::Tensor(info, data) => {
                    let Some((m, part)) = self.plan.get(&info.name).cloned() else { continue };
                    let p = self.modules.get_mut(&m).expect("planned");
                    let dtype = self.dtypes.of(&p.target);
                    match part {
                        Part::Alpha => {
                            let a = scalar(info.dtype, &data).ok_or_else(|| format_err(&self.file, format!("tensor {}: alpha is not a number", info.name)))?;
                            p.alpha = Some(a);
                        }
                        Part::Down | Part::Up => {
                            let bytes = convert(info.dtype, &data, dtype);
                            let shape = [info.shape[0], info.shape[1..].iter().product()];
                            let t = self.gpu.upload_raw(&shape, dtype, &bytes)?;
                            if part == Part::Down {
                                p.down = Some(t);
                            } else {
                                p.up = Some(t);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The file ended: every module needs both factors of one rank.
    pub fn finish(mut self) -> Result<Lora> {
        self.parser.finish()?;
        let mut modules = Vec::new();
        for (m, p) in std::mem::take(&mut self.modules) {
            let (Some(up), Some(down)) = (p.up, p.down) else {
                return Err(format_err(&self.file, format!("LoRA module {m} has no {}", if self.plan.values().any(|(k, part)| k == &m && *part == Part::Up) { "lora_down / lora_A" } else { "lora_up / lora_B" })));
            };
            if up.shape()[1] != down.shape()[0] {
                return Err(format_err(&self.file, format!("LoRA module {m}: lora_up {:?} and lora_down {:?} have different ranks", up.shape(), down.shape())));
            }
            let short = m.strip_prefix("unet.").unwrap_or(&m);
            let alpha = p.alpha.or_else(|| self.alpha_pattern.get(short).copied()).or(self.meta_alpha);
            modules.push(LoraModule { target: p.target, up, down, alpha });
        }
        let mut warnings = Vec::new();
        if !self.unmatched.is_empty() {
            warnings.push(format!("LoRA {}: {} key(s) match no module of this model and were ignored: {}", self.name, self.unmatched.len(), listed(&self.unmatched, 20)));
        }
        let hash: String = self.hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
        Ok(Lora { name: self.name, file: self.file, format: self.format.unwrap_or(LoraFormat::Kohya), modules, hash, warnings })
    }
}

/// One merged contribution: (LoRA name, module index, effective factor scale·alpha/rank).
type Contribution = (String, usize, u32);

/// The LoRAs of a model: loaded files, the active set, and the base copies that make undo exact.
pub struct LoraState {
    loaded: Vec<Lora>,
    active: Vec<(String, f32)>,
    /// Stored weight name → the weight before any merge.
    base: HashMap<String, Tensor>,
    /// Stored weight name → what is merged into it now.
    merged: HashMap<String, Vec<Contribution>>,
    /// Keep base copies (exact undo, costs one copy of each changed weight); false: merge in
    /// place once (the CLI).
    pub keep_base: bool,
    /// Unfused part name → (fused weight name, row offset): the model's fusions, worked out
    /// from its configs at the first merge.
    fused_parts: Option<HashMap<String, (String, usize)>>,
}

impl Default for LoraState {
    fn default() -> Self {
        LoraState { loaded: Vec::new(), active: Vec::new(), base: HashMap::new(), merged: HashMap::new(), keep_base: true, fused_parts: None }
    }
}

/// Unfused part name → (fused weight name, row offset) for every fusion of a model.
fn fused_parts_of(cfg: &Configs) -> HashMap<String, (String, usize)> {
    let (_, _, _, specs) = build(cfg);
    let spec_rows: HashMap<&str, usize> = specs.iter().map(|s| (s.name.as_str(), s.shape[0])).collect();
    let mut parts = HashMap::new();
    for f in build_fusions(cfg) {
        let mut offset = 0;
        for p in &f.parts {
            parts.insert(p.clone(), (f.name.clone(), offset));
            offset += spec_rows.get(p.as_str()).copied().unwrap_or(0);
        }
    }
    parts
}

/// What [`LoraState::apply`] changed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MergeReport {
    /// Weights rebuilt (merged or restored).
    pub tensors: usize,
    /// Module merges run on the GPU.
    pub merges: usize,
    pub unet_changed: bool,
    pub text_encoder_changed: bool,
}

impl LoraState {
    pub fn loaded(&self) -> &[Lora] {
        &self.loaded
    }
    pub fn get(&self, name: &str) -> Option<&Lora> {
        self.loaded.iter().find(|l| l.name == name)
    }
    /// The active LoRAs with their scales (scale 0 is not active).
    pub fn active(&self) -> &[(String, f32)] {
        &self.active
    }
    /// GPU bytes held for LoRAs: their factors and the base copies.
    pub fn bytes(&self) -> u64 {
        self.loaded.iter().map(|l| l.bytes()).sum::<u64>() + self.base_bytes()
    }
    /// GPU bytes of the base copies alone.
    pub fn base_bytes(&self) -> u64 {
        self.base.values().map(|t| t.bytes()).sum()
    }
    /// Add a loaded LoRA (replacing one of the same name, which must not be active).
    pub fn add(&mut self, lora: Lora) -> Result<()> {
        if self.active.iter().any(|(n, _)| n == &lora.name) {
            return Err(Error::Invalid(format!("LoRA {} is active: deactivate it before loading another file under its name", lora.name)));
        }
        self.loaded.retain(|l| l.name != lora.name);
        self.loaded.push(lora);
        Ok(())
    }
    /// Drop a loaded LoRA (it must not be active).
    pub fn remove(&mut self, name: &str) -> Result<bool> {
        if self.active.iter().any(|(n, _)| n == name) {
            return Err(Error::Invalid(format!("LoRA {name} is active: generate without it (or set its scale to 0) before removing it")));
        }
        let before = self.loaded.len();
        self.loaded.retain(|l| l.name != name);
        Ok(self.loaded.len() != before)
    }

    /// Forget what was merged into the weights of `component` (they were freed or replaced by
    /// fresh base weights): its base copies go.
    pub fn forget_component(&mut self, component: &str) {
        let p = format!("{component}/");
        self.base.retain(|n, _| !n.starts_with(&p));
        self.merged.retain(|n, _| !n.starts_with(&p));
    }
}

/// Where the unfused weight `target` is stored: (stored name, rows).
fn stored_of(weights: &Weights, fused_parts: &HashMap<String, (String, usize)>, target: &str) -> Option<(String, MergeRows)> {
    let interleave = stored_interleaved(target);
    if weights.find(target).is_some() {
        return Some((target.to_string(), MergeRows { offset: 0, interleave }));
    }
    let (fused, offset) = fused_parts.get(target)?;
    weights.find(fused)?;
    Some((fused.clone(), MergeRows { offset: *offset, interleave }))
}

impl super::StableDiffusion {
    /// A loader for a LoRA file of this model.
    pub fn lora_loader(&self, gpu: &Gpu, name: &str, file: &str, total_len: Option<u64>) -> LoraLoader {
        LoraLoader::new(gpu, &self.cfg, self.dtypes, name, file, total_len)
    }

    /// Make `wanted` (LoRA name, scale) the active LoRAs: each weight whose contributions change
    /// is rebuilt from its base copy and the new contributions merged in; a weight no active
    /// LoRA changes any more gets its base back. Scale 0 leaves a LoRA out. Unknown names are
    /// an error; the same set again does nothing.
    pub fn set_loras(&mut self, gpu: &Gpu, wanted: &[(String, f32)]) -> Result<MergeReport> {
        let mut active: Vec<(String, f32)> = Vec::new();
        for (n, s) in wanted {
            if !s.is_finite() {
                return Err(Error::Invalid(format!("LoRA {n}: scale {s} is not a number")));
            }
            if self.loras.get(n).is_none() {
                let known: Vec<&str> = self.loras.loaded.iter().map(|l| l.name.as_str()).collect();
                return Err(Error::Invalid(format!("LoRA {n:?} is not loaded (loaded: {})", if known.is_empty() { "none".into() } else { known.join(", ") })));
            }
            if *s != 0.0 {
                match active.iter_mut().find(|(m, _)| m == n) {
                    Some(a) => a.1 = *s,
                    None => active.push((n.clone(), *s)),
                }
            }
        }
        self.loras.active = active;
        self.apply_loras(gpu)
    }

    /// Bring the weights in line with the active LoRAs (after [`Self::set_loras`], or after the
    /// text encoder's weights were put back).
    pub fn apply_loras(&mut self, gpu: &Gpu) -> Result<MergeReport> {
        if self.loras.fused_parts.is_none() {
            self.loras.fused_parts = Some(fused_parts_of(&self.cfg));
        }
        let fused_parts = self.loras.fused_parts.as_ref().expect("just set");
        let mut want: HashMap<String, Vec<Contribution>> = HashMap::new();
        let mut rows_of: HashMap<String, Vec<MergeRows>> = HashMap::new();
        for (name, scale) in &self.loras.active {
            let lora = self.loras.get(name).expect("checked");
            for (i, m) in lora.modules.iter().enumerate() {
                let Some((stored, rows)) = stored_of(&self.weights, fused_parts, &m.target) else {
                    // The text encoder was freed: its weights are merged when they come back.
                    continue;
                };
                want.entry(stored.clone()).or_default().push((name.clone(), i, (scale * m.factor()).to_bits()));
                rows_of.entry(stored).or_default().push(rows);
            }
        }
        let mut names: Vec<String> = want.keys().chain(self.loras.merged.keys()).cloned().collect::<HashSet<_>>().into_iter().collect();
        names.sort();
        let mut report = MergeReport::default();
        for stored in names {
            let new = want.get(&stored);
            if new == self.loras.merged.get(&stored) {
                continue;
            }
            let Some(current) = self.weights.find(&stored).cloned() else {
                self.loras.merged.remove(&stored);
                self.loras.base.remove(&stored);
                continue;
            };
            report.tensors += 1;
            if stored.starts_with("text_encoder") {
                report.text_encoder_changed = true;
            } else {
                report.unet_changed = true;
            }
            if !self.loras.keep_base {
                if self.loras.merged.contains_key(&stored) {
                    return Err(Error::Invalid("the LoRAs were merged without keeping the base weights (keep_base false): load the model again to change them".into()));
                }
                for (k, (name, i, f)) in new.into_iter().flatten().enumerate() {
                    let m = &self.loras.get(name).expect("active").modules[*i];
                    ops::lora_merge(gpu, &current, &m.up, &m.down, rows_of[&stored][k], f32::from_bits(*f))?;
                    report.merges += 1;
                }
                self.loras.merged.insert(stored, new.cloned().unwrap_or_default());
                continue;
            }
            let base = match self.loras.base.get(&stored) {
                Some(b) => b.clone(),
                None => current,
            };
            match new {
                None => {
                    self.weights.insert(stored.clone(), base);
                    self.loras.base.remove(&stored);
                    self.loras.merged.remove(&stored);
                }
                Some(list) => {
                    let w = ops::cast(gpu, &base, base.dtype())?;
                    for (k, (name, i, f)) in list.iter().enumerate() {
                        let m = &self.loras.get(name).expect("active").modules[*i];
                        ops::lora_merge(gpu, &w, &m.up, &m.down, rows_of[&stored][k], f32::from_bits(*f))?;
                        report.merges += 1;
                    }
                    self.weights.insert(stored.clone(), w);
                    self.loras.base.insert(stored.clone(), base);
                    self.loras.merged.insert(stored, list.clone());
                }
            }
        }
        gpu.flush()?;
        gpu.trim_pool();
        Ok(report)
    }
}

/// Split `FILE[:SCALE]` (the CLI's `--lora`): the scale after the last `:` when it is a number
/// (so `C:\loras\x.safetensors` stays a path), else 1.
pub fn parse_file_scale(s: &str) -> (String, f32) {
    if let Some((f, sc)) = s.rsplit_once(':') {
        if let Ok(v) = sc.parse::<f32>() {
            if !f.is_empty() {
                return (f.to_string(), v);
            }
        }
    }
    (s.to_string(), 1.0)
}

/// The LoRAs of a generation: `requested` (name, scale), then the prompt's A1111 tags
/// `<lora:NAME:SCALE>` (which set the scale of a requested one, or add a loaded one).
/// Tags naming no loaded LoRA are warnings, as in A1111.
pub fn active_set(requested: &[(String, f32)], prompt: &str, state: &LoraState) -> (Vec<(String, f32)>, Vec<String>) {
    let mut out: Vec<(String, f32)> = requested.to_vec();
    let mut warnings = Vec::new();
    for (name, scale) in crate::prompt::extract_loras(prompt).1 {
        if state.get(&name).is_none() {
            warnings.push(format!("the prompt names LoRA {name:?}, which is not loaded: ignored"));
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 = scale,
            None => out.push((name, scale)),
        }
    }
    (out, warnings)
}

/// A LoRA's name from its file name (A1111: the file name without extension).
pub fn name_of_file(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    base.strip_suffix(".safetensors").unwrap_or(base).to_string()
}

#[cfg(not(target_arch = "wasm32"))]
impl super::StableDiffusion {
    /// Load a LoRA file from disk under `name` (not yet active).
    pub fn load_lora(&mut self, gpu: &Gpu, path: &std::path::Path, name: &str) -> Result<&Lora> {
        use std::io::Read;
        let file = path.display().to_string();
        crate::weights::source::refuse_pickle(&file)?;
        let io = |e: std::io::Error| WeightError::Io { file: file.clone(), detail: e.to_string() };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut loader = self.lora_loader(gpu, name, &file, Some(len));
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            loader.feed(&buf[..n])?;
        }
        let lora = loader.finish()?;
        self.loras.add(lora)?;
        Ok(self.loras.get(name).expect("just added"))
    }
}

