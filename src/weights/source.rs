//! Where the weight files of a model are: diffusers folder (optional variant), HF
//! sharded index, single file. Resolution takes `exists` / `read_text` callbacks so the
//! same logic serves files on disk and URLs.
use super::WeightError;

pub const PICKLE_EXTS: [&str; 5] = [".ckpt", ".bin", ".pt", ".pth", ".pkl"];

/// Pickle checkpoints can run code when loaded: refuse them by name.
pub fn refuse_pickle(path: &str) -> Result<(), WeightError> {
    let lower = path.to_ascii_lowercase();
    if PICKLE_EXTS.iter().any(|e| lower.ends_with(e)) {
        return Err(WeightError::Pickle { file: path.into() });
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// Shard file names of a `*.safetensors.index.json`, in order.
pub fn shards_of_index(file: &str, text: &str) -> Result<Vec<String>, WeightError> {
    let idx: Index = serde_json::from_str(text).map_err(|e| WeightError::Config { file: file.into(), detail: format!("bad shard index: {e}") })?;
    let mut shards: Vec<String> = idx.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    for s in &shards {
        if s.contains('/') || s.contains("..") {
            return Err(WeightError::Config { file: file.into(), detail: format!("shard name {s} is not a plain file name") });
        }
        refuse_pickle(s)?;
    }
    if shards.is_empty() {
        return Err(WeightError::Config { file: file.into(), detail: "the index lists no shards".into() });
    }
    Ok(shards)
}

/// The weight files to look for in a component folder, in order of preference:
/// `(file name, is a sharded index)`. `base` is `diffusion_pytorch_model` or `model`.
pub fn candidates(base: &str, variant: Option<&str>) -> Vec<(String, bool)> {
    let mut tries = Vec::new();
    if let Some(v) = variant {
        tries.push((format!("{base}.{v}.safetensors"), false));
        tries.push((format!("{base}.safetensors.index.{v}.json"), true));
        tries.push((format!("{base}.{v}.safetensors.index.json"), true));
    }
    tries.push((format!("{base}.safetensors"), false));
    tries.push((format!("{base}.safetensors.index.json"), true));
    tries
}

/// The weight-file base name of a diffusers component.
pub fn base_of(component: &str) -> &'static str {
    if component == "text_encoder" || component == "text_encoder_2" {
        "model"
    } else {
        "diffusion_pytorch_model"
    }
}

/// The files of one diffusers component folder `dir` (`…/unet`), whose weight files are
/// named `base` (`diffusion_pytorch_model` or `model`): with `variant` (`fp16`) the
/// variant file is preferred when present; a sharded index is used when there is no
/// single file. Pickle-only folders are refused.
pub fn component_files(
    dir: &str,
    base: &str,
    variant: Option<&str>,
    exists: &dyn Fn(&str) -> bool,
    read_text: &dyn Fn(&str) -> Result<String, WeightError>,
) -> Result<Vec<String>, WeightError> {
    let p = |name: String| format!("{}/{}", dir.trim_end_matches('/'), name);
    let tries: Vec<(String, bool)> = candidates(base, variant).into_iter().map(|(f, i)| (p(f), i)).collect();
    for (path, is_index) in &tries {
        if !exists(path) {
            continue;
        }
        if !is_index {
            return Ok(vec![path.clone()]);
        }
        let shards = shards_of_index(path, &read_text(path)?)?;
        return Ok(shards.into_iter().map(p).collect());
    }
    let pickle = p(format!("{base}.bin"));
    if exists(&pickle) {
        return Err(WeightError::Pickle { file: pickle });
    }
    Err(WeightError::Io { file: dir.into(), detail: format!("no {base}.safetensors (or sharded index) in this folder") })
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::io::Read;
    use std::path::Path;

    use super::super::{Layout, Loader, WeightError};

    pub fn io_err(path: &Path, e: impl std::fmt::Display) -> WeightError {
        WeightError::Io { file: path.display().to_string(), detail: e.to_string() }
    }

    pub fn read_text(path: &Path) -> Result<String, WeightError> {
        std::fs::read_to_string(path).map_err(|e| io_err(path, e))
    }

    /// Stream a file from disk into the loader, 4 MiB at a time.
    pub fn stream_file(loader: &mut Loader, path: &Path, layout: Layout) -> crate::Result<()> {
        super::refuse_pickle(&path.display().to_string())?;
        let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        let len = f.metadata().map_err(|e| io_err(path, e))?.len();
        loader.begin(&path.display().to_string(), Some(len), layout);
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
            if n == 0 {
                break;
            }
            loader.feed(&buf[..n])?;
        }
        loader.end()
    }
}
