//! Key names: everything is translated once, at load time, to diffusers' names
//! prefixed by the component (`unet/…`, `vae/…`, `text_encoder/…`). Model code knows
//! only those.

/// Diffusers layout: the key of a component file. Historical spellings are accepted:
/// transformers' `text_model.` prefix of the text encoder, and the VAE attention of
/// diffusers before the attention-processor rename (`query` / `key` / `value` /
/// `proj_attn`, still in SD-2-base's VAE and many fine-tunes; diffusers renames them on
/// load in `ModelMixin._fix_state_dict_keys_on_load`).
pub fn diffusers(component: &str, key: &str) -> String {
    match component {
        "text_encoder" | "text_encoder_2" => format!("{component}/{}", key.strip_prefix("text_model.").unwrap_or(key)),
        "vae" => format!("{component}/{}", legacy_attention(key).unwrap_or_else(|| key.to_string())),
        _ => format!("{component}/{key}"),
    }
}

/// madebyollin's original TAESD files: `nn.Sequential` indices without a prefix
/// (`3.conv.0.weight`). The decoder's index 0 is its clamp (no weights), so its layer `k` is
/// diffusers' `decoder.layers.{k-1}`.
pub fn taesd_original(key: &str, decoder: bool) -> Option<String> {
    let (idx, rest) = key.split_once('.')?;
    let i: usize = idx.parse().ok()?;
    if decoder {
        Some(format!("taesd/decoder.layers.{}.{rest}", i.checked_sub(1)?))
    } else {
        Some(format!("taesd/encoder.layers.{i}.{rest}"))
    }
}

/// `….attentions.N.query.weight` → `….attentions.N.to_q.weight` (and key, value, proj_attn).
fn legacy_attention(key: &str) -> Option<String> {
    let at = key.find(".attentions.")?;
    let rest = &key[at + ".attentions.".len()..];
    let (n, rest) = rest.split_once('.')?;
    n.parse::<usize>().ok()?;
    let (part, param) = rest.split_once('.')?;
    let new = match part {
        "query" => "to_q",
        "key" => "to_k",
        "value" => "to_v",
        "proj_attn" => "to_out.0",
        _ => return None,
    };
    Some(format!("{}.attentions.{n}.{new}.{param}", &key[..at]))
}

/// Block structure of the UNet needed to translate original (CompVis) names.
#[derive(Clone, Debug)]
pub struct UnetLayout {
    pub layers_per_block: usize,
    /// Per down block: has attentions.
    pub down_attn: Vec<bool>,
    /// Per up block: has attentions.
    pub up_attn: Vec<bool>,
}

/// Block structure of the VAE (number of levels).
#[derive(Clone, Debug)]
pub struct VaeLayout {
    pub levels: usize,
}

/// Original single-file checkpoint: translate a key, or None if it belongs to no
/// component we load.
pub fn single_file(key: &str, unet: &UnetLayout, vae: &VaeLayout) -> Option<String> {
    if let Some(k) = key.strip_prefix("model.diffusion_model.") {
        return unet_key(k, unet).map(|k| format!("unet/{k}"));
    }
    if let Some(k) = key.strip_prefix("first_stage_model.") {
        return vae_key(k, vae).map(|k| format!("vae/{k}"));
    }
    if let Some(k) = key.strip_prefix("cond_stage_model.transformer.") {
        return Some(diffusers("text_encoder", k));
    }
    if let Some(k) = key.strip_prefix("cond_stage_model.model.") {
        return open_clip_key(k).map(|k| format!("text_encoder/{k}"));
    }
    // SDXL (Stability's sgm layout): CLIP ViT-L in transformers' names, OpenCLIP bigG with
    // its projection.
    if let Some(k) = key.strip_prefix("conditioner.embedders.0.transformer.") {
        return Some(diffusers("text_encoder", k));
    }
    if let Some(k) = key.strip_prefix("conditioner.embedders.1.model.") {
        if k == "text_projection" {
            return Some("text_encoder_2/text_projection.weight".into());
        }
        return open_clip_key(k).map(|k| format!("text_encoder_2/{k}"));
    }
    None
}

/// Single-file tensors stored transposed relative to their diffusers weight (2-D,
/// [in, out] where diffusers has [out, in]): OpenCLIP's `text_projection` (SDXL's
/// `conditioner.embedders.1.model.text_projection` [hidden, proj] is transformers'
/// `text_projection.weight` [proj, hidden] transposed; `x @ text_projection` in OpenCLIP).
pub fn single_file_transposed(key: &str) -> bool {
    key == "conditioner.embedders.1.model.text_projection"
}

/// Whether a single-file checkpoint's tensor names are SDXL's (Stability's sgm layout: two
/// text encoders under `conditioner.embedders.0.` / `.1.`).
pub fn is_sdxl_key(key: &str) -> bool {
    key.starts_with("conditioner.embedders.1.")
}

/// Transpose a row-major 2-D tensor of `rows` × `cols` elements of `elem` bytes each.
pub fn transpose_2d(bytes: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    if rows * cols * elem != bytes.len() {
        return bytes.to_vec();
    }
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let src = (r * cols + c) * elem;
            let dst = (c * rows + r) * elem;
            out[dst..dst + elem].copy_from_slice(&bytes[src..src + elem]);
        }
    }
    out
}

/// SD-2.x single files: the OpenCLIP ViT-H text encoder (`cond_stage_model.model.*`) in
/// transformers' CLIPTextModel names. The fused attention input `attn.in_proj_weight` /
/// `in_proj_bias` ([3D, D] / [3D]: q, k, v stacked) goes straight into this project's fused
/// `self_attn.to_qkv` weight (the same layout). The last resblock (diffusers uses the
/// penultimate layer's output: 23 of 24 layers), `text_projection` and `logit_scale` match no
/// weight and are skipped without a warning ([`harmless_extra`]).
pub fn open_clip_key(k: &str) -> Option<String> {
    match k {
        "token_embedding.weight" => return Some("embeddings.token_embedding.weight".into()),
        "positional_embedding" => return Some("embeddings.position_embedding.weight".into()),
        "ln_final.weight" => return Some("final_layer_norm.weight".into()),
        "ln_final.bias" => return Some("final_layer_norm.bias".into()),
        _ => {}
    }
    let rest = k.strip_prefix("transformer.resblocks.")?;
    let (i, part) = split_num(rest)?;
    let new = match part {
        "ln_1.weight" => "layer_norm1.weight",
        "ln_1.bias" => "layer_norm1.bias",
        "ln_2.weight" => "layer_norm2.weight",
        "ln_2.bias" => "layer_norm2.bias",
        "attn.in_proj_weight" => "self_attn.to_qkv.weight",
        "attn.in_proj_bias" => "self_attn.to_qkv.bias",
        "attn.out_proj.weight" => "self_attn.out_proj.weight",
        "attn.out_proj.bias" => "self_attn.out_proj.bias",
        "mlp.c_fc.weight" => "mlp.fc1.weight",
        "mlp.c_fc.bias" => "mlp.fc1.bias",
        "mlp.c_proj.weight" => "mlp.fc2.weight",
        "mlp.c_proj.bias" => "mlp.fc2.bias",
        _ => return None,
    };
    Some(format!("encoder.layers.{i}.{new}"))
}

fn resnet_part(p: &str) -> Option<String> {
    let map = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    map.iter().find_map(|(a, b)| p.strip_prefix(a).map(|rest| format!("{b}{rest}")))
}

fn split_num(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

fn unet_key(k: &str, l: &UnetLayout) -> Option<String> {
    let per = l.layers_per_block + 1;
    if let Some(r) = k.strip_prefix("time_embed.0.") {
        return Some(format!("time_embedding.linear_1.{r}"));
    }
    if let Some(r) = k.strip_prefix("time_embed.2.") {
        return Some(format!("time_embedding.linear_2.{r}"));
    }
    // SDXL's micro-conditioning embedding (text_time): label_emb.0 = add_embedding.
    if let Some(r) = k.strip_prefix("label_emb.0.0.") {
        return Some(format!("add_embedding.linear_1.{r}"));
    }
    if let Some(r) = k.strip_prefix("label_emb.0.2.") {
        return Some(format!("add_embedding.linear_2.{r}"));
    }
    if let Some(r) = k.strip_prefix("out.0.") {
        return Some(format!("conv_norm_out.{r}"));
    }
    if let Some(r) = k.strip_prefix("out.2.") {
        return Some(format!("conv_out.{r}"));
    }
    if let Some(r) = k.strip_prefix("input_blocks.") {
        let (n, r) = split_num(r)?;
        if n == 0 {
            return r.strip_prefix("0.").map(|r| format!("conv_in.{r}"));
        }
        let (i, j) = ((n - 1) / per, (n - 1) % per);
        if j == l.layers_per_block {
            // downsampler of block i
            let r = r.strip_prefix("0.op.")?;
            return Some(format!("down_blocks.{i}.downsamplers.0.conv.{r}"));
        }
        let (sub, r) = split_num(r)?;
        return match sub {
            0 => resnet_part(r).map(|p| format!("down_blocks.{i}.resnets.{j}.{p}")),
            1 => Some(format!("down_blocks.{i}.attentions.{j}.{r}")),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("middle_block.") {
        let (sub, r) = split_num(r)?;
        return match sub {
            0 => resnet_part(r).map(|p| format!("mid_block.resnets.0.{p}")),
            1 => Some(format!("mid_block.attentions.0.{r}")),
            2 => resnet_part(r).map(|p| format!("mid_block.resnets.1.{p}")),
            _ => None,
        };
    }
    if let Some(r) = k.strip_prefix("output_blocks.") {
        let (n, r) = split_num(r)?;
        let (i, j) = (n / per, n % per);
        let has_attn = *l.up_attn.get(i)?;
        let (sub, r) = split_num(r)?;
        return match sub {
            0 => resnet_part(r).map(|p| format!("up_blocks.{i}.resnets.{j}.{p}")),
            1 if has_attn => Some(format!("up_blocks.{i}.attentions.{j}.{r}")),
            1 | 2 => r.strip_prefix("conv.").map(|r| format!("up_blocks.{i}.upsamplers.0.conv.{r}")),
            _ => None,
        };
    }
    None
}

fn vae_resnet(r: &str) -> String {
    match r.strip_prefix("nin_shortcut.") {
        Some(rest) => format!("conv_shortcut.{rest}"),
        None => r.to_string(),
    }
}

fn vae_mid(r: &str) -> Option<String> {
    if let Some(x) = r.strip_prefix("block_1.") {
        return Some(format!("mid_block.resnets.0.{}", vae_resnet(x)));
    }
    if let Some(x) = r.strip_prefix("block_2.") {
        return Some(format!("mid_block.resnets.1.{}", vae_resnet(x)));
    }
    let x = r.strip_prefix("attn_1.")?;
    let (part, rest) = x.split_once('.')?;
    let name = match part {
        "norm" => "group_norm",
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "proj_out" => "to_out.0",
        _ => return None,
    };
    Some(format!("mid_block.attentions.0.{name}.{rest}"))
}

fn vae_key(k: &str, l: &VaeLayout) -> Option<String> {
    for side in ["encoder", "decoder"] {
        let Some(r) = k.strip_prefix(side).and_then(|r| r.strip_prefix('.')) else { continue };
        if let Some(x) = r.strip_prefix("norm_out.") {
            return Some(format!("{side}.conv_norm_out.{x}"));
        }
        if r.starts_with("conv_in.") || r.starts_with("conv_out.") {
            return Some(format!("{side}.{r}"));
        }
        if let Some(x) = r.strip_prefix("mid.") {
            return vae_mid(x).map(|m| format!("{side}.{m}"));
        }
        let (kind, x) = r.split_once('.')?;
        let (i, x) = split_num(x)?;
        let (blocks, i) = match kind {
            "down" if side == "encoder" => ("down_blocks", i),
            "up" if side == "decoder" => ("up_blocks", l.levels.checked_sub(1 + i)?),
            _ => return None,
        };
        if let Some(y) = x.strip_prefix("block.") {
            let (j, y) = split_num(y)?;
            return Some(format!("{side}.{blocks}.{i}.resnets.{j}.{}", vae_resnet(y)));
        }
        if let Some(y) = x.strip_prefix("downsample.conv.").or_else(|| x.strip_prefix("upsample.conv.")) {
            let s = if kind == "down" { "downsamplers" } else { "upsamplers" };
            return Some(format!("{side}.{blocks}.{i}.{s}.0.conv.{y}"));
        }
        return None;
    }
    match k.split_once('.') {
        Some(("quant_conv", r)) => Some(format!("quant_conv.{r}")),
        Some(("post_quant_conv", r)) => Some(format!("post_quant_conv.{r}")),
        _ => None,
    }
}

/// Extras real checkpoints carry that are skipped without a warning: position ids,
/// EMA copies, the LDM / sgm scheduler buffers, batch-norm counters, CLIP's logit scale.
pub fn harmless_extra(key: &str) -> bool {
    key.ends_with("position_ids")
        || key.starts_with("model_ema.")
        || key.contains(".ema.")
        || key.ends_with("num_batches_tracked")
        || key.contains("logit_scale")
        || !key.contains('.') // betas, alphas_cumprod, posterior_* ... (LDM scheduler buffers)
        || key.starts_with("denoiser.") // sgm (SDXL) checkpoints: the denoiser's sigma table
        || key.starts_with("lora_")
        // SD-2.x single files: OpenCLIP's last block (unused: the penultimate layer is the
        // output) and its projection
        || key.starts_with("cond_stage_model.model.transformer.resblocks.")
        || key == "cond_stage_model.model.text_projection"
}

/// GEGLU projections (`…ff.net.0.proj.weight` / `.bias`, [2·D, …]) are stored on the GPU with
/// the two halves interleaved (row 2j = h_j, row 2j + 1 = gate_j) so one matmul epilogue
/// applies GEGLU (see shaders/matmul.wgsl). The name stays diffusers'.
pub fn stored_interleaved(name: &str) -> bool {
    name.contains(".ff.net.0.proj.")
}

/// Interleave the two halves of the first dimension of a row-major tensor of `rows` rows.
pub fn interleave_halves(bytes: &[u8], rows: usize) -> Vec<u8> {
    if rows % 2 != 0 || rows == 0 || bytes.len() % rows != 0 {
        return bytes.to_vec();
    }
    let rb = bytes.len() / rows;
    let half = rows / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for j in 0..half {
        out.extend_from_slice(&bytes[j * rb..(j + 1) * rb]);
        out.extend_from_slice(&bytes[(half + j) * rb..(half + j + 1) * rb]);
    }
    out
}

fn resnet_part_original(p: &str) -> Option<String> {
    let map = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ];
    let p = format!("{p}.");
    map.iter().find_map(|(a, b)| p.strip_prefix(a).map(|rest| format!("{b}{rest}"))).map(|s| s.trim_end_matches('.').to_string())
}

/// The original (CompVis / LDM) name of a diffusers UNet module, the inverse of the
/// single-file translation: `down_blocks.0.resnets.1.conv1` → `input_blocks.2.0.in_layers.2`,
/// `mid_block.attentions.0.proj_in` → `middle_block.1.proj_in`. A1111-era LoRA files name
/// their modules this way (`lora_unet_input_blocks_2_0_in_layers_2`).
pub fn unet_original_module(m: &str, l: &UnetLayout) -> Option<String> {
    let per = l.layers_per_block + 1;
    match m {
        "time_embedding.linear_1" => return Some("time_embed.0".into()),
        "time_embedding.linear_2" => return Some("time_embed.2".into()),
        "add_embedding.linear_1" => return Some("label_emb.0.0".into()),
        "add_embedding.linear_2" => return Some("label_emb.0.2".into()),
        "conv_in" => return Some("input_blocks.0.0".into()),
        "conv_norm_out" => return Some("out.0".into()),
        "conv_out" => return Some("out.2".into()),
        _ => {}
    }
    if let Some(r) = m.strip_prefix("down_blocks.") {
        let (i, r) = split_num(r)?;
        if let Some(r) = r.strip_prefix("resnets.") {
            let (j, r) = split_num(r)?;
            return resnet_part_original(r).map(|p| format!("input_blocks.{}.0.{p}", 1 + i * per + j));
        }
        if let Some(r) = r.strip_prefix("attentions.") {
            let (j, r) = split_num(r)?;
            return Some(format!("input_blocks.{}.1.{r}", 1 + i * per + j));
        }
        return (r == "downsamplers.0.conv").then(|| format!("input_blocks.{}.0.op", 1 + i * per + l.layers_per_block));
    }
    if let Some(r) = m.strip_prefix("mid_block.") {
        if let Some(r) = r.strip_prefix("resnets.") {
            let (j, r) = split_num(r)?;
            return resnet_part_original(r).map(|p| format!("middle_block.{}.{p}", 2 * j));
        }
        return r.strip_prefix("attentions.0.").map(|r| format!("middle_block.1.{r}"));
    }
    if let Some(r) = m.strip_prefix("up_blocks.") {
        let (i, r) = split_num(r)?;
        if let Some(r) = r.strip_prefix("resnets.") {
            let (j, r) = split_num(r)?;
            return resnet_part_original(r).map(|p| format!("output_blocks.{}.0.{p}", i * per + j));
        }
        if let Some(r) = r.strip_prefix("attentions.") {
            let (j, r) = split_num(r)?;
            return Some(format!("output_blocks.{}.1.{r}", i * per + j));
        }
        let sub = if *l.up_attn.get(i)? { 2 } else { 1 };
        return (r == "upsamplers.0.conv").then(|| format!("output_blocks.{}.{sub}.conv", i * per + l.layers_per_block));
    }
    None
}
