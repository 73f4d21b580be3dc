//! Every kernel against the CPU reference (src/reference.rs), f32 and f16 storage
//! (f16 both packed in u32 and, where the adapter has `shader-f16`, native).
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::gpu::DType;
use sd_webgpu::selftest;

async fn check(kernel: &str) {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (label, dtype, native) in [("f32", DType::F32, true), ("f16", DType::F16, true), ("f16-packed", DType::F16, false)] {
        let gpu = common::gpu(native).await;
        if native && dtype == DType::F16 && !gpu.native_f16() {
            // Same code path as f16-packed on this adapter (no shader-f16): run once.
            log!("{kernel}: adapter has no shader-f16; f16 runs packed below");
            continue;
        }
        let checks = selftest::run(&gpu, kernel, dtype).await.unwrap_or_else(|e| panic!("{kernel} {label}: {e}"));
        for c in checks {
            ran += 1;
            log!("[{label}] {c}");
            if !c.pass {
                failures.push(format!("[{label}] {c}"));
            }
        }
    }
    assert!(ran > 0, "{kernel}: no check ran");
    assert!(failures.is_empty(), "{kernel}: {} failing case(s):\n{}", failures.len(), failures.join("\n"));
}

gpu_test!(unary_ops, check("unary"));
gpu_test!(binary_ops, check("binary"));
gpu_test!(geglu, check("geglu"));
gpu_test!(concat_channels, check("concat_channels"));
gpu_test!(slice_channels, check("slice_channels"));
gpu_test!(upsample2x, check("upsample2x"));
gpu_test!(transpose, check("transpose"));
gpu_test!(token_position_embedding, check("token_position"));
gpu_test!(timestep_embedding, check("timestep"));
gpu_test!(group_norm, check("group_norm"));
gpu_test!(layer_norm, check("layer_norm"));
gpu_test!(softmax, check("softmax"));
gpu_test!(matmul, check("matmul"));
gpu_test!(linear, check("linear"));
gpu_test!(conv2d, check("conv2d"));
gpu_test!(attention, check("attention"));
gpu_test!(dispatch_split_over_65535_workgroups, check("dispatch_split"));

/// The list in selftest::KERNELS is what the browser page runs: keep it equal to the tests above.
#[test]
#[cfg(not(target_arch = "wasm32"))]
fn selftest_list_matches_tests() {
    let src = include_str!("kernels.rs");
    for k in selftest::KERNELS {
        assert!(src.contains(&format!("check(\"{k}\")")), "selftest kernel {k} has no test");
    }
}
