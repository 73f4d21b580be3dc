//! CLIPTextModel (SD 1.x text encoder): token + position embedding, pre-norm layers with
//! causal self-attention and a QuickGELU MLP, final layer norm. With a text projection it is
//! CLIPTextModelWithProjection (SDXL's `text_encoder_2`).
use super::config::ClipConfig;
use super::nn::{Attention, Ctx, LayerNorm, Linear, Vb};
use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};
use crate::ops::{self, Act, LinearFuse};
use crate::weights::WeightId;

struct Layer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct ClipTextModel {
    pub cfg: ClipConfig,
    tok: WeightId,
    pos: WeightId,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    /// `text_projection` (no bias) of CLIPTextModelWithProjection.
    proj: Option<Linear>,
}

/// What SDXL takes from a text encoder ([`ClipTextModel::encode_xl`]).
pub struct XlTextOut {
    /// [B, S, hidden]: transformers' `hidden_states[-2]`, the output of the second-to-last
    /// layer (the input of the last), without the final layer norm.
    pub penultimate: Tensor,
    /// [B, projection_dim]: `text_projection(final_layer_norm(last)[b, eos[b]])`, when the
    /// model has a text projection (CLIPTextModelWithProjection's `text_embeds`).
    pub pooled: Option<Tensor>,
}

/// SDXL's prompt embeddings: [B, S, D1] ++ [B, S, D2] on the feature axis -> [B, S, D1 + D2]
/// (text_encoder's then text_encoder_2's penultimate states).
pub fn concat_features(gpu: &crate::gpu::Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() != 3 || b.rank() != 3 || a.shape()[..2] != b.shape()[..2] {
        return Err(Error::Shape { op: "concat_features", detail: format!("{:?} ++ {:?} must be [B, S, *] alike", a.shape(), b.shape()) });
    }
    let (bs, s, d1, d2) = (a.shape()[0], a.shape()[1], a.shape()[2], b.shape()[2]);
    ops::concat_channels(gpu, &a.reshape(&[bs * s, d1, 1])?, &b.reshape(&[bs * s, d2, 1])?)?.reshape(&[bs, s, d1 + d2])
}

impl ClipTextModel {
    pub fn new(vb: &Vb, cfg: &ClipConfig) -> ClipTextModel {
        let d = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let tok = e.pp("token_embedding").param("weight", &[cfg.vocab_size, d]);
        let pos = e.pp("position_embedding").param("weight", &[cfg.max_position_embeddings, d]);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp("encoder.layers").pp(i);
                Layer {
                    ln1: LayerNorm::new(&l.pp("layer_norm1"), d, cfg.layer_norm_eps),
                    attn: Attention::new(&l.pp("self_attn"), ["q_proj", "k_proj", "v_proj", "out_proj"], d, None, cfg.num_attention_heads, true),
                    ln2: LayerNorm::new(&l.pp("layer_norm2"), d, cfg.layer_norm_eps),
                    fc1: Linear::new(&l.pp("mlp.fc1"), d, cfg.intermediate_size, true),
                    fc2: Linear::new(&l.pp("mlp.fc2"), cfg.intermediate_size, d, true),
                }
            })
            .collect();
        let final_ln = LayerNorm::new(&vb.pp("final_layer_norm"), d, cfg.layer_norm_eps);
        ClipTextModel { cfg: cfg.clone(), tok, pos, layers, final_ln, proj: None }
    }

    /// CLIPTextModelWithProjection: with `text_projection.weight` [projection_dim, hidden]
    /// (no bias; transformers' default projection_dim 512 when the config has none).
    pub fn with_projection(vb: &Vb, cfg: &ClipConfig) -> ClipTextModel {
        let mut m = Self::new(vb, cfg);
        m.proj = Some(Linear::new(&vb.pp("text_projection"), cfg.hidden_size, cfg.projection_dim.unwrap_or(512), false));
        m
    }

    /// Width of the pooled output ([`XlTextOut::pooled`]), when the model has a projection.
    pub fn projection_dim(&self) -> Option<usize> {
        self.proj.as_ref().map(|_| self.cfg.projection_dim.unwrap_or(512))
    }

    fn check_ids(&self, ids: &Tensor) -> Result<()> {
        if ids.dtype() != DType::U32 || ids.rank() != 2 || ids.shape()[1] > self.cfg.max_position_embeddings {
            return Err(Error::Shape { op: "clip", detail: format!("token ids {ids:?} must be u32 [B, <= {}]", self.cfg.max_position_embeddings) });
        }
        Ok(())
    }

    fn act(&self) -> Act {
        if self.cfg.hidden_act == "gelu" {
            Act::Gelu
        } else {
            Act::QuickGelu
        }
    }

    fn layer(&self, c: &Ctx, l: &Layer, x: Tensor) -> Result<Tensor> {
        let s1 = l.ln1.stats(c, &x)?;
        let x = l.attn.fwd(c, &x, Some(l.ln1.input(c, &s1)?), None, true, Some(&x))?;
        let s2 = l.ln2.stats(c, &x)?;
        let h = l.fc1.fwd_fused(c, &x, LinearFuse { layer_norm: Some(l.ln2.input(c, &s2)?), act: self.act(), ..Default::default() })?;
        l.fc2.fwd(c, &h, Act::None, Some(&x))
    }

    /// SDXL's use of a text encoder: ids [B, S] u32 -> the penultimate hidden states and (with
    /// a text projection) the pooled, projected embedding at token `eos[b]` of row `b` (the
    /// caller's argmax of the row's host ids, first maximum: the EOS).
    pub fn encode_xl(&self, c: &Ctx, ids: &Tensor, eos: &[usize]) -> Result<XlTextOut> {
        self.check_ids(ids)?;
        let (b, s) = (ids.shape()[0], ids.shape()[1]);
        let n = self.layers.len();
        if n < 2 {
            return Err(Error::Invalid(format!("SDXL takes a text encoder's second-to-last hidden states: this one has {n} layer(s)")));
        }
        if self.proj.is_some() && (eos.len() != b || eos.iter().any(|&e| e >= s)) {
            return Err(Error::Shape { op: "clip", detail: format!("EOS positions {eos:?} do not fit token ids [{b}, {s}]") });
        }
        let mut x = ops::token_position_embedding(c.gpu, ids, c.w.at(self.tok)?, c.w.at(self.pos)?)?;
        for l in &self.layers[..n - 1] {
            x = self.layer(c, l, x)?;
        }
        let penultimate = x.clone();
        let pooled = match &self.proj {
            None => None,
            Some(proj) => {
                let last = self.layer(c, &self.layers[n - 1], x)?;
                // The EOS rows through a one-hot batched product ([B, 1, S] · [B, S, D]: exact,
                // every other term is 0 · x), then the final layer norm and the projection.
                let mut onehot = vec![0f32; b * s];
                for (row, &e) in eos.iter().enumerate() {
                    onehot[row * s + e] = 1.0;
                }
                let sel = c.gpu.upload(&[b, 1, s], last.dtype(), &onehot)?;
                let rows = ops::matmul(c.gpu, &sel, &last)?.reshape(&[b, self.cfg.hidden_size])?;
                let rows = self.final_ln.fwd(c, &rows)?;
                Some(proj.fwd(c, &rows, Act::None, None)?)
            }
        };
        Ok(XlTextOut { penultimate, pooled })
    }

    /// ids [B, S] (u32, S <= max positions) -> last_hidden_state [B, S, hidden].
    pub fn forward(&self, c: &Ctx, ids: &Tensor) -> Result<Tensor> {
        self.check_ids(ids)?;
        let mut x = ops::token_position_embedding(c.gpu, ids, c.w.at(self.tok)?, c.w.at(self.pos)?)?;
        for l in &self.layers {
            x = self.layer(c, l, x)?;
        }
        self.final_ln.fwd(c, &x)
    }
}
