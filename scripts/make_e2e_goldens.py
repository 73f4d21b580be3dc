#!/usr/bin/env python3
"""make_e2e_goldens.py: short diffusers goldens for the end-to-end tests (tests/fixtures/e2e-short/).

The e2e tests drive the module in SwiftShader, where a tiny-model CFG step costs ~13 s; their
diffusers comparisons use the same cases as the reference bundles with fewer steps. Each case is
first rerun at its original step count and must equal the bundle's golden (to 1e-5: float32 sums on
another CPU; same files, same diffusers), then run with the short step count; only diffusers produces the numbers.

Usage (torch + diffusers as pinned in ../shared/reference/make_reference_v2.py's header):
    python scripts/make_e2e_goldens.py            # writes tests/fixtures/e2e-short/{cases.json,golden.safetensors}
"""
import json
import os
import sys

import diffusers
import torch
import transformers
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file, save_file

torch.set_grad_enabled(False)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "e2e-short")
SHORT = 3

# (new name, bundle folder, model folder inside it, original case, its golden image tensor, short steps)
CASES = [
    ("txt2img_ddim_3steps", "tiny-sd15", "model", "txt2img_ddim", "txt2img_ddim_image", SHORT),
    ("txt2img_batch2_3steps", "sd15-realconfig", "model", "txt2img_batch2", "txt2img_batch2_image", SHORT),
    # StableDiffusionInpaintPipeline, 9-channel UNet, strength 0.75: 4 steps run 3 (the e2e ui_inpaint)
    ("inpaint9_e2e", "inpaint", "model-inpaint", "inpaint9_partial_ddim", "inpaint9_partial_ddim_image", 4),
]


def case_of(bundle, name):
    d = os.path.join(FIX, bundle)
    if os.path.exists(os.path.join(d, "golden.json")):
        c = json.load(open(os.path.join(d, "golden.json")))["cases"][name]
        return dict(
            prompt=c["prompt"], negative_prompt=c.get("negative_prompt"), steps=c["steps"],
            guidance=c["guidance_scale"], seed=c["seed"], width=c["width"], height=c["height"],
            sampler=c["sampler"], batch=1, scheduler_class=c["scheduler"], overrides=c.get("scheduler_extra", {}),
        )
    c = next(c for c in json.load(open(os.path.join(d, "cases.json")))["cases"] if c["name"] == name)
    return dict(
        prompt=c["prompt"], negative_prompt=c["negative_prompt"], steps=c["steps"], guidance=c["guidance"],
        seed=c["seed"], width=c["width"], height=c["height"], sampler=c["sampler"], batch=c["batch"] or 1,
        scheduler_class=c["scheduler"]["class"], overrides=c["scheduler"]["overrides"],
        strength=c.get("strength"), init_image=c.get("init_image"), mask_image=c.get("mask_image"),
    )


def run(pipe, c, steps, output_type):
    call = dict(prompt=c["prompt"], num_inference_steps=steps, guidance_scale=c["guidance"],
                height=c["height"], width=c["width"], num_images_per_prompt=c["batch"])
    if c["negative_prompt"] is not None:
        call["negative_prompt"] = c["negative_prompt"]
    if c.get("mask_image"):
        d = os.path.join(FIX, c["bundle"])
        call.update(image=Image.open(os.path.join(d, c["init_image"])), mask_image=Image.open(os.path.join(d, c["mask_image"])),
                    strength=c["strength"])
    out = pipe(**call, generator=torch.Generator().manual_seed(c["seed"]), output_type=output_type).images
    return out if output_type == "latent" else torch.from_numpy(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors, cases = {}, []
    for new, bundle, model, orig, gname, short in CASES:
        d = os.path.join(FIX, bundle)
        c = case_of(bundle, orig)
        c["bundle"] = bundle
        cls = StableDiffusionInpaintPipeline if c.get("mask_image") else StableDiffusionPipeline
        pipe = cls.from_pretrained(os.path.join(d, model), safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        cfg = json.load(open(os.path.join(d, model, "scheduler", "scheduler_config.json")))
        pipe.scheduler = getattr(diffusers, c["scheduler_class"]).from_config(cfg, **c["overrides"])
        full = run(pipe, c, c["steps"], "np")
        want = load_file(os.path.join(d, "golden.safetensors"))[gname]
        diff = (full - want).abs().max().item()
        print(f"{bundle}/{orig} rerun at {c['steps']} steps vs its golden: max |d| {diff:.3g}")
        # The bundles were made on another machine: float32 summation order may differ there.
        if diff > 1e-5:
            sys.exit(f"{bundle}/{orig}: this environment does not reproduce the bundle's golden (max |d| {diff})")
        img = run(pipe, c, short, "np")
        lat = run(pipe, c, short, "latent")
        tensors[f"{new}_image"] = img.contiguous()
        tensors[f"{new}_latents"] = lat.contiguous()
        cases.append(dict(
            name=new, kind="pipeline", derived_from=f"{bundle}/{orig} with steps {short}", model=f"{bundle}/{model}",
            prompt=c["prompt"], negative_prompt=c["negative_prompt"], steps=short, guidance=c["guidance"],
            seed=c["seed"], width=c["width"], height=c["height"], sampler=c["sampler"], batch=c["batch"],
            scheduler={"class": c["scheduler_class"], "from_config": f"{bundle}/{model}/scheduler/scheduler_config.json",
                       "overrides": c["overrides"]},
            **({k: c[k] for k in ("strength", "init_image", "mask_image")} if c.get("mask_image") else {}),
            golden={"image": f"{new}_image", "latents": f"{new}_latents"},
        ))
        print(f"{new}: image {tuple(img.shape)} mean {img.mean().item():.4f}; latents {tuple(lat.shape)}")
    save_file(tensors, os.path.join(OUT, "golden.safetensors"))
    doc = dict(
        made_by="scripts/make_e2e_goldens.py",
        versions=dict(diffusers=diffusers.__version__, transformers=transformers.__version__, torch=torch.__version__),
        conventions="images NHWC float32 in [0,1] (output_type='np'); latents NCHW (output_type='latent'); "
                    "one CPU torch.Generator seeded with the case's seed",
        cases=cases,
    )
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
