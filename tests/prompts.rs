//! A1111's prompt syntax and long prompts against diffusers' community pipeline
//! `lpw_stable_diffusion.py` (the v2 `prompts/` bundle, tests/fixtures/prompts/, on the
//! `sd15-realconfig` model in f32): the parsed runs, token ids and weights of every case
//! (CPU), the text states the UNet gets for every case (`*_embeds`, [negative; prompt] ×
//! 77·k × C: ≤ 1e-4·max|ref|), and two generations with the same long, weighted prompt,
//! through the LPW encode and through the plain one (final latents and images as
//! tests/pipeline.rs asserts them).
//!
//! The CPU and text-state tests run in both runners; the two generations (10 CFG steps:
//! ~2.5 min each on SwiftShader) natively in CI and in the browser on demand:
//! `wasm-pack test --headless --chrome --release --test prompts -- --include-ignored`.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use common::fixtures::{self, golden};
use common::model::{load_realconfig, realconfig_tokenizer};
use sd_webgpu::gpu::DType;
use sd_webgpu::pipeline::{self, Params};
use sd_webgpu::prompt::{self, WeightedTokens};

bundle_files!(
    "prompts/cases.json",
    "prompts/golden.safetensors",
    "prompts/txt2img_lpw_3chunks.json",
    "prompts/txt2img_lpw_3chunks.safetensors",
);

fn cases() -> Vec<serde_json::Value> {
    let j: serde_json::Value = serde_json::from_str(&fx_text("prompts/cases.json")).unwrap();
    j["cases"].as_array().unwrap().clone()
}

fn case(name: &str) -> serde_json::Value {
    fixtures::case(&fx("prompts/cases.json"), "prompts", name)
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The parsed runs equal LPW's: same texts, same weights (JSON's shortest repr of Python's
/// f64, read back to within an ulp or two).
fn assert_runs(label: &str, got: &[(String, f64)], want: &serde_json::Value) {
    let want: Vec<(String, f64)> = want.as_array().unwrap().iter().map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_f64().unwrap())).collect();
    assert_eq!(got.len(), want.len(), "{label}: runs {got:?} vs LPW's {want:?}");
    for ((gt, gw), (wt, ww)) in got.iter().zip(&want) {
        assert_eq!(gt, wt, "{label}: runs {got:?} vs LPW's {want:?}");
        assert!((gw - ww).abs() <= 1e-12 * ww.abs(), "{label}: weight of {gt:?}: {gw} vs LPW's {ww}");
    }
}

/// Tokens and weights of one prompt of a case against its `checks` (`which`: "prompt" or
/// "negative"): LPW's padded ids (75·k + 2), the weight of each of the 77·k positions, the
/// ids each chunk gives the text encoder (LPW: padded[75j .. 75j + 77] with the start and
/// end tokens written over its ends), the token count.
fn check_tokens(label: &str, tok: &sd_webgpu::tokenizer::ClipTokenizer, t: &WeightedTokens, checks: &serde_json::Value, which: &str, k: usize) {
    assert_runs(&format!("{label} {which}"), &t.parsed, &checks[format!("parsed_{which}")]);
    let n = checks[format!("n_{which}_tokens")].as_u64().unwrap() as usize;
    assert_eq!((t.ids.len(), t.weights.len(), t.dropped), (n, n, 0), "{label} {which}: token count");
    let padded = u32s(&checks[format!("{which}_ids_padded")]);
    assert_eq!(t.padded_ids(tok, k), padded, "{label} {which}: padded ids");
    let mut chunks = Vec::new();
    for j in 0..k {
        let mut c = padded[75 * j..75 * j + 77].to_vec();
        c[0] = padded[0];
        c[76] = padded[padded.len() - 1];
        chunks.extend(c);
    }
    assert_eq!(t.chunk_ids(tok, k), chunks, "{label} {which}: chunk ids");
    let want_w = f64s(&checks[format!("{which}_weights")]);
    let got_w = t.chunk_weights(k);
    assert_eq!(got_w.len(), want_w.len(), "{label} {which}: weights length");
    for (i, (&g, &w)) in got_w.iter().zip(&want_w).enumerate() {
        // cases.json rounds the f32 weights to 6 decimals
        assert!((g as f64 - w).abs() <= 1e-6, "{label} {which}: weight {i}: {g} vs LPW's {w}");
    }
}

/// Every case with token checks: parse, tokens, chunk count and weights of the prompt and
/// the negative prompt (`null` = LPW's default "").
fn tokens_and_weights() {
    let tok = realconfig_tokenizer();
    let mut checked = 0;
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let checks = &c["checks"];
        if checks.get("parsed_prompt").is_none() {
            continue;
        }
        let p = c["prompt"].as_str().unwrap();
        let n = c["negative_prompt"].as_str().unwrap_or("");
        assert_runs(&format!("{name} prompt"), &prompt::parse_attention(p), &checks["parsed_prompt"]);
        let t = prompt::lpw_tokens(&tok, p, Some(n)).unwrap();
        let k = checks["chunks"].as_u64().unwrap() as usize;
        assert_eq!(t.chunks, k, "{name}: chunks");
        check_tokens(name, &tok, &t.prompt, checks, "prompt", k);
        check_tokens(name, &tok, t.negative.as_ref().unwrap(), checks, "negative", k);
        log!("TOKENS|prompts/{name}|{}|chunks {k}|prompt {} tokens|negative {} tokens|ok", common::runner(), t.prompt.ids.len(), t.negative.as_ref().unwrap().ids.len());
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} cases with token checks");
}
cpu_test!(lpw_tokens_and_weights_equal_lpw, tokens_and_weights);

/// The text states `encode_text` gives the UNet for a case ([negative; prompt], f32 storage)
/// against the golden `*_embeds`.
async fn embeds(name: &'static str) {
    let c = case(name);
    assert_eq!(c["model"], "../sd15-realconfig/model");
    let gpu = common::gpu(true).await;
    let sd = load_realconfig(&gpu, DType::F32);
    let tok = realconfig_tokenizer();
    let p = Params {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().map(String::from),
        guidance_scale: c["guidance"].as_f64().unwrap(),
        width: 64,
        height: 64,
        prompt_weighting: true,
        ..Default::default()
    };
    let t0 = common::now_ms();
    let states = pipeline::encode_text(&gpu, &sd, &tok, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = gpu.read(states.states()).await.unwrap();
    let ms = common::now_ms() - t0;
    let (want, shape) = golden(&fx("prompts/golden.safetensors"), c["golden"]["embeds"].as_str().unwrap());
    assert_eq!(states.states().shape(), &shape[..], "{name}: shape of the text states");
    assert_eq!(states.dropped_tokens, (0, 0), "{name}: dropped tokens");
    let (e, i, m) = common::parity::max_err(&got, &want);
    let rel = e / m.max(1e-12);
    let (hidden, positions) = (shape[2], shape[1]);
    let (row, pos, ch) = (i / (positions * hidden), (i / hidden) % positions, i % hidden);
    log!("COMPONENT|prompts/{name}|{}|rel {rel:.2e}|max_abs {e:.2e}|max_ref {m:.3}|shape {shape:?}|{ms:.0} ms", common::runner());
    assert!(
        rel <= 1e-4,
        "{name}: max error {e:.3e} = {rel:.3e}·max|ref| > 1e-4 at index {i} (row {row}, position {pos}, channel {ch}: ours {}, LPW {})",
        got[i],
        want[i]
    );
}
gpu_test!(lpw_long_embeds_equal_lpw, embeds("lpw_long"));
gpu_test!(lpw_weighted_embeds_equal_lpw, embeds("lpw_weighted"));
gpu_test!(lpw_emphasis_embeds_equal_lpw, embeds("lpw_emphasis"));
gpu_test!(lpw_escaped_embeds_equal_lpw, embeds("lpw_escaped"));
gpu_test!(lpw_long_negative_embeds_equal_lpw, embeds("lpw_long_negative"));
gpu_test!(txt2img_lpw_embeds_equal_lpw, embeds("txt2img_lpw"));

/// A plain prompt (no brackets, ≤ 75 tokens) gives bit-identical text states with prompt
/// weighting on and off (the bundle's meta check: LPW's encode of a plain prompt is
/// diffusers' encode_prompt exactly); `<lora:…>` tags never reach the text encoder; a prompt
/// beyond 225 tokens is cut there and the cut is reported, in 3 chunks.
async fn plain_prompt_same_states() {
    let gpu = common::gpu(true).await;
    let sd = load_realconfig(&gpu, DType::F32);
    let tok = realconfig_tokenizer();
    let read = |p: Params| {
        let (gpu, sd, tok) = (&gpu, &sd, &tok);
        async move {
            let t = pipeline::encode_text(gpu, sd, tok, &p).unwrap();
            (t.states().shape().to_vec(), gpu.read(t.states()).await.unwrap(), t.dropped_tokens)
        }
    };
    let c = case("lpw_long");
    let long = c["prompt"].as_str().unwrap();
    for (prompt, negative) in [("a photo of an astronaut riding a horse on mars", Some("blurry, low quality")), ("a red cube on a blue table", None)] {
        let base = Params { prompt: prompt.into(), negative_prompt: negative.map(String::from), width: 64, height: 64, ..Default::default() };
        let on = read(Params { prompt_weighting: true, ..base.clone() }).await;
        let off = read(Params { prompt_weighting: false, ..base.clone() }).await;
        assert_eq!(on.0, vec![2, 77, sd.cfg.clip.hidden_size], "{prompt}: shape");
        assert!(on.1 == off.1, "{prompt}: the states differ with prompt weighting on and off");
        let tagged = read(Params { prompt: format!("{prompt}<lora:style:0.7>"), ..base.clone() }).await;
        assert!(tagged.1 == on.1, "{prompt}: a <lora:…> tag changed the text states");
        // Without guidance: one row.
        let single = read(Params { guidance_scale: 1.0, ..base }).await;
        assert_eq!(single.0[0], 1, "{prompt}: rows without CFG");
        let (e, i, m) = common::parity::max_err(&single.1, &on.1[on.1.len() / 2..]);
        assert!(e <= 1e-6 * m, "{prompt}: the prompt row without CFG differs from the CFG batch's by {e:.3e} at {i}");
    }
    // 2 × the 120-token lpw_long prompt: 240 tokens + the joint's, cut at 225 (3 chunks).
    let very_long = format!("{long}, {long}");
    let n = tok.encode_raw(&very_long).unwrap().len();
    assert!(n > 225, "{n} tokens");
    let lpw = Params { prompt: very_long.clone(), width: 64, height: 64, ..Default::default() };
    let (shape, _, dropped) = read(lpw.clone()).await;
    assert_eq!((shape[1], dropped), (231, (n - 225, 0)), "a {n}-token prompt");
    let w = pipeline::dropped_token_warnings(&lpw, dropped);
    assert!(w.len() == 1 && w[0].contains("225 tokens") && w[0].contains(&format!(" {} token(s)", n - 225)), "{w:?}");
    let (shape, _, dropped) = read(Params { prompt: very_long, width: 64, height: 64, prompt_weighting: false, ..Default::default() }).await;
    assert_eq!((shape[1], dropped), (77, (n - 75, 0)), "a {n}-token prompt, plain");
    log!("plain prompts: bit-identical states with prompt weighting on and off; a {n}-token prompt: {} dropped", n - 225);
}
gpu_test!(plain_prompt_gives_identical_states_either_way, plain_prompt_same_states());

/// A pipeline case: the long, weighted prompt through the LPW encode (`txt2img_lpw`) or the
/// plain one (`txt2img_plain`), DDIM 10 steps, 64², f32; final latents and image vs diffusers.
async fn run_case(name: &'static str, weighting: bool) {
    let c = case(name);
    assert_eq!(c["kind"], "pipeline");
    assert_eq!(c["scheduler"]["from_config"], "../sd15-realconfig/model/scheduler/scheduler_config.json");
    let sched = fx_text("sd15-realconfig/model/scheduler/scheduler_config.json");
    let p = Params { prompt_weighting: weighting, ..common::parity::v2_params(&c) };
    let gpu = common::gpu(true).await;
    let t0 = common::now_ms();
    let sd = load_realconfig(&gpu, DType::F32);
    let tok = realconfig_tokenizer();
    let want_ts: Vec<f64> = f64s(&c["scheduler"]["timesteps_visited"]);
    let s = sd_webgpu::schedulers::from_config(&p.sampler, Some(&sched), p.steps).unwrap();
    assert_eq!(s.timesteps(), &want_ts[..], "{name}: timesteps");
    let mut steps_seen = 0;
    let out = pipeline::generate(&gpu, &sd, &tok, Some(&sched), &p, &mut |pr| {
        steps_seen = pr.step;
        true
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    log!("prompts/{name}: loaded and generated in {:.1} s", (common::now_ms() - t0) / 1000.0);
    assert_eq!(steps_seen, want_ts.len(), "{name}: steps run");
    assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
    // 85 prompt tokens once parsed (txt2img_lpw's checks): LPW's 2 chunks hold them all; the
    // plain encode reads the brackets as tokens too and cuts the prompt at 75 (the case's note).
    if weighting {
        assert_eq!(out.dropped_tokens, (0, 0), "{name}: dropped tokens");
    } else {
        assert!(out.dropped_tokens.0 > 0 && out.dropped_tokens.1 == 0, "{name}: dropped tokens {:?}", out.dropped_tokens);
    }
    let g = fx("prompts/golden.safetensors");
    let (want_img, _) = golden(&g, c["golden"]["image"].as_str().unwrap());
    let (want_lat, _) = golden(&g, c["golden"]["latents"].as_str().unwrap());
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    let fails = common::parity::compare(&format!("prompts/{name}"), DType::F32, &out.latents, &want_lat, &got_img, &want_img);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
native_test!(txt2img_lpw_f32, run_case("txt2img_lpw", true));
native_test!(txt2img_plain_f32, run_case("txt2img_plain", false));

/// All three chunks (scripts/make_prompt_goldens.py, with LPW and diffusers): a 240+-token
/// weighted prompt, cut at 225 and encoded as 3 × 77 positions, with a one-chunk weighted
/// negative prompt padded to three; the text states (≤ 1e-4·max|ref|), then DDIM 4 steps
/// with the UNet's cross-attention over 231 positions: final latents and image as above.
async fn three_chunks() {
    let name = "txt2img_lpw_3chunks";
    let c: serde_json::Value = serde_json::from_slice(&fx(&format!("prompts/{name}.json"))).unwrap();
    let g = fx(&format!("prompts/{name}.safetensors"));
    let sched = fx_text("sd15-realconfig/model/scheduler/scheduler_config.json");
    let p = Params { prompt_weighting: true, ..common::parity::v2_params(&c) };
    let gpu = common::gpu(true).await;
    let sd = load_realconfig(&gpu, DType::F32);
    let tok = realconfig_tokenizer();
    let states = pipeline::encode_text(&gpu, &sd, &tok, &p).unwrap();
    let (want, shape) = golden(&g, c["golden"]["embeds"].as_str().unwrap());
    assert_eq!((states.states().shape(), shape[1]), (&shape[..], 231), "{name}: text states");
    assert!(states.dropped_tokens.0 > 0 && states.dropped_tokens.1 == 0, "{name}: dropped {:?}", states.dropped_tokens);
    common::parity::assert_close(&format!("prompts/{name} embeds"), &gpu.read(states.states()).await.unwrap(), &want, 1e-4);
    drop(states);
    let out = pipeline::generate(&gpu, &sd, &tok, Some(&sched), &p, &mut |_| true).await.unwrap();
    let w = pipeline::dropped_token_warnings(&p, out.dropped_tokens);
    assert!(out.dropped_tokens.0 > 0 && w.len() == 1 && w[0].contains("225 tokens"), "{name}: {:?} {w:?}", out.dropped_tokens);
    let (want_img, _) = golden(&g, c["golden"]["image"].as_str().unwrap());
    let (want_lat, _) = golden(&g, c["golden"]["latents"].as_str().unwrap());
    let got_img: Vec<f32> = out.images.iter().flat_map(|i| i.data.iter().copied()).collect();
    let fails = common::parity::compare(&format!("prompts/{name}"), DType::F32, &out.latents, &want_lat, &got_img, &want_img);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
native_test!(txt2img_lpw_3chunks_f32, three_chunks());

/// Every case of the bundle has a test above.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_case_of_the_bundle_is_tested() {
    let src = include_str!("prompts.rs");
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let covered = match c["kind"].as_str().unwrap() {
            "component" => src.contains(&format!("embeds(\"{name}\")")) && c["checks"].get("parsed_prompt").is_some(),
            "pipeline" => src.contains(&format!("run_case(\"{name}\"")),
            other => panic!("{name}: unknown kind {other}"),
        };
        assert!(covered, "prompts case {name} has no test");
    }
}

// The parser's own cases (A1111 / LPW syntax corners, LoRA tags, chunk counts), in both runners.
fn p(s: &str) -> Vec<(String, f64)> {
    prompt::parse_attention(s)
}
fn v(items: &[(&str, f64)]) -> Vec<(String, f64)> {
    items.iter().map(|(s, w)| (s.to_string(), *w)).collect()
}

/// The examples of `parse_prompt_attention`'s docstring (exact f64 weights).
fn docstring_examples() {
    assert_eq!(p("normal text"), v(&[("normal text", 1.0)]));
    assert_eq!(p("an (important) word"), v(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)]));
    assert_eq!(p("(unbalanced"), v(&[("unbalanced", 1.1)]));
    assert_eq!(p("\\(literal\\]"), v(&[("(literal]", 1.0)]));
    assert_eq!(p("(unnecessary)(parens)"), v(&[("unnecessaryparens", 1.1)]));
    // The docstring's last example verbatim.
    assert_eq!(
        p("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
        v(&[("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)])
    );
    assert_eq!(p(""), v(&[("", 1.0)]));
}

fn brackets_escapes_and_colons() {
    // Unmatched closers are text; a colon that starts no weight is text; `\\` is one `\`;
    // a lone `\` vanishes (LPW appends an empty run, merged away).
    assert_eq!(p("a) b] c"), v(&[("a) b] c", 1.0)]));
    assert_eq!(p("ratio 16:9, (x:2)"), v(&[("ratio 16:9, ", 1.0), ("x", 2.0)]));
    assert_eq!(p("a\\\\b \\c"), v(&[("a\\b c", 1.0)]));
    assert_eq!(p("[[x]]"), v(&[("x", (1.0 / 1.1) * (1.0 / 1.1))]));
    assert_eq!(p("[x"), v(&[("x", 1.0 / 1.1)]));
    // `(x:w)` outside round brackets is text; a weight closes the innermost round bracket.
    assert_eq!(p("x:1.5)"), v(&[("x:1.5)", 1.0)]));
    assert_eq!(p("(a [b:1.5) c]"), v(&[("a ", 1.5), ("b", 1.5 * (1.0 / 1.1)), (" c", 1.0 / 1.1)]));
    assert_eq!(p("(a:-0.5) (b:+.5) (c:2.)"), v(&[("a", -0.5), (" ", 1.0), ("b", 0.5), (" ", 1.0), ("c", 2.0)]));
    // `float()` reads any Unicode decimal digits, as `\d` matches them.
    assert_eq!(p("(a:\u{0661}.\u{0665})"), v(&[("a", 1.5)]));
    // Python's float() refuses these: LPW raises; here the colon is text.
    assert_eq!(p("(a:1.2.3)"), v(&[("a:1.2.3", 1.1)]));
    assert_eq!(p("(a:.)"), v(&[("a:.", 1.1)]));
    assert_eq!(p("(a: 1.2)"), v(&[("a: 1.2", 1.1)]));
    // Multi-byte text around the brackets.
    assert_eq!(p("東京 (夜:1.2)"), v(&[("東京 ", 1.0), ("夜", 1.2)]));
}

fn lora_tags() {
    assert_eq!(prompt::extract_loras("a cat <lora:foo:0.8>, <lora:bar>"), ("a cat , ".to_string(), vec![("foo".to_string(), 0.8), ("bar".to_string(), 1.0)]));
    assert_eq!(prompt::extract_loras("<lora:my style: 1.5 >x"), ("x".to_string(), vec![("my style".to_string(), 1.5)]));
    // Malformed: no closing `>`, bad or non-finite number, empty name, extra fields.
    for s in ["a <lora:foo", "a <lora:foo:abc> b", "<lora:foo:inf>", "<lora::1>", "<lora:>", "<lora:a:1:2>"] {
        assert_eq!(prompt::extract_loras(s), (s.to_string(), vec![]), "{s}");
    }
    // A malformed start does not hide a tag after it; other `<…>` text stays.
    assert_eq!(prompt::extract_loras("<lora:x:y> <lora:z:0.5> <b>"), ("<lora:x:y>  <b>".to_string(), vec![("z".to_string(), 0.5)]));
    assert_eq!(prompt::extract_loras("<lora:a<lora:b:2>"), ("<lora:a".to_string(), vec![("b".to_string(), 2.0)]));
    assert_eq!(prompt::extract_loras(""), (String::new(), vec![]));
}

fn chunk_counts() {
    assert_eq!(prompt::chunk_count(&[0]), 1);
    assert_eq!(prompt::chunk_count(&[0, 0]), 1);
    assert_eq!(prompt::chunk_count(&[75]), 1);
    assert_eq!(prompt::chunk_count(&[76, 3]), 2);
    assert_eq!(prompt::chunk_count(&[3, 150]), 2);
    assert_eq!(prompt::chunk_count(&[151]), 3);
    assert_eq!(prompt::chunk_count(&[225]), 3);
}
cpu_test!(parser_docstring_examples, docstring_examples);
cpu_test!(parser_brackets_escapes_and_colons, brackets_escapes_and_colons);
cpu_test!(parser_lora_tags, lora_tags);
cpu_test!(parser_chunk_counts, chunk_counts);
