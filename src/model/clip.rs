//! CLIPTextModel (SD 1.x text encoder): token + position embedding, pre-norm layers with
//! causal self-attention and a QuickGELU MLP, final layer norm.
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
        ClipTextModel { cfg: cfg.clone(), tok, pos, layers, final_ln }
    }

    /// ids [B, S] (u32, S <= max positions) -> last_hidden_state [B, S, hidden].
    pub fn forward(&self, c: &Ctx, ids: &Tensor) -> Result<Tensor> {
        if ids.dtype() != DType::U32 || ids.rank() != 2 || ids.shape()[1] > self.cfg.max_position_embeddings {
            return Err(Error::Shape { op: "clip", detail: format!("token ids {ids:?} must be u32 [B, <= {}]", self.cfg.max_position_embeddings) });
        }
        let act = if self.cfg.hidden_act == "gelu" { Act::Gelu } else { Act::QuickGelu };
        let mut x = ops::token_position_embedding(c.gpu, ids, c.w.at(self.tok)?, c.w.at(self.pos)?)?;
        for l in &self.layers {
            let s1 = l.ln1.stats(c, &x)?;
            x = l.attn.fwd(c, &x, Some(l.ln1.input(c, &s1)?), None, true, Some(&x))?;
            let s2 = l.ln2.stats(c, &x)?;
            let h = l.fc1.fwd_fused(c, &x, LinearFuse { layer_norm: Some(l.ln2.input(c, &s2)?), act, ..Default::default() })?;
            x = l.fc2.fwd(c, &h, Act::None, Some(&x))?;
        }
        self.final_ln.fwd(c, &x)
    }
}
