//! Weights: streamed from safetensors straight into GPU storage, in every common layout
//! (diffusers folder with optional `.fp16` variant, HF sharded index, original
//! single-file checkpoint). Keys become diffusers names (see [`keymap`]).
pub mod keymap;
pub mod source;
pub mod stream;
pub mod synth;

use std::collections::{HashMap, HashSet};

use crate::gpu::{DType, Gpu, Tensor};
use stream::{Event, SrcDType, StreamParser};

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("{file}: {detail}")]
    Format { file: String, detail: String },
    #[error("{file}: tensor {tensor} has dtype {dtype}; weights must be F32, F16 or BF16")]
    DType { file: String, tensor: String, dtype: String },
    #[error("{file}: the file is truncated: it ends at byte {at} but tensor {tensor} needs bytes up to {needed}")]
    Truncated { file: String, tensor: String, at: u64, needed: u64 },
    #[error("{file}: tensor {tensor} has shape {got:?}, the model expects {expected:?}")]
    Shape { file: String, tensor: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{component}: {count} weight tensor(s) missing from {files}: {first}")]
    Missing { component: String, files: String, count: usize, first: String },
    #[error("{file}: not a Stable Diffusion {what}: none of its {count} tensors is one (first: {first})")]
    NotStableDiffusion { file: String, what: String, count: usize, first: String },
    #[error("{file}: pickle checkpoints (.ckpt, .bin, .pt, .pth) are refused: loading a pickle can run arbitrary code. Use the .safetensors version of the model (most repositories have one), or convert it once with a trusted tool.")]
    Pickle { file: String },
    #[error("{file}: {detail}")]
    Io { file: String, detail: String },
    #[error("{file}: {detail}")]
    Config { file: String, detail: String },
}

/// A handle to one weight: its slot in every [`Weights`]. Names are interned once per
/// process (the model's layers at build time, the loaders on insert), so the same name has
/// the same id in every `Weights` (one per model, the f32 VAE copy, a restore loader's) and
/// ids are unique across all the components one `Weights` holds. Forward passes index the
/// slot table with it ([`Weights::at`]): no string hashing, no allocation per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(u32);

/// name <-> id, for every weight name seen in this process (a few thousand per
/// architecture: bounded by the models built, never by the steps run).
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

static INTERNER: std::sync::Mutex<Option<Interner>> = std::sync::Mutex::new(None);

fn with_interner<R>(f: impl FnOnce(&mut Interner) -> R) -> R {
    let mut g = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Interner { ids: HashMap::new(), names: Vec::new() }))
}

impl WeightId {
    /// The id of `name` (made on first use).
    pub fn of(name: &str) -> WeightId {
        with_interner(|i| {
            if let Some(&id) = i.ids.get(name) {
                return WeightId(id);
            }
            let id = u32::try_from(i.names.len()).expect("fewer than 2^32 weight names");
            i.names.push(name.to_string());
            i.ids.insert(name.to_string(), id);
            WeightId(id)
        })
    }
    /// The id of `name` if any weight of that name was ever registered (makes none).
    pub fn lookup(name: &str) -> Option<WeightId> {
        with_interner(|i| i.ids.get(name).map(|&id| WeightId(id)))
    }
    /// The weight's diffusers name (for errors and the by-name paths; allocates).
    pub fn name(self) -> String {
        with_interner(|i| i.names[self.0 as usize].clone())
    }
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// Loaded weights: a slot table indexed by [`WeightId`] (the forward passes' path) that
/// loaders, LoRA merges, fusions and eviction fill and empty by diffusers name
/// (`unet/conv_in.weight`, …), which resolves to the same slot.
#[derive(Default, Clone)]
pub struct Weights {
    /// Slot `id` holds (name, tensor) of weight `id`, if loaded.
    slots: Vec<Option<(String, Tensor)>>,
    count: usize,
}

fn missing(name: String) -> crate::Error {
    crate::Error::from(WeightError::Missing {
        component: name.split('/').next().unwrap_or("").into(),
        files: "the loaded files".into(),
        count: 1,
        first: name,
    })
}

impl Weights {
    /// The weight `id` (the forward passes' lookup: an index, no hashing). The error names
    /// the tensor.
    pub fn at(&self, id: WeightId) -> crate::Result<&Tensor> {
        self.slot(id).ok_or_else(|| missing(id.name()))
    }
    /// The weight `id`, if loaded (no error built for a miss).
    pub fn slot(&self, id: WeightId) -> Option<&Tensor> {
        self.slots.get(id.index()).and_then(|s| s.as_ref()).map(|(_, t)| t)
    }
    pub fn get(&self, name: &str) -> crate::Result<&Tensor> {
        self.find(name).ok_or_else(|| missing(name.to_string()))
    }
    /// The weight `name`, if loaded (no error built for a miss).
    pub fn find(&self, name: &str) -> Option<&Tensor> {
        WeightId::lookup(name).and_then(|id| self.slot(id))
    }
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes of GPU storage held by the weights.
    pub fn bytes(&self) -> u64 {
        self.iter().map(|(_, t)| t.bytes()).sum()
    }
    /// Every weight (name, tensor), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.slots.iter().filter_map(|s| s.as_ref()).map(|(n, t)| (n, t))
    }
    pub fn insert(&mut self, name: String, t: Tensor) {
        let i = WeightId::of(&name).index();
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].replace((name, t)).is_none() {
            self.count += 1;
        }
    }
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let id = WeightId::lookup(name)?;
        let old = self.slots.get_mut(id.index())?.take()?;
        self.count -= 1;
        Some(old.1)
    }
    fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// A weight the model needs: diffusers name (with component prefix) and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// How the keys of a file are named.
#[derive(Clone, Debug)]
pub enum Layout {
    /// A diffusers component file (`unet`, `vae`, `text_encoder`), also one shard of it.
    Component(String),
    /// An original (CompVis / LDM) single-file checkpoint.
    SingleFile { unet: keymap::UnetLayout, vae: keymap::VaeLayout },
    /// madebyollin's original `taesd_encoder.safetensors` / `taesd_decoder.safetensors`.
    TaesdOriginal { decoder: bool },
}

/// Convert stored tensor bytes to GPU storage bytes of `dtype` (f32 or f16), without a
/// copy when the storage type is the stored one.
pub fn convert(src: SrcDType, bytes: &[u8], dtype: DType) -> std::borrow::Cow<'_, [u8]> {
    use half::{bf16, f16};
    use std::borrow::Cow;
    Cow::Owned(match (src, dtype) {
        (SrcDType::F32, DType::F32) | (SrcDType::F16, DType::F16) => return Cow::Borrowed(bytes),
        (SrcDType::F32, _) => bytes
            .chunks_exact(4)
            .flat_map(|c| f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
            .collect(),
        (SrcDType::F16, _) => bytes
            .chunks_exact(2)
            .flat_map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes())
            .collect(),
        (SrcDType::BF16, DType::F32) => bytes
            .chunks_exact(2)
            .flat_map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes())
            .collect(),
        (SrcDType::BF16, _) => bytes
            .chunks_exact(2)
            .flat_map(|c| f16::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32()).to_le_bytes())
            .collect(),
        _ => Vec::new(),
    })
}

/// Weights concatenated along their first dimension after loading (q/k/v projections
/// become one matmul): `parts` in order form `name`. A file may also hold `name` already
/// fused ([`Loader::accept_fused`]).
#[derive(Clone, Debug)]
pub struct Fusion {
    pub name: String,
    pub parts: Vec<String>,
}

/// Streams files into GPU tensors for a set of expected weights.
pub struct Loader {
    gpu: Gpu,
    /// Expected shape and GPU storage type of each weight.
    specs: HashMap<String, (Vec<usize>, DType)>,
    /// Weights a file may hold already fused (the model's concatenations of parts, e.g.
    /// OpenCLIP's `in_proj_weight` = q, k, v): fused name -> (shape, storage, parts).
    fused: HashMap<String, (Vec<usize>, DType, Vec<String>)>,
    loaded: Weights,
    /// Source key -> target name, for the file being read.
    targets: HashMap<String, String>,
    /// Source keys of the file being read that are stored transposed
    /// ([`keymap::single_file_transposed`]).
    transposed: HashSet<String>,
    unexpected: Vec<String>,
    files: Vec<String>,
    parser: Option<(StreamParser, Layout)>,
    /// Largest tensor buffered on the CPU so far (bytes).
    pub peak_tensor_bytes: u64,
}

impl Loader {
    /// Every weight stored as `dtype`.
    pub fn new(gpu: &Gpu, dtype: DType, specs: Vec<Spec>) -> Self {
        Self::with_dtypes(gpu, specs, |_| dtype)
    }

    /// Each weight stored as `dtype_of(its name)`.
    pub fn with_dtypes(gpu: &Gpu, specs: Vec<Spec>, dtype_of: impl Fn(&str) -> DType) -> Self {
        Loader {
            gpu: gpu.clone(),
            specs: specs.into_iter().map(|s| {
                let d = dtype_of(&s.name);
                (s.name, (s.shape, d))
            }).collect(),
            fused: HashMap::new(),
            loaded: Weights::default(),
            targets: HashMap::new(),
            transposed: HashSet::new(),
            unexpected: Vec::new(),
            files: Vec::new(),
            parser: None,
            peak_tensor_bytes: 0,
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Also accept the fused weights of `fusions` (each standing for all its parts) when a
    /// file holds them already concatenated.
    pub fn accept_fused(&mut self, fusions: &[Fusion]) {
        for f in fusions {
            let parts: Option<Vec<&(Vec<usize>, DType)>> = f.parts.iter().map(|p| self.specs.get(p)).collect();
            let Some(parts) = parts else { continue };
            let Some(first) = parts.first() else { continue };
            if parts.iter().any(|p| p.0.len() != first.0.len() || p.0[1..] != first.0[1..] || p.1 != first.1) {
                continue;
            }
            let mut shape = first.0.clone();
            shape[0] = parts.iter().map(|p| p.0[0]).sum();
            self.fused.insert(f.name.clone(), (shape, first.1, f.parts.clone()));
        }
    }

    fn spec_of(&self, name: &str) -> Option<(Vec<usize>, DType)> {
        self.specs.get(name).cloned().or_else(|| self.fused.get(name).map(|(s, d, _)| (s.clone(), *d)))
    }

    /// Start a file; `total_len` when known.
    pub fn begin(&mut self, file: &str, total_len: Option<u64>, layout: Layout) {
        self.files.push(file.to_string());
        self.targets.clear();
        self.transposed.clear();
        self.parser = Some((StreamParser::new(file, total_len), layout));
    }

    fn on_header(&mut self, h: &stream::Header) -> crate::Result<Vec<String>> {
        let (p, layout) = self.parser.as_ref().expect("begin() first");
        let file = p.file().to_string();
        let mut skip = Vec::new();
        let mut matched = 0;
        for t in &h.tensors {
            let target = match layout {
                Layout::Component(c) => Some(keymap::diffusers(c, &t.name)),
                Layout::SingleFile { unet, vae } => keymap::single_file(&t.name, unet, vae),
                Layout::TaesdOriginal { decoder } => keymap::taesd_original(&t.name, *decoder),
            };
            let Some(target) = target.filter(|n| self.specs.contains_key(n) || self.fused.contains_key(n)) else {
                if !keymap::harmless_extra(&t.name) {
                    self.unexpected.push(format!("{file}: {}", t.name));
                }
                skip.push(t.name.clone());
                continue;
            };
            let expected = &self.spec_of(&target).expect("a known target").0;
            let conv_as_linear = t.shape.len() == expected.len() + 2 && t.shape[..expected.len()] == expected[..] && t.shape[expected.len()..] == [1, 1];
            let transposed = matches!(layout, Layout::SingleFile { .. }) && keymap::single_file_transposed(&t.name);
            if transposed {
                // Stored [in, out]: the file's shape is the expected one reversed.
                let rev: Vec<usize> = expected.iter().rev().copied().collect();
                if expected.len() != 2 || t.shape != rev {
                    return Err(WeightError::Shape { file, tensor: t.name.clone(), expected: rev, got: t.shape.clone() }.into());
                }
                self.transposed.insert(t.name.clone());
            } else if &t.shape != expected && !conv_as_linear {
                return Err(WeightError::Shape { file, tensor: t.name.clone(), expected: expected.clone(), got: t.shape.clone() }.into());
            }
            if !t.dtype.is_float() {
                return Err(WeightError::DType { file, tensor: t.name.clone(), dtype: format!("{:?}", t.dtype) }.into());
            }
            matched += 1;
            self.targets.insert(t.name.clone(), target);
        }
        if matched == 0 && !h.tensors.is_empty() {
            let what = match layout {
                Layout::Component(c) => c.clone(),
                Layout::SingleFile { .. } => "checkpoint".into(),
                Layout::TaesdOriginal { decoder: true } => "TAESD decoder".into(),
                Layout::TaesdOriginal { decoder: false } => "TAESD encoder".into(),
            };
            return Err(WeightError::NotStableDiffusion { file, what, count: h.tensors.len(), first: h.tensors[0].name.clone() }.into());
        }
        Ok(skip)
    }

    /// Bytes the parser of the current file holds (its header or the tensor it is receiving).
    pub fn buffered_bytes(&self) -> usize {
        self.parser.as_ref().map_or(0, |(p, _)| p.buffered_capacity())
    }

    /// Feed the next bytes of the current file.
    pub fn feed(&mut self, chunk: &[u8]) -> crate::Result<()> {
        let events = self.parser.as_mut().expect("begin() first").0.feed(chunk)?;
        for ev in events {
            match ev {
                Event::Header(h) => {
                    let skip = self.on_header(&h)?;
                    let p = &mut self.parser.as_mut().unwrap().0;
                    for s in skip {
                        p.skip(&s);
                    }
                }
                Event::Tensor(info, data) => {
                    let Some(target) = self.targets.get(&info.name) else { continue };
                    self.peak_tensor_bytes = self.peak_tensor_bytes.max(data.len() as u64);
                    let (shape, dtype) = self.spec_of(target).expect("a known target");
                    // One copy of the tensor in memory at a time where possible (wasm32 has
                    // little room): no conversion copy when the stored type is the GPU's.
                    let mut bytes = convert(info.dtype, &data, dtype);
                    if keymap::stored_interleaved(target) {
                        bytes = std::borrow::Cow::Owned(keymap::interleave_halves(&bytes, shape[0]));
                    }
                    if self.transposed.contains(&info.name) {
                        // The file holds [shape[1], shape[0]].
                        bytes = std::borrow::Cow::Owned(keymap::transpose_2d(&bytes, shape[1], shape[0], if dtype == DType::F16 { 2 } else { 4 }));
                    }
                    let t = self.gpu.upload_raw(&shape, dtype, &bytes)?;
                    drop(bytes);
                    drop(data);
                    self.loaded.insert(target.clone(), t);
                }
            }
        }
        Ok(())
    }

    /// The current file ended.
    pub fn end(&mut self) -> crate::Result<()> {
        if let Some((p, _)) = self.parser.take() {
            p.finish()?;
        }
        Ok(())
    }

    /// All files read: every expected weight must be there. Returns the weights and
    /// the warnings (unexpected tensors).
    pub fn finish(self) -> crate::Result<(Weights, Vec<String>)> {
        // A part is there when it is, or when a fused weight holding it is.
        let covered: HashSet<&String> = self.fused.iter().filter(|(n, _)| self.loaded.contains(n)).flat_map(|(_, (_, _, parts))| parts.iter()).collect();
        let mut missing: Vec<&String> = self.specs.keys().filter(|k| !self.loaded.contains(k) && !covered.contains(k)).collect();
        if !missing.is_empty() {
            missing.sort();
            let comps: HashSet<&str> = missing.iter().map(|m| m.split('/').next().unwrap_or("")).collect();
            let mut comps: Vec<&str> = comps.into_iter().collect();
            comps.sort();
            return Err(WeightError::Missing {
                component: comps.join(", "),
                files: self.files.join(", "),
                count: missing.len(),
                first: missing.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            }
            .into());
        }
        let mut warnings = Vec::new();
        if !self.unexpected.is_empty() {
            let n = self.unexpected.len();
            let shown: Vec<&str> = self.unexpected.iter().take(20).map(|s| s.as_str()).collect();
            warnings.push(format!("{n} unexpected tensor(s) ignored: {}{}", shown.join(", "), if n > 20 { ", …" } else { "" }));
        }
        Ok((self.loaded, warnings))
    }
}
