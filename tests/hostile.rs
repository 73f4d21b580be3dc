//! Hostile safetensors files: a fixed-seed fuzz of the streaming loader with a budget
//! (mutations of a valid small model file, whole and in random chunks, with and without a
//! known length), and the format rules the parser enforces as the `safetensors` crate's
//! `validate()` does. Every input must end in `Ok` or a clear error naming the file: no
//! panic, no hang, memory bounded by the bytes that arrived.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::gpu::{DType, Gpu, GpuOptions};
use sd_webgpu::selftest::Rng;
use sd_webgpu::weights::{Layout, Loader, Spec};

const FILE: &str = "fuzz/vae/diffusion_pytorch_model.safetensors";
/// Inputs and time budget: natively 20 000 inputs in at most 60 s; in the browser (CI's
/// time) 10 000 in at most 30 s. The run stops at whichever comes first and says so.
const INPUTS: usize = if cfg!(target_arch = "wasm32") { 10_000 } else { 20_000 };
const BUDGET_MS: f64 = if cfg!(target_arch = "wasm32") { 30_000.0 } else { 60_000.0 };
/// No single input may take longer (a loop that does not advance would).
const PER_INPUT_MS: f64 = 2_000.0;

/// One header entry, each field as JSON text so that a mutation can put anything there.
#[derive(Clone)]
struct Entry {
    name: String,
    dtype: String,
    shape: String,
    offsets: String,
}

/// A file in a form that mutations can edit: header entries (in file order), metadata
/// JSON, padding after the header, the data bytes.
#[derive(Clone)]
struct File {
    entries: Vec<Entry>,
    metadata: Option<String>,
    pad: usize,
    data: Vec<u8>,
}

fn entry(name: &str, dtype: &str, shape: &[u64], start: u64, end: u64) -> Entry {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    Entry { name: format!("\"{name}\""), dtype: format!("\"{dtype}\""), shape: format!("[{}]", dims.join(",")), offsets: format!("[{start},{end}]") }
}

/// The valid file: three weights the specs want (F32, F16, a BF16 1×1 conv read as
/// linear), a harmless I64 extra, an unexpected zero-sized tensor, metadata.
fn valid(rng: &mut Rng) -> File {
    let list: [(&str, &str, &[u64], u64); 5] = [
        ("a.weight", "F32", &[2, 3], 24),
        ("b.bias", "F16", &[4], 8),
        ("embeddings.position_ids", "I64", &[1, 2], 16),
        ("c.weight", "BF16", &[3, 1, 1], 6),
        ("decoder.empty", "F32", &[0], 0),
    ];
    let mut entries = Vec::new();
    let mut off = 0;
    for (name, dt, shape, n) in list {
        entries.push(entry(name, dt, shape, off, off + n));
        off += n;
    }
    let data = (0..off).map(|_| (rng.next_u64() % 251) as u8).collect();
    File { entries, metadata: Some(r#"{"format":"pt"}"#.into()), pad: 0, data }
}

fn specs() -> Vec<Spec> {
    vec![
        Spec { name: "vae/a.weight".into(), shape: vec![2, 3] },
        Spec { name: "vae/b.bias".into(), shape: vec![4] },
        Spec { name: "vae/c.weight".into(), shape: vec![3] },
    ]
}

fn render(f: &File) -> Vec<u8> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = &f.metadata {
        parts.push(format!("\"__metadata__\":{m}"));
    }
    for e in &f.entries {
        parts.push(format!("{}:{{\"dtype\":{},\"shape\":{},\"data_offsets\":{}}}", e.name, e.dtype, e.shape, e.offsets));
    }
    let mut header = format!("{{{}}}", parts.join(",")).into_bytes();
    header.resize(header.len() + f.pad, b' ');
    common::fixtures::safetensors_bytes(&header, &f.data)
}

/// What an input must give.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Anything but a panic or a hang.
    Any,
    /// A valid file: loads (reordered entries, padding, harmless extras).
    Ok,
    /// An error whose message contains this.
    Err(&'static str),
}

const SPECIAL: [u64; 10] = [0, 1, 7, 1 << 31, 1 << 32, (1 << 32) + 8, 1 << 40, 1 << 62, u64::MAX - 7, u64::MAX];

fn pick<T: Copy>(rng: &mut Rng, v: &[T]) -> T {
    v[(rng.next_u64() % v.len() as u64) as usize]
}

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// One mutated input: (label, bytes, expectation).
fn mutate(rng: &mut Rng, base: &File) -> (String, Vec<u8>, Expect) {
    let mut f = base.clone();
    let kind = below(rng, 14);
    let e = below(rng, f.entries.len());
    match kind {
        0 | 1 => {
            // Byte flips in the length + header (0) or in the data (1).
            let mut b = render(&f);
            let hdr_end = b.len() - f.data.len();
            let n = 1 + below(rng, 8);
            for _ in 0..n {
                let i = if kind == 0 || f.data.is_empty() { below(rng, hdr_end) } else { hdr_end + below(rng, f.data.len()) };
                b[i] ^= 1 << below(rng, 8);
            }
            let what = if kind == 0 { "header" } else { "data" };
            // Flipped data bytes are still a valid file.
            (format!("{n} byte flips in the {what}"), b, if kind == 1 { Expect::Ok } else { Expect::Any })
        }
        2 => {
            let b = render(&f);
            let at = below(rng, b.len());
            (format!("truncated at {at} of {}", b.len()), b[..at].to_vec(), Expect::Any)
        }
        3 => {
            let mut b = render(&f);
            let hl = u64::from_le_bytes(b[..8].try_into().unwrap());
            let r = rng.next_u64();
            let v = pick(rng, &[0, 1, hl - 1, hl + 1, b.len() as u64, 1 << 32, (1 << 32) + hl, u64::MAX, (100 << 20) + 1, r]);
            b[..8].copy_from_slice(&v.to_le_bytes());
            (format!("header length set to {v}"), b, Expect::Any)
        }
        4 => {
            let (s, t) = (pick(rng, &SPECIAL), pick(rng, &SPECIAL));
            f.entries[e].offsets = match below(rng, 3) {
                0 => format!("[{s},{t}]"),
                1 => format!("[{s}]"),
                _ => format!("[{s},{t},{s}]"),
            };
            (format!("entry {e} offsets {}", f.entries[e].offsets), render(&f), Expect::Any)
        }
        5 => {
            let d = pick(rng, &["0", "4294967296", "18446744073709551615", "4611686018427387904", "-1", "1.5", "\"x\"", "null"]);
            f.entries[e].shape = match below(rng, 3) {
                0 => format!("[{d}]"),
                1 => format!("[2,{d},3]"),
                _ => format!("[{}]", vec!["65536"; 8].join(",")),
            };
            (format!("entry {e} shape {}", f.entries[e].shape), render(&f), Expect::Any)
        }
        6 => {
            let d = pick(rng, &["\"F99\"", "\"\"", "\"f32\"", "\"I8\"", "\"BOOL\"", "\"F8_E4M3\"", "7", "null"]);
            f.entries[e].dtype = d.to_string();
            (format!("entry {e} dtype {d}"), render(&f), Expect::Any)
        }
        7 => {
            // A gap before entry e: its offsets and all later ones shift by g.
            let g = pick(rng, &[1u64, 8, 1 << 32, 1 << 33]);
            let mut at = 0u64;
            let mut shifted = Vec::new();
            for (i, en) in f.entries.iter().enumerate() {
                let o: Vec<u64> = en.offsets.trim_matches(|c| c == '[' || c == ']').split(',').map(|x| x.parse().unwrap()).collect();
                let add = if i >= e { g } else { 0 };
                shifted.push(format!("[{},{}]", o[0] + add, o[1] + add));
                at = at.max(o[1] + add);
            }
            for (en, o) in f.entries.iter_mut().zip(shifted) {
                en.offsets = o;
            }
            if g < 1024 {
                f.data.resize(at as usize, 0);
            }
            // With the data extended the gap itself is the error; a gap past the data can
            // also be caught as offsets outside the data.
            let want = if g < 1024 { "belong to no tensor" } else { "" };
            (format!("gap of {g} bytes before entry {e}"), render(&f), Expect::Err(want))
        }
        8 => {
            // Entries in another order: still the same valid file.
            for i in (1..f.entries.len()).rev() {
                f.entries.swap(i, below(rng, i + 1));
            }
            ("entries reordered".into(), render(&f), Expect::Ok)
        }
        9 => {
            let dup = f.entries[e].clone();
            f.entries.insert(below(rng, f.entries.len() + 1), dup);
            (format!("entry {e} listed twice"), render(&f), Expect::Err("twice"))
        }
        10 => {
            // Extra zero-sized tensors (unexpected: a warning, skipped in O(1) each).
            let k = pick(rng, &[1usize, 100, 10_000]);
            let end = f.data.len() as u64;
            for i in 0..k {
                f.entries.push(entry(&format!("decoder.extra_{i}"), "F16", &[0, 4], end, end));
            }
            (format!("{k} extra tensors"), render(&f), Expect::Ok)
        }
        11 => {
            let m = pick(rng, &[r#"{"format":7}"#, r#"{"a":{"b":"c"}}"#, r#"[]"#, r#""x""#, r#"{}"#]);
            let ok = m == "{}";
            f.metadata = Some(m.into());
            (format!("metadata {m}"), render(&f), if ok { Expect::Ok } else { Expect::Err("__metadata__") })
        }
        12 => {
            // JSON damage: a byte of the header text deleted or replaced.
            let mut b = render(&f);
            let hdr_len = b.len() - 8 - f.data.len();
            let i = 8 + below(rng, hdr_len);
            if rng.next_u64() % 2 == 0 {
                b[i] = (rng.next_u64() % 256) as u8;
            } else {
                b.remove(i);
            }
            (format!("header byte {i} damaged"), b, Expect::Any)
        }
        _ => {
            // Trailing spaces after the JSON (the format pads headers to 8 bytes) are fine;
            // bytes after the last tensor are not.
            if rng.next_u64() % 2 == 0 {
                f.pad = 1 + below(rng, 15);
                (format!("header padded by {}", f.pad), render(&f), Expect::Ok)
            } else {
                f.data.extend_from_slice(&[0u8; 5]);
                ("5 bytes after the last tensor".into(), render(&f), Expect::Err("after"))
            }
        }
    }
}

/// Feeds `bytes` through a fresh loader in `chunks` (None: whole); checks memory on the
/// way. Returns Ok(warnings) or the error message.
fn load(gpu: &Gpu, bytes: &[u8], total: Option<u64>, chunks: Option<&mut Rng>) -> Result<Vec<String>, String> {
    let mut l = Loader::new(gpu, DType::F32, specs());
    l.begin(FILE, total, Layout::Component("vae".into()));
    let mut fed = 0usize;
    let mut rest = bytes;
    let mut rng = chunks;
    while !rest.is_empty() {
        let n = match rng.as_deref_mut() {
            Some(r) => {
                let small = r.next_u64() % 2 == 0;
                (1 + below(r, if small { 16 } else { rest.len() })).min(rest.len())
            }
            None => rest.len(),
        };
        let (c, r) = rest.split_at(n);
        rest = r;
        fed += n;
        l.feed(c).map_err(|e| e.to_string())?;
        // Memory follows the bytes that arrived (plus, with a known length, at most the
        // tensor that length holds).
        let bound = 2 * fed + 64 + total.unwrap_or(0) as usize;
        assert!(l.buffered_bytes() <= bound, "parser holds {} bytes after {fed} fed", l.buffered_bytes());
    }
    l.end().map_err(|e| e.to_string())?;
    l.finish().map(|(_, w)| w).map_err(|e| e.to_string())
}

async fn fuzz() {
    // Planning mode: the loader's uploads are accounted, not made (the parser is the subject).
    let gpu = Gpu::new(GpuOptions { plan_only: true, ..Default::default() }).await.expect("a GPU adapter");
    let mut rng = Rng::new(0x5afe_7e45);
    let base = valid(&mut rng);
    let good = render(&base);
    // The base file loads, whole and byte by byte, with and without its length.
    for total in [Some(good.len() as u64), None] {
        let w = load(&gpu, &good, total, None).expect("the valid file");
        assert!(w.len() == 1 && w[0].contains("decoder.empty"), "{w:?}");
        load(&gpu, &good, total, Some(&mut Rng::new(1))).expect("the valid file in chunks");
    }
    // Every truncation of it is an error (never Ok, never a panic).
    for at in 0..good.len() {
        let e = load(&gpu, &good[..at], None, None).expect_err("truncated file loaded");
        assert!(e.contains(FILE), "{e}");
    }
    let t0 = common::now_ms();
    let (mut tried, mut oks, mut worst) = (0usize, 0usize, (0f64, String::new()));
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    while tried < INPUTS && common::now_ms() - t0 < BUDGET_MS {
        let (label, bytes, expect) = mutate(&mut rng, &base);
        let total = (rng.next_u64() % 2 == 0).then_some(bytes.len() as u64);
        let chunked = rng.next_u64() % 2 == 0;
        let mut crng = Rng::new(rng.next_u64());
        let case = format!("input {tried} ({label}; length {}; {})", if total.is_some() { "known" } else { "unknown" }, if chunked { "random chunks" } else { "whole" });
        let s = common::now_ms();
        let r = run_one(&gpu, &bytes, total, chunked.then_some(&mut crng), &case);
        let dt = common::now_ms() - s;
        assert!(dt < PER_INPUT_MS, "{case}: took {dt:.0} ms");
        if dt > worst.0 {
            worst = (dt, case.clone());
        }
        match (&r, expect) {
            (Ok(_), Expect::Err(n)) => panic!("{case}: loaded, but should fail with `{n}`"),
            (Err(e), Expect::Ok) => panic!("{case}: should load, got: {e}"),
            (Err(e), Expect::Err(n)) => assert!(e.contains(n), "{case}: error `{e}` does not say `{n}`"),
            _ => {}
        }
        match &r {
            Ok(_) => oks += 1,
            Err(e) => {
                assert!(e.contains(FILE) && e.len() > FILE.len() + 10, "{case}: unclear error `{e}`");
                // Group the messages by their wording (digits dropped).
                let k: String = e.replace(FILE, "").chars().filter(|c| !c.is_ascii_digit()).take(60).collect();
                *kinds.entry(k).or_default() += 1;
            }
        }
        tried += 1;
    }
    let secs = (common::now_ms() - t0) / 1000.0;
    log!("fuzz: {tried} mutated inputs in {secs:.1} s ({oks} loaded, {} errors in {} wordings); slowest {:.1} ms: {}", tried - oks, kinds.len(), worst.0, worst.1);
    let mut by_count: Vec<(&String, &usize)> = kinds.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    for (k, n) in by_count.iter().take(20) {
        log!("  {n:6} × {k}…");
    }
    if tried < INPUTS {
        log!("fuzz: the {BUDGET_MS} ms budget ended the run after {tried} of {INPUTS} inputs");
    }
    assert!(tried >= INPUTS / 10, "only {tried} inputs within the budget");
}

/// One input; natively a panic is caught to name the input that caused it.
fn run_one(gpu: &Gpu, bytes: &[u8], total: Option<u64>, chunks: Option<&mut Rng>, case: &str) -> Result<Vec<String>, String> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(gpu, bytes, total, chunks)));
        r.unwrap_or_else(|p| {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            panic!("{case}: panicked: {msg}")
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = case;
        load(gpu, bytes, total, chunks)
    }
}
gpu_test!(fuzzed_safetensors_end_in_ok_or_a_clear_error, fuzz());

/// Hostile `config.json` values get a clear error naming the key before anything is built;
/// every real config in the fixtures (and SD-1.5's defaults) still passes.
fn hostile_configs() {
    use sd_webgpu::model::config::{ClipConfig, UnetConfig, VaeConfig};
    let unet = common::fixtures::text("model/unet/config.json");
    let vae = common::fixtures::text("model/vae/config.json");
    let clip = common::fixtures::text("model/text_encoder/config.json");
    let check = |kind: &str, text: &str| -> Result<(), String> {
        let r = match kind {
            "unet" => UnetConfig::from_json("x/unet/config.json", text).map(|_| ()),
            "vae" => VaeConfig::from_json("x/vae/config.json", text).map(|_| ()),
            _ => ClipConfig::from_json("x/text_encoder/config.json", text).map(|_| ()),
        };
        r.map_err(|e| e.to_string())
    };
    let wide = common::fixtures::file_text("extra/wide-heads-unet/config.json");
    let real_te = common::fixtures::file_text("sd15-realconfig/model/text_encoder/config.json");
    let legacy_vae = common::fixtures::file_text("sd15-realconfig/vae-legacy-names/config.json");
    let defaults = [
        ("unet", serde_json::to_string(&UnetConfig::default()).unwrap()),
        ("vae", serde_json::to_string(&VaeConfig::default()).unwrap()),
        ("clip", serde_json::to_string(&ClipConfig::default()).unwrap()),
    ];
    for (kind, text) in [("unet", &unet), ("vae", &vae), ("clip", &clip), ("unet", &wide), ("clip", &real_te), ("vae", &legacy_vae)].into_iter().chain(defaults.iter().map(|(k, t)| (*k, t))) {
        check(kind, text).unwrap_or_else(|e| panic!("a real {kind} config is refused: {e}"));
    }
    let cases: &[(&str, &str, &str, &str)] = &[
        ("unet", "layers_per_block", "1000000000", "layers_per_block"),
        ("unet", "block_out_channels", "[32, 4000000000, 64, 64]", "block_out_channels"),
        ("unet", "norm_num_groups", "0", "norm_num_groups"),
        ("unet", "norm_num_groups", "7", "not divisible"),
        ("unet", "attention_head_dim", "0", "heads"),
        ("unet", "attention_head_dim", "3", "do not divide"),
        ("unet", "cross_attention_dim", "0", "cross_attention_dim"),
        ("unet", "in_channels", "100000", "in_channels"),
        ("unet", "transformer_layers_per_block", "100000", "transformer_layers_per_block"),
        ("unet", "norm_eps", "-1", "norm_eps"),
        ("unet", "sample_size", "4000000000", "sample_size"),
        ("unet", "block_out_channels", "[]", "non-zero length"),
        ("unet", "layers_per_block", "-1", "bad config"),
        ("vae", "latent_channels", "0", "latent_channels"),
        ("vae", "scaling_factor", "0", "scaling_factor"),
        ("vae", "layers_per_block", "1000000000", "layers_per_block"),
        ("vae", "block_out_channels", "[3]", "not divisible"),
        ("vae", "block_out_channels", "[32, 64, 64, 64, 64, 64, 64, 64, 64]", "number of block_out_channels"),
        ("clip", "vocab_size", "4000000000", "vocab_size"),
        ("clip", "hidden_size", "0", "hidden_size"),
        ("clip", "num_hidden_layers", "100000", "num_hidden_layers"),
        ("clip", "eos_token_id", "4000000000", "eos_token_id"),
        ("clip", "max_position_embeddings", "1000000000", "max_position_embeddings"),
        ("clip", "intermediate_size", "0", "intermediate_size"),
    ];
    for (kind, key, value, needle) in cases {
        let base = match *kind {
            "unet" => &unet,
            "vae" => &vae,
            _ => &clip,
        };
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v[*key] = serde_json::from_str(value).unwrap();
        let e = check(kind, &v.to_string()).expect_err(&format!("{kind} {key} = {value} was accepted"));
        log!("{kind} {key} = {value}: {e}");
        assert!(e.contains("config.json") && e.contains(needle), "{kind} {key} = {value}: `{e}` does not say `{needle}`");
    }
}
cpu_test!(hostile_configs_are_clear_errors, hostile_configs);
