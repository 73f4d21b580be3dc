//! Fixture files (copied from the reference bundle): read from disk natively, embedded in
//! the test module for the browser (only the files the browser tests use).
#![allow(dead_code)]

/// A safetensors file from its header (JSON) and data: the header's length (u64 LE), the
/// header, the data.
pub fn safetensors_bytes(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15");

#[cfg(not(target_arch = "wasm32"))]
pub fn bytes(rel: &str) -> Vec<u8> {
    let p = format!("{ROOT}/{rel}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {p}: {e}"))
}

#[cfg(target_arch = "wasm32")]
pub fn bytes(rel: &str) -> Vec<u8> {
    macro_rules! embedded {
        ($($f:literal),*) => {
            match rel {
                $($f => include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd15/", $f)).to_vec(),)*
                other => panic!("fixture {other} is not embedded for the browser tests"),
            }
        };
    }
    embedded!(
        "golden.safetensors",
        "golden.json",
        "init.png",
        "model/tokenizer/vocab.json",
        "model/tokenizer/merges.txt",
        "model/tokenizer/tokenizer_config.json",
        "model/tokenizer/special_tokens_map.json",
        "model/scheduler/scheduler_config.json",
        "model/unet/config.json",
        "model/vae/config.json",
        "model/text_encoder/config.json",
        "model/unet/diffusion_pytorch_model.safetensors",
        "model/vae/diffusion_pytorch_model.safetensors",
        "model/text_encoder/model.safetensors"
    )
}

/// Fixtures of the other bundles, by path under `tests/fixtures/` (e.g.
/// `sd15-realconfig/golden.safetensors`, copied from `../shared/reference/v2/`).
#[cfg(not(target_arch = "wasm32"))]
pub fn file(rel: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {p}: {e}"))
}

#[cfg(target_arch = "wasm32")]
pub fn file(rel: &str) -> Vec<u8> {
    macro_rules! embedded {
        ($($f:literal),*) => {
            match rel {
                $($f => include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $f)).to_vec(),)*
                other => panic!("fixture {other} is not embedded for the browser tests"),
            }
        };
    }
    embedded!(
        "sd15-realconfig/cases.json",
        "sd15-realconfig/golden.safetensors",
        "sd15-realconfig/model/scheduler/scheduler_config.json",
        "sd15-realconfig/model/tokenizer/tokenizer_config.json",
        "sd15-realconfig/model/tokenizer/special_tokens_map.json",
        "sd15-realconfig/model/text_encoder/config.json",
        "sd15-realconfig/model/text_encoder/model.safetensors",
        "sd15-realconfig/vae-legacy-names/config.json",
        "sd15-realconfig/vae-legacy-names/diffusion_pytorch_model.safetensors",
        "extra/cases.json",
        "extra/golden.safetensors",
        "extra/wide-heads-unet/config.json",
        "sd2/cases.json",
        "sd2/model-v/scheduler/scheduler_config.json",
        "sd2/model-turbo/scheduler/scheduler_config.json"
    )
}

pub fn file_text(rel: &str) -> String {
    String::from_utf8(file(rel)).expect("utf-8 fixture")
}

pub fn text(rel: &str) -> String {
    String::from_utf8(bytes(rel)).expect("utf-8 fixture")
}

/// A golden tensor as f32 (I64 and U8 converted), with its shape.
pub fn golden(g: &[u8], name: &str) -> (Vec<f32>, Vec<usize>) {
    let st = safetensors::SafeTensors::deserialize(g).expect("golden.safetensors");
    let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
    let d = t.data();
    let v = match t.dtype() {
        safetensors::Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        safetensors::Dtype::I64 => {
            d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        }
        safetensors::Dtype::U8 => d.iter().map(|&b| b as f32).collect(),
        other => panic!("golden {name}: dtype {other:?}"),
    };
    (v, t.shape().to_vec())
}

/// The case `name` of a v2 bundle's `cases.json` (its bytes).
pub fn case(cases_json: &[u8], bundle: &str, name: &str) -> serde_json::Value {
    let j: serde_json::Value = serde_json::from_slice(cases_json).unwrap_or_else(|e| panic!("{bundle}/cases.json: {e}"));
    j["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or_else(|| panic!("{bundle} case {name}"))
}
