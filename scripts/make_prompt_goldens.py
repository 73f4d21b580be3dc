#!/usr/bin/env python3
"""make_prompt_goldens.py: a three-chunk long-prompt generation, which the v2 `prompts/` bundle lacks.

The bundle's txt2img_lpw prompt takes two chunks of 75 tokens. This script runs one generation whose
prompt takes all three chunks LPW allows (max_embeddings_multiples=3): the bundle's 120-token lpw_long
prompt twice, joined by ", " and weighted in places, 240+ tokens, which LPW cuts at 225; with a
weighted negative prompt of one chunk (padded to three). As make_reference_v2.py does for
txt2img_lpw: diffusers' community lpw_stable_diffusion.py (the bundle's copy) encodes the prompts
(`_encode_prompt(..., max_embeddings_multiples=3)`), StableDiffusionPipeline runs with those
prompt_embeds / negative_prompt_embeds (DDIM from the real SD-1.5 scheduler file, 4 steps, CFG 7.5,
64x64), and the UNet's cross-attention takes 231 context positions.

Writes tests/fixtures/prompts/txt2img_lpw_3chunks.json (the case as cases.json writes one) and
txt2img_lpw_3chunks.safetensors (embeds [2, 231, 64], final latents, image).

Usage (CPU, float32, deterministic; pip install torch==2.15.0 diffusers==0.42.1 transformers safetensors):
    python3 scripts/make_prompt_goldens.py [path/to/lpw_stable_diffusion.py]
"""
import importlib.util
import json
import os
import sys

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "fixtures")
MODEL = os.path.join(ROOT, "sd15-realconfig", "model")
OUT = os.path.join(ROOT, "prompts")
LPW = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "reference", "v2", "prompts",
                                                         "lpw_stable_diffusion.py")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("lpw", LPW)
    lpw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lpw)
    cases = {c["name"]: c for c in json.load(open(os.path.join(OUT, "cases.json")))["cases"]}
    long = cases["lpw_long"]["prompt"]
    prompt = f"(masterpiece:1.2), {long}, [muted colours], {long}, (golden hour:1.1)"
    negative = "(worst quality:1.4), low quality, blurry, [watermark]"
    base = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    sched = lambda: DDIMScheduler.from_config(base.scheduler.config)
    te = base.text_encoder
    if not hasattr(te, "text_model"):  # as make_reference_v2.py (transformers >= 5: see its meta)
        object.__setattr__(te, "text_model", te)
    lp = lpw.StableDiffusionLongPromptWeightingPipeline(vae=base.vae, text_encoder=te, tokenizer=base.tokenizer,
                                                        unet=base.unet, scheduler=sched(), safety_checker=None,
                                                        feature_extractor=None, requires_safety_checker=False)
    n = len(base.tokenizer(prompt, add_special_tokens=False).input_ids)
    with torch.no_grad():
        emb = lp._encode_prompt(prompt, torch.device("cpu"), 1, True, negative, max_embeddings_multiples=3)
    assert emb.shape[1] == 231, emb.shape
    neg_e, pos_e = emb.chunk(2)
    base.scheduler = sched()
    call = dict(prompt_embeds=pos_e, negative_prompt_embeds=neg_e, num_inference_steps=4, guidance_scale=7.5,
                height=64, width=64)
    with torch.no_grad():
        lat = base(**call, generator=torch.Generator().manual_seed(71), output_type="latent").images
        base.scheduler = sched()
        img = base(**call, generator=torch.Generator().manual_seed(71), output_type="np").images
    img = torch.from_numpy(img.copy())
    name = "txt2img_lpw_3chunks"
    case = {"name": name, "kind": "pipeline", "pipeline": "StableDiffusionPipeline", "model": "../sd15-realconfig/model",
            "prompt": prompt, "negative_prompt": negative, "steps": 4, "guidance": 7.5, "seed": 71, "width": 64,
            "height": 64, "sampler": "ddim", "batch": 1, "strength": None,
            "scheduler": {"class": "DDIMScheduler", "from_config": "../sd15-realconfig/model/scheduler/scheduler_config.json",
                          "overrides": {}},
            "golden": {"embeds": f"{name}_embeds", "latents": f"{name}_latents", "image": f"{name}_image"},
            "extra_args": {"prompt_mode": "lpw (A1111 weighting, long prompts, max_embeddings_multiples=3)"},
            "checks": {"prompt_tokens": n, "chunks": 3, "embeds_shape": list(emb.shape)},
            "generated_by": "scripts/make_prompt_goldens.py",
            "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                         "transformers": __import__("transformers").__version__}}
    save_file({f"{name}_embeds": emb.contiguous(), f"{name}_latents": lat.contiguous(), f"{name}_image": img.contiguous()},
              os.path.join(OUT, f"{name}.safetensors"))
    json.dump(case, open(os.path.join(OUT, f"{name}.json"), "w"), indent=1)
    print(name, n, "tokens", list(emb.shape), list(lat.shape))


if __name__ == "__main__":
    main()
