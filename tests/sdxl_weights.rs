//! SDXL weights (issue #17): the original single-file checkpoint (Stability's sgm layout: both
//! text encoders, OpenCLIP bigG with its transposed `text_projection`) against the diffusers
//! folder it was converted from (the bundle says the weights are identical, and diffusers'
//! `from_single_file` gave the same image), its detection and errors; the bundle case
//! `single_file_txt2img`; LoRA for SDXL through the merger (kohya `lora_te1_` / `lora_te2_` /
//! `lora_unet_` in sgm and diffusers module names, diffusers / PEFT `text_encoder_2.` keys),
//! each merged weight checked against `W + scale·(alpha/rank)·up·down` computed on the CPU from
//! the file's tensors; tokenizer_2's ids (pad `!` = id 0) against the bundle's.
//!
//! Reference: `../shared/reference/v2/sdxl/` (tests/fixtures/sdxl/). No SDXL LoRA golden exists
//! in the bundle: the LoRA files are built here and the expected weights computed on the CPU.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use std::collections::{BTreeMap, HashMap, HashSet};

use safetensors::SafeTensors;
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::{Configs, StableDiffusion};
use sd_webgpu::tokenizer::ClipTokenizer;
use sd_webgpu::weights::{keymap, Layout, Loader};

bundle_files!(
    "sdxl/model.safetensors",
    "sdxl/cases.json",
    "sdxl/model/model_index.json",
    "sdxl/model/unet/config.json",
    "sdxl/model/vae/config.json",
    "sdxl/model/text_encoder/config.json",
    "sdxl/model/text_encoder_2/config.json",
    "sdxl/model/tokenizer/tokenizer_config.json",
    "sdxl/model/tokenizer/special_tokens_map.json",
    "sdxl/model/tokenizer_2/tokenizer_config.json",
    "sdxl/model/tokenizer_2/special_tokens_map.json",
    "sdxl/model/unet/diffusion_pytorch_model.safetensors",
    "sdxl/model/vae/diffusion_pytorch_model.safetensors",
    "sdxl/model/text_encoder/model.safetensors",
    "sdxl/model/text_encoder_2/model.safetensors",
    "sdxl/model/scheduler/scheduler_config.json",
    "sdxl/golden.safetensors",
);

const SINGLE: &str = "sdxl/model.safetensors";

/// The diffusers folder's component files: (component, fixture path).
const FOLDER: [(&str, &str); 4] = [
    ("text_encoder", "sdxl/model/text_encoder/model.safetensors"),
    ("text_encoder_2", "sdxl/model/text_encoder_2/model.safetensors"),
    ("unet", "sdxl/model/unet/diffusion_pytorch_model.safetensors"),
    ("vae", "sdxl/model/vae/diffusion_pytorch_model.safetensors"),
];

/// The bundle model's configs (its folder's config.json files and model_index.json).
fn configs() -> Configs {
    Configs::from_json_texts(
        &fx_text("sdxl/model/unet/config.json"),
        &fx_text("sdxl/model/vae/config.json"),
        &fx_text("sdxl/model/text_encoder/config.json"),
        Some(&fx_text("sdxl/model/text_encoder_2/config.json")),
        Some(&fx_text("sdxl/model/model_index.json")),
    )
    .expect("sdxl configs")
}

/// Read many weights back: the copies are submitted in batches and then awaited (one map
/// round trip per batch instead of per tensor: the browser runner's time).
async fn read_all(gpu: &Gpu, w: &sd_webgpu::weights::Weights, names: &[String]) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    for batch in names.chunks(128) {
        let pending: Vec<_> = batch.iter().map(|n| gpu.read_later(w.get(n).unwrap_or_else(|e| panic!("{e}"))).unwrap()).collect();
        for (n, r) in batch.iter().zip(pending) {
            out.insert(n.clone(), r.f32().await.unwrap());
        }
    }
    out
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The diffusers file's key of a weight name (`text_encoder_2/encoder.layers.0…` →
/// `text_model.encoder.layers.0…` in the real repos' layout).
fn folder_key<'a>(st: &SafeTensors<'a>, name: &str) -> Option<(String, safetensors::tensor::TensorView<'a>)> {
    [name.to_string(), format!("text_model.{name}")].into_iter().find_map(|k| st.tensor(&k).ok().map(|t| (k, t)))
}

// ---------------------------------------------------------------------------------------------
// The single file's keys against the folder's tensors (CPU: the key map alone).

/// Every tensor of the single file maps to a weight of the diffusers folder with the same bytes
/// (q;k;v stacked = the folder's q_proj, k_proj, v_proj; `text_projection` transposed; the VAE's
/// [C, C, 1, 1] attention as [C, C]), every folder tensor is covered exactly once, and what maps
/// nowhere is a harmless extra (`logit_scale`).
fn single_file_keys() {
    let single = fx(SINGLE);
    let single = SafeTensors::deserialize(&single).expect("model.safetensors");
    let folder_bytes: Vec<(&str, Vec<u8>)> = FOLDER.iter().map(|(c, p)| (*c, fx(p))).collect();
    let folder: HashMap<&str, SafeTensors> = folder_bytes.iter().map(|(c, b)| (*c, SafeTensors::deserialize(b).expect("folder file"))).collect();
    let cfg = configs();
    let (ul, vl) = (cfg.unet_layout(), keymap::VaeLayout { levels: cfg.vae.block_out_channels.len() });
    let mut covered: HashSet<(String, String)> = HashSet::new();
    let mut per_component: BTreeMap<String, usize> = BTreeMap::new();
    let mut ignored = Vec::new();
    let mut names = single.names();
    names.sort();
    assert!(names.iter().any(|k| keymap::is_sdxl_key(k)), "the bundle's single file has conditioner.embedders.1 keys");
    for key in names {
        let t = single.tensor(key).unwrap();
        let Some(target) = keymap::single_file(key, &ul, &vl) else {
            assert!(keymap::harmless_extra(key), "{key}: maps to no weight and is not a harmless extra");
            ignored.push(key.to_string());
            continue;
        };
        let (comp, name) = target.split_once('/').unwrap();
        *per_component.entry(comp.to_string()).or_default() += 1;
        let st = folder.get(comp).unwrap_or_else(|| panic!("{key} → {target}: no component {comp}"));
        let data = t.data();
        if let Some(base) = name.strip_suffix("self_attn.to_qkv.weight").or_else(|| name.strip_suffix("self_attn.to_qkv.bias")) {
            // OpenCLIP's in_proj: q, k, v stacked on the first dimension.
            let param = if name.ends_with("weight") { "weight" } else { "bias" };
            let mut want = Vec::new();
            for p in ["q_proj", "k_proj", "v_proj"] {
                let (k, v) = folder_key(st, &format!("{base}self_attn.{p}.{param}")).unwrap_or_else(|| panic!("{key}: folder has no {base}self_attn.{p}.{param}"));
                want.extend_from_slice(v.data());
                covered.insert((comp.to_string(), k));
            }
            assert!(data == want.as_slice(), "{key}: in_proj is not the folder's q;k;v");
            continue;
        }
        let (k, v) = folder_key(st, name).unwrap_or_else(|| panic!("{key} → {target}: not in the folder's {comp} file"));
        assert!(covered.insert((comp.to_string(), k.clone())), "{key}: {comp}/{k} is covered twice");
        if keymap::single_file_transposed(key) {
            let s = t.shape();
            assert_eq!([s[1], s[0]], v.shape(), "{key}: stored [in, out]");
            assert!(keymap::transpose_2d(data, s[0], s[1], 4) == v.data(), "{key}: transposed ≠ the folder's {k}");
        } else {
            let n: usize = t.shape().iter().product();
            assert_eq!(n, v.shape().iter().product::<usize>(), "{key}: element count");
            assert!(t.shape() == v.shape() || t.shape()[2..].iter().all(|&d| d == 1), "{key}: shape {:?} vs the folder's {:?}", t.shape(), v.shape());
            assert!(data == v.data(), "{key}: bytes differ from the folder's {comp}/{k}");
        }
    }
    // Every folder tensor came from the single file (position_ids are buffers, not weights).
    for (comp, st) in &folder {
        for k in st.names() {
            if !covered.contains(&(comp.to_string(), k.to_string())) {
                assert!(keymap::harmless_extra(k), "folder {comp}/{k}: no single-file tensor maps to it");
            }
        }
    }
    let mapped: usize = per_component.values().sum();
    log!("SDXL single file: {} tensors, {mapped} mapped ({per_component:?}), {} ignored ({})", single.len(), ignored.len(), ignored.join(", "));
    assert_eq!(single.len(), 1262, "the bundle's key count");
    assert_eq!(ignored, vec!["conditioner.embedders.1.model.logit_scale".to_string()]);
}
cpu_test!(single_file_keys_map_to_the_folders_tensors, single_file_keys);

/// The header of the single file says SDXL: `checkpoint_configs` gives SDXL base's shapes
/// (Configs::sdxl()), which the tiny bundle model does not have: loading it with them fails
/// on the first tensor whose shape differs, naming it (a config folder is needed, as diffusers
/// needs `config='model'` for it).
fn detection() {
    let single = fx(SINGLE);
    let n = u64::from_le_bytes(single[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&single[8..8 + n]).into_owned();
    let cfg = sd_webgpu::model::checkpoint_configs(Some(&header));
    assert!(cfg.is_xl(), "an sgm checkpoint with conditioner.embedders.1 is SDXL");
    let want = Configs::sdxl();
    assert_eq!(cfg.unet.block_out_channels, want.unet.block_out_channels);
    assert_eq!(cfg.clip2.as_ref().map(|c| c.hidden_size), Some(1280));
    assert!(!cfg.is_sd2());
    // The sniffer the browser uses gives the same answer from the first chunks.
    let mut s = sd_webgpu::model::CheckpointSniffer::default();
    let mut got = None;
    for c in single.chunks(4096) {
        if let Some(c) = s.push(c, Some(single.len() as u64), false) {
            got = Some(c);
            break;
        }
    }
    assert!(got.expect("configs from the header").is_xl(), "sniffer: SDXL");
}
cpu_test!(single_file_header_is_detected_as_sdxl, detection);

// ---------------------------------------------------------------------------------------------
// Loading through the streaming loader (GPU).

/// Stream files into a loader for the bundle model's components (1 MiB chunks); the loaded
/// weights (no fusions applied) and the warnings, or the error.
fn load_raw(gpu: &Gpu, cfg: &Configs, files: &[(String, Vec<u8>, Layout)]) -> Result<(sd_webgpu::weights::Weights, Vec<String>), String> {
    let comps = cfg.components();
    let mut loader: Loader = StableDiffusion::loader(gpu, cfg, DType::F32, &comps);
    for (name, b, layout) in files {
        loader.begin(name, Some(b.len() as u64), layout.clone());
        for chunk in b.chunks(1 << 20) {
            loader.feed(chunk).map_err(|e| e.to_string())?;
        }
        loader.end().map_err(|e| e.to_string())?;
    }
    loader.finish().map_err(|e| e.to_string())
}

fn folder_files() -> Vec<(String, Vec<u8>, Layout)> {
    FOLDER.iter().map(|(c, p)| (p.to_string(), fx(p), Layout::Component(c.to_string()))).collect()
}

/// Every weight the loader makes from the single file equals, bit for bit, the one it makes
/// from the diffusers folder (OpenCLIP's fused in_proj against the folder's q, k, v after the
/// model's fusions; the transposed projection), and the single file's only warning-free extra
/// is `logit_scale`.
async fn single_file_bit_for_bit() {
    let gpu = common::gpu(true).await;
    let cfg = configs();
    let t0 = common::now_ms();
    let single = vec![(SINGLE.to_string(), fx(SINGLE), cfg.single_file_layout())];
    let sd_single = StableDiffusion::from_loader(cfg.clone(), DType::F32, {
        let comps = cfg.components();
        let mut l = StableDiffusion::loader(&gpu, &cfg, DType::F32, &comps);
        for (name, b, layout) in &single {
            l.begin(name, Some(b.len() as u64), layout.clone());
            for chunk in b.chunks(1 << 20) {
                l.feed(chunk).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            l.end().unwrap();
        }
        l
    })
    .expect("every SDXL weight from the single file");
    assert!(sd_single.warnings.is_empty(), "single file warnings: {:?}", sd_single.warnings);
    let sd_folder = common::model::load_named(&gpu, DType::F32, cfg.clone(), &cfg.components(), folder_files());
    assert_eq!(sd_single.weights.len(), sd_folder.weights.len(), "weight count");
    let mut names: Vec<String> = sd_folder.weights.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    for name in &names {
        let a = sd_single.weights.get(name).unwrap_or_else(|e| panic!("single file: {e}"));
        assert_eq!(a.shape(), sd_folder.weights.get(name).unwrap().shape(), "{name}");
    }
    let (single, folder) = (read_all(&gpu, &sd_single.weights, &names).await, read_all(&gpu, &sd_folder.weights, &names).await);
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &names {
        let (a, b) = (&single[name], &folder[name]);
        if let Some(i) = a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits()) {
            panic!("{name}: element {i} differs: single file {}, folder {}", a[i], b[i]);
        }
        *per.entry(name.split('/').next().unwrap()).or_default() += 1;
    }
    log!("SDXL single file = folder, bit for bit: {} GPU weights {per:?} ({:.0} ms)", sd_folder.weights.len(), common::now_ms() - t0);
}
gpu_test!(single_file_loads_the_folders_weights_bit_for_bit, single_file_bit_for_bit());

/// Clear errors: a tensor missing from an SDXL single file is named (here text_encoder_2's
/// projection), a wrongly shaped one too, and an unknown tensor is a warning naming it.
async fn single_file_errors() {
    let gpu = common::gpu(true).await;
    let cfg = configs();
    let orig = fx(SINGLE);
    let st = SafeTensors::deserialize(&orig).unwrap();
    let rebuild = |edit: &dyn Fn(&str, Vec<usize>, Vec<u8>) -> Vec<(String, Vec<usize>, Vec<u8>)>| -> Vec<u8> {
        let mut owned = Vec::new();
        for (name, t) in st.tensors() {
            owned.extend(edit(&name, t.shape().to_vec(), t.data().to_vec()));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            owned.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
        safetensors::serialize(views, None).unwrap()
    };
    let run = |bytes: Vec<u8>| load_raw(&gpu, &cfg, &[("edited.safetensors".to_string(), bytes, cfg.single_file_layout())]);
    const PROJ: &str = "conditioner.embedders.1.model.text_projection";
    // Missing: the projection.
    let missing = rebuild(&|n, s, b| if n == PROJ { vec![] } else { vec![(n.to_string(), s, b)] });
    let e = run(missing).err().expect("a missing tensor is an error");
    log!("missing: {e}");
    assert!(e.contains("text_encoder_2/text_projection.weight"), "{e}");
    // Wrong shape: the projection not transposed (diffusers' [proj, hidden] under the sgm name).
    let wrong = rebuild(&|n, s, b| {
        if n == PROJ {
            vec![(n.to_string(), vec![s[1], s[0]], keymap::transpose_2d(&b, s[0], s[1], 4))]
        } else {
            vec![(n.to_string(), s, b)]
        }
    });
    let e = run(wrong).err().expect("a wrongly shaped projection is an error");
    log!("wrong shape: {e}");
    assert!(e.contains(PROJ) && e.contains("[32, 24]") && e.contains("[24, 32]"), "{e}");
    // Unknown tensors: warned about by name; harmless extras (position_ids, sgm's
    // denoiser.sigmas) are not.
    let extra = rebuild(&|n, s, b| {
        let mut v = vec![(n.to_string(), s, b)];
        if n == PROJ {
            v.push(("conditioner.embedders.1.model.some_new_head.weight".into(), vec![2], bytes_of(&[1.0, 2.0])));
            v.push(("conditioner.embedders.0.transformer.text_model.embeddings.position_ids".into(), vec![1, 77], bytes_of(&[0.0; 77])));
            v.push(("denoiser.sigmas".into(), vec![4], bytes_of(&[0.03, 1.0, 5.0, 14.6])));
        }
        v
    });
    let (_, warnings) = run(extra).expect("extras load");
    log!("warnings: {warnings:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("conditioner.embedders.1.model.some_new_head.weight") && !warnings[0].contains("position_ids") && !warnings[0].contains("denoiser"), "{warnings:?}");
}
gpu_test!(single_file_missing_wrong_and_unknown_tensors_are_named, single_file_errors());

// ---------------------------------------------------------------------------------------------
// LoRA for SDXL.

/// One LoRA module of a test file: the key prefix in the file, the diffusers component and
/// tensor name (in the folder's file) it must change, and its rank / alpha.
struct Module {
    key: &'static str,
    comp: &'static str,
    tensor: &'static str,
    rank: usize,
    alpha: Option<f32>,
}

const KOHYA: &[Module] = &[
    // text_encoder (CLIP ViT-L): te1; q is fused into to_qkv on the GPU
    Module { key: "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", comp: "text_encoder", tensor: "text_model.encoder.layers.0.self_attn.q_proj.weight", rank: 4, alpha: Some(2.0) },
    Module { key: "lora_te1_text_model_encoder_layers_2_mlp_fc1", comp: "text_encoder", tensor: "text_model.encoder.layers.2.mlp.fc1.weight", rank: 2, alpha: None },
    // text_encoder_2 (OpenCLIP bigG): te2, same module names, other shapes
    Module { key: "lora_te2_text_model_encoder_layers_0_self_attn_v_proj", comp: "text_encoder_2", tensor: "text_model.encoder.layers.0.self_attn.v_proj.weight", rank: 4, alpha: Some(4.0) },
    Module { key: "lora_te2_text_model_encoder_layers_9_mlp_fc2", comp: "text_encoder_2", tensor: "text_model.encoder.layers.9.mlp.fc2.weight", rank: 3, alpha: Some(1.5) },
    // UNet, sgm names as kohya's SDXL LoRAs write them
    Module { key: "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", comp: "unet", tensor: "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", rank: 4, alpha: Some(1.0) },
    Module { key: "lora_unet_input_blocks_8_1_transformer_blocks_2_attn2_to_k", comp: "unet", tensor: "down_blocks.2.attentions.1.transformer_blocks.2.attn2.to_k.weight", rank: 2, alpha: None },
    Module { key: "lora_unet_output_blocks_0_1_transformer_blocks_2_ff_net_0_proj", comp: "unet", tensor: "up_blocks.0.attentions.0.transformer_blocks.2.ff.net.0.proj.weight", rank: 4, alpha: Some(8.0) },
    Module { key: "lora_unet_middle_block_1_proj_in", comp: "unet", tensor: "mid_block.attentions.0.proj_in.weight", rank: 2, alpha: Some(1.0) },
    Module { key: "lora_unet_label_emb_0_0", comp: "unet", tensor: "add_embedding.linear_1.weight", rank: 4, alpha: None },
    Module { key: "lora_unet_input_blocks_1_0_in_layers_2", comp: "unet", tensor: "down_blocks.0.resnets.0.conv1.weight", rank: 2, alpha: Some(1.0) },
    Module { key: "lora_unet_output_blocks_5_2_conv", comp: "unet", tensor: "up_blocks.1.upsamplers.0.conv.weight", rank: 2, alpha: None },
    // UNet, diffusers names in kohya keys
    Module { key: "lora_unet_up_blocks_1_attentions_2_transformer_blocks_1_attn1_to_out_0", comp: "unet", tensor: "up_blocks.1.attentions.2.transformer_blocks.1.attn1.to_out.0.weight", rank: 3, alpha: Some(3.0) },
    Module { key: "lora_unet_down_blocks_2_attentions_0_transformer_blocks_1_attn2_to_v", comp: "unet", tensor: "down_blocks.2.attentions.0.transformer_blocks.1.attn2.to_v.weight", rank: 2, alpha: Some(1.0) },
];

const PEFT: &[Module] = &[
    Module { key: "text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj", comp: "text_encoder_2", tensor: "text_model.encoder.layers.1.self_attn.k_proj.weight", rank: 2, alpha: None },
    Module { key: "text_encoder.text_model.encoder.layers.1.mlp.fc2", comp: "text_encoder", tensor: "text_model.encoder.layers.1.mlp.fc2.weight", rank: 2, alpha: None },
    Module { key: "unet.down_blocks.2.attentions.0.transformer_blocks.2.attn1.to_out.0", comp: "unet", tensor: "down_blocks.2.attentions.0.transformer_blocks.2.attn1.to_out.0.weight", rank: 4, alpha: None },
    Module { key: "unet.add_embedding.linear_2", comp: "unet", tensor: "add_embedding.linear_2.weight", rank: 2, alpha: None },
];

/// Keys that match no module of the model (reported, not fatal).
const UNKNOWN: &[&str] = &["lora_unet_input_blocks_99_1_proj_in", "lora_te3_text_model_encoder_layers_0_mlp_fc1", "lora_te2_text_model_encoder_layers_10_mlp_fc1"];

/// A LoRA file with `modules` (random factors from `seed`, shaped for the folder's tensors) and
/// the UNKNOWN keys when `kohya`; returns the file and each module's (up, down) as f32.
fn lora_file(modules: &[Module], kohya: bool, seed: u64, folder: &HashMap<&str, SafeTensors>) -> (Vec<u8>, Vec<(Vec<f32>, Vec<f32>)>) {
    let mut rng = sd_webgpu::rng::Rng::new(seed);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut factors = Vec::new();
    let (down_sfx, up_sfx) = if kohya { (".lora_down.weight", ".lora_up.weight") } else { (".lora_A.weight", ".lora_B.weight") };
    for m in modules {
        let w = folder[m.comp].tensor(m.tensor).unwrap_or_else(|e| panic!("{}: {e}", m.tensor));
        let s = w.shape().to_vec();
        let (out, rest) = (s[0], &s[1..]);
        let cols: usize = rest.iter().product();
        let down = rng.vec(m.rank * cols, -0.5, 0.5);
        let up = rng.vec(out * m.rank, -0.5, 0.5);
        let mut down_shape = vec![m.rank];
        down_shape.extend_from_slice(rest);
        let mut up_shape = vec![out, m.rank];
        if s.len() == 4 {
            up_shape.extend_from_slice(&[1, 1]);
        }
        owned.push((format!("{}{down_sfx}", m.key), down_shape, bytes_of(&down)));
        owned.push((format!("{}{up_sfx}", m.key), up_shape, bytes_of(&up)));
        if let Some(a) = m.alpha {
            owned.push((format!("{}.alpha", m.key), vec![], bytes_of(&[a])));
        }
        factors.push((up, down));
    }
    if kohya {
        for k in UNKNOWN {
            owned.push((format!("{k}.lora_down.weight"), vec![2, 16], bytes_of(&[0.1; 32])));
            owned.push((format!("{k}.lora_up.weight"), vec![16, 2], bytes_of(&[0.1; 32])));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        owned.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
    (safetensors::serialize(views, None).unwrap(), factors)
}

/// Two SDXL LoRAs (kohya te1/te2/unet in sgm and diffusers names incl. 3×3 convs, GEGLU and the
/// text_time embedding; PEFT with `text_encoder_2.` keys) at scales 0.8 and 0.5, merged on the
/// GPU, against the model loaded from folder files into which `scale·(alpha/rank)·up·down` was
/// added on the CPU: every merged stored weight (fused q/k/v, interleaved GEGLU included) within
/// f32 rounding of the expected one, every other weight bit-identical; unknown keys reported by
/// name; then no active LoRA gives the base weights back bit for bit.
async fn sdxl_lora_merge() {
    let gpu = common::gpu(true).await;
    let cfg = configs();
    // LoRAs change the text encoders and the UNet: the VAE is not loaded.
    let comps = ["text_encoder", "text_encoder_2", "unet"];
    let files: Vec<(&str, &str, Vec<u8>)> = FOLDER.iter().filter(|(c, _)| comps.contains(c)).map(|(c, p)| (*c, *p, fx(p))).collect();
    let folder: HashMap<&str, SafeTensors> = files.iter().map(|(c, _, b)| (*c, SafeTensors::deserialize(b).unwrap())).collect();
    let (kohya, kf) = lora_file(KOHYA, true, 11, &folder);
    let (peft, pf) = lora_file(PEFT, false, 12, &folder);
    let scales = [("sdxl_kohya", 0.8f32), ("sdxl_peft", 0.5f32)];

    // Expected: the folder's tensors with each module's update added on the CPU (f64 sums).
    let mut edited: HashMap<(&str, &str), Vec<f32>> = HashMap::new();
    for (mods, factors, scale) in [(KOHYA, &kf, scales[0].1), (PEFT, &pf, scales[1].1)] {
        for (m, (up, down)) in mods.iter().zip(factors) {
            let w = edited.entry((m.comp, m.tensor)).or_insert_with(|| f32s(folder[m.comp].tensor(m.tensor).unwrap().data()));
            let out = up.len() / m.rank;
            let cols = down.len() / m.rank;
            let f = scale as f64 * m.alpha.map_or(1.0, |a| a as f64 / m.rank as f64);
            for o in 0..out {
                for c in 0..cols {
                    let d: f64 = (0..m.rank).map(|r| up[o * m.rank + r] as f64 * down[r * cols + c] as f64).sum();
                    w[o * cols + c] = (w[o * cols + c] as f64 + f * d) as f32;
                }
            }
        }
    }
    let expected_files: Vec<(String, Vec<u8>, Layout)> = files
        .iter()
        .map(|(c, p, b)| {
            let st = &folder[c];
            let owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
                .tensors()
                .into_iter()
                .map(|(n, t)| {
                    let data = match edited.get(&(*c, n.as_str())) {
                        Some(v) => bytes_of(v),
                        None => t.data().to_vec(),
                    };
                    (n, t.shape().to_vec(), data)
                })
                .collect();
            let views: Vec<(String, safetensors::tensor::TensorView)> = owned
                .iter()
                .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
                .collect();
            let _ = b;
            (p.to_string(), safetensors::serialize(views, None).unwrap(), Layout::Component(c.to_string()))
        })
        .collect();
    let want = common::model::load_named(&gpu, DType::F32, cfg.clone(), &comps, expected_files);

    let mut sd = common::model::load_named(&gpu, DType::F32, cfg.clone(), &comps, folder_files().into_iter().filter(|(_, _, l)| !matches!(l, Layout::Component(c) if c == "vae")).collect());
    let mut names: Vec<String> = sd.weights.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let base = read_all(&gpu, &sd.weights, &names).await;
    for (name, bytes) in [("sdxl_kohya", &kohya), ("sdxl_peft", &peft)] {
        let mut l = sd.lora_loader(&gpu, name, &format!("{name}.safetensors"), Some(bytes.len() as u64));
        for c in bytes.chunks(1 << 20) {
            l.feed(c).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let lora = l.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
        let (unet, te) = lora.counts();
        log!("LoRA {name}: format {}, {unet} UNet + {te} text-encoder modules, warnings {:?}", lora.format.name(), lora.warnings);
        let mods = if name == "sdxl_kohya" { KOHYA } else { PEFT };
        assert_eq!(lora.modules.len(), mods.len(), "{name}: every module matched");
        assert_eq!(te, mods.iter().filter(|m| m.comp != "unet").count(), "{name}: text-encoder modules (te1 + te2)");
        for m in mods {
            let target = format!("{}/{}", m.comp, m.tensor.strip_prefix("text_model.").unwrap_or(m.tensor));
            assert!(lora.modules.iter().any(|x| x.target == target), "{name}: {} → {target}", m.key);
        }
        if name == "sdxl_kohya" {
            assert_eq!(lora.warnings.len(), 1, "{:?}", lora.warnings);
            for k in UNKNOWN {
                assert!(lora.warnings[0].contains(k), "unknown key {k} not reported: {:?}", lora.warnings);
            }
        } else {
            assert!(lora.warnings.is_empty(), "{:?}", lora.warnings);
        }
        sd.loras.add(lora).unwrap();
    }
    let report = sd.set_loras(&gpu, &scales.map(|(n, s)| (n.to_string(), s))).unwrap();
    log!("merge: {report:?}");
    assert!(report.unet_changed && report.text_encoder_changed);
    let (mut changed, mut same, mut worst) = (0, 0, 0f64);
    let (all_got, all_exp) = (read_all(&gpu, &sd.weights, &names).await, read_all(&gpu, &want.weights, &names).await);
    let mut merged = Vec::new();
    for n in &names {
        let (got, exp) = (&all_got[n], &all_exp[n]);
        let b = &base[n];
        let delta = exp.iter().zip(b).map(|(e, b)| (e - b).abs() as f64).fold(0.0, f64::max);
        if delta == 0.0 {
            if let Some(i) = got.iter().zip(exp).position(|(x, y)| x.to_bits() != y.to_bits()) {
                panic!("{n}: no LoRA targets it, but element {i} changed: {} (base {})", got[i], exp[i]);
            }
            same += 1;
            continue;
        }
        changed += 1;
        merged.push(n.clone());
        let scale = exp.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
        let (e, i) = got.iter().zip(exp).enumerate().map(|(i, (x, y))| ((x - y).abs() as f64, i)).fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        worst = worst.max(e / scale);
        assert!(e <= 2e-6 * scale, "{n}: merged weight off by {e:.3e} (max|W| {scale:.3e}) at {i}: ours {}, expected {} (base {})", got[i], exp[i], b[i]);
        // Untouched rows of a fused weight stay bit-identical.
        for (j, ((x, y), z)) in got.iter().zip(exp).zip(b).enumerate() {
            if y.to_bits() == z.to_bits() {
                assert_eq!(x.to_bits(), y.to_bits(), "{n}: element {j} is no LoRA target but changed");
            }
        }
    }
    log!("SDXL LoRA merge: {changed} stored weights changed (max error {worst:.2e}·max|W|), {same} bit-identical");
    assert_eq!(changed, {
        // each module changes one stored weight; q/k/v of the same layer share one (none here)
        KOHYA.len() + PEFT.len()
    });
    // No LoRA active: the merged weights' bases back, bit for bit (nothing else is rebuilt).
    let undo = sd.set_loras(&gpu, &[]).unwrap();
    assert_eq!(undo.tensors, merged.len(), "undo rebuilds exactly the merged weights");
    let restored = read_all(&gpu, &sd.weights, &merged).await;
    for n in &merged {
        assert!(restored[n].iter().zip(&base[n]).all(|(x, y)| x.to_bits() == y.to_bits()), "{n}: not restored");
    }
}
gpu_test!(sdxl_lora_kohya_te1_te2_unet_and_peft_merge_exactly, sdxl_lora_merge());

// ---------------------------------------------------------------------------------------------
// Tokenizer 2.

/// The bundle's `text_encoders` case ids: tokenizer (pad <|endoftext|>) = `ClipTokenizer::sd15()`
/// and the folder's tokenizer files; tokenizer_2 (pad `!`, a literal `!` = id 0) =
/// `ClipTokenizer::sd2()` and the BPE with tokenizer_2's config files; argmax(ids_2) = the EOS.
fn tokenizer_2_ids() {
    let c = common::fixtures::case(&fx("sdxl/cases.json"), "sdxl", "text_encoders");
    let prompts: Vec<&str> = c["prompt"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let ids = |k: &str| -> Vec<Vec<u32>> { c["checks"][k].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()).collect() };
    let (want1, want2) = (ids("tokenizer_ids"), ids("tokenizer_2_ids"));
    let vocab = common::fixtures::text("model/tokenizer/vocab.json");
    let merges = common::fixtures::text("model/tokenizer/merges.txt");
    let from_files = |dir: &str| {
        let cfg = sd_webgpu::tokenizer::merged_tokenizer_config(Some(&fx_text(&format!("{dir}/tokenizer_config.json"))), Some(&fx_text(&format!("{dir}/special_tokens_map.json")))).unwrap();
        ClipTokenizer::from_vocab_merges(&vocab, &merges, cfg.as_deref()).unwrap()
    };
    let toks1 = [("sd15()", ClipTokenizer::sd15().unwrap()), ("tokenizer/ files", from_files("sdxl/model/tokenizer"))];
    let toks2 = [("sd2()", ClipTokenizer::sd2().unwrap()), ("tokenizer_2/ files", from_files("sdxl/model/tokenizer_2"))];
    for (i, p) in prompts.iter().enumerate() {
        for (what, t) in &toks1 {
            assert_eq!(t.encode(p).unwrap().ids, want1[i], "tokenizer {what}: {p:?}");
        }
        for (what, t) in &toks2 {
            assert_eq!(t.encode(p).unwrap().ids, want2[i], "tokenizer_2 {what}: {p:?}");
        }
        // The pooled output is taken at argmax(ids_2) (first max): the EOS.
        let row = &want2[i];
        let max = *row.iter().max().unwrap();
        let eos = row.iter().position(|&x| x == max).unwrap();
        assert_eq!(eos as u64, c["checks"]["eos_position_argmax_ids_2"][i].as_u64().unwrap(), "{p:?}");
    }
    log!("tokenizer_2: {} prompts match diffusers' ids (pad '!' = 0, literal '!' = 0)", prompts.len());
}
cpu_test!(tokenizer_2_pads_with_bang_as_diffusers, tokenizer_2_ids);

// ---------------------------------------------------------------------------------------------
// The bundle case `single_file_txt2img`.

/// `StableDiffusionXLPipeline.from_single_file('model.safetensors', config='model')`, Euler 8
/// steps, CFG 5: the single file streamed with the folder's configs, tokenizers and scheduler,
/// against the case's goldens (txt2img_euler's: diffusers got the same image from both).
async fn single_file_txt2img(dtype: DType) {
    let c = common::fixtures::case(&fx("sdxl/cases.json"), "sdxl", "single_file_txt2img");
    assert_eq!(c["kind"], "single_file");
    assert_eq!(c["model"], "model.safetensors (config=model)");
    assert!(c["scheduler"]["overrides"].as_object().unwrap().is_empty(), "the shipped scheduler");
    let gpu = common::gpu(true).await;
    let t0 = common::now_ms();
    let cfg = configs();
    let comps = cfg.components();
    let mut sd = common::model::load_named(&gpu, dtype, cfg.clone(), &comps, vec![(SINGLE.to_string(), fx(SINGLE), cfg.single_file_layout())]);
    assert!(sd.warnings.is_empty(), "{:?}", sd.warnings);
    let tok_files = |dir: &str| {
        let t = sd_webgpu::tokenizer::merged_tokenizer_config(Some(&fx_text(&format!("sdxl/model/{dir}/tokenizer_config.json"))), Some(&fx_text(&format!("sdxl/model/{dir}/special_tokens_map.json")))).unwrap();
        ClipTokenizer::from_vocab_merges(&common::fixtures::text("model/tokenizer/vocab.json"), &common::fixtures::text("model/tokenizer/merges.txt"), t.as_deref()).unwrap()
    };
    sd.tokenizer_2 = Some(tok_files("tokenizer_2"));
    let tok = tok_files("tokenizer");
    let sched = fx_text("sdxl/model/scheduler/scheduler_config.json");
    let p = sd_webgpu::pipeline::Params { prompt_2: c["prompt_2"].as_str().map(String::from), ..common::parity::v2_params(&c) };
    let out = sd_webgpu::pipeline::generate(&gpu, &sd, &tok, Some(&sched), &p, &mut |_| true).await.unwrap_or_else(|e| panic!("single_file_txt2img: {e}"));
    log!("sdxl/single_file_txt2img ({}): loaded and generated in {:.1} s", dtype.name(), (common::now_ms() - t0) / 1000.0);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let g = fx("sdxl/golden.safetensors");
    let (want_img, _) = common::fixtures::golden(&g, c["golden"]["image"].as_str().unwrap());
    let (want_lat, _) = common::fixtures::golden(&g, c["golden"]["latents"].as_str().unwrap());
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    let fails = common::parity::compare("sdxl/single_file_txt2img", dtype, &out.latents, &want_lat, &got_img, &want_img);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
// Natively in CI; in the browser on demand (8 UNet steps at batch 2: minutes on SwiftShader;
// the single file's weights are checked there bit for bit against the folder's instead).
native_test!(single_file_txt2img_f32, single_file_txt2img(DType::F32));
