//! Every kernel against the CPU reference (src/reference.rs), f32 and f16 storage
//! (f16 both packed in u32 and, where the adapter has `shader-f16`, native).
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::gpu::{AttentionVariant, DType, GemmVariant, Gpu, GpuOptions};
use sd_webgpu::selftest;

async fn check(kernel: &str) {
    check_with(kernel, GpuOptions::default()).await;
}

/// The checks of `kernel` on a GPU opened with `opts` (its `native_f16` is set per dtype).
/// Returns how many pipelines ran with subgroups (summed over the GPUs opened).
async fn check_with(kernel: &str, opts: GpuOptions) -> usize {
    let mut sg_pipelines = 0;
    let mut failures = Vec::new();
    let mut ran = 0;
    for (label, dtype, native) in [("f32", DType::F32, true), ("f16", DType::F16, true), ("f16-packed", DType::F16, false)] {
        let gpu = Gpu::new(GpuOptions { native_f16: native, ..opts.clone() }).await.expect("a GPU for the tests");
        if native && dtype == DType::F16 && !gpu.native_f16() {
            // Same code path as f16-packed on this adapter (no shader-f16): run once.
            log!("{kernel}: adapter has no shader-f16; f16 runs packed below");
            continue;
        }
        let checks = selftest::run(&gpu, kernel, dtype).await.unwrap_or_else(|e| panic!("{kernel} {label}: {e}"));
        sg_pipelines += subgroup_variants_ran(&gpu, &opts, &format!("{kernel} {label}"));
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
    sg_pipelines
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
/// The kernels with a subgroup variant ran as it exactly when the adapter has `subgroups` and
/// the options allow them (every pipeline of such a kernel says which variant it is).
/// Returns how many pipelines ran with subgroups.
fn subgroup_variants_ran(gpu: &Gpu, opts: &GpuOptions, what: &str) -> usize {
    assert_eq!(gpu.subgroups(), opts.subgroups && gpu.info().subgroups, "{what}: subgroup kernels on/off");
    assert_eq!(gpu.subgroups(), gpu.info().subgroup_kernels, "{what}");
    let variant_kernels = sd_webgpu::gpu::kernel_list().unwrap();
    for p in gpu.pipelines_created() {
        let has = variant_kernels.iter().any(|k| k.file == p.file && k.name == p.kernel && k.subgroup_variant);
        assert_eq!(p.subgroups, has && gpu.subgroups(), "{what}: {}:{} ran with subgroups={}", p.file, p.kernel, p.subgroups);
    }
    gpu.pipelines_created().iter().filter(|p| p.subgroups).count()
}

/// The norm / softmax checks (which run the reductions: row_stats, group_affine,
/// prompt_weighting, row_max_sum) with the subgroup variant where the adapter has `subgroups`
/// (the tests without suffix, natively on lavapipe) and with it forced off (`_no_subgroups`:
/// the shared-memory path browsers without subgroups run). Checks that the expected variant
/// really ran and how many reduction pipelines used subgroups.
async fn check_reductions(kernel: &str, subgroups: bool) {
    let sg = check_with(kernel, GpuOptions { subgroups, ..Default::default() }).await;
    let gpu = Gpu::new(GpuOptions { subgroups, ..Default::default() }).await.expect("a GPU for the tests");
    let i = gpu.info();
    log!("{kernel}: adapter subgroups={} (sizes {}..{}), requested={subgroups}: {sg} pipelines ran with subgroups", i.subgroups, i.subgroup_min_size, i.subgroup_max_size);
    if gpu.subgroups() {
        assert!(sg > 0, "{kernel}: the adapter has subgroups but no reduction ran with them");
    } else {
        assert_eq!(sg, 0, "{kernel}: subgroups off but {sg} pipelines used them");
    }
}

gpu_test!(group_norm, check_reductions("group_norm", true));
gpu_test!(group_norm_no_subgroups, check_reductions("group_norm", false));
gpu_test!(layer_norm_no_subgroups, check_reductions("layer_norm", false));
gpu_test!(softmax_no_subgroups, check_reductions("softmax", false));
gpu_test!(prompt_weighting_no_subgroups, check_reductions("prompt_weighting", false));

/// lavapipe (the native test adapter) has subgroups, so the subgroup variants are tested
/// natively: fail if it stops offering them rather than silently testing one path twice.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn lavapipe_runs_the_subgroup_variants() {
    let gpu = pollster::block_on(Gpu::new(GpuOptions::default())).expect("a GPU for the tests");
    let i = gpu.info();
    log!("{} ({}): subgroups={} sizes {}..{}", i.name, i.backend, i.subgroups, i.subgroup_min_size, i.subgroup_max_size);
    if i.name.contains("llvmpipe") {
        assert!(i.subgroups && gpu.subgroups(), "lavapipe without subgroups: {i:?}");
    }
}
gpu_test!(layer_norm, check_reductions("layer_norm", true));
gpu_test!(softmax, check_reductions("softmax", true));
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
gpu_test!(prompt_weighting, check_reductions("prompt_weighting", true));
gpu_test!(gemm_split_k, check("gemm_split_k"));

// The v1 GEMM kernels (gemm_tile.wgsl) stay selectable: the same checks on a v1 GPU.
fn v1() -> GpuOptions {
    GpuOptions { gemm: GemmVariant::V1, ..Default::default() }
}
gpu_test!(matmul_v1, check_with("matmul", v1()));
gpu_test!(linear_v1, check_with("linear", v1()));
gpu_test!(conv2d_v1, check_with("conv2d", v1()));

/// A dispatch budget so small that every GEMM is recorded as one dispatch per workgroup range
/// (the watchdog split, `tile0` offsets), with and without split-K, for both GEMM variants.
fn tiny_budget(gemm: GemmVariant) -> GpuOptions {
    GpuOptions { gemm, max_dispatch_gflop: 2e-4, ..Default::default() }
}
gpu_test!(gemm_dispatch_ranges_v2, check_with("gemm_split_k", tiny_budget(GemmVariant::V2)));
gpu_test!(gemm_dispatch_ranges_v1, check_with("conv2d", tiny_budget(GemmVariant::V1)));
gpu_test!(attention_dispatch_ranges, check_with("attention", tiny_budget(GemmVariant::V2)));

// The v1 attention kernels (attention.wgsl) stay selectable: the same checks (every case, every
// view) on a v1 GPU; `attention` above runs the default, v2 (attention_v2.wgsl).
fn v1_attention() -> GpuOptions {
    GpuOptions { attention: AttentionVariant::V1, ..Default::default() }
}
gpu_test!(attention_v1, check_with("attention", v1_attention()));
gpu_test!(attention_v1_dispatch_ranges, check_with("attention", GpuOptions { attention: AttentionVariant::V1, ..tiny_budget(GemmVariant::V2) }));

/// The default attention variant is v2; each variant's kernel (and query rows per workgroup)
/// by head dim: v2's buckets, odd dims in the next bucket up, v1's two kernels.
async fn attention_variant_kernels() {
    use sd_webgpu::gpu::AttentionVariant as A;
    assert_eq!(GpuOptions::default().attention, A::V2);
    let gpu = Gpu::new(v1_attention()).await.expect("a GPU for the tests");
    assert_eq!(gpu.attention(), A::V1);
    let v2 = "attention_v2.wgsl";
    for (variant, d, want) in [
        (A::V2, 1, (v2, "attention_v2_d8", 128)),
        (A::V2, 5, (v2, "attention_v2_d8", 128)),
        (A::V2, 16, (v2, "attention_v2_d16", 128)),
        (A::V2, 40, (v2, "attention_v2_d40", 128)),
        (A::V2, 64, (v2, "attention_v2_d64", 64)),
        (A::V2, 72, (v2, "attention_v2_d80", 64)),
        (A::V2, 97, (v2, "attention_v2_d160", 64)),
        (A::V2, 160, (v2, "attention_v2_d160", 64)),
        (A::V2, 333, (v2, "attention_v2_d512", 32)),
        (A::V2, 512, (v2, "attention_v2_d512", 32)),
        (A::V1, 40, ("attention.wgsl", "attention", 64)),
        (A::V1, 160, ("attention.wgsl", "attention_wide", 32)),
    ] {
        assert_eq!(sd_webgpu::ops::attention_kernel(variant, d), want, "{variant:?} D{d}");
    }
}
gpu_test!(attention_variant_kernels_by_head_dim, attention_variant_kernels());

/// Each v2 kernel's query rows per workgroup (WG / L · RQ in its source) is what the op
/// dispatches for; its K/V tiles are `vec4<f16>` exactly when assembled for native f16 (f32
/// and packed f16 keep f32 tiles and never `enable f16`).
fn attention_v2_sources() {
    use sd_webgpu::gpu::{assemble, kernel_list, AttentionVariant as A};
    let kernels = kernel_list().unwrap();
    let v2: Vec<_> = kernels.iter().filter(|k| k.file == "attention_v2.wgsl").collect();
    assert_eq!(v2.len(), 7, "attention_v2 kernels");
    for k in v2 {
        let max_d: usize = k.name.trim_start_matches("attention_v2_d").parse().unwrap();
        let (_, name, bq) = sd_webgpu::ops::attention_kernel(A::V2, max_d);
        assert_eq!(name, k.name, "D{max_d}");
        let native = assemble(k, &[DType::F16; 4], true).unwrap();
        let konst = |n: &str| -> usize {
            let pre = format!("const {n}: u32 = ");
            let line = native.lines().find(|l| l.starts_with(&pre)).unwrap_or_else(|| panic!("{}: no {n}", k.name));
            line[pre.len()..].trim_end_matches("u;").parse().unwrap()
        };
        assert_eq!(konst("WG") / konst("L") * konst("RQ"), bq, "{}: rows per workgroup", k.name);
        assert!(konst("DV") * 4 >= max_d && konst("DV") % konst("L") == 0, "{}", k.name);
        assert!(native.contains("enable f16;") && native.contains("var<workgroup> ks: array<vec4<f16>, BK * DV>;"), "{}", k.name);
        for (dtype, nat) in [(DType::F32, true), (DType::F32, false), (DType::F16, false)] {
            let src = assemble(k, &[dtype; 4], nat).unwrap();
            assert!(!src.contains("enable f16;") && !src.contains("array<vec4<f16>"), "{} {dtype:?} native={nat}", k.name);
            assert!(src.contains("var<workgroup> ks: array<vec4<f32>, BK * DV>;"), "{} {dtype:?} native={nat}", k.name);
        }
        // Workgroup storage within WebGPU's default 16 KiB (sizes as naga lays them out).
        let bytes = |src: &str| -> u32 {
            let m = naga::front::wgsl::parse_str(src).unwrap();
            m.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| m.types[g.ty].inner.size(m.to_ctx())).sum()
        };
        let (b32, b16) = (bytes(&assemble(k, &[DType::F32; 4], false).unwrap()), bytes(&native));
        log!("{}: BQ {bq}, workgroup storage {b32} bytes (f32 tiles) / {b16} bytes (f16 tiles)", k.name);
        assert!(b32 <= 16384 && b16 <= 16384, "{}: {b32} / {b16} bytes of workgroup storage", k.name);
    }
}
cpu_test!(attention_v2_rows_and_f16_tiles, attention_v2_sources);

/// The budget splits one large GEMM into several dispatches, each reporting its FLOPs.
async fn dispatch_budget_splits() {
    for gemm in [GemmVariant::V1, GemmVariant::V2] {
        let gpu = Gpu::new(GpuOptions { gemm, max_dispatch_gflop: 0.01, ..Default::default() }).await.expect("gpu");
        let (m, k, n) = (300usize, 64usize, 500usize);
        let a = gpu.upload(&[1, m, k], DType::F32, &vec![0.5; m * k]).unwrap();
        let b = gpu.upload(&[1, k, n], DType::F32, &vec![0.25; k * n]).unwrap();
        gpu.flush().unwrap();
        let s0 = gpu.pool_stats();
        let y = sd_webgpu::ops::matmul(&gpu, &a, &b).unwrap();
        gpu.flush().unwrap();
        let s1 = gpu.pool_stats();
        let got = gpu.read(&y).await.unwrap();
        let flops = 2.0 * (m * n * k) as f64;
        let dispatches = s1.dispatches - s0.dispatches;
        log!("{gemm:?}: {flops} FLOP in {dispatches} dispatches (budget 1e7 FLOP)");
        assert_eq!(s1.flops - s0.flops, flops, "{gemm:?}: FLOPs reported by the split dispatches");
        assert!(dispatches as f64 >= (flops / 1e7).ceil(), "{gemm:?}: {dispatches} dispatches for {flops} FLOP");
        let bad = got.iter().position(|&v| (v - 8.0).abs() > 1e-4);
        assert!(bad.is_none(), "{gemm:?}: element {:?} = {}, want 8", bad, bad.map_or(0.0, |i| got[i]));
    }
}
gpu_test!(dispatch_budget_splits_large_gemms, dispatch_budget_splits());

/// The list in selftest::KERNELS is what the browser page runs: keep it equal to the tests above.
#[test]
#[cfg(not(target_arch = "wasm32"))]
fn selftest_list_matches_tests() {
    let src = include_str!("kernels.rs");
    for k in selftest::KERNELS {
        assert!(src.contains(&format!("check(\"{k}\")")) || src.contains(&format!("check_reductions(\"{k}\", true)")), "selftest kernel {k} has no test");
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
