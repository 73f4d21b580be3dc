//! SDXL's networks against diffusers, component by component (reference bundle `sdxl/`, a
//! tiny random-weight model with SDXL's exact topology): the two text encoders (penultimate
//! hidden states of both, concatenated; text_encoder_2's pooled projection at the EOS), the
//! UNet with `text_time` conditioning (time-id embedding, `add_embedding`, the output) and
//! the VAE (decode, encode). Asserted as tests/families.rs' components: ≤ 5e-5·max|ref| (f32
//! storage), printing a `COMPONENT|…` line each and, on failure, the worst element and its
//! index. Also the configs: the bundle's parse to what diffusers reads, missing keys take
//! diffusers' defaults, and `Configs::sdxl()` has the real SDXL base's shapes.
//!
//! Both runners: `cargo test --release --test sdxl_components` and
//! `wasm-pack test --headless --chrome --release --test sdxl_components`.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden, safetensors_bytes};
use common::model::load_named;
use common::parity::assert_close;
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::clip::concat_features;
use sd_webgpu::model::config::{PerBlock, UnetConfig, VaeConfig, XlPipelineConfig};
use sd_webgpu::model::unet::AddedCond;
use sd_webgpu::model::{Configs, StableDiffusion};
use sd_webgpu::tokenizer::ClipTokenizer;
use sd_webgpu::weights::Layout;

bundle_files!(
    "sdxl/cases.json",
    "sdxl/golden.safetensors",
    "sdxl/model/model_index.json",
    "sdxl/model/unet/config.json",
    "sdxl/model/unet/diffusion_pytorch_model.safetensors",
    "sdxl/model/vae/config.json",
    "sdxl/model/vae/diffusion_pytorch_model.safetensors",
    "sdxl/model/text_encoder/config.json",
    "sdxl/model/text_encoder/model.safetensors",
    "sdxl/model/text_encoder_2/config.json",
    "sdxl/model/text_encoder_2/model.safetensors",
    "sdxl/model/tokenizer/tokenizer_config.json",
    "sdxl/model/tokenizer/special_tokens_map.json",
    "sdxl/model/tokenizer_2/tokenizer_config.json",
    "sdxl/model/tokenizer_2/special_tokens_map.json",
);

const TOL: f64 = 5e-5;

fn case(name: &str) -> serde_json::Value {
    fixtures::case(&fx("sdxl/cases.json"), "sdxl", name)
}

/// The bundle's configs, as a diffusers folder gives them.
fn configs() -> Configs {
    let f = |c: &str| fx_text(&format!("sdxl/model/{c}/config.json"));
    Configs::from_json_texts(&f("unet"), &f("vae"), &f("text_encoder"), Some(&f("text_encoder_2")), Some(&fx_text("sdxl/model/model_index.json"))).expect("sdxl configs")
}

/// Load `components` of the bundle's model (`text_encoder_2`'s file optionally replaced).
fn load(gpu: &Gpu, components: &[&str], te2_file: Option<Vec<u8>>) -> StableDiffusion {
    let mut te2 = te2_file;
    let files = components
        .iter()
        .map(|&c| {
            let file = if c.starts_with("text_encoder") { "model.safetensors" } else { "diffusion_pytorch_model.safetensors" };
            let rel = format!("sdxl/model/{c}/{file}");
            let bytes = if c == "text_encoder_2" { te2.take().unwrap_or_else(|| fx(&rel)) } else { fx(&rel) };
            (rel, bytes, Layout::Component(c.to_string()))
        })
        .collect();
    let sd = load_named(gpu, DType::F32, configs(), components, files);
    assert!(sd.warnings.is_empty(), "loading warned: {:?}", sd.warnings);
    sd
}

/// The bundle's tokenizers (BPE files = tiny-sd15's, byte-identical; the configs are the
/// bundle's: tokenizer_2 pads with '!').
fn tokenizer(dir: &str) -> ClipTokenizer {
    let cfg = sd_webgpu::tokenizer::merged_tokenizer_config(
        Some(&fx_text(&format!("sdxl/model/{dir}/tokenizer_config.json"))),
        Some(&fx_text(&format!("sdxl/model/{dir}/special_tokens_map.json"))),
    )
    .unwrap();
    ClipTokenizer::from_vocab_merges(&fixtures::text("model/tokenizer/vocab.json"), &fixtures::text("model/tokenizer/merges.txt"), cfg.as_deref()).expect("tokenizer")
}

/// Index of the first maximum of a row (transformers' `argmax` pooling).
fn argmax(ids: &[u32]) -> usize {
    let m = *ids.iter().max().unwrap();
    ids.iter().position(|&v| v == m).unwrap()
}

// ---------------------------------------------------------------- configs

fn bundle_configs_parse() {
    let c = configs();
    assert!(c.is_xl() && c.unet.is_xl());
    assert_eq!(c.unet.block_out_channels, vec![16, 32, 64]);
    assert_eq!(c.unet.transformer_layers_per_block.values(), vec![1, 2, 3]);
    assert_eq!((0..3).map(|i| c.unet.transformer_layers_down(i)).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!((0..3).map(|i| c.unet.transformer_layers_up(i)).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert_eq!(c.unet.transformer_layers_mid(), 3);
    assert_eq!((0..3).map(|i| c.unet.heads(i)).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert_eq!(c.unet.addition_time_embed_dim, Some(8));
    assert_eq!(c.unet.projection_class_embeddings_input_dim, Some(72));
    assert_eq!(c.unet.pooled_text_dim(), Some(24));
    assert_eq!(c.unet.cross_attention_dim, 48);
    assert_eq!(c.unet.norm_num_groups, 16);
    assert!(c.unet.use_linear_projection);
    let c2 = c.clip2.as_ref().expect("text_encoder_2");
    assert_eq!((c2.hidden_size, c2.num_hidden_layers, c2.projection_dim, c2.hidden_act.as_str()), (32, 10, Some(24), "gelu"));
    assert_eq!((c.clip.hidden_size, c.clip.num_hidden_layers, c.clip.hidden_act.as_str()), (16, 3, "quick_gelu"));
    assert_eq!(c.clip.hidden_size + c2.hidden_size, c.unet.cross_attention_dim);
    assert_eq!((c.vae.scaling_factor, c.vae.force_upcast, c.vae.norm_num_groups), (0.13025, true, 8));
    let xl = c.xl.as_ref().expect("xl switches");
    // model_index.json: force_zeros_for_empty_prompt true; requires_aesthetics_score absent.
    assert!(xl.force_zeros_for_empty_prompt && !xl.requires_aesthetics_score);
    assert_eq!(c.components(), vec!["text_encoder", "unet", "vae", "text_encoder_2"]);
}
cpu_test!(sdxl_bundle_configs_parse, bundle_configs_parse);

/// Keys a config leaves out take diffusers' defaults; SD configs stay non-XL.
fn missing_keys_defaults() {
    let u = UnetConfig::from_json("unet/config.json", "{}").unwrap();
    assert!(!u.is_xl() && u.addition_embed_type.is_none() && u.addition_time_embed_dim.is_none());
    assert!(matches!(u.transformer_layers_per_block, PerBlock::One(1)));
    let v = VaeConfig::from_json("vae/config.json", "{}").unwrap();
    assert!(v.force_upcast, "AutoencoderKL's force_upcast defaults to true");
    let x = XlPipelineConfig::from_json("model_index.json", r#"{"_class_name": "StableDiffusionXLPipeline"}"#).unwrap();
    assert!(x.force_zeros_for_empty_prompt && !x.requires_aesthetics_score);
    let x = XlPipelineConfig::from_json("model_index.json", r#"{"force_zeros_for_empty_prompt": false, "requires_aesthetics_score": true}"#).unwrap();
    assert!(!x.force_zeros_for_empty_prompt && x.requires_aesthetics_score);
    // The fp16-fix VAE says force_upcast false.
    assert!(!VaeConfig::from_json("vae/config.json", r#"{"force_upcast": false, "scaling_factor": 0.13025}"#).unwrap().force_upcast);
    // An SD-1.5 folder: no text_encoder_2, no XL switches, three components.
    let sd = common::model::configs();
    assert!(!sd.is_xl() && sd.clip2.is_none() && sd.xl.is_none());
    assert_eq!(sd.components(), vec!["text_encoder", "unet", "vae"]);
}
cpu_test!(sdxl_missing_config_keys_take_diffusers_defaults, missing_keys_defaults);

/// Broken SDXL configs are errors that name the key.
fn bad_configs_refused() {
    let f = |c: &str| fx_text(&format!("sdxl/model/{c}/config.json"));
    let unet = f("unet");
    let err = |text: &str| UnetConfig::from_json("unet/config.json", text).unwrap_err().to_string();
    assert!(err(&unet.replace("\"addition_embed_type\": \"text_time\"", "\"addition_embed_type\": \"image\"")).contains("addition_embed_type"));
    assert!(err(&unet.replace("\"addition_time_embed_dim\": 8", "\"addition_time_embed_dim\": null")).contains("addition_time_embed_dim"));
    let layers = "\"transformer_layers_per_block\": [\n    1,\n    2,\n    3\n  ]";
    assert!(unet.contains(layers));
    assert!(err(&unet.replace(layers, "\"transformer_layers_per_block\": [1, 2]")).contains("transformer_layers_per_block"));
    assert!(err(&unet.replace(layers, "\"transformer_layers_per_block\": [1, 2, 100000]")).contains("transformer_layers_per_block"));
    // An XL UNet without text_encoder_2.
    let e = Configs::from_json_texts(&unet, &f("vae"), &f("text_encoder"), None, None).unwrap_err().to_string();
    assert!(e.contains("text_encoder_2"), "{e}");
}
cpu_test!(sdxl_bad_configs_are_refused, bad_configs_refused);

/// `Configs::sdxl()` = stabilityai/stable-diffusion-xl-base-1.0: the parameter counts of its
/// four networks as diffusers / transformers report them (`num_parameters()`: UNet
/// 2,567,463,684; VAE 83,653,863; CLIP ViT-L 123,060,480; OpenCLIP bigG with projection
/// 694,659,840), and its configs survive a round trip through config.json.
fn sdxl_shapes() {
    let cfg = Configs::sdxl();
    let (_, _, _, specs) = sd_webgpu::model::build(&cfg);
    let count = |c: &str| specs.iter().filter(|s| s.name.starts_with(&format!("{c}/"))).map(|s| s.shape.iter().product::<usize>()).sum::<usize>();
    let got = [count("unet"), count("vae"), count("text_encoder"), count("text_encoder_2")];
    assert_eq!(got, [2_567_463_684, 83_653_863, 123_060_480, 694_659_840], "unet, vae, text_encoder, text_encoder_2");
    let j = |v: serde_json::Result<serde_json::Value>| v.unwrap().to_string();
    let back = Configs::from_json_texts(&j(serde_json::to_value(&cfg.unet)), &j(serde_json::to_value(&cfg.vae)), &j(serde_json::to_value(&cfg.clip)), Some(&j(serde_json::to_value(cfg.clip2.as_ref().unwrap()))), None).unwrap();
    assert!(back.is_xl() && back.clip2.is_some());
    assert_eq!(sd_webgpu::model::build(&back).3.len(), specs.len());
    let t = Configs::sdxl_turbo();
    assert_eq!((t.unet.sample_size, cfg.unet.sample_size), (64, 128));
}
cpu_test!(sdxl_configs_have_the_real_shapes, sdxl_shapes);

// ---------------------------------------------------------------- text encoders

async fn text_encoders() {
    let c = case("text_encoders");
    let g = fx("sdxl/golden.safetensors");
    let gpu = common::gpu(true).await;
    let sd = load(&gpu, &["text_encoder", "text_encoder_2"], None);
    let (t1, t2) = (tokenizer("tokenizer"), tokenizer("tokenizer_2"));
    let prompts: Vec<&str> = c["prompt"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let ids = |tok: &ClipTokenizer, key: &str| -> Vec<u32> {
        let mut all = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let e = tok.encode(p).unwrap().ids;
            let want: Vec<u32> = c["checks"][key][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(e, want, "{key} of {p:?}");
            all.extend(e);
        }
        all
    };
    let (ids1, ids2) = (ids(&t1, "tokenizer_ids"), ids(&t2, "tokenizer_2_ids"));
    let (b, s) = (prompts.len(), ids1.len() / prompts.len());
    let eos = |ids: &[u32]| -> Vec<usize> { ids.chunks(s).map(argmax).collect() };
    let cx = sd.ctx(&gpu);
    let i1 = gpu.upload_u32(&[b, s], &ids1).unwrap();
    let i2 = gpu.upload_u32(&[b, s], &ids2).unwrap();
    let clip2 = sd.clip2.as_ref().expect("text_encoder_2");
    let o1 = sd.clip.encode_xl(&cx, &i1, &eos(&ids1)).unwrap();
    let o2 = clip2.encode_xl(&cx, &i2, &eos(&ids2)).unwrap();
    assert!(o1.pooled.is_none(), "text_encoder (CLIPTextModel) has no projection");
    let embeds = concat_features(&gpu, &o1.penultimate, &o2.penultimate).unwrap();
    let (want, ws) = golden(&g, "te_prompt_embeds");
    assert_eq!(embeds.shape(), &ws[..]);
    assert_close("sdxl text_encoders prompt_embeds", &gpu.read(&embeds).await.unwrap(), &want, TOL);
    let pooled = o2.pooled.expect("pooled");
    let (want, ws) = golden(&g, "te_pooled_prompt_embeds");
    assert_eq!(pooled.shape(), &ws[..]);
    assert_close("sdxl text_encoders pooled_prompt_embeds", &gpu.read(&pooled).await.unwrap(), &want, TOL);
    let last = clip2.forward(&cx, &i2).unwrap();
    let (want, _) = golden(&g, "te2_last_hidden_state");
    assert_close("sdxl text_encoder_2 last_hidden_state", &gpu.read(&last).await.unwrap(), &want, TOL);
    // Bad EOS positions are refused.
    assert!(clip2.encode_xl(&cx, &i2, &[0, 1]).is_err());
    assert!(clip2.encode_xl(&cx, &i2, &[0, 1, s]).is_err());
}
gpu_test!(sdxl_text_encoders_match_diffusers, text_encoders());

/// text_encoder_2 saved without transformers' `text_model.` prefix (transformers >= 5.6
/// writes it so) loads to the same network: bit-identical pooled output.
async fn text_encoder_2_without_prefix() {
    let gpu = common::gpu(true).await;
    let bytes = fx("sdxl/model/text_encoder_2/model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut renamed = 0;
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    for name in names {
        let t = st.tensor(&name).unwrap();
        let new = match name.strip_prefix("text_model.") {
            Some(n) => {
                renamed += 1;
                n.to_string()
            }
            None => name.clone(),
        };
        let start = data.len();
        data.extend_from_slice(t.data());
        header.insert(new, serde_json::json!({"dtype": "F32", "shape": t.shape(), "data_offsets": [start, data.len()]}));
    }
    assert!(renamed > 100, "the bundle's file has text_model.* names");
    assert!(header.contains_key("text_projection.weight"));
    let file = safetensors_bytes(serde_json::to_string(&header).unwrap().as_bytes(), &data);
    let a = load(&gpu, &["text_encoder_2"], None);
    let b = load(&gpu, &["text_encoder_2"], Some(file));
    let ids: Vec<u32> = tokenizer("tokenizer_2").encode("a red fox").unwrap().ids;
    let eos = [argmax(&ids)];
    let it = gpu.upload_u32(&[1, ids.len()], &ids).unwrap();
    let mut outs = Vec::new();
    for sd in [&a, &b] {
        let o = sd.clip2.as_ref().unwrap().encode_xl(&sd.ctx(&gpu), &it, &eos).unwrap();
        outs.push((gpu.read(&o.penultimate).await.unwrap(), gpu.read(&o.pooled.unwrap()).await.unwrap()));
    }
    assert_eq!(outs[0], outs[1]);
}
gpu_test!(sdxl_text_encoder_2_without_text_model_prefix, text_encoder_2_without_prefix());

// ---------------------------------------------------------------- UNet

async fn unet() {
    let c = case("unet");
    let g = fx("sdxl/golden.safetensors");
    let gpu = common::gpu(true).await;
    let sd = load(&gpu, &["unet"], None);
    let up = |key: &str| {
        let (v, shape) = golden(&g, key);
        gpu.upload(&shape, DType::F32, &v).unwrap()
    };
    let x = up("unet_sample");
    let ctx = up("unet_encoder_hidden_states");
    let added = AddedCond { text_embeds: up("unet_text_embeds"), time_ids: up("unet_time_ids") };
    // The time ids are the case's (row 0: the pipeline's default for 64², row 1: SDXL-like).
    let (tid, _) = golden(&g, "unet_time_ids");
    let want_ids: Vec<f32> = c["extra_args"]["time_ids"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
    assert_eq!(tid, want_ids);
    let b = x.shape()[0];
    let t = c["extra_args"]["timestep"].as_f64().unwrap() as f32;
    let tt = gpu.upload(&[b], DType::F32, &vec![t; b]).unwrap();
    let cx = sd.ctx(&gpu);
    let sin = sd.unet.time_ids_embedding(&cx, &added.time_ids, DType::F32).unwrap();
    let (want, _) = golden(&g, "unet_time_embeds_sinusoidal");
    assert_close("sdxl unet time_embeds_sinusoidal", &gpu.read(&sin).await.unwrap(), &want, TOL);
    let emb = sd.unet.time_embedding(&cx, &tt, DType::F32, None, Some(&added)).unwrap();
    let (want, _) = golden(&g, "unet_emb");
    assert_close("sdxl unet emb", &gpu.read(&emb).await.unwrap(), &want, TOL);
    let y = sd.unet.forward_full(&cx, &x, &tt, &ctx, None, Some(&added)).unwrap();
    let (want, ws) = golden(&g, "unet_out");
    assert_eq!(y.shape(), &ws[..]);
    assert_close("sdxl unet out", &gpu.read(&y).await.unwrap(), &want, TOL);
    // An XL UNet refuses to run without its added conditioning, and wrong shapes.
    let e = sd.unet.forward(&cx, &x, &tt, &ctx).err().expect("ran without added_cond_kwargs").to_string();
    assert!(e.contains("SDXL"), "{e}");
    let short = AddedCond { text_embeds: up("unet_text_embeds").reshape(&[1, 48]).unwrap(), time_ids: up("unet_time_ids") };
    assert!(sd.unet.forward_full(&cx, &x, &tt, &ctx, None, Some(&short)).is_err());
    // The refiner's aesthetic-score rule gives 5 time ids and a pooled embedding that fills the
    // rest of add_embedding's input. Same input layout: text_embeds' rows extended by the
    // sinusoidal embedding of time id 0 (diffusers' golden) and time ids 1..5 give exactly
    // cat(text_embeds, emb(time ids 0..5)), so the output must be diffusers' unet_out again.
    let (text, ts) = golden(&g, "unet_text_embeds");
    let (sinus, _) = golden(&g, "unet_time_embeds_sinusoidal");
    let (p, dim) = (ts[1], sinus.len() / (b * 6));
    let text5: Vec<f32> = (0..b).flat_map(|r| text[r * p..(r + 1) * p].iter().chain(&sinus[r * 6 * dim..r * 6 * dim + dim]).copied().collect::<Vec<_>>()).collect();
    let ids5: Vec<f32> = (0..b).flat_map(|r| tid[r * 6 + 1..r * 6 + 6].to_vec()).collect();
    let five = AddedCond { text_embeds: gpu.upload(&[b, p + dim], DType::F32, &text5).unwrap(), time_ids: gpu.upload(&[b, 5], DType::F32, &ids5).unwrap() };
    let y5 = sd.unet.forward_full(&cx, &x, &tt, &ctx, None, Some(&five)).unwrap();
    assert_close("sdxl unet out, 5 time ids (aesthetic-score layout)", &gpu.read(&y5).await.unwrap(), &want, TOL);
    // 5 time ids beside a 6-id-wide pooled embedding do not fit add_embedding.
    let wrong = AddedCond { text_embeds: up("unet_text_embeds"), time_ids: gpu.upload(&[b, 5], DType::F32, &ids5).unwrap() };
    let e = sd.unet.forward_full(&cx, &x, &tt, &ctx, None, Some(&wrong)).err().expect("ran with a pooled width that does not fit").to_string();
    assert!(e.contains("projection_class_embeddings_input_dim"), "{e}");
}
gpu_test!(sdxl_unet_matches_diffusers, unet());

// ---------------------------------------------------------------- VAE

async fn vae() {
    let g = fx("sdxl/golden.safetensors");
    let gpu = common::gpu(true).await;
    let sd = load(&gpu, &["vae"], None);
    let cx = sd.ctx(&gpu);
    let up = |key: &str| {
        let (v, shape) = golden(&g, key);
        gpu.upload(&shape, DType::F32, &v).unwrap()
    };
    // decode_out = decoder(decode_in / 0.13025): decode() divides by the config's factor.
    let y = sd.vae.decode(&cx, &up("vae_decode_in")).unwrap();
    let (want, ws) = golden(&g, "vae_decode_out");
    assert_eq!(y.shape(), &ws[..]);
    assert_close("sdxl vae decode", &gpu.read(&y).await.unwrap(), &want, TOL);
    let (mean, logvar) = sd.vae.encode(&cx, &up("vae_encode_in")).unwrap();
    for (name, t) in [("mean", mean), ("logvar", logvar)] {
        let (want, _) = golden(&g, &format!("vae_encode_{name}"));
        assert_close(&format!("sdxl vae encode {name}"), &gpu.read(&t).await.unwrap(), &want, TOL);
    }
}
gpu_test!(sdxl_vae_matches_diffusers, vae());

/// The UNet with f16 storage (f32 text embeddings and time ids cast on the way in): within
/// f16's tolerance of diffusers' f32 output (2e-2·max|ref|, as the other families' f16 runs).
async fn unet_f16() {
    let c = case("unet");
    let g = fx("sdxl/golden.safetensors");
    let gpu = common::gpu(true).await;
    let rel = "sdxl/model/unet/diffusion_pytorch_model.safetensors";
    let sd = load_named(&gpu, DType::F16, configs(), &["unet"], vec![(rel.to_string(), fx(rel), Layout::Component("unet".into()))]);
    let up = |key: &str, dt: DType| {
        let (v, shape) = golden(&g, key);
        gpu.upload(&shape, dt, &v).unwrap()
    };
    let x = up("unet_sample", DType::F16);
    let ctx = up("unet_encoder_hidden_states", DType::F16);
    let added = AddedCond { text_embeds: up("unet_text_embeds", DType::F32), time_ids: up("unet_time_ids", DType::F32) };
    let t = c["extra_args"]["timestep"].as_f64().unwrap() as f32;
    let tt = gpu.upload(&[2], DType::F32, &[t, t]).unwrap();
    let y = sd.unet.forward_full(&sd.ctx(&gpu), &x, &tt, &ctx, None, Some(&added)).unwrap();
    let (want, _) = golden(&g, "unet_out");
    assert_close("sdxl unet out (f16)", &gpu.read(&y).await.unwrap(), &want, 2e-2);
}
gpu_test!(sdxl_unet_f16_storage, unet_f16());

/// A diffusers SDXL folder loads from disk (text_encoder_2/ found through its config and
/// model_index.json), and so does a synthetic one written by `synth` for the same configs.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn sdxl_folders_load_from_disk() {
    pollster::block_on(async {
        let gpu = common::gpu(true).await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl/model");
        let sd = StableDiffusion::load(&gpu, &dir, DType::F32, None).expect("load the sdxl folder");
        assert!(sd.cfg.is_xl() && sd.clip2.is_some() && sd.cfg.xl.as_ref().unwrap().force_zeros_for_empty_prompt);
        assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
        let (_, _, _, specs) = sd_webgpu::model::build(&sd.cfg);
        assert!(specs.iter().any(|s| s.name == "text_encoder_2/text_projection.weight"));
        assert!(sd.weights.find("text_encoder_2/final_layer_norm.weight").is_some());
        let out = std::env::temp_dir().join(format!("sd-webgpu-synth-sdxl-{}", std::process::id()));
        let files = sd_webgpu::weights::synth::write_model(&out, &sd.cfg, true).unwrap();
        assert_eq!(files.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), vec!["unet", "vae", "text_encoder", "text_encoder_2"]);
        let index = std::fs::read_to_string(out.join("model_index.json")).unwrap();
        assert!(index.contains("StableDiffusionXLPipeline") && index.contains("force_zeros_for_empty_prompt"));
        let synth = StableDiffusion::load(&gpu, &out, DType::F16, Some("fp16")).expect("load the synthetic sdxl folder");
        assert!(synth.cfg.is_xl() && synth.clip2.is_some());
        assert_eq!(synth.weights.len(), sd.weights.len());
        std::fs::remove_dir_all(&out).unwrap();
    });
}
