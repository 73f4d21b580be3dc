//! LoRA against diffusers: every case of the v2 reference bundle `lora/` — kohya / A1111 with
//! text encoder and 3×3 conv (LoCon) layers at 0.8, PEFT at 0.8, two LoRAs 0.7 + 0.5, scale 0
//! (= the base), and the text encoder and UNet with the LoRA merged — reproduced from each
//! case's parameters as a user passes them, on `sd15-realconfig/model`; plus what
//! scripts/make_lora_goldens.py made with diffusers: LCM-LoRA's way of use (kohya LoRA, `lcm`
//! sampler, 4 steps, no CFG) and the two-LoRA UNet on diffusers' inputs at three steps.
//!
//! Asserted as the real-world parity tests: final latents ≤ 1e-4·max|ref| (f32) / 2e-2 (f16),
//! image mean ≤ 2e-3 and max ≤ 2/255 (f32); components ≤ 5e-5·max|ref| (f32); the two-LoRA
//! case's latents at 5e-4 for its measured sensitivity (see `latents_goal`). One model load
//! serves a sequence of LoRA sets (merge, change scales, add a second LoRA, scale 0, none):
//! the undo is exact (bit-identical to the base weights) without reloading.
//!
//! Natively CI runs everything (the sequence covers lora_kohya, lora_combined, lora_peft and
//! lora_scale_zero on one load; their single-case twins are `#[ignore]`d with that reason). In
//! the browser CI runs the components (diffusers' module names), the two-LoRA UNet steps and the
//! file-format checks, and e2e `ui_lora` merges, rescales and undoes a kohya LoRA through the
//! page; the pipeline cases are `#[ignore]`d there (SwiftShader: ~13 s per CFG step) and run with
//! `wasm-pack test --headless --chrome --release --test lora -- --include-ignored`.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::parity::assert_close;
use common::model::{load_realconfig, realconfig_tokenizer};
use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::lora::{Lora, LoraFormat};
use sd_webgpu::model::StableDiffusion;
use sd_webgpu::pipeline::{self, Params};

bundle_files!(
    "lora/cases.json",
    "lora/golden.safetensors",
    "lora/lora_kohya_a.safetensors",
    "lora/lora_kohya_b.safetensors",
    "lora/lora_peft_unet.safetensors",
    "lora/combined_steps.json",
    "lora/combined_steps.safetensors",
    "lora/lcm_lora.json",
    "lora/lcm_lora.safetensors",
);

fn case(name: &str) -> serde_json::Value {
    fixtures::case(&fx("lora/cases.json"), "lora", name)
}

/// The LoRA name of a file (A1111: the file name without extension).
fn name_of(file: &str) -> String {
    file.trim_end_matches(".safetensors").to_string()
}

/// Stream a LoRA file (1 MiB chunks, as the browser does) into the model.
fn load_lora_bytes(gpu: &Gpu, sd: &mut StableDiffusion, name: &str, file: &str, bytes: &[u8]) -> sd_webgpu::Result<()> {
    let mut l = sd.lora_loader(gpu, name, file, Some(bytes.len() as u64));
    for c in bytes.chunks(1 << 20) {
        l.feed(c)?;
    }
    let lora = l.finish()?;
    sd.loras.add(lora)
}

fn load_lora(gpu: &Gpu, sd: &mut StableDiffusion, file: &str) -> String {
    let name = name_of(file);
    load_lora_bytes(gpu, sd, &name, file, &fx(&format!("lora/{file}"))).unwrap_or_else(|e| panic!("{file}: {e}"));
    name
}

/// The case's LoRAs as (name, scale), loading the files not loaded yet.
fn case_loras(gpu: &Gpu, sd: &mut StableDiffusion, c: &serde_json::Value) -> Vec<(String, f32)> {
    c["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = l["file"].as_str().unwrap();
            let name = name_of(file);
            if sd.loras.get(&name).is_none() {
                load_lora(gpu, sd, file);
            }
            (name, l["scale"].as_f64().unwrap() as f32)
        })
        .collect()
}

fn params(c: &serde_json::Value) -> Params {
    assert_eq!(c["scheduler"]["overrides"], serde_json::json!({"use_karras_sigmas": true}), "{}: overrides", c["name"]);
    assert_eq!(c["sampler"], "dpmpp_2m_karras");
    common::parity::v2_params(c)
}

/// Generate case `name` on `sd` after making its LoRAs the active ones; returns the failures.
async fn generate_case(gpu: &Gpu, sd: &mut StableDiffusion, name: &str, dtype: DType) -> Vec<String> {
    let c = case(name);
    let p = params(&c);
    generate_with(gpu, sd, &c, p, &fx("lora/golden.safetensors"), dtype).await
}

/// Generate the pipeline case `c` with parameters `p` on `sd` after making its LoRAs the
/// active ones, against the goldens in `g`; returns the failures.
async fn generate_with(gpu: &Gpu, sd: &mut StableDiffusion, c: &serde_json::Value, p: Params, g: &[u8], dtype: DType) -> Vec<String> {
    let name = c["name"].as_str().unwrap();
    assert_eq!(c["kind"], "pipeline");
    let wanted = case_loras(gpu, sd, c);
    let report = sd.set_loras(gpu, &wanted).unwrap_or_else(|e| panic!("{name}: {e}"));
    log!("lora/{name}: {report:?}");
    let sched = String::from_utf8(fixtures::file("sd15-realconfig/model/scheduler/scheduler_config.json")).unwrap();
    let tok = realconfig_tokenizer();
    let out = pipeline::generate(gpu, sd, &tok, Some(&sched), &p, &mut |_| true).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    let (want_img, _) = golden(g, c["golden"]["image"].as_str().unwrap());
    let (want_lat, _) = golden(g, c["golden"]["latents"].as_str().unwrap());
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    common::parity::compare_tol(&format!("lora/{name}"), dtype, latents_goal(name), &out.latents, &want_lat, &got_img, &want_img)
}

/// The final-latents goal (f32) of a case: 1e-4·max|ref| as everywhere, except for
/// `lora_combined`, whose run is 14× more sensitive to float rounding than the single-LoRA
/// cases: diffusers itself, with 1e-6·max|out| noise added to its UNet output at each step,
/// ends 1.8e-4·max|ref| away from its own golden there (1.2e-5 on lora_kohya;
/// `combined_steps.json`, scripts/make_lora_goldens.py), so 1e-4 is below what any other
/// f32 summation order reaches. Its merged UNet is asserted where the signal is instead
/// (`lora_combined_unet_steps`: diffusers' inputs and outputs at three steps, ≤ 5e-5), and
/// its latents at 5e-4 (three times that sensitivity) with the usual image goals.
fn latents_goal(name: &str) -> Option<f64> {
    (name == "lora_combined").then_some(5e-4)
}

async fn run_case(name: &'static str, dtype: DType) {
    let gpu = common::gpu(true).await;
    let mut sd = load_realconfig(&gpu, dtype);
    let fails = generate_case(&gpu, &mut sd, name, dtype).await;
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

// lora_scale_zero's golden is lora_base's bit for bit (cases.json checks), and the sequence
// test runs lora_scale_zero natively; so the base runs alone on demand (CI's time).
ignored_test!(lora_base_f32, "lora_scale_zero (the sequence test) has the same golden", run_case("lora_base", DType::F32));
// Natively the sequence test below runs these four cases on one model load (CI's time). In the
// browser CI checks the merge on SwiftShader through the components and the two-LoRA UNet steps
// (below) and e2e ui_lora merges, rescales and undoes a kohya LoRA through the page; the whole
// kohya generation runs there on demand.
ignored_test!(lora_kohya_f32, "natively the sequence test runs lora_kohya on one model load; in the browser the components, the two-LoRA UNet steps and e2e ui_lora cover the merge (CI's time)", run_case("lora_kohya", DType::F32));
ignored_test!(lora_peft_f32, "the sequence test runs it (natively in CI) on one model load", run_case("lora_peft", DType::F32));
ignored_test!(lora_combined_f32, "the sequence test runs it (natively in CI) on one model load", run_case("lora_combined", DType::F32));
ignored_test!(lora_scale_zero_f32, "the sequence test runs it (natively in CI) on one model load", run_case("lora_scale_zero", DType::F32));

/// LCM-LoRA as users run it (latent-consistency/lcm-lora-sdv1-5 has kohya keys): the `lcm`
/// sampler from the SD-1.5 scheduler file, the LoRA at 1.0, 4 steps, guidance 1 (no CFG), vs
/// diffusers (`lcm_lora.json`, scripts/make_lora_goldens.py; lora_kohya_a stands in for the
/// real rank-64 file, which the tiny model's widths cannot take).
async fn lcm_lora() {
    let c: serde_json::Value = serde_json::from_slice(&fx("lora/lcm_lora.json")).unwrap();
    assert_eq!((c["sampler"].as_str(), c["steps"].as_u64(), c["guidance"].as_f64()), (Some("lcm"), Some(4), Some(1.0)));
    let gpu = common::gpu(true).await;
    let mut sd = load_realconfig(&gpu, DType::F32);
    let p = common::parity::v2_params(&c);
    let fails = generate_with(&gpu, &mut sd, &c, p, &fx("lora/lcm_lora.safetensors"), DType::F32).await;
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
native_test!(lcm_lora_4_steps_f32, lcm_lora());

/// lora_combined's merged UNet (0.7 + 0.5, text encoder and UNet) on diffusers' exact inputs
/// at steps 0, 5 and 9 of its run ([uncond; cond] latents, timestep, text states): ≤ 5e-5.
async fn combined_unet_steps() {
    let gpu = common::gpu(true).await;
    let mut sd = load_realconfig(&gpu, DType::F32);
    let c = case("lora_combined");
    let wanted = case_loras(&gpu, &mut sd, &c);
    sd.set_loras(&gpu, &wanted).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&fx("lora/combined_steps.json")).unwrap();
    let d = fx("lora/combined_steps.safetensors");
    for i in meta["steps"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()) {
        let up = |k: &str| {
            let (v, shape) = golden(&d, &format!("{k}{i}"));
            gpu.upload(&shape, DType::F32, &v).unwrap()
        };
        let (x, ctx) = (up("x"), up("c"));
        let t = golden(&d, &format!("t{i}")).0[0];
        let n = x.shape()[0];
        let t = gpu.upload(&[n], DType::F32, &vec![t; n]).unwrap();
        let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &ctx).unwrap();
        let (want, _) = golden(&d, &format!("y{i}"));
        assert_close(&format!("lora/lora_combined unet step {i}"), &gpu.read(&y).await.unwrap(), &want, 5e-5);
    }
}
gpu_test!(lora_combined_unet_steps, combined_unet_steps());
// f16 storage: the merge reads and writes packed halves (and f16 LoRA factors).
native_test!(lora_kohya_f16, run_case("lora_kohya", DType::F16));

/// Read every weight of the model (name-sorted) back to the CPU.
async fn snapshot(gpu: &Gpu, sd: &StableDiffusion) -> Vec<(String, Vec<f32>)> {
    let mut names: Vec<String> = sd.weights.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        out.push((n.clone(), gpu.read(sd.weights.get(&n).unwrap()).await.unwrap()));
    }
    out
}

/// One model load, LoRA sets one after another as a user changes them: kohya 0.8 → both 0.7 +
/// 0.5 → PEFT 0.8 → kohya at 0 (the base). Each generation equals diffusers' golden, and going
/// back to no LoRA gives every weight back bit for bit.
async fn sequence() {
    let gpu = common::gpu(true).await;
    let mut sd = load_realconfig(&gpu, DType::F32);
    let base = snapshot(&gpu, &sd).await;
    let weights_bytes = sd.weights.bytes();
    let mut fails = Vec::new();
    for name in ["lora_kohya", "lora_combined", "lora_peft", "lora_scale_zero"] {
        fails.extend(generate_case(&gpu, &mut sd, name, DType::F32).await);
        log!("after {name}: LoRA GPU bytes {} (factors + base copies), weights {}", sd.loras.bytes(), sd.weights.bytes());
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    sd.set_loras(&gpu, &[("lora_kohya_a".into(), 0.8)]).unwrap();
    let r = sd.set_loras(&gpu, &[]).unwrap();
    assert!(r.unet_changed && r.text_encoder_changed, "{r:?}");
    assert_eq!(sd.loras.base_bytes(), 0, "base copies kept with no LoRA active");
    assert_eq!(sd.weights.bytes(), weights_bytes);
    let back = snapshot(&gpu, &sd).await;
    for ((n, a), (_, b)) in base.iter().zip(&back) {
        assert!(a == b, "{n}: not the base weight after removing the LoRAs");
    }
    // The same set twice merges nothing the second time.
    sd.set_loras(&gpu, &[("lora_peft_unet".into(), 0.8)]).unwrap();
    let again = sd.set_loras(&gpu, &[("lora_peft_unet".into(), 0.8)]).unwrap();
    assert_eq!(again.tensors, 0, "{again:?}");
    // Removing an active LoRA is refused; inactive, it goes.
    assert!(sd.loras.remove("lora_peft_unet").is_err());
    sd.set_loras(&gpu, &[]).unwrap();
    assert!(sd.loras.remove("lora_peft_unet").unwrap());
}
native_test!(lora_sets_change_without_reloading_and_undo_exactly, sequence());

/// Text encoder and UNet (t = 500, the matching text states as context), base and with
/// lora_kohya_a at 0.8 merged; then the LoRA removed gives the base outputs again.
async fn components(original_names: bool) {
    let c = case("lora_probe_components");
    let g = fx("lora/golden.safetensors");
    let gpu = common::gpu(true).await;
    let mut sd = load_realconfig(&gpu, DType::F32);
    let tok = realconfig_tokenizer();
    let prompt = c["prompt"].as_str().unwrap();
    let ids = gpu.upload_u32(&[1, 77], &tok.encode(prompt).unwrap().ids).unwrap();
    let up = |key: &str| {
        let (v, shape) = golden(&g, key);
        gpu.upload(&shape, DType::F32, &v).unwrap()
    };
    let x = up(c["golden"]["unet_in"].as_str().unwrap());
    let t = gpu.upload(&[1], DType::F32, &[c["extra_args"]["timestep"].as_f64().unwrap() as f32]).unwrap();
    let file = c["loras"][0]["file"].as_str().unwrap();
    let bytes = fx(&format!("lora/{file}"));
    let bytes = if original_names { rename_to_original(&sd, &bytes) } else { bytes };
    load_lora_bytes(&gpu, &mut sd, "a", file, &bytes).unwrap();
    let scale = c["loras"][0]["scale"].as_f64().unwrap() as f32;
    let label = if original_names { " (original SD module names)" } else { "" };
    for (lora, te_key, unet_key) in [(false, "te_base", "unet_base_out"), (true, "te_lora", "unet_lora_out"), (false, "te_base", "unet_base_out")] {
        sd.set_loras(&gpu, &if lora { vec![("a".to_string(), scale)] } else { vec![] }).unwrap();
        let hidden = sd.clip.forward(&sd.ctx(&gpu), &ids).unwrap();
        let (want_te, _) = golden(&g, c["golden"][te_key].as_str().unwrap());
        assert_close(&format!("lora/{te_key}{label}"), &gpu.read(&hidden).await.unwrap(), &want_te, 5e-5);
        let y = sd.unet.forward(&sd.ctx(&gpu), &x, &t, &hidden).unwrap();
        let (want, _) = golden(&g, c["golden"][unet_key].as_str().unwrap());
        assert_close(&format!("lora/{unet_key}{label}"), &gpu.read(&y).await.unwrap(), &want, 5e-5);
    }
}
gpu_test!(lora_probe_components, components(false));
// The renaming is CPU work the browser adds nothing to; the components run there above.
native_test!(kohya_original_sd_module_names, components(true));

/// A safetensors file's header (JSON) and data.
fn split_file(b: &[u8]) -> (serde_json::Map<String, serde_json::Value>, &[u8]) {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&b[8..8 + n]).unwrap(), &b[8 + n..])
}

fn join_file(h: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    fixtures::safetensors_bytes(&serde_json::to_vec(h).unwrap(), data)
}

/// The kohya file with its UNet modules in the original SD spelling (`lora_unet_input_blocks_1_1_…`).
fn rename_to_original(sd: &StableDiffusion, b: &[u8]) -> Vec<u8> {
    use sd_webgpu::weights::keymap::unet_original_module;
    let layout = sd.cfg.unet_layout();
    // diffusers module names with '_' for '.', longest first (so `…resnets_1_conv1` is not read
    // as a prefix of another).
    let mut modules: Vec<(String, String)> = sd_webgpu::model::build(&sd.cfg).3.iter().filter_map(|s| {
        let m = s.name.strip_prefix("unet/")?.strip_suffix(".weight")?;
        Some((m.replace('.', "_"), unet_original_module(m, &layout)?.replace('.', "_")))
    }).collect();
    modules.sort_by_key(|(d, _)| std::cmp::Reverse(d.len()));
    let (h, data) = split_file(b);
    let mut out = serde_json::Map::new();
    let mut renamed = 0;
    for (k, v) in h {
        let new = match k.strip_prefix("lora_unet_") {
            Some(rest) => {
                let (d, o) = modules.iter().find(|(d, _)| rest.starts_with(&format!("{d}."))).unwrap_or_else(|| panic!("{k}: no module"));
                renamed += 1;
                format!("lora_unet_{o}{}", &rest[d.len()..])
            }
            None => k,
        };
        out.insert(new, v);
    }
    assert!(renamed > 800, "renamed {renamed}");
    join_file(&out, data)
}

/// Keys of other network types, keys of no LoRA pattern, modules of another model and broken
/// files are errors naming what is wrong; modules that match nothing are listed as a warning.
async fn file_problems() {
    let gpu = common::gpu(true).await;
    let mut sd = load_realconfig(&gpu, DType::F32);
    let good = fx("lora/lora_kohya_a.safetensors");
    let (h, data) = split_file(&good);
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut h2 = h.clone();
        f(&mut h2);
        join_file(&h2, data)
    };
    let first_down = h.keys().find(|k| k.ends_with(".lora_down.weight") && k.starts_with("lora_unet_")).unwrap().clone();
    let rename = |from: &str, to: &str| {
        let (from, to) = (from.to_string(), to.to_string());
        move |m: &mut serde_json::Map<String, serde_json::Value>| {
            let v = m.remove(&from).unwrap();
            m.insert(to.clone(), v);
        }
    };
    let loha = first_down.replace(".lora_down.weight", ".hada_w1_a");
    let dora = first_down.replace(".lora_down.weight", ".dora_scale");
    let unknown = first_down.replace(".lora_down.weight", ".weight");
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("LoHa", edit(&rename(&first_down, &loha)), vec!["LoHa", &loha]),
        ("DoRA", edit(&rename(&first_down, &dora)), vec!["DoRA", &dora]),
        ("no LoRA pattern", edit(&rename(&first_down, &unknown)), vec![&unknown]),
        ("up without down", edit(&|m| {
            m.remove(&first_down);
        }), vec![first_down.trim_end_matches(".lora_down.weight")]),
        ("truncated", good[..good.len() - 100].to_vec(), vec!["outside the data"]),
        ("not safetensors", b"hello, this is not a LoRA".to_vec(), vec!["lora"]),
    ];
    for (what, bytes, needles) in cases {
        let e = load_lora_bytes(&gpu, &mut sd, "x", "lora.safetensors", &bytes).expect_err(what).to_string();
        log!("{what}: {e}");
        for n in needles {
            assert!(e.contains(n), "{what}: the error does not say {n:?}: {e}");
        }
    }
    // A LoRA made for another model (a 1024-wide cross-attention, SD-2): names the tensor and shapes.
    let k_key = h.keys().find(|k| k.contains("attn2_to_k.lora_down")).unwrap().clone();
    let mut h2 = h.clone();
    let mut e = h2[&k_key].clone();
    // Same bytes, rows doubled and columns halved: columns no weight of this model has.
    let (r, cols) = (e["shape"][0].as_u64().unwrap(), e["shape"][1].as_u64().unwrap());
    e["shape"] = serde_json::json!([r * 2, cols / 2]);
    h2.insert(k_key.clone(), e);
    let err = load_lora_bytes(&gpu, &mut sd, "x", "lora.safetensors", &join_file(&h2, data)).expect_err("shape").to_string();
    log!("other model: {err}");
    assert!(err.contains(&k_key) && err.contains("another model"), "{err}");
    // Unknown modules: listed, the rest loads.
    let stray = "lora_unet_down_blocks_9_attentions_0_proj_in";
    let bytes = {
        // Its own copies of the first module's three tensors, appended after the data.
        let (mut h2, mut d2) = (h.clone(), data.to_vec());
        let module = first_down.trim_end_matches(".lora_down.weight");
        for part in [".lora_down.weight", ".lora_up.weight", ".alpha"] {
            let mut e = h[&format!("{module}{part}")].clone();
            let (a, b) = (e["data_offsets"][0].as_u64().unwrap() as usize, e["data_offsets"][1].as_u64().unwrap() as usize);
            e["data_offsets"] = serde_json::json!([d2.len(), d2.len() + (b - a)]);
            d2.extend_from_slice(&data[a..b]);
            h2.insert(format!("{stray}{part}"), e);
        }
        join_file(&h2, &d2)
    };
    load_lora_bytes(&gpu, &mut sd, "x", "lora.safetensors", &bytes).unwrap();
    let l: &Lora = sd.loras.get("x").unwrap();
    assert!(l.warnings.iter().any(|w| w.contains(stray)), "{:?}", l.warnings);
    assert_eq!(l.format, LoraFormat::Kohya);
    assert_eq!(l.counts(), (277, 18));
    // The A1111 short hash: SHA-256 of the file after its header, 12 hex digits.
    assert_eq!(l.hash.len(), 12);
    let a = load_lora(&gpu, &mut sd, "lora_kohya_a.safetensors");
    let want = {
        use sha2::Digest;
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let d = sha2::Sha256::digest(&good[8 + n..]);
        d.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(sd.loras.get(&a).unwrap().hash, want);
    assert!(sd.set_loras(&gpu, &[("nope".into(), 1.0)]).unwrap_err().to_string().contains("nope"));
}
gpu_test!(lora_file_problems_are_clear_errors, file_problems());

/// The original-SD spelling of every UNet module translates back to its diffusers name.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn original_unet_names_round_trip() {
    use sd_webgpu::weights::keymap::{single_file, unet_original_module, VaeLayout};
    let cfg = common::model::configs();
    let layout = cfg.unet_layout();
    let mut n = 0;
    for s in sd_webgpu::model::build(&cfg).3 {
        let Some(m) = s.name.strip_prefix("unet/").and_then(|m| m.strip_suffix(".weight")) else { continue };
        let o = unet_original_module(m, &layout).unwrap_or_else(|| panic!("{m}: no original name"));
        let back = single_file(&format!("model.diffusion_model.{o}.weight"), &layout, &VaeLayout { levels: 4 });
        assert_eq!(back.as_deref(), Some(s.name.as_str()), "{m} → {o}");
        n += 1;
    }
    assert!(n > 100, "{n} modules");
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn file_scale_argument() {
    use sd_webgpu::model::lora::parse_file_scale;
    assert_eq!(parse_file_scale("a.safetensors:0.8"), ("a.safetensors".into(), 0.8));
    assert_eq!(parse_file_scale("a.safetensors"), ("a.safetensors".into(), 1.0));
    assert_eq!(parse_file_scale("C:\\loras\\a.safetensors"), ("C:\\loras\\a.safetensors".into(), 1.0));
    assert_eq!(parse_file_scale("C:\\loras\\a.safetensors:-0.5"), ("C:\\loras\\a.safetensors".into(), -0.5));
}

/// Every case of the bundle has a test above.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_case_of_the_bundle_is_tested() {
    let src = include_str!("lora.rs");
    let j: serde_json::Value = serde_json::from_slice(&fx("lora/cases.json")).unwrap();
    for c in j["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert!(src.contains(&format!("run_case(\"{name}\"")) || src.contains(&format!("case(\"{name}\")")), "lora case {name} has no test");
    }
}
