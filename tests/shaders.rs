//! Every shaders/*.wgsl kernel, assembled for each storage variant, validates with naga.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::gpu::{assemble, assemble_variant, kernel_list, shader_files, DType, ShaderVariant, SUBGROUPS_ENABLE};

fn validate(name: &str, src: &str, f16: bool, subgroups: bool) -> Result<(), String> {
    // naga 30 rejects `enable subgroups;` (unimplemented), which browsers require and the
    // wasm32 build therefore emits: validate what follows it.
    let src = &if subgroups && SUBGROUPS_ENABLE {
        if !src.starts_with("enable subgroups;\n") && !src.contains("\nenable subgroups;\n") {
            return Err(format!("{name}: no `enable subgroups;` in a subgroup variant for the browser"));
        }
        src.replacen("enable subgroups;\n", "", 1)
    } else {
        src.to_string()
    };
    if src.contains("enable subgroups;") {
        return Err(format!("{name}: `enable subgroups;` where naga parses it (native) or outside a subgroup variant"));
    }
    let module = naga::front::wgsl::parse_str(src).map_err(|e| format!("{name}: parse: {}", e.emit_to_string(src)))?;
    // wgpu grants pack/unpack2x16float (SHADER_FLOAT16_IN_FLOAT32) on every WebGPU adapter.
    let mut caps = naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if f16 {
        caps |= naga::valid::Capabilities::SHADER_FLOAT16;
    }
    // The no-subgroup variants must validate without the capability (browsers without it).
    if subgroups {
        caps |= naga::valid::Capabilities::SUBGROUP;
    }
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    if subgroups {
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE).subgroup_operations(naga::valid::SubgroupOperationSet::all());
    }
    v.validate(&module).map_err(|e| format!("{name}: validate: {}", e.emit_to_string(src)))?;
    Ok(())
}

async fn all_kernels_validate() {
    let kernels = kernel_list().expect("kernel list");
    assert!(kernels.len() >= 15, "only {} kernels found", kernels.len());
    let mut errors = Vec::new();
    let (mut n, mut n_sg) = (0, 0);
    for k in &kernels {
        for (dtype, native) in [(DType::F32, false), (DType::F16, false), (DType::F16, true)] {
            let dtypes = vec![dtype; k.bindings.len()];
            // Every kernel without subgroups; those with a subgroup variant also with them.
            for subgroups in [false, true] {
                if subgroups && !k.subgroup_variant {
                    continue;
                }
                let src = assemble_variant(k, &dtypes, ShaderVariant { native_f16: native, subgroups }).expect("assemble");
                let name = format!("{}:{} {:?} native_f16={native} subgroups={subgroups}", k.file, k.name, dtype);
                n += 1;
                n_sg += subgroups as usize;
                if let Err(e) = validate(&name, &src, native, subgroups) {
                    errors.push(e);
                }
            }
        }
    }
    log!("naga validated {n} kernel variants ({n_sg} with subgroups) from {} files", shader_files().len());
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
    assert!(n_sg > 0, "no kernel has a subgroup variant");
    // Include-only files must be included somewhere.
    for (file, text) in shader_files() {
        if !text.contains("//#kernel") {
            let used = shader_files().iter().any(|(_, t)| t.contains(&format!("//#include {file}")));
            assert!(used, "{file} has no kernels and is included by no file");
        }
    }
}
gpu_test!(every_wgsl_kernel_validates_with_naga, all_kernels_validate());

/// Every file in shaders/ is embedded (and so validated above).
#[test]
#[cfg(not(target_arch = "wasm32"))]
fn every_wgsl_file_is_embedded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(shader_files().iter().any(|(n, _)| *n == name), "{name} is not in gpu::shader_files()");
        }
    }
}

/// `//#if f16` sections: the GEMM tiles are f16 only where f16 is native; the f32 and
/// packed-f16 variants keep their f32 tiles and never `enable f16`.
fn gemm_tiles_f16_only_native() {
    for k in kernel_list().unwrap().iter().filter(|k| k.name == "matmul" || k.name == "conv2d") {
        let n = k.bindings.len();
        let native = assemble(k, &vec![DType::F16; n], true).unwrap();
        assert!(native.contains("var<workgroup> As: array<vec4<f16>, 256>;") && !native.contains("array<f32, 1024>"), "{}", k.name);
        for (dtype, nat) in [(DType::F32, true), (DType::F32, false), (DType::F16, false)] {
            let src = assemble(k, &vec![dtype; n], nat).unwrap();
            assert!(!src.contains("enable f16;"), "{} {dtype:?} native={nat}", k.name);
            assert!(src.contains("var<workgroup> As: array<f32, 1024>;") && !src.contains("array<vec4<f16>"), "{} {dtype:?} native={nat}", k.name);
        }
        assert!(!native.lines().any(|l| l.trim_start().starts_with("//#")), "directives left in {}", k.name);
    }
}
cpu_test!(gemm_tiles_are_f16_only_with_native_f16, gemm_tiles_f16_only_native);

/// `//#if subgroups` sections: the norm / softmax reductions use subgroup operations only in
/// their subgroup variant; the portable variant has none (browsers without `subgroups` must
/// compile it), and map kernels of those files have no subgroup variant.
fn reductions_subgroups_only_in_variant() {
    let ks = kernel_list().unwrap();
    let want = [("norm.wgsl", "row_stats"), ("norm.wgsl", "group_affine"), ("norm.wgsl", "prompt_weighting"), ("softmax.wgsl", "row_max_sum")];
    for (file, name) in want {
        let k = ks.iter().find(|k| k.file == file && k.name == name).unwrap_or_else(|| panic!("{file}:{name}"));
        assert!(k.subgroup_variant, "{file}:{name} has no subgroup variant");
        for (dtype, native) in [(DType::F32, false), (DType::F16, false), (DType::F16, true)] {
            let d = vec![dtype; k.bindings.len()];
            // The code without comments (which may name the builtins).
            let code = |s: &str| s.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            let on = assemble_variant(k, &d, ShaderVariant { native_f16: native, subgroups: true }).unwrap();
            let off_full = assemble_variant(k, &d, ShaderVariant { native_f16: native, subgroups: false }).unwrap();
            assert_eq!(off_full, assemble(k, &d, native).unwrap(), "{file}:{name}: assemble() is the portable variant");
            assert!(!on.lines().any(|l| l.trim_start().starts_with("//#")), "directives left in {file}:{name}");
            let (on, off) = (code(&on), code(&off_full));
            assert!(on.contains("subgroupAdd(") && on.contains("subgroupBroadcastFirst(") && on.contains("@builtin(subgroup_id)"), "{file}:{name}: subgroup variant without subgroup ops");
            if name == "row_max_sum" {
                assert!(on.contains("subgroupMax("), "{file}:{name}");
            }
            for op in ["subgroupAdd", "subgroupMax", "subgroupBroadcastFirst", "@builtin(subgroup", "@builtin(num_subgroups", "enable subgroups"] {
                assert!(!off.contains(op), "{file}:{name}: portable variant uses {op}");
            }
            // One barrier per reduction with subgroups, a tree of log2(256) + 2 without.
            let barriers = |s: &str| s.matches("workgroupBarrier()").count();
            assert!(barriers(&on) < barriers(&off), "{file}:{name}: {} barriers with subgroups, {} without", barriers(&on), barriers(&off));
        }
    }
    for k in ks.iter().filter(|k| k.is_map() && (k.file == "norm.wgsl" || k.file == "softmax.wgsl")) {
        assert!(!k.subgroup_variant, "map kernel {}:{} has a subgroup variant", k.file, k.name);
    }
    // Kernels of other files (no `//#if subgroups`) have one variant.
    assert!(ks.iter().any(|k| !k.subgroup_variant && k.name == "matmul"));
}
cpu_test!(reductions_use_subgroups_only_in_their_variant, reductions_subgroups_only_in_variant);

/// Production code never reads test files: no `include_*!` of (or path into) `tests/`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn production_code_does_not_read_tests() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 20);
    let bad: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().enumerate().filter(|(_, l)| l.contains("tests/fixtures") || l.contains("../tests/")).map(|(i, l)| format!("{}:{}: {}", f.display(), i + 1, l.trim())).collect::<Vec<_>>()
        })
        .collect();
    assert!(bad.is_empty(), "production code reads test files:\n{}", bad.join("\n"));
}
