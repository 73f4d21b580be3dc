#!/usr/bin/env python3
"""make_extra_goldens.py: goldens the shared reference bundles do not have, made with diffusers.

Writes tests/fixtures/extra/:
  golden.safetensors  - final latents (output_type="latent") of the two tiny-sd15 pipeline cases whose
                        bundle has only the image: txt2img_ddim_nocfg_wide and img2img_ddpm, run exactly
                        as ../shared/reference/make_reference.py runs them, from the fixture model itself
                        (tests/fixtures/tiny-sd15/model); the images are recomputed and checked equal to the
                        bundle's (so the latents belong to the same runs). Also wide_unet_{in,t,context,out}.
  wide-heads-unet/    - config.json of a tiny UNet2DConditionModel whose attention heads are 40, 80 and 160
                        wide: SD-1.5's head widths (320/8, 640/8, 1280/8), which the tiny SD-1.5 model (heads
                        4-8 wide) never reaches. Its weights (26 MB) are not stored: they are drawn from
                        torch.Generator().manual_seed(160) parameter by parameter (randomise() below, the
                        order and shapes in cases.json), which the tests redraw with the bit-exact
                        torch-compatible generator of src/rng.rs.
                        resize_*: AUTOMATIC1111's images.resize_image (PIL, LANCZOS) of img2img inputs for
                        the three resize modes, as uint8 RGB [H, W, 3], with their sources.
  cases.json          - what was run (and how far the recomputed images are from the bundle's: float
                        rounding of another CPU, < 1e-5).

Usage (CPU, float32, deterministic; pip install torch==2.15.0 diffusers==0.42.1 transformers==5.23.0
safetensors pillow):
    python3 scripts/make_extra_goldens.py
"""
import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
TINY = os.path.join(ROOT, "tiny-sd15")
OUT = os.path.join(ROOT, "extra")


def randomise(module, gen):
    """As make_reference.py: every weight drawn afresh so that no zero-initialised layer hides a bug."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def a1111_resize_image(resize_mode, im, width, height):
    """AUTOMATIC1111 modules/images.py resize_image: 0 just resize, 1 crop and resize, 2 resize and fill."""
    def resize(im, w, h):
        return im.resize((w, h), resample=Image.LANCZOS)
    if resize_mode == 0:
        return resize(im, width, height)
    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0))
    return res


def main():
    torch.set_grad_enabled(False)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    meta = json.load(open(os.path.join(TINY, "golden.json")))
    bundle = load_file(os.path.join(TINY, "golden.safetensors"))
    golden, cases = {}, {}
    model = os.path.join(TINY, "model")
    sched_cfg = json.load(open(os.path.join(model, "scheduler", "scheduler_config.json")))

    # txt2img_ddim_nocfg_wide: guidance 1.0, 64 high x 128 wide, seed 3 (make_reference.py)
    c = meta["cases"]["txt2img_ddim_nocfg_wide"]
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(sched_cfg)
    kw = dict(prompt=c["prompt"], num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"], height=c["height"], width=c["width"])
    lat = pipe(**kw, generator=torch.Generator().manual_seed(c["seed"]), output_type="latent").images
    im = pipe(**kw, generator=torch.Generator().manual_seed(c["seed"]), output_type="np").images
    d = np.abs(im - bundle["txt2img_ddim_nocfg_wide_image"].numpy()).max()
    assert d < 1e-5, f"txt2img_ddim_nocfg_wide: image differs from the bundle by {d}"
    golden["txt2img_ddim_nocfg_wide_latents"] = lat
    cases["txt2img_ddim_nocfg_wide"] = dict(c, golden="txt2img_ddim_nocfg_wide_latents", image_vs_bundle_max_abs=float(d))

    # img2img_ddpm: init.png, strength 0.75, 20 steps, seed 7 (make_reference.py)
    c = meta["cases"]["img2img_ddpm"]
    i2i = StableDiffusionImg2ImgPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    i2i.scheduler = DDPMScheduler.from_config(sched_cfg)
    init = Image.open(os.path.join(TINY, "init.png")).convert("RGB")
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], image=init, strength=c["strength"],
              num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"])
    lat = i2i(**kw, generator=torch.Generator().manual_seed(c["seed"]), output_type="latent").images
    im = i2i(**kw, generator=torch.Generator().manual_seed(c["seed"]), output_type="np").images
    d = np.abs(im - bundle["img2img_ddpm_image"].numpy()).max()
    assert d < 1e-5, f"img2img_ddpm: image differs from the bundle by {d}"
    golden["img2img_ddpm_latents"] = lat
    cases["img2img_ddpm"] = dict(c, golden="img2img_ddpm_latents", image_vs_bundle_max_abs=float(d))

    # A UNet with SD-1.5's head widths 40 / 80 / 160 (one head per block: attention_head_dim 1 is the
    # head count in SD 1.x configs), cross-attention width 32, 16x16 latents.
    gen = torch.Generator().manual_seed(160)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(40, 80, 160),
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32, attention_head_dim=1, norm_num_groups=8)
    randomise(unet, gen)
    unet.eval()
    udir = os.path.join(OUT, "wide-heads-unet")
    unet.save_config(udir)
    params = [[n, list(p.shape)] for n, p in unet.named_parameters()]
    x = torch.randn((2, 4, 16, 16), generator=gen)
    ctx = torch.randn((2, 77, 32), generator=gen)
    t = 700
    golden["wide_unet_in"] = x
    golden["wide_unet_context"] = ctx
    golden["wide_unet_out"] = unet(x, torch.tensor(t), encoder_hidden_states=ctx).sample
    heads = [b.attentions[0].transformer_blocks[0].attn1.heads for b in unet.down_blocks]
    dims = [b.attentions[0].transformer_blocks[0].attn1.inner_dim // h for b, h in zip(unet.down_blocks, heads)]
    cases["wide_unet"] = dict(timestep=t, latents=[2, 4, 16, 16], context=[2, 77, 32], head_dims=dims, heads=heads,
                              model="wide-heads-unet", weights_seed=160,
                              weights="in this order, per parameter: dim > 1: randn(shape) / sqrt(shape[1:].numel()); "
                                      "a norm weight: 1 + 0.1 randn(shape); else 0.1 randn(shape); then x, context drawn",
                              parameters=params, golden=["wide_unet_in", "wide_unet_context", "wide_unet_out"])
    assert dims == [40, 80, 160], dims

    # img2img inputs of other sizes, fitted as A1111 does (modes: crop = 1, fit = 2, stretch = 0)
    src_full = Image.open(os.path.join(TINY, "init.png")).convert("RGB")
    sources = {"init64": src_full, "crop60x44": src_full.crop((2, 5, 62, 49))}
    for sname, src in sources.items():
        golden[f"resize_src_{sname}"] = torch.from_numpy(np.asarray(src).copy())
    resizes = []
    for sname, mode, mname, w, h in [("crop60x44", 1, "crop", 64, 64), ("crop60x44", 2, "fit", 64, 64), ("crop60x44", 0, "stretch", 64, 128),
                                     ("init64", 1, "crop", 128, 64), ("init64", 2, "fit", 128, 64), ("init64", 1, "crop", 64, 128),
                                     ("init64", 2, "fit", 64, 128), ("crop60x44", 1, "crop", 192, 128)]:
        key = f"resize_{sname}_{mname}_{w}x{h}"
        golden[key] = torch.from_numpy(np.asarray(a1111_resize_image(mode, sources[sname], w, h)).copy())
        resizes.append(dict(key=key, source=f"resize_src_{sname}", mode=mname, a1111_resize_mode=mode, width=w, height=h))
    cases["resize"] = dict(what="AUTOMATIC1111 images.resize_image with PIL LANCZOS, uint8 RGB", runs=resizes)

    for k, v in golden.items():
        if not torch.as_tensor(v).is_floating_point():
            continue
        assert torch.isfinite(torch.as_tensor(v)).all(), k
    save_file({k: torch.as_tensor(v).detach().clone().contiguous() for k, v in golden.items()}, os.path.join(OUT, "golden.safetensors"))
    import diffusers
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generated_by": "scripts/make_extra_goldens.py", "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
                   "cases": cases}, f, indent=1)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "parameters"} for k, v in cases.items()}, indent=1))


if __name__ == "__main__":
    main()
