//! AutoencoderKL: encoder -> (mean, logvar), decoder; scaling factor from config.
use super::blocks::{Resnet, SpatialAttention};
use super::config::VaeConfig;
use super::nn::{Conv, Ctx, GroupNorm, Vb};
use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::ops::{self, Act, ConvFuse};

const EPS: f32 = 1e-6;

struct Mid {
    res: [Resnet; 2],
    attn: Option<SpatialAttention>,
}

impl Mid {
    fn new(vb: &Vb, c: usize, g: usize, attn: bool) -> Mid {
        Mid {
            res: [Resnet::new(&vb.pp("resnets.0"), c, c, None, g, EPS), Resnet::new(&vb.pp("resnets.1"), c, c, None, g, EPS)],
            attn: attn.then(|| SpatialAttention::new(&vb.pp("attentions.0"), c, g)),
        }
    }
    fn fwd(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let mut h = self.res[0].fwd(c, x, None)?;
        if let Some(a) = &self.attn {
            h = a.fwd(c, &h)?;
        }
        self.res[1].fwd(c, &h, None)
    }
}

struct Level {
    resnets: Vec<Resnet>,
    sample: Option<Conv>,
}

pub struct Vae {
    pub cfg: VaeConfig,
    enc_in: Conv,
    enc_levels: Vec<Level>,
    enc_mid: Mid,
    enc_norm: GroupNorm,
    enc_out: Conv,
    quant: Option<Conv>,
    post_quant: Option<Conv>,
    dec_in: Conv,
    dec_mid: Mid,
    dec_levels: Vec<Level>,
    dec_norm: GroupNorm,
    dec_out: Conv,
}

impl Vae {
    pub fn new(vb: &Vb, cfg: &VaeConfig) -> Vae {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let g = cfg.norm_num_groups;
        let l = cfg.latent_channels;
        let e = vb.pp("encoder");
        let mut enc_levels = Vec::new();
        let mut out_c = ch[0];
        for i in 0..n {
            let in_c = out_c;
            out_c = ch[i];
            let b = e.pp("down_blocks").pp(i);
            enc_levels.push(Level {
                resnets: (0..cfg.layers_per_block).map(|j| Resnet::new(&b.pp("resnets").pp(j), if j == 0 { in_c } else { out_c }, out_c, None, g, EPS)).collect(),
                // Downsample2D(padding=0): pad right/bottom by one, then a stride-2 conv.
                sample: (i + 1 < n).then(|| Conv::with_pad(&b.pp("downsamplers.0.conv"), out_c, out_c, 3, 2, [0, 0, 1, 1])),
            });
        }
        let last = ch[n - 1];
        let d = vb.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut dec_levels = Vec::new();
        let mut out_c = rev[0];
        for i in 0..n {
            let prev = out_c;
            out_c = rev[i];
            let b = d.pp("up_blocks").pp(i);
            dec_levels.push(Level {
                resnets: (0..cfg.layers_per_block + 1).map(|j| Resnet::new(&b.pp("resnets").pp(j), if j == 0 { prev } else { out_c }, out_c, None, g, EPS)).collect(),
                sample: (i + 1 < n).then(|| Conv::new(&b.pp("upsamplers.0.conv"), out_c, out_c, 3, 1, 1)),
            });
        }
        Vae {
            cfg: cfg.clone(),
            enc_in: Conv::new(&e.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1),
            enc_levels,
            enc_mid: Mid::new(&e.pp("mid_block"), last, g, cfg.mid_block_add_attention),
            enc_norm: GroupNorm::new(&e.pp("conv_norm_out"), g, last, EPS),
            enc_out: Conv::new(&e.pp("conv_out"), last, 2 * l, 3, 1, 1),
            quant: cfg.use_quant_conv.then(|| Conv::new(&vb.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)),
            post_quant: cfg.use_post_quant_conv.then(|| Conv::new(&vb.pp("post_quant_conv"), l, l, 1, 1, 0)),
            dec_in: Conv::new(&d.pp("conv_in"), l, last, 3, 1, 1),
            dec_mid: Mid::new(&d.pp("mid_block"), last, g, cfg.mid_block_add_attention),
            dec_levels,
            dec_norm: GroupNorm::new(&d.pp("conv_norm_out"), g, ch[0], EPS),
            dec_out: Conv::new(&d.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1),
        }
    }

    fn factor(&self) -> usize {
        1 << (self.cfg.block_out_channels.len() - 1)
    }

    /// image [B, 3, H, W] in [-1, 1] -> (mean, logvar) [B, latent, H/8, W/8]; logvar
    /// clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution.
    pub fn encode(&self, c: &Ctx, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.factor();
        if x.rank() != 4 || x.shape()[1] != self.cfg.in_channels || x.shape()[2] % f != 0 || x.shape()[3] % f != 0 {
            return Err(Error::Shape { op: "vae encode", detail: format!("image {:?} must be [B, {}, H, W] with H, W multiples of {f}", x.shape(), self.cfg.in_channels) });
        }
        let mut h = self.enc_in.fwd(c, x, Act::None, None)?;
        for lv in &self.enc_levels {
            for r in &lv.resnets {
                h = r.fwd(c, &h, None)?;
            }
            if let Some(s) = &lv.sample {
                h = s.fwd(c, &h, Act::None, None)?;
            }
        }
        h = self.enc_mid.fwd(c, &h)?;
        let a = self.enc_norm.affine(c, &h)?;
        let mut m = self.enc_out.fwd_fused(c, &h, ConvFuse { input_affine: Some(&a), input_silu: true, ..Default::default() })?;
        if let Some(q) = &self.quant {
            m = q.fwd(c, &m, Act::None, None)?;
        }
        let l = self.cfg.latent_channels;
        let mean = ops::slice_channels(c.gpu, &m, 0, l)?;
        let logvar = ops::slice_channels(c.gpu, &m, l, l)?;
        let logvar = ops::clamp(c.gpu, &logvar, -30.0, 20.0)?;
        Ok((mean, logvar))
    }

    /// Bytes of the largest activation of an untiled encode of an image [b, 3, h, w].
    pub fn encode_largest_buffer(&self, b: usize, h: usize, w: usize, dtype: crate::gpu::DType) -> u64 {
        let ch = &self.cfg.block_out_channels;
        let mut r = h * w;
        let mut largest = self.cfg.in_channels.max(ch[0]) * r;
        for (i, c) in ch.iter().enumerate() {
            largest = largest.max(c * r);
            if i + 1 < ch.len() {
                r /= 4;
                largest = largest.max(c * r);
            }
        }
        dtype.buffer_bytes(b * largest)
    }

    /// Encode, tiled when an untiled encode would need a buffer larger than `max_buffer`:
    /// image tiles whose latents overlap by a quarter, the latent distributions (mean and
    /// log-variance) blended with linear ramps, as diffusers' `tiled_encode` blends them.
    pub fn encode_auto(&self, c: &Ctx, x: &Tensor, max_buffer: u64) -> Result<(Tensor, Tensor)> {
        let f = self.factor();
        let (b, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
        if x.rank() != 4 || self.encode_largest_buffer(b, h, w, x.dtype()) <= max_buffer {
            return self.encode(c, x);
        }
        let (lh, lw) = (h / f, w / f);
        let mut tile = lh.max(lw);
        while tile > 8 && self.encode_largest_buffer(b, f * tile.min(lh), f * tile.min(lw), x.dtype()) > max_buffer {
            tile = (tile / 2).div_ceil(8) * 8;
        }
        self.encode_tiled(c, x, tile, tile / 4)
    }

    /// Encode image tiles of `tile`×`tile` latents (8·tile pixels) overlapping by ≥
    /// `overlap` latents; mean and log-variance blended with linear ramps (weights sum to 1).
    /// Returns f32 (mean, logvar) [B, latent, H/8, W/8].
    pub fn encode_tiled(&self, c: &Ctx, x: &Tensor, tile: usize, overlap: usize) -> Result<(Tensor, Tensor)> {
        let f = self.factor();
        if x.rank() != 4 || tile == 0 || overlap >= tile || x.shape()[2] % f != 0 || x.shape()[3] % f != 0 {
            return Err(Error::Shape { op: "vae encode", detail: format!("image {:?}, tile {tile}, overlap {overlap}", x.shape()) });
        }
        let (b, lh, lw) = (x.shape()[0], x.shape()[2] / f, x.shape()[3] / f);
        let l = self.cfg.latent_channels;
        let ys = ops::tile_origins(lh, tile, overlap);
        let xs = ops::tile_origins(lw, tile, overlap);
        let (th, tw) = (tile.min(lh), tile.min(lw));
        let f32 = crate::gpu::DType::F32;
        let mean = ops::fill(c.gpu, x, &[b, l, lh, lw], f32, 0.0)?;
        let logvar = ops::fill(c.gpu, x, &[b, l, lh, lw], f32, 0.0)?;
        for (iy, &oy) in ys.iter().enumerate() {
            for (ix, &ox) in xs.iter().enumerate() {
                let xt = ops::crop2d(c.gpu, x, oy * f, ox * f, th * f, tw * f)?;
                let (m, lv) = self.encode(c, &xt)?;
                drop(xt);
                let (t0, t1) = ops::tile_ramps(&ys, iy, th);
                let (l0, l1) = ops::tile_ramps(&xs, ix, tw);
                ops::blend_tile(c.gpu, &mean, &m, oy, ox, [t0, t1, l0, l1])?;
                ops::blend_tile(c.gpu, &logvar, &lv, oy, ox, [t0, t1, l0, l1])?;
            }
        }
        Ok((mean, logvar))
    }

    /// Bytes of the largest activation of an untiled decode of [b, latent, h, w].
    pub fn decode_largest_buffer(&self, b: usize, h: usize, w: usize, dtype: crate::gpu::DType) -> u64 {
        let ch = &self.cfg.block_out_channels;
        let mut r = h * w;
        let mut largest = ch[ch.len() - 1] * r;
        for (i, c) in ch.iter().rev().enumerate() {
            largest = largest.max(c * r);
            if i + 1 < ch.len() {
                r *= 4;
                largest = largest.max(c * r);
            }
        }
        dtype.buffer_bytes(b * largest)
    }

    /// Decode, tiled when an untiled decode would need a buffer larger than `max_buffer`:
    /// latent tiles overlapping by a quarter, blended with linear ramps (see `decode_tiled`).
    pub fn decode_auto(&self, c: &Ctx, z: &Tensor, max_buffer: u64) -> Result<Tensor> {
        let (b, h, w) = (z.shape()[0], z.shape()[2], z.shape()[3]);
        if self.decode_largest_buffer(b, h, w, z.dtype()) <= max_buffer {
            return self.decode(c, z);
        }
        let mut tile = h.max(w);
        while tile > 8 && self.decode_largest_buffer(b, tile.min(h), tile.min(w), z.dtype()) > max_buffer {
            tile = (tile / 2).div_ceil(8) * 8;
        }
        self.decode_tiled(c, z, tile, tile / 4)
    }

    /// Decode latent tiles of `tile`×`tile` overlapping by ≥ `overlap` and blend the images
    /// with linear ramps over the overlaps (weights sum to 1): the largest activation is
    /// that of one tile. Output [B, 3, 8h, 8w] f32.
    pub fn decode_tiled(&self, c: &Ctx, z: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
        if z.rank() != 4 || tile == 0 || overlap >= tile {
            return Err(Error::Shape { op: "vae decode", detail: format!("latents {:?}, tile {tile}, overlap {overlap}", z.shape()) });
        }
        let (b, h, w) = (z.shape()[0], z.shape()[2], z.shape()[3]);
        let f = self.factor();
        let ys = ops::tile_origins(h, tile, overlap);
        let xs = ops::tile_origins(w, tile, overlap);
        let (th, tw) = (tile.min(h), tile.min(w));
        let out = ops::fill(c.gpu, z, &[b, self.cfg.out_channels, h * f, w * f], crate::gpu::DType::F32, 0.0)?;
        for (iy, &oy) in ys.iter().enumerate() {
            for (ix, &ox) in xs.iter().enumerate() {
                let zt = ops::crop2d(c.gpu, z, oy, ox, th, tw)?;
                let img = self.decode(c, &zt)?;
                let (t0, t1) = ops::tile_ramps(&ys, iy, th);
                let (l0, l1) = ops::tile_ramps(&xs, ix, tw);
                let ramps = [t0 * f, t1 * f, l0 * f, l1 * f];
                ops::blend_tile(c.gpu, &out, &img, oy * f, ox * f, ramps)?;
            }
        }
        Ok(out)
    }

    /// Scaled latents [B, latent, h, w] (as the denoiser sees them) -> image [B, 3, 8h, 8w]
    /// in about [-1, 1] (not clamped). Divides by `scaling_factor` first.
    pub fn decode(&self, c: &Ctx, z: &Tensor) -> Result<Tensor> {
        if z.rank() != 4 || z.shape()[1] != self.cfg.latent_channels {
            return Err(Error::Shape { op: "vae decode", detail: format!("latents {:?} must be [B, {}, h, w]", z.shape(), self.cfg.latent_channels) });
        }
        let mut h = ops::affine(c.gpu, z, 1.0 / self.cfg.scaling_factor, 0.0)?;
        if let Some(q) = &self.post_quant {
            h = q.fwd(c, &h, Act::None, None)?;
        }
        h = self.dec_in.fwd(c, &h, Act::None, None)?;
        h = self.dec_mid.fwd(c, &h)?;
        for lv in &self.dec_levels {
            for r in &lv.resnets {
                h = r.fwd(c, &h, None)?;
            }
            if let Some(s) = &lv.sample {
                h = s.fwd_fused(c, &h, ConvFuse { upsample: true, ..Default::default() })?;
            }
        }
        let a = self.dec_norm.affine(c, &h)?;
        self.dec_out.fwd_fused(c, &h, ConvFuse { input_affine: Some(&a), input_silu: true, ..Default::default() })
    }
}
