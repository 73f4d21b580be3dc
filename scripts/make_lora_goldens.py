#!/usr/bin/env python3
"""make_lora_goldens.py: the UNet's exact inputs and outputs along diffusers' lora_combined run.

The v2 bundle's `lora_combined` case (two kohya LoRAs at 0.7 + 0.5 on sd15-realconfig, 10 steps of
DPM++ 2M Karras, CFG 7.5) is far more sensitive to float rounding than the single-LoRA cases: this
script measures that (diffusers itself, with its UNet outputs perturbed by 1e-6·max|out| Gaussian noise at
every step, lands at the final-latents error printed in `sensitivity`), and records, for three steps of
the run, the UNet's exact inputs (latents [2,4,8,8] = [uncond; cond], timestep, text states [2,77,64])
and its output, so tests/lora.rs can assert the merged UNet where the signal is: per step, on diffusers'
own inputs.

Writes tests/fixtures/lora/combined_steps.safetensors (x{i}, t{i}, c{i}, y{i}) and combined_steps.json.

It also writes the LCM-LoRA case the bundle lacks, tests/fixtures/lora/lcm_lora.json (the case, in the
bundle's cases.json form) and lcm_lora.safetensors (final latents and image): the way users run
latent-consistency/lcm-lora-sdv1-5 (kohya keys) with diffusers — LCMScheduler.from_config(the SD-1.5
scheduler file), load_lora_weights + set_adapters at 1.0, 4 steps, guidance 1 (no CFG) — with
lora_kohya_a.safetensors (kohya keys, UNet + text encoder, LoCon) standing in for the real file.

Usage (CPU, float32, deterministic; pip install torch==2.15.0 diffusers==0.42.1 transformers peft==0.21.2
safetensors):
    python3 scripts/make_lora_goldens.py
"""
import json
import os

import torch
from diffusers import DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
MODEL = os.path.join(ROOT, "sd15-realconfig", "model")
LORA = os.path.join(ROOT, "lora")
STEPS = [0, 5, 9]


def pipe(case):
    p = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                requires_safety_checker=False)
    cls = {"DPMSolverMultistepScheduler": DPMSolverMultistepScheduler, "LCMScheduler": LCMScheduler}[case["scheduler"]["class"]]
    p.scheduler = cls.from_config(p.scheduler.config, **case["scheduler"]["overrides"])
    names = []
    for l in case["loras"]:
        n = l["file"].rsplit(".", 1)[0]
        p.load_lora_weights(LORA, weight_name=l["file"], adapter_name=n)
        names.append(n)
    if names:
        p.set_adapters(names, adapter_weights=[l["scale"] for l in case["loras"]])
    return p


def run(case, eps=0.0, record=None, output_type="latent"):
    p = pipe(case)
    orig = p.unet.forward
    gen = torch.Generator().manual_seed(7)
    calls = [0]

    def forward(x, t, encoder_hidden_states=None, **kw):
        y = orig(x, t, encoder_hidden_states=encoder_hidden_states, **kw)[0]
        i = calls[0]
        calls[0] += 1
        if record is not None and i in STEPS:
            record[f"x{i}"] = x.detach().clone().contiguous()
            record[f"t{i}"] = torch.tensor([float(t)])
            record[f"c{i}"] = encoder_hidden_states.detach().clone().contiguous()
            record[f"y{i}"] = y.detach().clone().contiguous()
        if eps:
            y = y + eps * y.abs().max() * torch.randn(y.shape, generator=gen)
        return (y,)

    p.unet.forward = forward
    with torch.no_grad():
        return p(prompt=case["prompt"], negative_prompt=case["negative_prompt"], num_inference_steps=case["steps"],
                 guidance_scale=case["guidance"], height=case["height"], width=case["width"],
                 generator=torch.Generator().manual_seed(case["seed"]), output_type=output_type).images


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    cases = {c["name"]: c for c in json.load(open(os.path.join(LORA, "cases.json")))["cases"]}
    golden = load_file(os.path.join(LORA, "golden.safetensors"))
    rec = {}
    lat = run(cases["lora_combined"], record=rec)
    ref = golden["lora_combined_latents"]
    same = float((lat - ref).abs().max())
    assert same == 0.0, f"the recomputed run is not the bundle's ({same})"
    sens = {}
    for name in ["lora_kohya", "lora_combined"]:
        r = golden[f"{name}_latents"]
        l = run(cases[name], eps=1e-6)
        sens[name] = float((l - r).abs().max() / r.abs().max())
    save_file(rec, os.path.join(LORA, "combined_steps.safetensors"))
    meta = {"generated_by": "scripts/make_lora_goldens.py", "case": "lora_combined", "steps": STEPS,
            "recomputed_final_latents_vs_bundle_max_abs": same,
            "sensitivity": {"what": "final latents max error / max|ref| when diffusers' UNet output gets 1e-6·max|out| "
                                    "Gaussian noise at every step (torch.Generator seed 7)", **sens},
            "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                         "peft": __import__("peft").__version__}}
    json.dump(meta, open(os.path.join(LORA, "combined_steps.json"), "w"), indent=1)
    print(json.dumps(meta, indent=1))

    lcm = {"name": "lcm_lora", "kind": "pipeline", "pipeline": "StableDiffusionPipeline",
           "model": "../sd15-realconfig/model", "prompt": "a portrait of an old sailor, oil painting",
           "negative_prompt": None, "steps": 4, "guidance": 1.0, "seed": 31, "width": 64, "height": 64,
           "sampler": "lcm", "batch": 1, "strength": None,
           "scheduler": {"class": "LCMScheduler", "from_config": "../sd15-realconfig/model/scheduler/scheduler_config.json",
                         "overrides": {}},
           "loras": [{"file": "lora_kohya_a.safetensors", "scale": 1.0, "format": "kohya", "rank": 4, "alpha": 2.0}],
           "golden": {"image": "lcm_lora_image", "latents": "lcm_lora_latents"},
           "extra_args": {"how": "scheduler = LCMScheduler.from_config(SD-1.5 file); load_lora_weights + "
                                 "set_adapters(['lora_kohya_a'], adapter_weights=[1.0]); guidance 1: no CFG"}}
    lat = run(lcm)
    img = torch.from_numpy(run(lcm, output_type="np").copy())
    base = dict(lcm, loras=[])
    lat0 = run(base)
    lcm["delta_vs_base"] = {"latents_mean_abs": float((lat - lat0).abs().mean()), "note": "the LoRA changes the run"}
    lcm["generated_by"] = "scripts/make_lora_goldens.py"
    lcm["versions"] = meta["versions"]
    save_file({"lcm_lora_latents": lat.contiguous(), "lcm_lora_image": img.contiguous()}, os.path.join(LORA, "lcm_lora.safetensors"))
    json.dump(lcm, open(os.path.join(LORA, "lcm_lora.json"), "w"), indent=1)
    print("lcm_lora", lat.shape, img.shape, lcm["delta_vs_base"])


if __name__ == "__main__":
    main()
