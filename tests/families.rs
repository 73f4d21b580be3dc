//! The fast model families against diffusers: every case of the v2 reference bundles
//! `sd2/` (SD-2.x v-prediction with five samplers, the epsilon override, SD-Turbo 1 and 4
//! steps and img2img; text encoder and UNet), `taesd/` (AutoencoderTiny encode and decode,
//! txt2img and img2img decoded / encoded by TAESD) and `lcm/` (the LCM sampler on SD-1.5
//! with and without CFG, the LCM-distilled UNet with its guidance embedding), reproduced from
//! each case's parameters as a user passes them.
//!
//! Asserted as the real-world parity tests: final latents max |ours − diffusers| ≤
//! 1e-4·max|ref| (f32 storage) or 2e-2 (f16), image mean ≤ 2e-3 and max ≤ 2/255 (f32) or
//! mean ≤ 2e-2 (f16); components ≤ 5e-5·max|ref| (f32). Each run prints a `PARITY` line.
//!
//! CI runs every case natively (f32; f16 too for Turbo 4 steps, TAESD img2img and the LCM UNet)
//! but three marked `dup` (what they check, other cases CI runs check: said at each). In the browser
//! (SwiftShader: ~13 s per CFG step of these UNets) CI runs the components, the 1-step
//! SD-Turbo case and the TAESD-decoded 1-step Turbo generation; every other case is
//! `#[ignore]`d there with its reason and runs on demand:
//! `wasm-pack test --headless --chrome --release --test families -- --include-ignored`.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::parity::assert_close;
use common::model::{load_named, realconfig_tokenizer};
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::config::{ClipConfig, TinyVaeConfig, UnetConfig, VaeConfig};
use sd_webgpu::model::taesd::TinyVae;
use sd_webgpu::model::{Configs, StableDiffusion, COMPONENTS};
use sd_webgpu::pipeline::{self, Decoder, Output, Params};
use sd_webgpu::schedulers::Prediction;
use sd_webgpu::tokenizer::ClipTokenizer;
use sd_webgpu::weights::Layout;

bundle_files!(
    "sd2/cases.json",
    "sd2/golden.safetensors",
    "sd2/init.png",
    "sd2/model-v/unet/config.json",
    "sd2/model-v/unet/diffusion_pytorch_model.safetensors",
    "sd2/model-v/vae/config.json",
    "sd2/model-v/vae/diffusion_pytorch_model.safetensors",
    "sd2/model-v/text_encoder/config.json",
    "sd2/model-v/text_encoder/model.safetensors",
    "sd2/model-v/tokenizer/tokenizer_config.json",
    "sd2/model-v/tokenizer/special_tokens_map.json",
    "sd2/model-turbo/unet/config.json",
    "taesd/cases.json",
    "taesd/golden.safetensors",
    "taesd/init.png",
    "taesd/taesd/config.json",
    "taesd/taesd/diffusion_pytorch_model.safetensors",
    "taesd/taesd/diffusion_pytorch_model.fp16.safetensors",
    "lcm/cases.json",
    "lcm/golden.safetensors",
    "lcm/model-lcm/unet/config.json",
    "lcm/model-lcm/unet/diffusion_pytorch_model.safetensors",
    "lcm/model-lcm/scheduler/scheduler_config.json",
);

fn case(bundle: &str, name: &str) -> serde_json::Value {
    fixtures::case(&fx(&format!("{bundle}/cases.json")), bundle, name)
}

/// The models the cases name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Model {
    /// sd2/model-v (SD-2.1-768-style config, v-prediction).
    Sd2V,
    /// sd2/model-turbo (the same weights, sd-turbo's scheduler and UNet config).
    Sd2Turbo,
    /// sd15-realconfig/model.
    Sd15,
    /// lcm/model-lcm (LCM-distilled UNet with time_cond_proj_dim; the rest is sd15-realconfig's).
    Lcm,
}

fn model_of(bundle: &str, c: &serde_json::Value) -> Model {
    match (bundle, c["model"].as_str().unwrap()) {
        ("sd2", "model-v") => Model::Sd2V,
        ("sd2", "model-turbo") => Model::Sd2Turbo,
        (_, "../sd15-realconfig/model") => Model::Sd15,
        ("lcm", "model-lcm") => Model::Lcm,
        (b, m) => panic!("{b}: unknown model {m}"),
    }
}

fn sd2_configs(turbo: bool) -> Configs {
    let f = |c: &str| fx_text(&format!("sd2/model-v/{c}/config.json"));
    let unet = if turbo { fx_text("sd2/model-turbo/unet/config.json") } else { f("unet") };
    Configs {
        unet: UnetConfig::from_json("unet/config.json", &unet).unwrap(),
        vae: VaeConfig::from_json("vae/config.json", &f("vae")).unwrap(),
        clip: ClipConfig::from_json("text_encoder/config.json", &f("text_encoder")).unwrap(),
        ..Configs::default()
    }
}

fn load_model(gpu: &Gpu, m: Model, dtype: DType) -> (StableDiffusion, ClipTokenizer) {
    match m {
        Model::Sd2V | Model::Sd2Turbo => {
            let files = ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
                .iter()
                .zip(COMPONENTS)
                .map(|(f, c)| {
                    let rel = format!("sd2/model-v/{f}");
                    (rel.clone(), fx(&rel), Layout::Component(c.to_string()))
                })
                .collect();
            (load_named(gpu, dtype, sd2_configs(m == Model::Sd2Turbo), &COMPONENTS, files), sd2_tokenizer())
        }
        Model::Sd15 => (common::model::load_realconfig(gpu, dtype), realconfig_tokenizer()),
        Model::Lcm => {
            let mut cfg = common::model::configs();
            cfg.unet = UnetConfig::from_json("unet/config.json", &fx_text("lcm/model-lcm/unet/config.json")).unwrap();
            let te = "sd15-realconfig/model/text_encoder/model.safetensors";
            let un = "lcm/model-lcm/unet/diffusion_pytorch_model.safetensors";
            let files = vec![
                (te.to_string(), fixtures::file(te), Layout::Component("text_encoder".into())),
                (un.to_string(), fx(un), Layout::Component("unet".into())),
                ("model/vae/diffusion_pytorch_model.safetensors".to_string(), fixtures::bytes("model/vae/diffusion_pytorch_model.safetensors"), Layout::Component("vae".into())),
            ];
            (load_named(gpu, dtype, cfg, &COMPONENTS, files), realconfig_tokenizer())
        }
    }
}

/// SD-2.1's tokenizer files: vocab.json / merges.txt are byte-identical to tiny-sd15's; the
/// pad token comes from special_tokens_map.json (`!`) over tokenizer_config.json.
fn sd2_tokenizer() -> ClipTokenizer {
    let cfg = sd_webgpu::tokenizer::merged_tokenizer_config(
        Some(&fx_text("sd2/model-v/tokenizer/tokenizer_config.json")),
        Some(&fx_text("sd2/model-v/tokenizer/special_tokens_map.json")),
    )
    .unwrap();
    ClipTokenizer::from_vocab_merges(&fixtures::text("model/tokenizer/vocab.json"), &fixtures::text("model/tokenizer/merges.txt"), cfg.as_deref()).expect("tokenizer")
}

/// The TAESD of the taesd/ bundle (diffusers layout; `fp16`: its fp16 variant file).
fn load_taesd(gpu: &Gpu, dtype: DType, fp16_file: bool) -> TinyVae {
    let cfg = TinyVaeConfig::from_json("taesd/config.json", &fx_text("taesd/taesd/config.json")).unwrap();
    let rel = if fp16_file { "taesd/taesd/diffusion_pytorch_model.fp16.safetensors" } else { "taesd/taesd/diffusion_pytorch_model.safetensors" };
    let bytes = fx(rel);
    let mut loader = TinyVae::loader(gpu, &cfg, dtype);
    loader.begin(rel, Some(bytes.len() as u64), Layout::Component("taesd".into()));
    for chunk in bytes.chunks(1 << 20) {
        loader.feed(chunk).unwrap();
    }
    loader.end().unwrap();
    TinyVae::from_loader(cfg, dtype, loader).expect("every TAESD weight")
}

/// (scheduler config text, the case's parameters as a user passes them).
fn params(bundle: &str, c: &serde_json::Value) -> (String, Params) {
    let from = c["scheduler"]["from_config"].as_str().unwrap();
    let sched_path = match from.strip_prefix("../") {
        Some(rest) => rest.to_string(),
        None => format!("{bundle}/{from}"),
    };
    let sched = fx_text(&sched_path);
    let overrides = &c["scheduler"]["overrides"];
    for (k, _) in overrides.as_object().unwrap() {
        assert!(k == "use_karras_sigmas" || k == "prediction_type", "{}: override {k} has no user option", c["name"]);
    }
    let init_image = c["init_image"].as_str().map(|f| {
        let rel = format!("{bundle}/{f}");
        sd_webgpu::image::decode_png(&fx(&rel), &rel).unwrap()
    });
    let decoder = if c["extra_args"]["vae"] == "taesd" { Decoder::Tiny } else { Decoder::Vae };
    let p = Params {
        init_image,
        decoder,
        prediction_type: overrides["prediction_type"].as_str().map(|s| Prediction::parse(s).unwrap()),
        ..common::parity::v2_params(c)
    };
    (sched, p)
}

fn check(label: &str, dtype: DType, golden_bytes: &[u8], c: &serde_json::Value, out: &Output) -> Vec<String> {
    let (want_img, _) = golden(golden_bytes, c["golden"]["image"].as_str().unwrap());
    let (want_lat, _) = golden(golden_bytes, c["golden"]["latents"].as_str().unwrap());
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    common::parity::compare(label, dtype, &out.latents, &want_lat, &got_img, &want_img)
}

async fn run_case(bundle: &'static str, name: &'static str, dtype: DType) {
    let c = case(bundle, name);
    assert_eq!(c["kind"], "pipeline");
    let (sched, p) = params(bundle, &c);
    let gpu = common::gpu(true).await;
    let t0 = common::now_ms();
    let m = model_of(bundle, &c);
    let (mut sd, tok) = load_model(&gpu, m, dtype);
    if p.decoder == Decoder::Tiny {
        sd.tiny_vae = Some(load_taesd(&gpu, dtype, false));
    }
    // The timesteps the UNet gets are diffusers' (the schedule as the case's config builds it).
    let want_ts: Vec<f64> = c["scheduler"]["timesteps_visited"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let overrides = sd_webgpu::schedulers::Overrides { timestep_spacing: None, prediction_type: p.prediction_type };
    let s = sd_webgpu::schedulers::from_config_with(&p.sampler, Some(&sched), p.steps, &overrides).unwrap();
    let begin = if p.init_image.is_some() { s.img2img_begin(p.strength).unwrap() } else { 0 };
    assert_eq!(&s.timesteps()[begin..], &want_ts[..], "{bundle}/{name}: timesteps");
    if let Some(ids) = c["checks"]["token_ids"].as_array() {
        let want: Vec<u32> = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(&p.prompt).unwrap().ids, want, "{name}: token ids");
    }
    let mut steps_seen = 0;
    let out = pipeline::generate(&gpu, &sd, &tok, Some(&sched), &p, &mut |pr| {
        steps_seen = pr.step;
        true
    })
    .await
    .unwrap_or_else(|e| panic!("{bundle}/{name}: {e}"));
    log!("{bundle}/{name} ({}): loaded and generated in {:.1} s", dtype.name(), (common::now_ms() - t0) / 1000.0);
    assert_eq!(steps_seen, want_ts.len(), "{name}: steps run");
    assert_eq!(out.decoder, p.decoder, "{name}: decoder used");
    assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
    let fails = check(&format!("{bundle}/{name}"), dtype, &fx(&format!("{bundle}/golden.safetensors")), &c, &out);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

macro_rules! case {
    // f32 natively; in the browser on demand
    ($t:ident, $bundle:literal, $name:literal) => {
        native_test!($t, run_case($bundle, $name, DType::F32));
    };
    // f32 in both runners in CI
    ($t:ident, $bundle:literal, $name:literal, both) => {
        gpu_test!($t, run_case($bundle, $name, DType::F32));
    };
    // CI skips it in both runners: what it checks another case that CI runs checks too (said
    // at each use); `-- --ignored` natively and `-- --include-ignored` in the browser run it
    ($t:ident, $bundle:literal, $name:literal, dup) => {
        ignored_test!($t, "repeats what CI checks elsewhere (see tests/families.rs); run with --ignored (native) / --include-ignored (browser)", run_case($bundle, $name, DType::F32));
    };
}

case!(sd2_v_ddim_f32, "sd2", "v_ddim");
case!(sd2_v_euler_f32, "sd2", "v_euler");
case!(sd2_v_euler_a_f32, "sd2", "v_euler_a");
case!(sd2_v_dpmpp_2m_karras_f32, "sd2", "v_dpmpp_2m_karras");
case!(sd2_v_ddpm_f32, "sd2", "v_ddpm");
case!(sd2_eps_ddim_f32, "sd2", "eps_ddim");
case!(sd2_turbo_single_step_f32, "sd2", "turbo_single_step", both);
case!(sd2_turbo_multi_step_f32, "sd2", "turbo_multi_step");
case!(sd2_turbo_img2img_f32, "sd2", "turbo_img2img");
// The two TAESD txt2img cases denoise exactly as real_euler_a / real_dpmpp_2m_karras of
// tests/pipeline.rs (the bundle checks: latents equal to the KL-VAE pipeline's); their TAESD
// decode is what img2img_taesd and the decode component check in CI.
case!(taesd_txt2img_euler_a_f32, "taesd", "txt2img_taesd_euler_a", dup);
case!(taesd_txt2img_dpmpp_2m_karras_f32, "taesd", "txt2img_taesd_dpmpp_2m_karras", dup);
case!(taesd_img2img_f32, "taesd", "img2img_taesd");
case!(lcm_sd15_nocfg_f32, "lcm", "sd15_lcm_nocfg");
case!(lcm_sd15_cfg_f32, "lcm", "sd15_lcm_cfg");
// 6 steps of the 4-step sd15_lcm_nocfg (same sampler, prompt and seed; only the schedule
// differs, which every_schedule_is_diffusers checks for every case)
case!(lcm_sd15_more_steps_f32, "lcm", "sd15_lcm_more_steps", dup);
case!(lcm_unet_f32, "lcm", "lcm_unet");
case!(lcm_unet_orig_steps_f32, "lcm", "lcm_unet_orig_steps");
// f16 storage natively for the new paths (packed-f16 TAESD, the SD-2 shapes, the w embedding).
native_test!(sd2_turbo_multi_step_f16, run_case("sd2", "turbo_multi_step", DType::F16));
native_test!(taesd_img2img_f16, run_case("taesd", "img2img_taesd", DType::F16));
native_test!(lcm_unet_f16, run_case("lcm", "lcm_unet", DType::F16));

/// sd2 text_encoder: the gelu OpenCLIP-style encoder on three prompts, '!' and padding = id 0.
async fn sd2_text_encoder() {
    let c = case("sd2", "text_encoder");
    let gpu = common::gpu(true).await;
    let (sd, tok) = load_model(&gpu, Model::Sd2V, DType::F32);
    let prompts: Vec<&str> = c["prompt"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let mut ids = Vec::new();
    for (k, p) in prompts.iter().enumerate() {
        let e = tok.encode(p).unwrap();
        let want: Vec<u32> = c["checks"]["token_ids"][k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(e.ids, want, "token ids of {p:?}");
        ids.extend(e.ids);
    }
    let t = gpu.upload_u32(&[prompts.len(), 77], &ids).unwrap();
    let y = sd.clip.forward(&sd.ctx(&gpu), &t).unwrap();
    let got = gpu.read(&y).await.unwrap();
    let (want, _) = golden(&fx("sd2/golden.safetensors"), c["golden"]["hidden"].as_str().unwrap());
    assert_close("sd2/text_encoder", &got, &want, 5e-5);
}
gpu_test!(sd2_text_encoder_matches_transformers, sd2_text_encoder());

/// An SD-2.x single-file checkpoint's text encoder: OpenCLIP names (`cond_stage_model.model.*`,
/// fused `attn.in_proj_weight` / `in_proj_bias`, `c_fc` / `c_proj`, `ln_final`, a 24th block
/// and `text_projection` that diffusers does not use), made from the sd2 text encoder's own
/// tensors, loads to the same outputs as transformers' (te_hidden), without warnings.
async fn sd2_single_file_text_encoder() {
    let c = case("sd2", "text_encoder");
    let gpu = common::gpu(true).await;
    let cfg = sd2_configs(false);
    let bytes = fx("sd2/model-v/text_encoder/model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |n: &str| st.tensor(&format!("text_model.{n}")).unwrap_or_else(|_| panic!("{n}"));
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let put = |owned: &mut Vec<(String, Vec<usize>, Vec<u8>)>, name: String, t: &safetensors::tensor::TensorView| owned.push((name, t.shape().to_vec(), t.data().to_vec()));
    put(&mut owned, "cond_stage_model.model.token_embedding.weight".into(), &get("embeddings.token_embedding.weight"));
    put(&mut owned, "cond_stage_model.model.positional_embedding".into(), &get("embeddings.position_embedding.weight"));
    put(&mut owned, "cond_stage_model.model.ln_final.weight".into(), &get("final_layer_norm.weight"));
    put(&mut owned, "cond_stage_model.model.ln_final.bias".into(), &get("final_layer_norm.bias"));
    let layers = cfg.clip.num_hidden_layers;
    // The file's extra (24th) block is a copy of block 0: skipped as diffusers skips it.
    for (i, src) in (0..layers).map(|i| (i, i)).chain([(layers, 0)]) {
        let l = |n: &str| get(&format!("encoder.layers.{src}.{n}"));
        let r = format!("cond_stage_model.model.transformer.resblocks.{i}");
        for (ours, theirs) in [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")] {
            put(&mut owned, format!("{r}.{theirs}.weight"), &l(&format!("{ours}.weight")));
            put(&mut owned, format!("{r}.{theirs}.bias"), &l(&format!("{ours}.bias")));
        }
        for (suffix, theirs) in [("weight", "in_proj_weight"), ("bias", "in_proj_bias")] {
            let parts: Vec<_> = ["q_proj", "k_proj", "v_proj"].iter().map(|p| l(&format!("self_attn.{p}.{suffix}"))).collect();
            let mut shape = parts[0].shape().to_vec();
            shape[0] *= 3;
            owned.push((format!("{r}.attn.{theirs}"), shape, parts.iter().flat_map(|p| p.data().to_vec()).collect()));
        }
    }
    let d = cfg.clip.hidden_size;
    owned.push(("cond_stage_model.model.text_projection".into(), vec![d, d], vec![0u8; d * d * 4]));
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        owned.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
    let file = safetensors::serialize(views, None).unwrap();
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Recognised from its header alone (the CLI then uses SD-2.1's configs, tokenizer and scheduler).
        let path = std::env::temp_dir().join(format!("sd-webgpu-sd2-te-{}.safetensors", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        assert!(sd_webgpu::model::single_file_is_sd2(&path).unwrap(), "an OpenCLIP text encoder is SD-2");
        std::fs::remove_file(&path).ok();
        let sd15 = std::path::Path::new(fixtures::ROOT).join("model.safetensors");
        assert!(!sd_webgpu::model::single_file_is_sd2(&sd15).unwrap(), "tiny-sd15's single file is not SD-2");
    }
    let mut loader = StableDiffusion::loader(&gpu, &cfg, DType::F32, &["text_encoder"]);
    loader.begin("sd2-single-file.safetensors", Some(file.len() as u64), cfg.single_file_layout());
    for chunk in file.chunks(1 << 20) {
        loader.feed(chunk).unwrap();
    }
    loader.end().unwrap();
    let sd = StableDiffusion::from_loader(cfg, DType::F32, loader).expect("every text-encoder weight from the OpenCLIP names");
    assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
    let tok = sd2_tokenizer();
    let prompts: Vec<&str> = c["prompt"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let ids: Vec<u32> = prompts.iter().flat_map(|p| tok.encode(p).unwrap().ids).collect();
    let t = gpu.upload_u32(&[prompts.len(), 77], &ids).unwrap();
    let y = sd.clip.forward(&sd.ctx(&gpu), &t).unwrap();
    let (want, _) = golden(&fx("sd2/golden.safetensors"), c["golden"]["hidden"].as_str().unwrap());
    assert_close("sd2 single-file (OpenCLIP) text encoder", &gpu.read(&y).await.unwrap(), &want, 5e-5);
}
gpu_test!(sd2_single_file_open_clip_text_encoder, sd2_single_file_text_encoder());

/// A UNet component golden (`in`, `context`, optional `timestep_cond`, `out` at
/// `extra_args.timestep`). With a `timestep_cond` (LCM) the UNet must also refuse to run
/// without it (instead of silently ignoring w).
async fn unet_component(bundle: &str, name: &str, m: Model) {
    let c = case(bundle, name);
    let g = fx(&format!("{bundle}/golden.safetensors"));
    let gpu = common::gpu(true).await;
    let (sd, _) = load_model(&gpu, m, DType::F32);
    let up = |key: &str| {
        let (v, shape) = golden(&g, key);
        gpu.upload(&shape, DType::F32, &v).unwrap()
    };
    let xt = up(c["golden"]["in"].as_str().unwrap());
    let ct = up(c["golden"]["context"].as_str().unwrap());
    let wt = c["golden"]["timestep_cond"].as_str().map(up);
    let (want, _) = golden(&g, c["golden"]["out"].as_str().unwrap());
    let b = xt.shape()[0];
    let t = c["extra_args"]["timestep"].as_f64().unwrap() as f32;
    let tt = gpu.upload(&[b], DType::F32, &vec![t; b]).unwrap();
    let y = sd.unet.forward_cond(&sd.ctx(&gpu), &xt, &tt, &ct, wt.as_ref()).unwrap();
    assert_close(&format!("{bundle}/{name}"), &gpu.read(&y).await.unwrap(), &want, 5e-5);
    if wt.is_some() {
        assert!(sd.unet.forward(&sd.ctx(&gpu), &xt, &tt, &ct).is_err(), "{bundle}/{name}: ran without timestep_cond");
    }
}
// sd2 unet: linear projections, per-block heads, cross-attention width 64, v output.
gpu_test!(sd2_unet_matches_diffusers, unet_component("sd2", "unet", Model::Sd2V));

/// TAESD encode and decode (f32: 5e-5; the fp16 variant file in f16 storage: 2e-2).
async fn taesd_components(dtype: DType, fp16_file: bool) {
    let g = fx("taesd/golden.safetensors");
    let gpu = common::gpu(true).await;
    let tiny = load_taesd(&gpu, dtype, fp16_file);
    let tol = if dtype == DType::F32 && !fp16_file { 5e-5 } else { 2e-2 };
    let label = format!("taesd ({}, {} file)", dtype.name(), if fp16_file { "fp16" } else { "fp32" });
    for (kind, key) in [("encode", "taesd_encode"), ("decode", "taesd_decode")] {
        let c = case("taesd", key);
        let (x, xs) = golden(&g, c["golden"]["in"].as_str().unwrap());
        let (want, ws) = golden(&g, c["golden"]["out"].as_str().unwrap());
        let xt = gpu.upload(&xs, dtype, &x).unwrap();
        let y = if kind == "encode" { tiny.encode(&gpu, &xt).unwrap() } else { tiny.decode(&gpu, &xt).unwrap() };
        assert_eq!(y.shape(), &ws[..], "{label} {kind}: shape");
        assert_close(&format!("{label} {kind}"), &gpu.read(&y).await.unwrap(), &want, tol);
    }
}
gpu_test!(taesd_encode_decode_match_diffusers_f32, taesd_components(DType::F32, false));
gpu_test!(taesd_fp16_variant_in_f16, taesd_components(DType::F16, true));

/// The encode input is init.png in [-1, 1] as the pipelines make it.
fn taesd_encode_input_is_the_png() {
    let g = fx("taesd/golden.safetensors");
    let img = sd_webgpu::image::decode_png(&fx("taesd/init.png"), "init.png").unwrap();
    let (x, xs) = golden(&g, "taesd_encode_in");
    let hw = img.width * img.height;
    assert_eq!(xs, vec![1, 3, img.height, img.width]);
    let mine: Vec<f32> = (0..3 * hw).map(|i| 2.0 * img.data[(i % hw) * 3 + i / hw] - 1.0).collect();
    assert_close("taesd encode input", &mine, &x, 1e-6);
}
cpu_test!(taesd_encode_input_is_the_init_png, taesd_encode_input_is_the_png);

/// madebyollin's original files (bare indices; the decoder's shifted by its clamp) load to the
/// same weights: the diffusers file renamed to that layout decodes bit-identically.
async fn taesd_original_layout() {
    let gpu = common::gpu(true).await;
    let tiny = load_taesd(&gpu, DType::F32, false);
    let bytes = fx("taesd/taesd/diffusion_pytorch_model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut enc = Vec::new();
    let mut dec = Vec::new();
    for (name, view) in st.tensors() {
        let (idx, rest) = name.split_once(".layers.").unwrap().1.split_once('.').unwrap();
        let i: usize = idx.parse().unwrap();
        if name.starts_with("encoder.") {
            enc.push((format!("{i}.{rest}"), view));
        } else {
            dec.push((format!("{}.{rest}", i + 1), view));
        }
    }
    let cfg = tiny.cfg.clone();
    let mut loader = TinyVae::loader(&gpu, &cfg, DType::F32);
    for (file, tensors, decoder) in [("taesd_encoder.safetensors", enc, false), ("taesd_decoder.safetensors", dec, true)] {
        let b = safetensors::serialize(tensors, None).unwrap();
        assert!(matches!(sd_webgpu::model::taesd::file_layout(file), Layout::TaesdOriginal { decoder: d } if d == decoder), "{file}");
        loader.begin(file, Some(b.len() as u64), Layout::TaesdOriginal { decoder });
        loader.feed(&b).unwrap();
        loader.end().unwrap();
    }
    let orig = TinyVae::from_loader(cfg, DType::F32, loader).expect("every weight from the original layout");
    let g = fx("taesd/golden.safetensors");
    let (z, zs) = golden(&g, "taesd_decode_in");
    let zt = gpu.upload(&zs, DType::F32, &z).unwrap();
    let a = gpu.read(&tiny.decode(&gpu, &zt).unwrap()).await.unwrap();
    let b = gpu.read(&orig.decode(&gpu, &zt).unwrap()).await.unwrap();
    assert_eq!(a, b, "original-layout TAESD decodes differently");
}
gpu_test!(taesd_original_file_layout_loads_the_same_weights, taesd_original_layout());

/// LCM's guidance embedding (w = 7 → [1, 32]).
fn lcm_embedding() {
    let c = case("lcm", "lcm_guidance_embedding");
    let w = c["extra_args"]["w"].as_f64().unwrap();
    let d = c["extra_args"]["embedding_dim"].as_u64().unwrap() as usize;
    let (want, _) = golden(&fx("lcm/golden.safetensors"), c["golden"]["w_embedding"].as_str().unwrap());
    // sin/cos of f32 arguments up to w·1000 = 7000 rad: one ulp of the argument (4.9e-4) moves
    // them by that much, and expf differs by an ulp between libms (glibc natively, Rust's libm
    // in wasm: 1.1e-4 measured there); 1e-3 still fails a wrong frequency or sin/cos order.
    assert_close("lcm guidance embedding", &pipeline::guidance_embedding(w, d), &want, 1e-3);
}
cpu_test!(lcm_guidance_embedding_matches_diffusers, lcm_embedding);

// The LCM-distilled UNet with timestep_cond.
gpu_test!(lcm_unet_forward_matches_diffusers, unet_component("lcm", "lcm_unet_forward", Model::Lcm));

/// The model says what it is: SD-Turbo (trailing Euler), SD-2 (gelu text encoder), LCM
/// (time_cond_proj_dim / LCMScheduler), SD-1.5; and the defaults follow.
async fn defaults_from_configs() {
    let gpu = common::gpu(true).await;
    for (m, sched, name, fam, steps, guidance, sampler) in [
        (Model::Sd2Turbo, "sd2/model-turbo/scheduler/scheduler_config.json", "model-turbo", pipeline::Family::Turbo, 1, 0.0, "euler"),
        (Model::Sd2V, "sd2/model-v/scheduler/scheduler_config.json", "model-v", pipeline::Family::Sd2, 20, 7.5, "euler_a"),
        (Model::Lcm, "lcm/model-lcm/scheduler/scheduler_config.json", "model-lcm", pipeline::Family::Lcm, 4, 8.0, "lcm"),
        (Model::Sd15, "sd15-realconfig/model/scheduler/scheduler_config.json", "model", pipeline::Family::Sd15, 20, 7.5, "euler_a"),
    ] {
        let (sd, _) = load_model(&gpu, m, DType::F32);
        let d = pipeline::model_defaults(&sd, Some(&fx_text(sched)), name);
        assert_eq!((d.family, d.steps, d.guidance_scale, d.sampler), (fam, steps, guidance, sampler), "{m:?}");
        // sample_size 8 × VAE factor 8
        assert_eq!((d.width, d.height), (64, 64), "{m:?}");
        assert_eq!(d.negative_prompt_used, guidance > 1.0 && m != Model::Lcm, "{m:?}");
    }
}
native_test!(model_family_and_defaults_from_the_configs, defaults_from_configs());

/// The timesteps each pipeline case's sampler visits, and its initial noise sigma, are
/// diffusers' (`scheduler.timesteps_visited`, `init_noise_sigma`), for every case of the three
/// bundles (CPU only: cheap in both runners).
fn every_schedule() {
    for bundle in ["sd2", "taesd", "lcm"] {
        let j: serde_json::Value = serde_json::from_str(&fx_text(&format!("{bundle}/cases.json"))).unwrap();
        for c in j["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == "pipeline") {
            let (sched, p) = params(bundle, c);
            let o = sd_webgpu::schedulers::Overrides { timestep_spacing: None, prediction_type: p.prediction_type };
            let s = sd_webgpu::schedulers::from_config_with(&p.sampler, Some(&sched), p.steps, &o).unwrap();
            let begin = if p.init_image.is_some() { s.img2img_begin(p.strength).unwrap() } else { 0 };
            let want: Vec<f64> = c["scheduler"]["timesteps_visited"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(&s.timesteps()[begin..], &want[..], "{bundle}/{}: timesteps", c["name"]);
            let sigma = c["scheduler"]["init_noise_sigma"].as_f64().unwrap();
            assert!((s.init_noise_sigma() - sigma).abs() <= 1e-4 * sigma, "{bundle}/{}: init_noise_sigma {} vs {sigma}", c["name"], s.init_noise_sigma());
        }
    }
}
cpu_test!(every_schedule_is_diffusers, every_schedule);

/// Every case of the three bundles has a test above.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_case_of_the_bundles_is_tested() {
    let src = include_str!("families.rs");
    for bundle in ["sd2", "taesd", "lcm"] {
        let j: serde_json::Value = serde_json::from_str(&fx_text(&format!("{bundle}/cases.json"))).unwrap();
        for c in j["cases"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let covered = src.contains(&format!("\"{bundle}\", \"{name}\"")) || src.contains(&format!("case(\"{bundle}\", \"{name}\")")) || src.contains(&format!("(\"decode\", \"{name}\")")) || src.contains(&format!("(\"encode\", \"{name}\")"));
            assert!(covered, "{bundle} case {name} has no test");
        }
    }
}
