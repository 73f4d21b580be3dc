// A TypeScript user of the sd-webgpu package, type-checked (strict) against its d.ts by
// tests/consumers/run.mjs: `tsc --noEmit`. Never run. The @ts-expect-error lines are checks
// that the types refuse what the module refuses (tsc fails if such a line compiles cleanly).
import { StableDiffusion } from "sd-webgpu";
import type { GenerateOptions, GenerateResult, LoadOptions, LoadProgress, LoraInfo, Sampler, Stats } from "sd-webgpu";

export async function run(canvas: HTMLCanvasElement, signal: AbortSignal): Promise<string[]> {
  const log: string[] = [];
  const options: LoadOptions = {
    model: "stable-diffusion-v1-5/stable-diffusion-v1-5",
    dtype: "f16",
    vaeDtype: "f32",
    variant: null,
    cache: true,
    assetBase: new URL("https://cdn.example/sd-webgpu@0.1.0/"),
    onProgress: (p: LoadProgress) => log.push(`${p.phase} ${p.file ?? ""} ${p.loaded}/${p.total ?? "?"}`),
    onDeviceLost: (message: string) => log.push(message),
    signal,
  };
  const sd: StableDiffusion = await StableDiffusion.load(options);
  await StableDiffusion.load({ assetBase: "/static/sd-webgpu/", tinyVae: "madebyollin/taesd" });
  const info = await StableDiffusion.adapterInfo();
  log.push(`${info.name} f16 ${info.shader_f16}; ${sd.defaults.family} ${sd.defaults.steps} steps; ${sd.modelName}`);

  const lora: LoraInfo = await sd.loadLora("owner/repo/style.safetensors", { name: "style" });
  log.push(`${lora.name} rank ${String(lora.rank)}`);

  const sampler: Sampler = sd.defaults.samplers[0] ?? "ddim";
  const gen: GenerateOptions = {
    prompt: "a photo of an astronaut riding a horse on mars",
    negativePrompt: "blurry",
    steps: 20,
    guidanceScale: 7.5,
    seed: 42,
    width: 512,
    height: 512,
    sampler,
    loras: [{ name: lora.name, scale: 0.8 }],
    onStep: ({ step, steps, preview }) => {
      if (preview) canvas.getContext("2d")?.putImageData(preview, 0, 0);
      log.push(`${step}/${steps}`);
    },
    signal,
  };
  const out: GenerateResult = await sd.generate(gen);
  const first = out.images[0];
  if (first) {
    canvas.getContext("2d")?.putImageData(first.imageData, 0, 0);
    const url: string = URL.createObjectURL(first.blob);
    log.push(`${url} seed ${first.seed} batch pos ${first.batchPos}: ${first.parameters}`);
  }
  const stats: Stats = await sd.stats();
  log.push(`GPU peak ${stats.gpuPeakBytes} B, wasm ${stats.wasmMemoryBytes} B`);
  for (const e of await StableDiffusion.cacheEntries({ sha256: true })) log.push(`${e.url} ${e.bytes}/${e.total ?? "?"} ${e.sha256 ?? ""}`);
  await sd.removeLora(lora.name);
  await sd.unload();

  // @ts-expect-error: dtype is "f16" | "f32"
  await StableDiffusion.load({ dtype: "f64" });
  // @ts-expect-error: assetBase is a string or a URL
  await StableDiffusion.load({ assetBase: 42 });
  // @ts-expect-error: prompt is required
  await sd.generate({ steps: 4 });
  // @ts-expect-error: not a sampler
  await sd.generate({ prompt: "x", sampler: "heun" });
  return log;
}
