//! UNet2DConditionModel (SD 1.x / 2.x / XL): sizes from config.json, names as diffusers.
use std::cell::OnceCell;

use super::blocks::{Resnet, Transformer2D};
use super::config::UnetConfig;
use super::nn::{Conv, Ctx, GroupNorm, Linear, Vb};
use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};
use crate::ops::{self, Act, ConvFuse};

struct Down {
    resnets: Vec<Resnet>,
    attns: Vec<Transformer2D>,
    down: Option<Conv>,
}

struct Up {
    resnets: Vec<Resnet>,
    attns: Vec<Transformer2D>,
    up: Option<Conv>,
}

/// SDXL's `added_cond_kwargs`: the pooled text embedding and the micro-conditioning.
pub struct AddedCond {
    /// [B, P] pooled text embedding (text_encoder_2's projected EOS state).
    pub text_embeds: Tensor,
    /// [B, 6] f32: original (h, w), crop (top, left), target (h, w); or [B, 5] under the
    /// refiner's aesthetic-score rule: original (h, w), crop (top, left), aesthetic score
    /// (`text_embeds` then fills the rest of add_embedding's input).
    pub time_ids: Tensor,
}

/// `addition_embed_type: text_time`: `add_time_proj` (sinusoidal, per time id) and
/// `add_embedding` (linear_1, SiLU, linear_2).
struct TextTime {
    dim: usize,
    lin1: Linear,
    lin2: Linear,
    freqs: OnceCell<Tensor>,
}

pub struct Unet {
    pub cfg: UnetConfig,
    conv_in: Conv,
    lin1: Linear,
    lin2: Linear,
    cond_proj: Option<Linear>,
    text_time: Option<TextTime>,
    downs: Vec<Down>,
    mid_res: [Resnet; 2],
    mid_attn: Transformer2D,
    ups: Vec<Up>,
    norm_out: GroupNorm,
    conv_out: Conv,
    freqs: OnceCell<Tensor>,
}

impl Unet {
    pub fn new(vb: &Vb, cfg: &UnetConfig) -> Unet {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = 4 * ch[0];
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let ctx = cfg.cross_attention_dim;
        let lp = cfg.use_linear_projection;
        let mut downs = Vec::new();
        let mut out_c = ch[0];
        for i in 0..n {
            let in_c = out_c;
            out_c = ch[i];
            let b = vb.pp("down_blocks").pp(i);
            let cross = cfg.down_block_types[i].contains("CrossAttn");
            let resnets = (0..cfg.layers_per_block)
                .map(|j| Resnet::new(&b.pp("resnets").pp(j), if j == 0 { in_c } else { out_c }, out_c, Some(temb), g, eps))
                .collect();
            let attns = if cross {
                (0..cfg.layers_per_block).map(|j| Transformer2D::new(&b.pp("attentions").pp(j), out_c, cfg.heads(i), ctx, g, cfg.transformer_layers_down(i), lp)).collect()
            } else {
                Vec::new()
            };
            let down = (i + 1 < n).then(|| Conv::new(&b.pp("downsamplers.0.conv"), out_c, out_c, 3, 2, cfg.downsample_padding));
            downs.push(Down { resnets, attns, down });
        }
        let m = vb.pp("mid_block");
        let last = ch[n - 1];
        let mid_res = [
            Resnet::new(&m.pp("resnets.0"), last, last, Some(temb), g, eps),
            Resnet::new(&m.pp("resnets.1"), last, last, Some(temb), g, eps),
        ];
        let mid_attn = Transformer2D::new(&m.pp("attentions.0"), last, cfg.heads(n - 1), ctx, g, cfg.transformer_layers_mid(), lp);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut ups = Vec::new();
        let mut out_c = rev[0];
        for i in 0..n {
            let prev = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let b = vb.pp("up_blocks").pp(i);
            let cross = cfg.up_block_types[i].contains("CrossAttn");
            let layers = cfg.layers_per_block + 1;
            let resnets = (0..layers)
                .map(|j| {
                    let skip = if j == layers - 1 { in_c } else { out_c };
                    let rin = if j == 0 { prev } else { out_c };
                    Resnet::new(&b.pp("resnets").pp(j), rin + skip, out_c, Some(temb), g, eps)
                })
                .collect();
            let attns = if cross {
                (0..layers).map(|j| Transformer2D::new(&b.pp("attentions").pp(j), out_c, cfg.heads(n - 1 - i), ctx, g, cfg.transformer_layers_up(i), lp)).collect()
            } else {
                Vec::new()
            };
            let up = (i + 1 < n).then(|| Conv::new(&b.pp("upsamplers.0.conv"), out_c, out_c, 3, 1, 1));
            ups.push(Up { resnets, attns, up });
        }
        Unet {
            cfg: cfg.clone(),
            conv_in: Conv::new(&vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1),
            lin1: Linear::new(&vb.pp("time_embedding.linear_1"), ch[0], temb, true),
            lin2: Linear::new(&vb.pp("time_embedding.linear_2"), temb, temb, true),
            cond_proj: cfg.time_cond_proj_dim.map(|d| Linear::new(&vb.pp("time_embedding.cond_proj"), d, ch[0], false)),
            text_time: match (cfg.is_xl(), cfg.addition_time_embed_dim, cfg.projection_class_embeddings_input_dim) {
                (true, Some(dim), Some(inp)) => Some(TextTime {
                    dim,
                    lin1: Linear::new(&vb.pp("add_embedding.linear_1"), inp, temb, true),
                    lin2: Linear::new(&vb.pp("add_embedding.linear_2"), temb, temb, true),
                    freqs: OnceCell::new(),
                }),
                _ => None,
            },
            downs,
            mid_res,
            mid_attn,
            ups,
            norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), g, ch[0], eps),
            conv_out: Conv::new(&vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1),
            freqs: OnceCell::new(),
        }
    }

    /// Noise prediction. x [B, in, h, w] (h, w multiples of 2^downsamplings),
    /// t [B] f32 timesteps, ctx [B, S, cross_attention_dim].
    pub fn forward(&self, c: &Ctx, x: &Tensor, t: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_cond(c, x, t, ctx, None)
    }

    /// [`Unet::forward`] with diffusers' `timestep_cond` [B, time_cond_proj_dim] (LCM's
    /// guidance embedding), required when the config has `time_cond_proj_dim`.
    pub fn forward_cond(&self, c: &Ctx, x: &Tensor, t: &Tensor, ctx: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        self.forward_full(c, x, t, ctx, cond, None)
    }

    /// SDXL's `add_time_proj` of the time ids: [B, 6] f32 -> [B, 6 · addition_time_embed_dim]
    /// (each id's sinusoidal embedding, cos half first with `flip_sin_to_cos`), in `dtype`.
    pub fn time_ids_embedding(&self, c: &Ctx, time_ids: &Tensor, dtype: DType) -> Result<Tensor> {
        let tt = self.text_time.as_ref().ok_or_else(|| Error::Invalid("this UNet has no text_time conditioning (not SDXL)".into()))?;
        let b = time_ids.shape().first().copied().unwrap_or(0);
        let n = time_ids.shape().get(1).copied().unwrap_or(0);
        if time_ids.dtype() != DType::F32 || time_ids.rank() != 2 || !(1..=6).contains(&n) {
            return Err(Error::Shape { op: "unet", detail: format!("time_ids {time_ids:?} must be f32 [B, 6] (SDXL base) or [B, 5] (aesthetic-score rule)") });
        }
        let freqs = match tt.freqs.get() {
            Some(f) => f.clone(),
            None => {
                let f = c.gpu.upload(&[tt.dim / 2], DType::F32, &ops::timestep_freqs(tt.dim, self.cfg.freq_shift))?;
                tt.freqs.get_or_init(|| f).clone()
            }
        };
        let e = ops::timestep_embedding(c.gpu, &time_ids.reshape(&[b * n])?, &freqs, tt.dim, self.cfg.flip_sin_to_cos, dtype)?;
        e.reshape(&[b, n * tt.dim])
    }

    /// The time embedding every resnet sees, before its SiLU: `time_embedding(t)` (+ LCM's
    /// `cond_proj(timestep_cond)` inside it) + SDXL's `add_embedding(cat(text_embeds,
    /// time_ids_embedding))`. [B, 4 · block_out_channels[0]] in `dtype`.
    pub fn time_embedding(&self, c: &Ctx, t: &Tensor, dtype: DType, cond: Option<&Tensor>, added: Option<&AddedCond>) -> Result<Tensor> {
        let temb = self.time_embedding_hidden(c, t, dtype, cond)?;
        let aug = self.added_embedding(c, t.shape()[0], dtype, added)?;
        self.lin2.fwd(c, &temb, Act::None, aug.as_ref())
    }

    /// silu(linear_1(sinusoidal(t) [+ cond_proj(cond)])): linear_2's input.
    fn time_embedding_hidden(&self, c: &Ctx, t: &Tensor, dtype: DType, cond: Option<&Tensor>) -> Result<Tensor> {
        let b = t.shape()[0];
        let c0 = self.cfg.block_out_channels[0];
        let freqs = match self.freqs.get() {
            Some(f) => f.clone(),
            None => {
                let f = c.gpu.upload(&[c0 / 2], DType::F32, &ops::timestep_freqs(c0, self.cfg.freq_shift))?;
                self.freqs.get_or_init(|| f).clone()
            }
        };
        let te = ops::timestep_embedding(c.gpu, t, &freqs, c0, self.cfg.flip_sin_to_cos, dtype)?;
        let te = match (&self.cond_proj, cond) {
            (Some(p), Some(w)) => {
                let d = self.cfg.time_cond_proj_dim.unwrap_or(0);
                if w.shape() != [b, d] {
                    return Err(Error::Shape { op: "unet", detail: format!("timestep_cond {:?} must be [{b}, {d}]", w.shape()) });
                }
                let w = if w.dtype() != dtype { ops::cast(c.gpu, w, dtype)? } else { w.clone() };
                p.fwd(c, &w, Act::None, Some(&te))?
            }
            (Some(_), None) => return Err(Error::Invalid("this UNet has time_cond_proj_dim (an LCM-distilled model): it needs the guidance embedding".into())),
            (None, _) => te,
        };
        self.lin1.fwd(c, &te, Act::Silu, None)
    }

    /// SDXL's `add_embedding(cat(text_embeds, time_ids_embedding))` [B, T]; None without
    /// text_time conditioning.
    fn added_embedding(&self, c: &Ctx, b: usize, dtype: DType, added: Option<&AddedCond>) -> Result<Option<Tensor>> {
        let (tt, a) = match (&self.text_time, added) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(Error::Invalid("this UNet has no text_time conditioning (not SDXL): it takes no pooled text embeddings or time ids".into())),
            (Some(_), None) => {
                return Err(Error::Invalid("this is an SDXL UNet (addition_embed_type text_time): it needs the pooled text embeddings and the time ids (AddedCond)".into()))
            }
            (Some(tt), Some(a)) => (tt, a),
        };
        // 6 time ids (SDXL base) or 5 (the refiner's aesthetic-score rule): the pooled text
        // embedding fills the rest of add_embedding's input.
        let n = a.time_ids.shape().get(1).copied().unwrap_or(0);
        let p = self.cfg.pooled_text_dim_for(n).unwrap_or(0);
        if p == 0 || a.text_embeds.shape() != [b, p] || a.time_ids.shape() != [b, n] {
            let input = self.cfg.projection_class_embeddings_input_dim.unwrap_or(0);
            return Err(Error::Shape {
                op: "unet",
                detail: format!("text_embeds {:?} / time_ids {:?} must be [{b}, P] / [{b}, n] with P + n·{} = projection_class_embeddings_input_dim {input}", a.text_embeds.shape(), a.time_ids.shape(), tt.dim),
            });
        }
        let time = self.time_ids_embedding(c, &a.time_ids, dtype)?;
        let text = if a.text_embeds.dtype() != dtype { ops::cast(c.gpu, &a.text_embeds, dtype)? } else { a.text_embeds.clone() };
        // Text first, then the time ids: [B, P + n·dim] through the channel concatenation.
        let cat = ops::concat_channels(c.gpu, &text.reshape(&[b, p, 1])?, &time.reshape(&[b, n * tt.dim, 1])?)?.reshape(&[b, p + n * tt.dim])?;
        let h = tt.lin1.fwd(c, &cat, Act::Silu, None)?;
        Ok(Some(tt.lin2.fwd(c, &h, Act::None, None)?))
    }

    /// The full UNet: [`Unet::forward_cond`] plus SDXL's `added_cond_kwargs` (required by an
    /// XL UNet, refused by the others).
    pub fn forward_full(&self, c: &Ctx, x: &Tensor, t: &Tensor, ctx: &Tensor, cond: Option<&Tensor>, added: Option<&AddedCond>) -> Result<Tensor> {
        let m = 1usize << self.cfg.downsamplings();
        if x.rank() != 4 || x.shape()[1] != self.cfg.in_channels || x.shape()[2] % m != 0 || x.shape()[3] % m != 0 {
            return Err(Error::Shape { op: "unet", detail: format!("latents {:?} must be [B, {}, h, w] with h, w multiples of {m}", x.shape(), self.cfg.in_channels) });
        }
        if t.shape() != [x.shape()[0]] || ctx.rank() != 3 || ctx.shape()[0] != x.shape()[0] || ctx.shape()[2] != self.cfg.cross_attention_dim {
            return Err(Error::Shape { op: "unet", detail: format!("timesteps {:?} / text states {:?} do not fit latents {:?}", t.shape(), ctx.shape(), x.shape()) });
        }
        let temb = self.time_embedding_hidden(c, t, x.dtype(), cond)?;
        let temb_silu = match self.added_embedding(c, x.shape()[0], x.dtype(), added)? {
            // Resnets take silu(temb): fold the SiLU into linear_2's epilogue.
            None => self.lin2.fwd(c, &temb, Act::Silu, None)?,
            // SDXL: silu(linear_2(temb) + add_embedding(...)) (the sum comes before the SiLU).
            Some(aug) => ops::silu(c.gpu, &self.lin2.fwd(c, &temb, Act::None, Some(&aug))?)?,
        };
        let mut h = self.conv_in.fwd(c, x, Act::None, None)?;
        let mut skips = Vec::with_capacity(1 + self.downs.iter().map(|d| d.resnets.len() + d.down.is_some() as usize).sum::<usize>());
        skips.push(h.clone());
        for d in &self.downs {
            for (j, r) in d.resnets.iter().enumerate() {
                h = r.fwd(c, &h, Some(&temb_silu))?;
                if let Some(a) = d.attns.get(j) {
                    h = a.fwd(c, &h, ctx)?;
                }
                skips.push(h.clone());
            }
            if let Some(conv) = &d.down {
                h = conv.fwd(c, &h, Act::None, None)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_res[0].fwd(c, &h, Some(&temb_silu))?;
        h = self.mid_attn.fwd(c, &h, ctx)?;
        h = self.mid_res[1].fwd(c, &h, Some(&temb_silu))?;
        for u in &self.ups {
            for (j, r) in u.resnets.iter().enumerate() {
                let s = skips.pop().ok_or_else(|| Error::Shape { op: "unet", detail: "skip stack empty".into() })?;
                h = ops::concat_channels(c.gpu, &h, &s)?;
                h = r.fwd(c, &h, Some(&temb_silu))?;
                if let Some(a) = u.attns.get(j) {
                    h = a.fwd(c, &h, ctx)?;
                }
            }
            if let Some(conv) = &u.up {
                h = conv.fwd_fused(c, &h, ConvFuse { upsample: true, ..Default::default() })?;
            }
        }
        let a = self.norm_out.affine(c, &h)?;
        self.conv_out.fwd_fused(c, &h, ConvFuse { input_affine: Some(&a), input_silu: true, ..Default::default() })
    }
}
