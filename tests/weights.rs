//! The streaming safetensors loader on good and bad input: every error is a value that
//! names the file and the tensor; nothing panics; chunking does not matter.
mod common;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use sd_webgpu::gpu::{DType, Gpu};
use sd_webgpu::model::nn::Vb;
use sd_webgpu::weights::{source, Layout, Loader, Spec, Weights};

const FILE: &str = "test/vae/diffusion_pytorch_model.safetensors";

/// A safetensors file: `tensors` are (name, dtype, shape, bytes); offsets laid out in order.
fn st(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}));
        data.extend_from_slice(bytes);
    }
    raw(&serde_json::to_vec(&header).unwrap(), &data)
}

fn raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    common::fixtures::safetensors_bytes(header, data)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn specs() -> Vec<Spec> {
    vec![Spec { name: "vae/a.weight".into(), shape: vec![2, 3] }, Spec { name: "vae/b.bias".into(), shape: vec![4] }]
}

fn good_tensors() -> Vec<(&'static str, &'static str, Vec<usize>, Vec<u8>)> {
    vec![
        ("a.weight", "F32", vec![2, 3], f32s(&[1.0, -2.0, 3.5, 0.25, 5.0, -6.0])),
        ("b.bias", "F32", vec![4], f32s(&[0.5, 1.5, -2.5, 3.0])),
    ]
}

/// Load `bytes` in chunks of `chunk`; Ok(weights, warnings) or the error message.
fn load(gpu: &Gpu, dtype: DType, bytes: &[u8], chunk: usize, total: Option<u64>) -> Result<(Weights, Vec<String>), String> {
    let mut l = Loader::new(gpu, dtype, specs());
    l.begin(FILE, total, Layout::Component("vae".into()));
    for c in bytes.chunks(chunk.max(1)) {
        l.feed(c).map_err(|e| e.to_string())?;
    }
    l.end().map_err(|e| e.to_string())?;
    l.finish().map_err(|e| e.to_string())
}

fn expect_err(r: Result<(Weights, Vec<String>), String>, needles: &[&str]) {
    match r {
        Ok(_) => panic!("expected an error containing {needles:?}, got Ok"),
        Err(msg) => {
            log!("error as the user sees it: {msg}");
            for n in needles {
                assert!(msg.contains(n), "error `{msg}` does not mention `{n}`");
            }
        }
    }
}

async fn good_file_any_chunking() {
    let gpu = common::gpu(true).await;
    let bytes = st(&good_tensors());
    for dtype in [DType::F32, DType::F16] {
        for chunk in [1, 7, 64, 1 << 20] {
            let (w, warn) = load(&gpu, dtype, &bytes, chunk, Some(bytes.len() as u64)).unwrap();
            assert!(warn.is_empty(), "{warn:?}");
            let a = gpu.read(w.get("vae/a.weight").unwrap()).await.unwrap();
            assert_eq!(a, vec![1.0, -2.0, 3.5, 0.25, 5.0, -6.0], "chunk {chunk} {dtype:?}");
            let b = gpu.read(w.get("vae/b.bias").unwrap()).await.unwrap();
            assert_eq!(b, vec![0.5, 1.5, -2.5, 3.0]);
        }
    }
}
gpu_test!(good_file_loads_with_any_chunking, good_file_any_chunking());

async fn f16_and_bf16_sources() {
    let gpu = common::gpu(true).await;
    let h: Vec<u8> = [1.0f32, -2.0, 3.5, 0.25, 5.0, -6.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let b: Vec<u8> = [0.5f32, 1.5, -2.5, 3.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let bytes = st(&[("a.weight", "F16", vec![2, 3], h), ("b.bias", "BF16", vec![4], b)]);
    for dtype in [DType::F32, DType::F16] {
        let (w, _) = load(&gpu, dtype, &bytes, 5, None).unwrap();
        assert_eq!(gpu.read(w.get("vae/a.weight").unwrap()).await.unwrap(), vec![1.0, -2.0, 3.5, 0.25, 5.0, -6.0]);
        assert_eq!(gpu.read(w.get("vae/b.bias").unwrap()).await.unwrap(), vec![0.5, 1.5, -2.5, 3.0]);
    }
}
gpu_test!(f16_and_bf16_sources_convert, f16_and_bf16_sources());

async fn bad_inputs() {
    let gpu = common::gpu(true).await;
    let g = good_tensors();
    let ok = |t: &[(&'static str, &'static str, Vec<usize>, Vec<u8>)]| st(t);

    // Missing tensor.
    expect_err(load(&gpu, DType::F32, &ok(&g[..1]), 64, None), &[FILE, "vae/b.bias", "missing"]);
    // Wrong shape: names file, tensor, expected and found shapes.
    let mut t = g.clone();
    t[0].2 = vec![3, 2];
    expect_err(load(&gpu, DType::F32, &ok(&t), 64, None), &[FILE, "a.weight", "[3, 2]", "[2, 3]"]);
    // Unknown dtype.
    let mut t = g.clone();
    t[1].1 = "F99";
    expect_err(load(&gpu, DType::F32, &ok(&t), 64, None), &[FILE, "b.bias", "F99"]);
    // A wanted tensor that is not floating point.
    let mut t = g.clone();
    t[1].1 = "I32";
    expect_err(load(&gpu, DType::F32, &ok(&t), 64, None), &[FILE, "b.bias", "I32"]);
    // Truncated file.
    let full = ok(&g);
    expect_err(load(&gpu, DType::F32, &full[..full.len() - 3], 64, None), &[FILE, "truncated", "b.bias"]);
    // Ends inside the header.
    expect_err(load(&gpu, DType::F32, &full[..12], 64, None), &[FILE, "header"]);
    // Header longer than the file (length known).
    let mut bad = full.clone();
    bad[..8].copy_from_slice(&10_000u64.to_le_bytes());
    expect_err(load(&gpu, DType::F32, &bad, 64, Some(full.len() as u64)), &[FILE, "longer than the file"]);
    // Absurdly large header.
    let mut bad = full.clone();
    bad[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect_err(load(&gpu, DType::F32, &bad, 64, None), &[FILE, "absurdly large"]);
    // Header that is not JSON.
    expect_err(load(&gpu, DType::F32, &raw(b"{not json", &[]), 64, None), &[FILE, "JSON"]);
    // Offsets outside the data.
    let h = br#"{"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b.bias":{"dtype":"F32","shape":[4],"data_offsets":[24,40]}}"#;
    let short = raw(h, &[0u8; 30]);
    expect_err(load(&gpu, DType::F32, &short, 64, Some(short.len() as u64)), &[FILE, "b.bias", "outside the data"]);
    // Offsets that do not match the shape.
    let h = br#"{"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]},"b.bias":{"dtype":"F32","shape":[4],"data_offsets":[20,36]}}"#;
    expect_err(load(&gpu, DType::F32, &raw(h, &[0u8; 36]), 64, None), &[FILE, "a.weight", "do not hold"]);
    // Overlapping tensors.
    let h = br#"{"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b.bias":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
    expect_err(load(&gpu, DType::F32, &raw(h, &[0u8; 24]), 64, None), &[FILE, "overlap"]);
    // The format's rules (as the safetensors crate's validate()): a gap before a tensor,
    // a name listed twice, bytes after the last tensor (length known or not), offsets near
    // u64::MAX, metadata that is not strings.
    let h = br#"{"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b.bias":{"dtype":"F32","shape":[4],"data_offsets":[28,44]}}"#;
    expect_err(load(&gpu, DType::F32, &raw(h, &[0u8; 44]), 64, None), &[FILE, "24..28 belong to no tensor", "b.bias"]);
    let h = br#"{"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[24,48]}}"#;
    expect_err(load(&gpu, DType::F32, &raw(h, &[0u8; 48]), 64, None), &[FILE, "a.weight", "twice"]);
    let mut long = full.clone();
    long.extend_from_slice(&[0u8; 3]);
    expect_err(load(&gpu, DType::F32, &long, 64, Some(long.len() as u64)), &[FILE, "3 bytes after its last tensor"]);
    expect_err(load(&gpu, DType::F32, &long, 5, None), &[FILE, "after its last tensor"]);
    let h = br#"{"a.weight":{"dtype":"F32","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}}"#;
    expect_err(load(&gpu, DType::F32, &raw(h, &[]), 64, None), &[FILE, "a.weight"]);
    let h = br#"{"__metadata__":{"format":7},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
    expect_err(load(&gpu, DType::F32, &raw(h, &[0u8; 24]), 64, None), &[FILE, "__metadata__"]);
    // A safetensors file that is not a Stable Diffusion model.
    let other = st(&[("classifier.fc.weight", "F32", vec![2], f32s(&[1.0, 2.0]))]);
    expect_err(load(&gpu, DType::F32, &other, 64, None), &[FILE, "not a Stable Diffusion", "classifier.fc.weight"]);
}
gpu_test!(bad_inputs_are_clear_errors, bad_inputs());

async fn extras() {
    let gpu = common::gpu(true).await;
    let mut t = good_tensors();
    // Harmless extras real checkpoints carry: skipped without a word.
    t.push(("embeddings.position_ids", "I64", vec![1, 2], vec![0u8; 16]));
    let (_, warn) = load(&gpu, DType::F32, &st(&t), 64, None).unwrap();
    assert!(warn.is_empty(), "harmless extras warned: {warn:?}");
    // A real unexpected tensor: skipped, with a warning naming it.
    t.push(("decoder.extra_head.weight", "F32", vec![1], f32s(&[1.0])));
    let (_, warn) = load(&gpu, DType::F32, &st(&t), 64, None).unwrap();
    assert_eq!(warn.len(), 1);
    assert!(warn[0].contains("decoder.extra_head.weight") && warn[0].contains(FILE), "{warn:?}");
}
gpu_test!(unexpected_tensors_warn_harmless_extras_do_not, extras());

/// The chunk that ends the header may already carry part of a tensor the loader then
/// skips (an extra placed first): that part must not end up in the next tensor (found by
/// tests/hostile.rs: "data for tensor of shape [3] has 28 elements").
async fn skipped_first_tensor_split_by_a_chunk() {
    let gpu = common::gpu(true).await;
    let mut t = good_tensors();
    t.insert(0, ("embeddings.position_ids", "I64", vec![1, 2], vec![7u8; 16]));
    let bytes = st(&t);
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for split in [data_start, data_start + 4, data_start + 15, data_start + 16, data_start + 20] {
        let mut l = Loader::new(&gpu, DType::F32, specs());
        l.begin(FILE, Some(bytes.len() as u64), Layout::Component("vae".into()));
        l.feed(&bytes[..split]).unwrap();
        l.feed(&bytes[split..]).unwrap();
        l.end().unwrap();
        let (w, warn) = l.finish().unwrap();
        assert!(warn.is_empty(), "{warn:?}");
        let a = gpu.read(w.get("vae/a.weight").unwrap()).await.unwrap();
        assert_eq!(a, vec![1.0, -2.0, 3.5, 0.25, 5.0, -6.0], "split at {split}");
    }
}
gpu_test!(skipped_tensor_split_by_the_header_chunk, skipped_first_tensor_split_by_a_chunk());

/// Forward passes reach weights by handle ([`WeightId`], made when the model is built),
/// loaders / LoRA / eviction by name: both must reach the same slot, in every `Weights`,
/// and a missing weight's error must still name it.
async fn handles_and_names_share_slots() {
    let gpu = common::gpu(true).await;
    let bytes = st(&good_tensors());
    let (mut w, _) = load(&gpu, DType::F32, &bytes, 1 << 20, None).unwrap();
    let vb = Vb::root("vae");
    let a = vb.pp("a").param("weight", &[2, 3]);
    let b = vb.pp("b").param("bias", &[4]);
    let c = vb.pp("c").param("weight", &[1]);
    assert_eq!(vb.specs().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["vae/a.weight", "vae/b.bias", "vae/c.weight"]);
    // Ids are unique across components and stable across builders.
    let ua = Vb::root("unet").pp("a").param("weight", &[2, 3]);
    assert_ne!(a, ua);
    assert_eq!(Vb::root("vae").pp("a").param("weight", &[2, 3]), a);
    assert_eq!(a.name(), "vae/a.weight");
    assert_eq!(gpu.read(w.at(a).unwrap()).await.unwrap(), vec![1.0, -2.0, 3.5, 0.25, 5.0, -6.0]);
    assert_eq!(gpu.read(w.at(b).unwrap()).await.unwrap(), vec![0.5, 1.5, -2.5, 3.0]);
    assert!(w.slot(ua).is_none() && w.slot(c).is_none());
    let e = w.at(c).expect_err("not loaded").to_string();
    assert!(e.contains("vae/c.weight"), "{e}");
    assert_eq!(w.len(), 2);
    // Replaced by name (a LoRA merge): the handle sees the new tensor.
    w.insert("vae/a.weight".into(), gpu.upload(&[2, 3], DType::F32, &[9.0; 6]).unwrap());
    assert_eq!(w.len(), 2);
    assert_eq!(gpu.read(w.at(a).unwrap()).await.unwrap(), vec![9.0; 6]);
    // Removed by name (eviction): the handle misses, the error names the tensor.
    assert!(w.remove("vae/a.weight").is_some());
    assert!(w.remove("vae/a.weight").is_none() && w.remove("vae/never.registered").is_none());
    assert_eq!(w.len(), 1);
    assert!(w.slot(a).is_none() && w.find("vae/a.weight").is_none());
    let e = w.at(a).expect_err("evicted").to_string();
    assert!(e.contains("vae/a.weight"), "{e}");
    // Another `Weights` filled by name (the f32 VAE copy) answers to the same handles.
    let mut w2 = Weights::default();
    w2.insert("vae/c.weight".into(), gpu.upload(&[1], DType::F32, &[4.0]).unwrap());
    assert_eq!(gpu.read(w2.at(c).unwrap()).await.unwrap(), vec![4.0]);
    assert!(w2.slot(b).is_none());
    let names: Vec<&String> = w2.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["vae/c.weight"]);
}
gpu_test!(handles_and_names_reach_the_same_slot, handles_and_names_share_slots());

cpu_test!(pickle_checkpoints_are_refused, || {
    for f in ["v1-5-pruned.ckpt", "pytorch_model.bin", "model.PT", "x.pth"] {
        let e = source::refuse_pickle(f).expect_err(f).to_string();
        assert!(e.contains(f) && e.contains("pickle") && e.contains(".safetensors"), "{e}");
    }
    assert!(source::refuse_pickle("model.safetensors").is_ok());
    // A diffusers folder that only has the pickle file.
    let exists = |p: &str| p.ends_with("diffusion_pytorch_model.bin");
    let read = |_: &str| Ok(String::new());
    let e = source::component_files("repo/unet", "diffusion_pytorch_model", Some("fp16"), &exists, &read).expect_err("pickle only");
    assert!(e.to_string().contains("pickle"), "{e}");
});

cpu_test!(variant_and_sharded_resolution, || {
    let files = ["repo/unet/diffusion_pytorch_model.safetensors", "repo/unet/diffusion_pytorch_model.fp16.safetensors"];
    let exists = |p: &str| files.contains(&p);
    let read = |_: &str| Ok(String::new());
    let f = source::component_files("repo/unet", "diffusion_pytorch_model", Some("fp16"), &exists, &read).unwrap();
    assert_eq!(f, vec!["repo/unet/diffusion_pytorch_model.fp16.safetensors"]);
    let f = source::component_files("repo/unet", "diffusion_pytorch_model", None, &exists, &read).unwrap();
    assert_eq!(f, vec!["repo/unet/diffusion_pytorch_model.safetensors"]);
    // Sharded: the index lists the shards.
    let idx = r#"{"metadata":{},"weight_map":{"a":"m-00002-of-00002.safetensors","b":"m-00001-of-00002.safetensors","c":"m-00001-of-00002.safetensors"}}"#;
    let exists = |p: &str| p.ends_with("diffusion_pytorch_model.safetensors.index.json");
    let read = |_: &str| Ok(idx.to_string());
    let f = source::component_files("u", "diffusion_pytorch_model", Some("fp16"), &exists, &read).unwrap();
    assert_eq!(f, vec!["u/m-00001-of-00002.safetensors", "u/m-00002-of-00002.safetensors"]);
    // A shard name that escapes the folder is refused.
    let bad = r#"{"weight_map":{"a":"../../etc/passwd"}}"#;
    let read = |_: &str| Ok(bad.to_string());
    assert!(source::component_files("u", "diffusion_pytorch_model", None, &exists, &read).is_err());
});
