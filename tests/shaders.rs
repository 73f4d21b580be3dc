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
