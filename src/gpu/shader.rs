//! Shader assembly. Every `shaders/*.wgsl` file holds one op family:
//!
//! ```text
//! // header comment: what the family computes, bindings and their shapes
//! <code shared by the family>
//! //#kernel NAME binding:access[:dtype] ...
//! <the kernel's code>
//! ```
//!
//! A kernel line lists its tensor bindings in order (binding 0 is always the
//! uniform `P: Params`). `access` is `read` or `write`; a binding with a fixed
//! dtype (`:f32`, `:u32`) ignores the dtype of the tensor passed in. For every
//! other binding `NAME` this module generates, per storage dtype:
//! `NAME_ld(i) -> f32` (and `NAME_ld2(i) -> vec2<f32>`, `i` even;
//! `NAME_ldv4(i) -> vec4<f32>`, elements `i .. i+3`, any `i`: four consecutive scalar
//! loads for f32 and native f16, two u32 loads for packed f16 when `i` is even and
//! three when it is odd), and for written ones `NAME_st2(i, a, b)` (writes `i` and `i+1`, `i` even) and
//! `NAME_st(i, v)`. f16 without `shader-f16` is two halves packed in one u32
//! (`unpack2x16float` / `pack2x16float`, f32 arithmetic); there `NAME_st` is a
//! read-modify-write that is only safe for the thread owning the whole word,
//! which is why kernels write f16 outputs in pairs.
//!
//! A kernel that defines `fn compute(i: u32) -> f32` and no entry point is a
//! *map* kernel: one output element of `y` per call, `P.numel` outputs; the
//! entry point is generated here (pairs of outputs per thread for f16).
//! `//#include FILE` inside a file pastes another file of the family.
//!
//! `//#if f16` … `//#else` … `//#endif` (nestable) keeps the first part when the
//! kernel is assembled for native f16 storage (`shader-f16`, `enable f16;` emitted,
//! an f16 binding present) and the `#else` part otherwise, so f16 arithmetic never
//! reaches the f32 and packed-f16 variants (which browsers without `shader-f16`
//! must validate). The directive lines themselves are dropped.
//!
//! `//#if subgroups` … `//#else` … `//#endif` likewise keeps the first part when the
//! kernel is assembled with [`ShaderVariant::subgroups`] (the adapter has `subgroups` and
//! [`super::GpuOptions::subgroups`] allows them) and the `#else` part (the portable
//! shared-memory path) otherwise. A kernel without such a section has one variant only
//! ([`KernelSource::subgroup_variant`] is false and the flag is ignored; map kernels count
//! as without one when the section is in the file's shared code). Where the WGSL
//! front end needs it ([`SUBGROUPS_ENABLE`]: browsers) `enable subgroups;` is emitted;
//! naga (native wgpu) rejects that directive and accepts the builtins without it.

use super::tensor::DType;
use crate::error::{Error, Result};

/// The shader files, embedded at build time.
pub fn shader_files() -> &'static [(&'static str, &'static str)] {
    &[
        ("attention.wgsl", include_str!("../../shaders/attention.wgsl")),
        ("attention_common.wgsl", include_str!("../../shaders/attention_common.wgsl")), ("attention_v2.wgsl", include_str!("../../shaders/attention_v2.wgsl")), ("attention_v2_core.wgsl", include_str!("../../shaders/attention_v2_core.wgsl")),
        ("conv2d.wgsl", include_str!("../../shaders/conv2d.wgsl")),
        ("elementwise.wgsl", include_str!("../../shaders/elementwise.wgsl")),
        ("embedding.wgsl", include_str!("../../shaders/embedding.wgsl")),
        ("activation.wgsl", include_str!("../../shaders/activation.wgsl")),
        ("gemm_tile.wgsl", include_str!("../../shaders/gemm_tile.wgsl")),
        ("gemm_quads.wgsl", include_str!("../../shaders/gemm_quads.wgsl")), ("gemm_v2.wgsl", include_str!("../../shaders/gemm_v2.wgsl")), ("gemm_reduce.wgsl", include_str!("../../shaders/gemm_reduce.wgsl")),
        ("matmul_load.wgsl", include_str!("../../shaders/matmul_load.wgsl")), ("conv2d_load.wgsl", include_str!("../../shaders/conv2d_load.wgsl")),
        ("layout.wgsl", include_str!("../../shaders/layout.wgsl")),
        ("lora.wgsl", include_str!("../../shaders/lora.wgsl")),
        ("matmul.wgsl", include_str!("../../shaders/matmul.wgsl")),
        ("norm.wgsl", include_str!("../../shaders/norm.wgsl")),
        ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
        ("sampler.wgsl", include_str!("../../shaders/sampler.wgsl")),
        ("softmax.wgsl", include_str!("../../shaders/softmax.wgsl")),
    ]
}

/// Workgroup size of generated map kernels.
pub const MAP_WG: u32 = 256;

/// Whether a subgroup variant starts with `enable subgroups;`: browsers' WGSL requires the
/// directive before subgroup builtins; naga 30 (native wgpu) rejects it as unimplemented.
pub const SUBGROUPS_ENABLE: bool = cfg!(target_arch = "wasm32");

/// What one kernel is assembled for (besides its binding dtypes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShaderVariant {
    /// f16 tensors use `array<f16>` (needs `shader-f16`).
    pub native_f16: bool,
    /// Keep the `//#if subgroups` sections (needs the `subgroups` feature).
    pub subgroups: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub access: Access,
    /// Fixed dtype, if the kernel line gives one.
    pub fixed: Option<DType>,
}

/// One kernel of a file: its name, bindings and code.
#[derive(Clone, Debug)]
pub struct KernelSource {
    pub file: &'static str,
    pub name: String,
    pub bindings: Vec<Binding>,
    pub common: String,
    pub body: String,
    /// The kernel has a `//#if subgroups` section, or its file's shared code has one and the
    /// kernel has an entry point of its own (map kernels do not use shared reductions).
    pub subgroup_variant: bool,
}

impl KernelSource {
    pub fn is_map(&self) -> bool {
        self.body.contains("fn compute(") && !self.body.contains("@compute")
    }
}

fn file_text(file: &str) -> Result<&'static str> {
    shader_files()
        .iter()
        .find(|(n, _)| *n == file)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Shader(file.into(), "no such shader file".into()))
}

fn expand_includes(file: &str, text: &str, depth: usize) -> Result<String> {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(inc) = line.trim().strip_prefix("//#include ") {
            if depth > 4 {
                return Err(Error::Shader(file.into(), "include nesting too deep".into()));
            }
            out.push_str(&expand_includes(inc.trim(), file_text(inc.trim())?, depth + 1)?);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

fn parse_binding(file: &str, spec: &str) -> Result<Binding> {
    let parts: Vec<&str> = spec.split(':').collect();
    let bad = || Error::Shader(file.into(), format!("bad binding spec `{spec}`"));
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let access = match parts[1] {
        "read" => Access::Read,
        "write" => Access::Write,
        _ => return Err(bad()),
    };
    let fixed = match parts.get(2) {
        None => None,
        Some(&"f32") => Some(DType::F32),
        Some(&"u32") => Some(DType::U32),
        Some(_) => return Err(bad()),
    };
    Ok(Binding { name: parts[0].to_string(), access, fixed })
}

/// All kernels of all files (used by the naga test and the pipeline cache).
pub fn kernel_list() -> Result<Vec<KernelSource>> {
    let mut out = Vec::new();
    for (file, _) in shader_files() {
        out.extend(kernels_of(file)?);
    }
    Ok(out)
}

/// The kernels of one file (a file without `//#kernel` lines is an include).
pub fn kernels_of(file: &'static str) -> Result<Vec<KernelSource>> {
    let text = expand_includes(file, file_text(file)?, 0)?;
    let mut common = String::new();
    let mut kernels: Vec<KernelSource> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("//#kernel ") {
            let mut words = rest.split_whitespace();
            let name = words
                .next()
                .ok_or_else(|| Error::Shader(file.into(), "kernel line without a name".into()))?;
            let bindings = words.map(|w| parse_binding(file, w)).collect::<Result<Vec<_>>>()?;
            kernels.push(KernelSource {
                file,
                name: name.to_string(),
                bindings,
                common: common.clone(),
                body: String::new(),
                subgroup_variant: false,
            });
        } else if let Some(k) = kernels.last_mut() {
            k.body.push_str(line);
            k.body.push('\n');
        } else {
            common.push_str(line);
            common.push('\n');
        }
    }
    let has_sg = |t: &str| t.lines().any(|l| l.trim().strip_prefix("//#if ").is_some_and(|c| c.trim() == "subgroups"));
    for k in &mut kernels {
        // Map kernels (generated entry point) never use the shared reductions.
        k.subgroup_variant = has_sg(&k.body) || (has_sg(&k.common) && !k.is_map());
    }
    Ok(kernels)
}

/// Full WGSL for one kernel with the given dtypes for its bindings (in order).
/// `native_f16`: f16 tensors use `array<f16>` (needs the `shader-f16` feature).
pub fn assemble(k: &KernelSource, dtypes: &[DType], native_f16: bool) -> Result<String> {
    assemble_variant(k, dtypes, ShaderVariant { native_f16, subgroups: false })
}

/// Full WGSL for one kernel with the given dtypes for its bindings (in order), for
/// `variant` (the subgroup flag counts only for kernels with a subgroup variant).
pub fn assemble_variant(k: &KernelSource, dtypes: &[DType], variant: ShaderVariant) -> Result<String> {
    let native_f16 = variant.native_f16;
    let subgroups = variant.subgroups && k.subgroup_variant;
    if dtypes.len() != k.bindings.len() {
        return Err(Error::Shader(
            k.file.into(),
            format!("kernel {} has {} bindings, {} dtypes given", k.name, k.bindings.len(), dtypes.len()),
        ));
    }
    let mut head = String::new();
    let eff: Vec<DType> =
        k.bindings.iter().zip(dtypes).map(|(b, d)| b.fixed.unwrap_or(*d)).collect();
    let uses_native = native_f16 && eff.iter().any(|d| *d == DType::F16);
    if uses_native {
        head.push_str("enable f16;\n");
    }
    if subgroups && SUBGROUPS_ENABLE {
        head.push_str("enable subgroups;\n");
    }
    head.push_str(&format!("// generated: {}:{} dtypes {:?} native_f16={} subgroups={}\n", k.file, k.name, eff, uses_native, subgroups));
    head.push_str("@group(0) @binding(0) var<uniform> P: Params;\n");
    for (i, (b, d)) in k.bindings.iter().zip(&eff).enumerate() {
        let n = &b.name;
        let acc = match b.access {
            Access::Read => "read",
            Access::Write => "read_write",
        };
        let elem = match (d, uses_native) {
            (DType::F32, _) => "f32",
            (DType::U32, _) => "u32",
            (DType::F16, true) => "f16",
            (DType::F16, false) => "u32",
        };
        head.push_str(&format!(
            "@group(0) @binding({}) var<storage, {acc}> {n}_buf: array<{elem}>;\n",
            i + 1
        ));
        let w = b.access == Access::Write;
        match (d, uses_native) {
            (DType::U32, _) => {
                head.push_str(&format!("fn {n}_ldu(i: u32) -> u32 {{ return {n}_buf[i]; }}\n"));
                if w {
                    head.push_str(&format!("fn {n}_stu(i: u32, v: u32) {{ {n}_buf[i] = v; }}\n"));
                }
            }
            (DType::F32, _) => {
                head.push_str(&format!(
                    "fn {n}_ld(i: u32) -> f32 {{ return {n}_buf[i]; }}\n\
                     fn {n}_ld2(i: u32) -> vec2<f32> {{ return vec2<f32>({n}_buf[i], {n}_buf[i + 1u]); }}\n\
                     fn {n}_ldv4(i: u32) -> vec4<f32> {{ return vec4<f32>({n}_buf[i], {n}_buf[i + 1u], {n}_buf[i + 2u], {n}_buf[i + 3u]); }}\n"
                ));
                if w {
                    head.push_str(&format!(
                        "fn {n}_st(i: u32, v: f32) {{ {n}_buf[i] = v; }}\n\
                         fn {n}_st2(i: u32, a: f32, b: f32) {{ {n}_buf[i] = a; {n}_buf[i + 1u] = b; }}\n"
                    ));
                }
            }
            (DType::F16, true) => {
                head.push_str(&format!(
                    "fn {n}_ld(i: u32) -> f32 {{ return f32({n}_buf[i]); }}\n\
                     fn {n}_ld2(i: u32) -> vec2<f32> {{ return vec2<f32>(f32({n}_buf[i]), f32({n}_buf[i + 1u])); }}\n\
                     fn {n}_ldv4(i: u32) -> vec4<f32> {{ return vec4<f32>(vec4<f16>({n}_buf[i], {n}_buf[i + 1u], {n}_buf[i + 2u], {n}_buf[i + 3u])); }}\n"
                ));
                if w {
                    head.push_str(&format!(
                        "fn {n}_st(i: u32, v: f32) {{ {n}_buf[i] = f16(v); }}\n\
                         fn {n}_st2(i: u32, a: f32, b: f32) {{ {n}_buf[i] = f16(a); {n}_buf[i + 1u] = f16(b); }}\n"
                    ));
                }
            }
            (DType::F16, false) => {
                head.push_str(&format!(
                    "fn {n}_ld(i: u32) -> f32 {{ let v = unpack2x16float({n}_buf[i >> 1u]); return select(v.x, v.y, (i & 1u) == 1u); }}\n\
                     fn {n}_ld2(i: u32) -> vec2<f32> {{ return unpack2x16float({n}_buf[i >> 1u]); }}\n\
                     fn {n}_ldv4(i: u32) -> vec4<f32> {{ let w = i >> 1u; let a = unpack2x16float({n}_buf[w]); let b = unpack2x16float({n}_buf[w + 1u]); if ((i & 1u) == 0u) {{ return vec4<f32>(a, b); }} return vec4<f32>(a.y, b, unpack2x16float({n}_buf[w + 2u]).x); }}\n"
                ));
                if w {
                    head.push_str(&format!(
                        "fn {n}_st2(i: u32, a: f32, b: f32) {{ {n}_buf[i >> 1u] = pack2x16float(vec2<f32>(a, b)); }}\n\
                         fn {n}_st(i: u32, v: f32) {{ var p = unpack2x16float({n}_buf[i >> 1u]); if ((i & 1u) == 1u) {{ p.y = v; }} else {{ p.x = v; }} {n}_buf[i >> 1u] = pack2x16float(p); }}\n"
                    ));
                }
            }
        }
    }
    let mut src = head;
    src.push_str(&select_variant(k, &k.common, uses_native, subgroups)?);
    src.push_str(&select_variant(k, &k.body, uses_native, subgroups)?);
    if k.is_map() {
        let pairs = k
            .bindings
            .iter()
            .zip(&eff)
            .any(|(b, d)| b.name == "y" && *d == DType::F16);
        src.push_str(&map_main(pairs));
    }
    Ok(src)
}

/// Resolves `//#if f16` / `//#if subgroups` / `//#else` / `//#endif` (see the module docs).
fn select_variant(k: &KernelSource, text: &str, native_f16: bool, subgroups: bool) -> Result<String> {
    let err = |m: &str| Err(Error::Shader(k.file.into(), format!("kernel {}: {m}", k.name)));
    // Per open `#if`: (this branch is kept, the enclosing code is kept, `#else` seen).
    let mut stack: Vec<(bool, bool, bool)> = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim();
        let live = stack.last().is_none_or(|&(on, outer, _)| on && outer);
        if let Some(cond) = t.strip_prefix("//#if ") {
            let on = match cond.trim() {
                "f16" => native_f16,
                "subgroups" => subgroups,
                c => return err(&format!("unknown condition `{c}`")),
            };
            stack.push((on, live, false));
        } else if t == "//#else" {
            match stack.last_mut() {
                Some(top) if !top.2 => *top = (!top.0, top.1, true),
                _ => return err("`//#else` without `//#if`"),
            }
        } else if t == "//#endif" {
            if stack.pop().is_none() {
                return err("`//#endif` without `//#if`");
            }
        } else if live {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return err("`//#if` without `//#endif`");
    }
    Ok(out)
}

fn map_main(pairs: bool) -> String {
    let wg = MAP_WG;
    if pairs {
        format!(
            "@compute @workgroup_size({wg})\n\
             fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n\
             \x20   let i = 2u * (gid.x + gid.y * nwg.x * {wg}u);\n\
             \x20   if (i >= P.numel) {{ return; }}\n\
             \x20   let a = compute(i);\n\
             \x20   var b = 0.0;\n\
             \x20   if (i + 1u < P.numel) {{ b = compute(i + 1u); }}\n\
             \x20   y_st2(i, a, b);\n\
             }}\n"
        )
    } else {
        format!(
            "@compute @workgroup_size({wg})\n\
             fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n\
             \x20   let i = gid.x + gid.y * nwg.x * {wg}u;\n\
             \x20   if (i >= P.numel) {{ return; }}\n\
             \x20   y_st(i, compute(i));\n\
             }}\n"
        )
    }
}
