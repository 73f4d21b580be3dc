//! `sd-webgpu bench` (structural: fields present and consistent, never a time asserted)
//! and the GPU timestamp profiling it uses (same results with and without it); the
//! recorder's CPU side (heap allocations of a warmed-up UNet step, bind groups cached
//! across steps, command buffers cut at a FLOP budget with the same results).
#![cfg(not(target_arch = "wasm32"))]

// Counts this binary's heap allocations per thread (`heap_allocations_per_unet_step`).
#[global_allocator]
static ALLOC: sd_webgpu::alloc_count::Counting = sd_webgpu::alloc_count::Counting;

use sd_webgpu::bench::{bench, family, BenchArgs};
use sd_webgpu::gpu::{DType, Gpu, GpuOptions};
use sd_webgpu::model::StableDiffusion;
use sd_webgpu::selftest::Rng;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15/model");

fn report(args: &[&str]) -> serde_json::Value {
    let a = BenchArgs::parse_from(args).expect("flags");
    let r = pollster::block_on(bench(&a)).expect("bench");
    serde_json::to_value(&r).expect("json")
}

const FIELDS: [&str; 14] = [
    "adapter",
    "backend",
    "dtype",
    "size",
    "timing",
    "text_encoder_ms",
    "unet_step_ms",
    "vae_decode_ms",
    "unet_tflops",
    "dispatches_per_unet_step",
    "activation_bytes_per_unet_step",
    "weights_bytes",
    "peak_bytes",
    "shares",
];

#[test]
fn bench_tiny_model_json() {
    let v = report(&["--model", MODEL, "--size", "64", "--steps", "1", "--json"]);
    for f in FIELDS {
        assert!(v.get(f).is_some(), "field {f} missing in {v}");
    }
    assert_eq!(v["size"], 64);
    assert_eq!(v["dtype"], "f16");
    let timing = v["timing"].as_str().expect("timing");
    assert!(timing == "gpu-timestamps" || timing == "wall-clock", "{timing}");
    for f in ["text_encoder_ms", "unet_step_ms", "vae_decode_ms", "unet_tflops"] {
        let t = v[f].as_f64().unwrap_or_else(|| panic!("{f} should be a number: {v}"));
        assert!(t.is_finite() && t >= 0.0, "{f} = {t}");
    }
    assert!(v["dispatches_per_unet_step"].as_u64().unwrap() > 0);
    assert!(v["unet_gflop_per_step"].as_f64().unwrap() > 0.0);
    assert!(v["activation_bytes_per_unet_step"].as_u64().unwrap() > 0);
    let wb = v["weights_bytes"].as_u64().unwrap();
    assert!(wb > 0);
    assert!(v["peak_bytes"].as_u64().unwrap() > wb, "peak includes the weights and the activations");
    if timing == "gpu-timestamps" {
        let s = &v["shares"];
        let sum: f64 = ["conv", "attention", "norm", "matmul", "other"].iter().map(|k| s[*k].as_f64().expect(k)).sum();
        assert!((sum - 1.0).abs() < 1e-6, "shares sum to {sum}: {s}");
        let kernels = v["unet_kernels"].as_array().unwrap();
        assert!(!kernels.is_empty());
        let ksum: f64 = kernels.iter().map(|k| k["share"].as_f64().unwrap()).sum();
        assert!((ksum - 1.0).abs() < 1e-6);
        let kd: u64 = kernels.iter().map(|k| k["dispatches"].as_u64().unwrap()).sum();
        assert!(kd > 0 && kd <= v["dispatches_per_unet_step"].as_u64().unwrap());
        assert!(kernels.iter().any(|k| k["family"] == "conv") && kernels.iter().any(|k| k["family"] == "attention"));
    } else {
        assert!(v["shares"].is_null());
    }
}

#[test]
fn bench_plan_512() {
    let v = report(&["--plan", "--size", "512", "--json"]);
    for f in FIELDS {
        assert!(v.get(f).is_some(), "field {f} missing in {v}");
    }
    for f in ["text_encoder_ms", "unet_step_ms", "vae_decode_ms", "unet_tflops", "timing", "shares"] {
        assert!(v[f].is_null(), "{f} should be null with --plan: {v}");
    }
    for f in ["dispatches_per_unet_step", "activation_bytes_per_unet_step", "weights_bytes", "peak_bytes", "max_buffer_bytes"] {
        assert!(v[f].as_u64().unwrap_or(0) > 0, "{f} should be a positive number: {v}");
    }
    // SD-1.5: ~1.07 G parameters, 2 bytes each in f16.
    let wb = v["weights_bytes"].as_u64().unwrap();
    assert!((2_000_000_000..2_300_000_000).contains(&wb), "weights {wb}");
    // One SD-1.5 UNet forward at 512² is ~0.34 T multiply-adds in conv / linear (~0.68 TFLOP)
    // plus ~0.12 TFLOP of attention scores and weighted sums: ~1.6 TFLOP per CFG step.
    let g = v["unet_gflop_per_step"].as_f64().unwrap();
    assert!((1300.0..1900.0).contains(&g), "UNet GFLOP per CFG step {g}");
    // The CPU side: a warmed-up step records with (almost) no heap allocation.
    let allocs = v["heap_allocations_per_unet_step"].as_u64().expect("the counting allocator is installed");
    assert!(allocs <= 16, "{allocs} heap allocations per UNet step (goal: at most 16)");
    assert!(v["cpu_record_us_per_unet_step"].as_f64().unwrap() > 0.0);
    // Watchdog-safe submissions at the default budgets (25 GFLOP per dispatch, 250 per
    // command buffer) for the UNet step and the VAE decode.
    for phase in ["unet_step_submissions", "vae_decode_submissions"] {
        let p = &v[phase];
        let (d, c) = (p["largest_dispatch_gflop"].as_f64().unwrap(), p["largest_command_buffer_gflop"].as_f64().unwrap());
        assert!(d > 1.0 && d <= 25.0 + 1e-6, "{phase}: largest dispatch {d} GFLOP");
        assert!(c >= d && c <= 250.0 + 1e-6, "{phase}: largest command buffer {c} GFLOP");
        assert!(p["command_buffers"].as_u64().unwrap() >= 2, "{phase}: {p}");
    }
    assert!(v["largest_command_buffer_gflop"].as_f64().unwrap() <= 250.0 + 1e-6);
}

/// The tiny model's UNet forward with every dispatch in a command buffer of its own (a
/// tiny budget) gives the same bits as with one command buffer per flush; a repeated
/// step creates no bind group (cached), and after the pool is trimmed (buffers destroyed,
/// cache cleared) the results stay the same.
#[test]
fn command_buffer_budget_and_bind_group_cache_keep_results() {
    pollster::block_on(async {
        let mut outs = Vec::new();
        for budget in [250.0, 1e-9] {
            let gpu = Gpu::new(GpuOptions { max_command_buffer_gflop: budget, ..Default::default() }).await.unwrap();
            let dtype = DType::F32;
            let sd = StableDiffusion::load(&gpu, std::path::Path::new(MODEL), dtype, None).unwrap();
            let cfg = &sd.cfg.unet;
            let mut rng = Rng::new(5);
            let x = gpu.upload(&[2, cfg.in_channels, 8, 8], dtype, &rng.vec(2 * cfg.in_channels * 64, -1.0, 1.0)).unwrap();
            let ctx = gpu.upload(&[2, 77, cfg.cross_attention_dim], dtype, &rng.vec(2 * 77 * cfg.cross_attention_dim, -1.0, 1.0)).unwrap();
            let t = gpu.upload(&[2], DType::F32, &[700.0, 30.0]).unwrap();
            let c = sd.ctx(&gpu);
            let run = || async {
                let s0 = gpu.pool_stats();
                let y = sd.unet.forward(&c, &x, &t, &ctx).unwrap();
                let out = gpu.read_bytes(&y).await.unwrap();
                drop(y);
                let s1 = gpu.pool_stats();
                (out, s1.submits - s0.submits, s1.dispatches - s0.dispatches, s1.bind_groups_created - s0.bind_groups_created)
            };
            // The first step also uploads the timestep frequencies (an extra flush).
            let (first, ..) = run().await;
            let (second, ..) = run().await;
            let (third, submits, dispatches, created) = run().await;
            assert!(first == second && second == third, "budget {budget}: the steps differ");
            assert_eq!(created, 0, "budget {budget}: a repeated step created {created} bind groups");
            if budget < 1.0 {
                let flopless = dispatches; // every dispatch with FLOPs gets its own buffer
                assert!(submits > 1 && submits <= flopless, "budget {budget}: {submits} command buffers for {dispatches} dispatches");
            } else {
                assert_eq!(submits, 1, "one command buffer within the default budget");
            }
            gpu.trim_pool();
            let (after_trim, _, _, created) = run().await;
            assert!(after_trim == third, "budget {budget}: the step changed after the pool was trimmed");
            assert!(created > 0, "the trim destroyed the cached groups' buffers: new ones are made");
            outs.push(third);
        }
        assert!(outs[0] == outs[1], "splitting the command buffers changed the UNet output");
    });
}

/// A buffer freed and handed to a new tensor keeps its cached bind group, which then reads
/// the new tensor's data.
#[test]
fn bind_group_cache_follows_reused_buffers() {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        let mut rng = Rng::new(11);
        let n = 1000;
        let mut created = Vec::new();
        for round in 0..3 {
            let (a, b) = (rng.vec(n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
            let ta = gpu.upload(&[n], DType::F32, &a).unwrap();
            let tb = gpu.upload(&[n], DType::F32, &b).unwrap();
            let s0 = gpu.pool_stats();
            let y = sd_webgpu::ops::add(&gpu, &ta, &tb, 1.0, 2.0).unwrap();
            let got = gpu.read(&y).await.unwrap();
            created.push(gpu.pool_stats().bind_groups_created - s0.bind_groups_created);
            for i in 0..n {
                let want = a[i] + 2.0 * b[i];
                assert!((got[i] - want).abs() <= 1e-6, "round {round}: y[{i}] = {} want {want}", got[i]);
            }
        }
        assert_eq!(created[0], 1, "{created:?}");
        assert_eq!(&created[1..], &[0, 0], "the same buffers come back from the pool: cached groups ({created:?})");
    });
}

#[test]
fn bench_flags() {
    let a = BenchArgs::parse_from::<&str>(&[]).unwrap();
    assert_eq!((a.size, a.plan, a.json, a.model.is_none()), (512, false, false, true));
    assert!(BenchArgs::parse_from(&["--dtype", "f64"]).is_err());
    assert!(pollster::block_on(bench(&BenchArgs::parse_from(&["--plan", "--size", "100"]).unwrap())).is_err());
    assert_eq!(family("conv2d.wgsl:conv2d"), "conv");
    assert_eq!(family("softmax.wgsl:softmax"), "norm");
    assert_eq!(family("norm.wgsl:layer_norm"), "norm");
    assert_eq!(family("attention.wgsl:attention"), "attention");
    assert_eq!(family("matmul.wgsl:matmul"), "matmul");
    assert_eq!(family("elementwise.wgsl:add"), "other");
}

/// One UNet forward of the tiny model: identical bits with and without profiling, and the
/// profile accounts for the dispatches of the forward.
#[test]
fn profiling_keeps_results() {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        for dtype in [DType::F32, DType::F16] {
            let sd = StableDiffusion::load(&gpu, std::path::Path::new(MODEL), dtype, None).unwrap();
            let cfg = &sd.cfg.unet;
            let mut rng = Rng::new(3);
            let x = gpu.upload(&[2, cfg.in_channels, 8, 8], dtype, &rng.vec(2 * cfg.in_channels * 64, -1.0, 1.0)).unwrap();
            let ctx = gpu.upload(&[2, 77, cfg.cross_attention_dim], dtype, &rng.vec(2 * 77 * cfg.cross_attention_dim, -1.0, 1.0)).unwrap();
            let t = gpu.upload(&[2], DType::F32, &[500.0, 20.0]).unwrap();
            let c = sd.ctx(&gpu);
            let run = || async {
                let s0 = gpu.pool_stats();
                let y = sd.unet.forward(&c, &x, &t, &ctx).unwrap();
                let out = gpu.read_bytes(&y).await.unwrap();
                let s1 = gpu.pool_stats();
                (out, s1.dispatches - s0.dispatches, s1.flops - s0.flops)
            };
            assert!(!gpu.set_profiling(false).unwrap());
            let (plain, d0, f0) = run().await;
            assert!(gpu.take_profile().await.unwrap().is_empty(), "nothing profiled while off");
            let on = gpu.set_profiling(true).unwrap();
            assert_eq!(on, gpu.info().timestamp_query);
            let (profiled, d1, f1) = run().await;
            let prof = gpu.take_profile().await.unwrap();
            gpu.set_profiling(false).unwrap();
            let (again, _, _) = run().await;
            assert!(plain == profiled, "{dtype:?}: profiling changed the UNet output");
            assert!(plain == again, "{dtype:?}: the UNet output changed after profiling");
            assert_eq!((d0, f0), (d1, f1));
            assert!(d0 > 0 && f0 > 0.0);
            if on {
                let n: u64 = prof.iter().map(|p| p.2).sum();
                assert!(n > 0 && n <= d1, "{n} profiled of {d1} dispatches");
                assert!(prof.iter().all(|p| p.0.contains(".wgsl:")));
                assert!(prof.iter().any(|p| p.0 == "conv2d.wgsl:conv2d"));
                assert!(prof.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by time");
            }
        }
    });
}

/// SD-1.5 at 512² and 768² with CFG under WebGPU's default limits (128 MiB per binding,
/// 256 MiB per buffer): every buffer fits (large activations split, the VAE decode tiled),
/// and the 512² peak, weights included, stays within 2.5 GiB.
#[test]
fn plan_within_webgpu_default_limits() {
    for size in ["512", "768"] {
        let v = report(&["--plan", "--size", size, "--json"]);
        let max = v["max_buffer_bytes"].as_u64().unwrap();
        assert!(max <= 128 << 20, "{size}²: a buffer of {max} bytes exceeds 128 MiB");
        if size == "512" {
            let peak = v["peak_bytes"].as_u64().unwrap();
            assert!(peak <= 5 << 29, "512²: peak {peak} bytes exceeds 2.5 GiB");
        }
    }
}

/// img2img at 768² with SD-1.5's shapes under WebGPU's default 128 MiB binding limit (f16):
/// the untiled VAE encode would need a 144 MiB buffer, so it is tiled and every buffer fits.
/// The init photo is 1000×750: fitted (crop) to 768×768 first.
#[test]
fn img2img_768_plans_within_default_binding() {
    use sd_webgpu::image::Rgb;
    use sd_webgpu::model::{build, Configs};
    use sd_webgpu::pipeline::Params;
    let cfg = Configs::default();
    let (_, _, vae, _) = build(&cfg);
    let untiled = vae.encode_largest_buffer(1, 768, 768, DType::F16);
    assert!(untiled > 128 << 20, "the untiled encode needs {untiled} B");
    let photo = Rgb { width: 1000, height: 750, data: vec![0.5; 1000 * 750 * 3] };
    let p = Params { width: 768, height: 768, steps: 4, strength: 0.75, init_image: Some(photo), ..Default::default() };
    let plan = pollster::block_on(sd_webgpu::plan::plan_generation(&cfg, DType::F16, &p, Some(128 << 20))).unwrap();
    println!(
        "img2img 768² (SD-1.5, f16, 128 MiB bindings): untiled encode would need {untiled} B; planned peak {} B, largest buffer {} B, {} dispatches",
        plan.peak_bytes, plan.max_buffer_bytes, plan.dispatches
    );
    assert!(plan.max_buffer_bytes <= 128 << 20, "a buffer of {} B exceeds 128 MiB", plan.max_buffer_bytes);
    // after the generation: the weights and the UNet's timestep-frequency table (< 1 KiB)
    assert!(plan.after_bytes >= plan.weights_bytes && plan.after_bytes <= plan.weights_bytes + 1024, "memory returned: {} B held, weights {} B", plan.after_bytes, plan.weights_bytes);
}

/// Every weight of the model, read back (raw storage bytes), by name.
async fn snapshot(gpu: &Gpu, sd: &StableDiffusion) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for (n, t) in sd.weights.iter() {
        out.insert(n.clone(), gpu.read_bytes(t).await.unwrap());
    }
    out
}

/// `bench-lora` on the tiny model with a synthetic rank-4 kohya LoRA written for the model's own
/// configs (the writer of `synth --lora-rank`): the file reads as kohya f16 factors of the
/// model's shapes; the load holds the factors; the merge replaces exactly the weights the LoRA
/// changes and keeps one base copy of each (base bytes = the sum of the changed weights'
/// sizes, checked against a readback of every weight); the re-merge holds nothing more; the
/// undo gives back bit-identical weights and frees the copies; the in-place merge (the CLI's)
/// changes the same weights and holds no copy.
#[test]
fn bench_lora_tiny_model() {
    use sd_webgpu::bench::{bench_lora_on, LoraBenchArgs};
    use sd_webgpu::weights::synth::{lora_targets, write_lora, LORA_TE_MODULES, LORA_UNET_MODULES};
    let model = std::path::Path::new(MODEL);
    let cfg = sd_webgpu::model::read_configs(model).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-webgpu-bench-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tiny-rank4.safetensors");
    let rank = 4;
    let info = write_lora(&file, &cfg, rank, 7).unwrap();
    assert!(write_lora(&dir.join("rank0.safetensors"), &cfg, 0, 7).is_err(), "rank 0 is refused");

    // The file, as the safetensors crate reads it.
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, info.bytes);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let targets = lora_targets(&cfg);
    assert_eq!(st.len(), 3 * targets.len());
    assert_eq!(info.unet_modules + info.text_encoder_modules, targets.len());
    assert_eq!(info.text_encoder_modules, LORA_TE_MODULES.len() * cfg.clip.num_hidden_layers);
    for kind in LORA_UNET_MODULES {
        assert!(targets.iter().any(|t| t.weight.starts_with("unet/") && t.weight.ends_with(&format!(".{kind}.weight"))), "no {kind} module");
    }
    let mut params = 0u64;
    let mut factor_bytes = 0u64;
    for t in &targets {
        let cols: usize = t.shape[1..].iter().product();
        let down = st.tensor(&format!("{}.lora_down.weight", t.key)).unwrap();
        let up = st.tensor(&format!("{}.lora_up.weight", t.key)).unwrap();
        let alpha = st.tensor(&format!("{}.alpha", t.key)).unwrap();
        for v in [&down, &up, &alpha] {
            assert_eq!(v.dtype(), safetensors::Dtype::F16, "{}", t.key);
        }
        assert_eq!(down.shape()[0], rank);
        assert_eq!(&down.shape()[1..], &t.shape[1..], "{}: lora_down", t.key);
        let want_up: Vec<usize> = if t.shape.len() == 4 { vec![t.shape[0], rank, 1, 1] } else { vec![t.shape[0], rank] };
        assert_eq!(up.shape(), &want_up[..], "{}: lora_up", t.key);
        assert_eq!(half::f16::from_le_bytes([alpha.data()[0], alpha.data()[1]]).to_f32(), rank as f32);
        params += (rank * cols + t.shape[0] * rank) as u64;
        factor_bytes += DType::F16.buffer_bytes(rank * cols) + DType::F16.buffer_bytes(t.shape[0] * rank);
    }
    assert_eq!(params, info.parameters);

    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        let mut sd = StableDiffusion::load(&gpu, model, DType::F16, Some("fp16")).unwrap();
        let base = snapshot(&gpu, &sd).await;
        let path = file.display().to_string();
        let args = LoraBenchArgs::parse_from(&["--lora", &path, "--no-in-place"]).unwrap();
        let r = bench_lora_on(&gpu, &mut sd, MODEL, &args).await.unwrap();
        println!("{}", sd_webgpu::bench::lora_table(&r));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!((r.format, r.rank_min, r.rank_max), ("kohya", rank, rank));
        assert_eq!((r.unet_modules, r.text_encoder_modules), (info.unet_modules, info.text_encoder_modules));
        assert_eq!(r.factor_bytes, factor_bytes);
        let names: Vec<&str> = r.phases.iter().map(|p| p.phase).collect();
        assert_eq!(names, ["load", "merge", "remerge", "undo"]);
        let (load, merge, remerge, undo) = (&r.phases[0], &r.phases[1], &r.phases[2], &r.phases[3]);
        // Buffers are whole 4-byte words, at most 256 bytes more than the tensor each.
        let slack = |n: usize| 256 * n as i64;
        assert!(load.held_delta_bytes >= factor_bytes as i64 && load.held_delta_bytes <= factor_bytes as i64 + slack(2 * targets.len()), "load held {}", load.held_delta_bytes);
        assert_eq!(merge.merges, targets.len());
        assert!(merge.gflop > 0.0 && merge.dispatches >= targets.len() as u64);
        assert_eq!(merge.tensors, r.changed_weights);
        assert!(r.changed_weights > 0 && r.changed_weights <= targets.len(), "fused q/k/v weights take several modules");
        assert_eq!(r.base_bytes, r.changed_weights_bytes, "one base copy per replaced weight");
        assert_eq!(merge.base_bytes, r.base_bytes);
        assert!(merge.held_delta_bytes >= r.base_bytes as i64 && merge.held_delta_bytes <= r.base_bytes as i64 + slack(r.changed_weights));
        assert!(merge.peak_extra_bytes >= merge.held_delta_bytes as u64);
        assert_eq!((remerge.tensors, remerge.merges, remerge.held_delta_bytes, remerge.base_bytes), (r.changed_weights, targets.len(), 0, r.base_bytes));
        assert_eq!((undo.tensors, undo.merges, undo.held_delta_bytes, undo.base_bytes), (r.changed_weights, 0, -merge.held_delta_bytes, 0));
        assert!(r.undo_restored);
        assert!(r.peak_bytes >= sd.weights.bytes() + r.factor_bytes + r.base_bytes);
        assert!(snapshot(&gpu, &sd).await == base, "the undo gives back the weights bit for bit");

        // Again, ending with the CLI's in-place merge: the weights it changes are the ones the
        // base copies held, and no copy is kept.
        let args = LoraBenchArgs::parse_from(&["--lora", &path, "--rescale", "-0.75"]).unwrap();
        let r2 = bench_lora_on(&gpu, &mut sd, MODEL, &args).await.unwrap();
        let last = r2.phases.last().unwrap();
        assert_eq!((last.phase, last.tensors, last.merges, last.held_delta_bytes, last.base_bytes), ("merge_in_place", r.changed_weights, targets.len(), 0, 0));
        assert_eq!((r2.base_bytes, r2.changed_weights), (r.base_bytes, r.changed_weights));
        let merged = snapshot(&gpu, &sd).await;
        let changed: Vec<&String> = merged.iter().filter(|(n, b)| base[*n] != **b).map(|(n, _)| n).collect();
        assert_eq!(changed.len(), r.changed_weights);
        let changed_bytes: u64 = changed.iter().map(|n| sd.weights.get(n).unwrap().bytes()).sum();
        assert_eq!(changed_bytes, r.base_bytes, "base bytes = the sum of the changed weights' sizes");
        assert!(changed.iter().all(|n| n.starts_with("unet/") || n.starts_with("text_encoder/")));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_lora_flags() {
    use sd_webgpu::bench::LoraBenchArgs;
    assert!(LoraBenchArgs::parse_from::<&str>(&[]).is_err(), "--lora is required");
    let a = LoraBenchArgs::parse_from(&["--lora", "x.safetensors"]).unwrap();
    assert_eq!((a.rescale, a.no_in_place, a.json, a.model.is_none()), (0.5, false, false, true));
    assert!(LoraBenchArgs::parse_from(&["--lora", "x.safetensors", "--dtype", "bf16"]).is_err());
}

/// SDXL (issue #17) on synthetic full-size shapes, f16, WebGPU's default 128 MiB binding
/// limit: SDXL-Turbo 512² (1 step, no CFG) with TAESDXL decode and previews within 7.5 GiB,
/// SDXL base 1024² (25 Euler steps, CFG 5, tiled VAE decode) within 8.5 GiB; no buffer over
/// the binding limit, no dispatch over the 25 GFLOP watchdog budget. The weights are the real
/// checkpoints' parameter counts (stabilityai's configs: UNet 2,567,463,684, CLIP ViT-L text
/// 123,060,480, OpenCLIP bigG text with projection 694,659,840, VAE 83,653,863) in f16; the
/// VAE decodes from an f32 copy of its weights (force_upcast) unless the fp16-fix VAE is planned. Evicting both text encoders
/// after encoding lowers the peak and costs their bytes on the next new prompt.
#[test]
fn plan_sdxl_within_budgets() {
    use sd_webgpu::pipeline::{Decoder, Params};
    use sd_webgpu::plan::{plan_family, FamilyPlan, PlanFamily, PlanOptions};
    let run = |fam: PlanFamily, tiny: bool, evict: bool, fix: bool| -> FamilyPlan {
        let cfg = fam.configs();
        let (steps, guidance_scale, sampler) = fam.defaults();
        let size = cfg.unet.sample_size * 8;
        let p = Params { steps, guidance_scale, sampler: sampler.into(), decoder: if tiny { Decoder::Tiny } else { Decoder::Vae }, ..Default::default() };
        let o = PlanOptions { family: fam, tiny_vae: tiny, evict_text_encoder: evict, vae_fp16_fix: fix };
        let r = pollster::block_on(plan_family(&cfg, size, size, DType::F16, &p, &o)).unwrap();
        println!("{}", serde_json::to_string(&r).unwrap());
        r
    };
    let turbo = run(PlanFamily::SdxlTurbo, true, false, false);
    let base = run(PlanFamily::Sdxl, false, false, false);
    assert_eq!((turbo.size, turbo.steps, turbo.guidance, turbo.decoder), ([512, 512], 1, 0.0, "tiny"));
    assert_eq!((base.size, base.steps, base.guidance, base.decoder), ([1024, 1024], 25, 5.0, "vae"));
    for r in [&turbo, &base] {
        // Each weight buffer is rounded up to 256 bytes: at most ~1 MiB over the parameters.
        let near = |bytes: u64, params: u64, width: u64, what: &str| {
            assert!(bytes >= params * width && bytes - params * width < 1 << 20, "{}: {what} weights {bytes} B for {params} parameters × {width} B", r.family);
        };
        near(r.weights_bytes_unet, 2_567_463_684, 2, "UNet");
        near(r.weights_bytes_text_encoder, 123_060_480, 2, "text encoder");
        near(r.weights_bytes_text_encoder_2, 694_659_840, 2, "text encoder 2");
        near(r.weights_bytes_vae, 83_653_863, 2, "VAE");
        assert!(r.vae_precision.contains("run in f32"), "{}: {}", r.family, r.vae_precision);
        assert!(r.max_buffer_bytes <= r.max_binding_bytes && r.max_binding_bytes == 128 << 20, "{}: a buffer of {} B", r.family, r.max_buffer_bytes);
        assert!(r.largest_dispatch_gflop <= 25.0, "{}: a dispatch of {} GFLOP", r.family, r.largest_dispatch_gflop);
        assert!(r.peak_bytes > r.weights_bytes && r.text_encoder_reload_bytes == 0);
    }
    assert!(turbo.weights_bytes_tiny_vae > 0 && base.weights_bytes_tiny_vae == 0);
    assert!(turbo.peak_gib <= 7.5, "SDXL-Turbo 512² with TAESDXL: peak {:.3} GiB > 7.5 GiB", turbo.peak_gib);
    assert!(base.peak_gib <= 8.5, "SDXL 1024²: peak {:.3} GiB > 8.5 GiB", base.peak_gib);
    // Text encoders freed after encoding: the peak goes down, a new prompt re-reads both.
    for (r, fam, tiny) in [(&turbo, PlanFamily::SdxlTurbo, true), (&base, PlanFamily::Sdxl, false)] {
        let e = run(fam, tiny, true, false);
        assert_eq!(e.text_encoder_reload_bytes, r.weights_bytes_text_encoder + r.weights_bytes_text_encoder_2);
        assert!(e.peak_bytes < r.peak_bytes, "{}: evicting gives peak {} B, keeping {} B", r.family, e.peak_bytes, r.peak_bytes);
        println!("{}: evicting the text encoders: peak {:.3} → {:.3} GiB, {} B re-read per new prompt", r.family, r.peak_gib, e.peak_gib, e.text_encoder_reload_bytes);
    }
    // The fp16-fix VAE: run in f16 (no f32 copy for the decode).
    let fix = run(PlanFamily::Sdxl, false, false, true);
    assert!(fix.vae_precision.contains("fp16-fix") && fix.weights_bytes_vae == base.weights_bytes_vae);
    println!("SDXL-Turbo 512² TAESDXL: peak {:.3} GiB; SDXL 1024²: peak {:.3} GiB (fp16-fix VAE: {:.3} GiB)", turbo.peak_gib, base.peak_gib, fix.peak_gib);
}
