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
        "text_encoder" => format!("{component}/{}", key.strip_prefix("text_model.").unwrap_or(key)),
        "vae" => format!("{component}/{}", legacy_attention(key).unwrap_or_else(|| key.to_string())),
        _ => format!("{component}/{key}"),
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
    None
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
/// EMA copies, the LDM scheduler buffers, batch-norm counters, CLIP's logit scale.
pub fn harmless_extra(key: &str) -> bool {
    key.ends_with("position_ids")
        || key.starts_with("model_ema.")
        || key.contains(".ema.")
        || key.ends_with("num_batches_tracked")
        || key.contains("logit_scale")
        || !key.contains('.') // betas, alphas_cumprod, posterior_* ... (LDM scheduler buffers)
        || key.starts_with("lora_")
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
