//! Every shaders/*.wgsl kernel, assembled for each storage variant, validates with naga.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::gpu::{assemble, kernel_list, shader_files, DType};

fn validate(name: &str, src: &str, f16: bool) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| format!("{name}: parse: {}", e.emit_to_string(src)))?;
    // wgpu grants pack/unpack2x16float (SHADER_FLOAT16_IN_FLOAT32) on every WebGPU adapter.
    let mut caps = naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if f16 {
        caps |= naga::valid::Capabilities::SHADER_FLOAT16;
    }
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}: validate: {}", e.emit_to_string(src)))?;
    Ok(())
}

async fn all_kernels_validate() {
    let kernels = kernel_list().expect("kernel list");
    assert!(kernels.len() >= 15, "only {} kernels found", kernels.len());
    let mut errors = Vec::new();
    let mut n = 0;
    for k in &kernels {
        for (dtype, native) in [(DType::F32, false), (DType::F16, false), (DType::F16, true)] {
            let dtypes = vec![dtype; k.bindings.len()];
            let src = assemble(k, &dtypes, native).expect("assemble");
            let name = format!("{}:{} {:?} native_f16={native}", k.file, k.name, dtype);
            n += 1;
            if let Err(e) = validate(&name, &src, native) {
                errors.push(e);
            }
        }
    }
    log!("naga validated {n} kernel variants from {} files", shader_files().len());
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
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
