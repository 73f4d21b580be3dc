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
gpu_test!(lincomb, check("lincomb"));
gpu_test!(vae_sample, check("vae_sample"));
gpu_test!(to_image, check("to_image"));
gpu_test!(tiles, check("tiles"));
gpu_test!(dispatch_split_over_65535_workgroups, check("dispatch_split"));
gpu_test!(lora_merge, check("lora_merge"));
gpu_test!(prompt_weighting, check("prompt_weighting"));

/// The list in selftest::KERNELS is what the browser page runs: keep it equal to the tests above.
#[test]
#[cfg(not(target_arch = "wasm32"))]
fn selftest_list_matches_tests() {
    let src = include_str!("kernels.rs");
    for k in selftest::KERNELS {
        assert!(src.contains(&format!("check(\"{k}\")")), "selftest kernel {k} has no test");
    }
}

/// Shapes that do not fit an op are errors naming the op and the shapes, not panics.
async fn bad_shapes() {
    use sd_webgpu::ops::{self, Act, Conv2d};
    let gpu = common::gpu(true).await;
    let t = |s: &[usize]| gpu.upload(s, DType::F32, &vec![0.0; s.iter().product()]).unwrap();
    let cases: Vec<(&str, sd_webgpu::Result<sd_webgpu::gpu::Tensor>)> = vec![
        ("group_norm", ops::group_norm(&gpu, &t(&[1, 30, 4, 4]), 32, &t(&[30]), &t(&[30]), 1e-5, false)),
        ("linear", ops::linear(&gpu, &t(&[3, 5]), &t(&[7, 6]), None, Act::None, None)),
        ("matmul", ops::matmul(&gpu, &t(&[2, 3, 5]), &t(&[2, 4, 7]))),
        ("attention", ops::attention(&gpu, &t(&[1, 4, 30]), &t(&[1, 4, 30]), &t(&[1, 4, 30]), 8, false, 1.0)),
        ("conv2d", ops::conv2d(&gpu, &t(&[1, 3, 8, 8]), &t(&[4, 5, 3, 3]), None, Conv2d::new(1, 1), Act::None, None)),
        ("concat_channels", ops::concat_channels(&gpu, &t(&[1, 3, 8, 8]), &t(&[1, 3, 4, 4]))),
        ("add", ops::add(&gpu, &t(&[2, 3]), &t(&[3, 2]), 1.0, 1.0)),
        ("geglu", ops::geglu(&gpu, &t(&[2, 5]))),
        ("reshape", t(&[2, 3]).reshape(&[4, 2])),
        ("alloc", gpu.empty(&[0, 3], DType::F32)),
    ];
    for (op, r) in cases {
        let e = r.expect_err(op).to_string();
        log!("{op}: {e}");
        assert!(e.contains(op), "error for {op} does not name it: {e}");
    }
}
gpu_test!(bad_shapes_are_errors_naming_op_and_shapes, bad_shapes());

/// A loop that repeats the same ops reuses pooled buffers instead of allocating.
async fn pool_reuse() {
    use sd_webgpu::ops;
    let gpu = common::gpu(true).await;
    let x = gpu.upload(&[64, 64], DType::F32, &vec![0.5; 4096]).unwrap();
    let mut h = ops::silu(&gpu, &x).unwrap();
    let after_first = gpu.pool_stats().buffers_created;
    for _ in 0..20 {
        let a = ops::silu(&gpu, &h).unwrap();
        h = ops::add(&gpu, &a, &x, 1.0, -1.0).unwrap();
    }
    let _ = gpu.read(&h).await.unwrap();
    let s = gpu.pool_stats();
    log!("buffers created: {after_first} after the first op, {} after 40 more", s.buffers_created);
    assert!(s.buffers_created <= after_first + 3, "the pool did not reuse buffers: {s:?}");
}
gpu_test!(buffer_pool_reuses_buffers_in_a_loop, pool_reuse());
