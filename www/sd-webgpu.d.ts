// sd-webgpu: Stable Diffusion (1.x, 2.x, SDXL) on the user's GPU through WebGPU.
// The model runs in a module Web Worker (sd-webgpu-worker.js, next to this file);
// this module only talks to it, so the page never freezes.

export type Sampler = "ddpm" | "ddim" | "pndm" | "euler" | "euler_a" | "dpmpp_2m_karras" | "lcm";

/** Download / load progress. `loaded` and `total` are bytes of `file` (total null when unknown). */
export interface LoadProgress {
  /** "resolve": finding the files; "download": bytes from the network; "cache": bytes read
   *  from the browser cache; "retry": the connection dropped or the host answered 429 / 5xx,
   *  retrying (with HTTP Range from `loaded`) after `waitSeconds` (the host's Retry-After when
   *  it sends one, else 1, 2, 4 … 15 s; see `attempt`, `error`, `status`); "build": weights are on the GPU, fusing/compiling;
   *  "ready": done. */
  phase: "resolve" | "download" | "cache" | "retry" | "build" | "ready";
  file: string | null;
  loaded: number;
  total: number | null;
  /** Over all weight files: bytes done and bytes in all (when known). */
  overallLoaded: number;
  overallTotal: number | null;
  bytesPerSecond: number;
  etaSeconds: number | null;
  attempt?: number;
  error?: string;
  /** HTTP status that caused a "retry" (429, 5xx), when there was one. */
  status?: number;
  /** Seconds waited before the retry. */
  waitSeconds?: number;
  /** Current size of the worker's wasm memory (bytes). */
  wasmMemoryBytes: number;
}

export interface LoadOptions {
  /** HF repo id ("stable-diffusion-v1-5/stable-diffusion-v1-5"), base URL of a diffusers folder
   *  (absolute or relative to the page), URL of a single .safetensors checkpoint, or File objects:
   *  one .safetensors checkpoint, or the files of a diffusers folder (with webkitRelativePath, as
   *  from <input webkitdirectory> or a dropped folder). Default: SD 1.5 from Hugging Face. */
  model?: string | File | File[] | FileList;
  /** "fp16" (default): use *.fp16.safetensors where the folder has them; null: full-precision files. */
  variant?: "fp16" | null;
  /** A tiny autoencoder (TAESD) loaded beside the model, streamed and cached like it: HF repo id
   *  or base URL of a diffusers AutoencoderTiny folder ("madebyollin/taesd": config.json +
   *  diffusion_pytorch_model[.fp16].safetensors) or of a folder with madebyollin's
   *  taesd_encoder.safetensors + taesd_decoder.safetensors, or those files. With it the live
   *  previews are TAESD's full-size decode of the denoised estimate, and `decoder: "tiny"` is
   *  available. */
  tinyVae?: string | File[] | FileList;
  /** Free the text encoder's weights after each encoding (SD-Turbo fp16: 681 MB; SDXL: both
   *  text encoders, 1.64 GB), streaming them back from the browser cache when a new prompt needs them (`GenerateResult.
   *  textEncoderReload` says what it cost); the same prompts again need no text encoder.
   *  Lowers the peak by the text encoder's size. Diffusers folders only. Default false. */
  evictTextEncoder?: boolean;
  /** GPU storage type: "f16" (default) or "f32". */
  dtype?: "f16" | "f32";
  /** GPU storage of the VAE alone (default: the same as `dtype`). "f32" is A1111's
   *  `--no-half-vae`: slower decode, no f16 overflow. With f16, a decode that overflows is
   *  re-run in f32 by itself (see `GenerateResult.vaeUpcast` and `warnings`). */
  vaeDtype?: "f16" | "f32";
  /** Keep downloaded files in the browser (Origin Private File System). Default true. */
  cache?: boolean;
  /** Hugging Face revision for repo ids (default "main"). */
  revision?: string;
  /** Pretend the adapter's maxStorageBufferBindingSize is at most this (test WebGPU's defaults). */
  maxBindingBytes?: number;
  onProgress?: (p: LoadProgress) => void;
  /** Cancels the load: it rejects with an AbortError, its worker ends, and what was downloaded
   *  stays in the browser cache (the next load continues from there). */
  signal?: AbortSignal;
  /** Called when the GPU device is lost; the next call reloads the model (from the cache). */
  onDeviceLost?: (message: string) => void;
  /** The folder (absolute URL, or relative to the page) that holds the package's
   *  `sd-webgpu-worker.js`, its `sd-webgpu-*.js` modules and `wasm/`, e.g. a CDN copy of
   *  the package ("https://cdn.example/sd-webgpu@0.1.0/"). Default: the files next to this
   *  module, or the copies a bundler (Vite, webpack) made of them. Another origin works when
   *  it sends CORS headers (the worker is then started by a same-origin `blob:` module that
   *  imports it: a CSP needs `worker-src blob:`). */
  assetBase?: string | URL;
}

/** How an img2img start image whose size differs from width × height is fitted
 *  (AUTOMATIC1111's names): "crop" = "Crop and resize" (scale to cover, centre crop; the
 *  default), "fit" = "Resize and fill" (scale to fit, fill the borders from the image's
 *  edges), "stretch" = "Just resize" (ignore the aspect ratio). */
export type ResizeMode = "crop" | "fit" | "stretch";

export interface GenerateOptions {
  prompt: string;
  /** With classifier-free guidance; default "" (encoded). SDXL models whose model_index.json
   *  says `force_zeros_for_empty_prompt` (stabilityai's) use zero embeddings when it is left
   *  out, as diffusers does. */
  negativePrompt?: string;
  /** SDXL: the prompt of the second text encoder (OpenCLIP bigG), default `prompt`
   *  (diffusers' `prompt_2`). Ignored by other models. */
  prompt2?: string;
  /** SDXL: the negative prompt of the second text encoder, default `negativePrompt`
   *  (diffusers' `negative_prompt_2`). */
  negativePrompt2?: string;
  /** SDXL micro-conditioning (diffusers' `original_size`): the size the model is told the
   *  training image had. Default: the output size. */
  originalSize?: { width: number; height: number };
  /** SDXL micro-conditioning (diffusers' `target_size`). Default: the output size. */
  targetSize?: { width: number; height: number };
  /** SDXL micro-conditioning (diffusers' `crops_coords_top_left`), default { top: 0, left: 0 }. */
  cropsCoordsTopLeft?: { top: number; left: number };
  /** Default: the model's (`defaults.steps`: 20; SD-Turbo 1; LCM 4). */
  steps?: number;
  /** Default: the model's (7.5; SD-Turbo 0; LCM-distilled UNets 8, as their w embedding);
   *  <= 1 disables classifier-free guidance (the negative prompt is then not used). */
  guidanceScale?: number;
  /** Default: random; the seed used is returned with each image. */
  seed?: number;
  /** Output size (multiple of 8 × 2^downsamplings, i.e. 64 for SD 1.5). Default 512 × 512;
   *  with `initImage`, the start image's size rounded to the nearest multiple of 64. */
  width?: number;
  height?: number;
  sampler?: Sampler;         // default the model's: "euler_a"; SD-Turbo "euler"; LCM "lcm"
  /** What makes the image from the latents (and the img2img start latents from the start
   *  image): "vae" (default, the model's VAE) or "tiny" (the TAESD loaded with `tinyVae`). */
  decoder?: "vae" | "tiny";
  /** Power users: override the model's scheduler config (diffusers' `timestep_spacing`). */
  timestepSpacing?: "leading" | "linspace" | "trailing";
  /** Power users: override the model's scheduler config (diffusers' `prediction_type`). */
  predictionType?: "epsilon" | "v_prediction";
  /** A1111 prompt syntax (default true): `(word:1.2)`, `(word)`, `[word]` weights and prompts
   *  longer than 75 tokens encoded in up to 3 chunks of 75 (diffusers' community
   *  lpw_stable_diffusion). false: diffusers' plain StableDiffusionPipeline (brackets are text,
   *  the prompt is cut at CLIP's 77 tokens). */
  promptWeighting?: boolean;
  /** LoRAs loaded with `loadLora()` to merge for this generation, with their scales (default
   *  1; 0 leaves one out). The prompt's A1111 tags `<lora:name:scale>` add to these or set
   *  their scale (a tag naming no loaded LoRA is a warning); tags are taken out of the prompt
   *  before encoding. Merging happens on the GPU from kept base weights: changing a scale or
   *  the set never reloads the model. A name not loaded rejects. */
  loras?: { name: string; scale?: number }[];
  /** img2img: a PNG/JPEG Blob/File, an ImageData, or an ImageBitmap, of any size (fitted to
   *  width × height by `resizeMode`). */
  initImage?: Blob | ImageData | ImageBitmap;
  strength?: number;         // img2img strength in (0, 1], default 0.75
  /** img2img: how a start image of another size is fitted (default "crop"). */
  resizeMode?: ResizeMode;
  batch?: number;            // images per prompt, 1 to 16, default 1
  /** Make only image `batchPos` (1-based, 1 ≤ batchPos ≤ batch) of the batch, exactly as it
   *  comes out of the whole batch with the same options, without making the others (to redo
   *  one image of a batch). The result then holds that one image. */
  batchPos?: number;
  /** Called after every step; `preview` is, with a tiny VAE loaded, TAESD's full-size decode
   *  of the previous step's denoised estimate (the last step's at the end), else a cheap linear
   *  latent→RGB map at latent resolution. */
  onStep?: (s: { step: number; steps: number; preview: ImageData | null }) => void;
  /** Send live previews to onStep (default true when onStep is given). */
  preview?: boolean;
  /** Cancels between steps: the promise rejects with a DOMException named "AbortError". */
  signal?: AbortSignal;
}

export interface GeneratedImage {
  imageData: ImageData;
  /** PNG with AUTOMATIC1111's "parameters" text chunk. */
  blob: Blob;
  seed: number;
  /** The A1111 parameters text written into the PNG (tEXt chunk for Latin-1 text, iTXt
   *  (UTF-8) otherwise; for batch > 1 it holds "Batch size: N, Batch pos: P" with P 0-based,
   *  A1111's convention, i.e. P = batchPos - 1). */
  parameters: string;
  /** 1-based position of this image in its batch (1 when batch is 1). */
  batchPos: number;
}

export interface GenerateResult {
  images: GeneratedImage[];
  /** Human-readable notes about this generation (e.g. "The prompt is longer than CLIP's 77
   *  tokens: 9 token(s) at its end were dropped." — with `promptWeighting`, "longer than 225
   *  tokens (3 chunks of 75)" —, a `<lora:…>` tag naming no loaded LoRA, a VAE decode re-run
   *  in f32 after an f16 overflow, a PNG metadata problem). Empty when all went as asked. */
  warnings: string[];
  /** Tokens cut from the end of each prompt (beyond 75, or beyond 225 with `promptWeighting`). */
  droppedTokens: { prompt: number; negativePrompt: number };
  /** True when the f16 VAE decode overflowed and was re-run in f32. */
  vaeUpcast: boolean;
  /** The decoder that made the images. */
  decoder: "vae" | "tiny";
  /** The LoRAs merged for this generation (scale 0 ones left out), also named in each image's
   *  `parameters` (`<lora:name:scale>` tags and `Lora hashes`). */
  loras: { name: string; scale: number }[];
  /** With `evictTextEncoder`: the text encoder was streamed back for this prompt (time and
   *  bytes), else null. */
  textEncoderReload: { ms: number; bytes: number } | null;
}

/** What the loaded model is and the settings it is run with when none are given. */
export interface ModelDefaults {
  /** How it was detected: "sdxl" (a UNet with addition_embed_type "text_time": two text
   *  encoders; 25 steps, guidance 5, Euler, 1024²), "sdxl-turbo" (SDXL with a trailing
   *  EulerAncestral scheduler, or "turbo" in its name: 1 step, guidance 0, Euler a, 512²),
   *  "lcm" (an LCM-distilled UNet, time_cond_proj_dim, or an LCMScheduler config),
   *  "sd-turbo" (trailing EulerDiscrete scheduler, or "turbo" in its name), "sd2" (OpenCLIP
   *  text encoder, hidden_act gelu), else "sd15". */
  family: "sd15" | "sd2" | "sd-turbo" | "lcm" | "sdxl" | "sdxl-turbo";
  steps: number;
  guidanceScale: number;
  sampler: Sampler;
  width: number;
  height: number;
  /** False when the model at its default guidance runs without classifier-free guidance. */
  negativePromptUsed: boolean;
  predictionType: "epsilon" | "v_prediction";
  samplers: Sampler[];
}

export interface AdapterInfo {
  name: string;
  backend: string;
  shader_f16: boolean;
  subgroups: boolean;
  max_buffer_size: number;
  max_storage_buffer_binding_size: number;
  max_compute_workgroup_storage_size: number;
  max_compute_invocations_per_workgroup: number;
  max_storage_buffers_per_shader_stage: number;
  [k: string]: unknown;
}

export interface Stats {
  /** Current (= peak: wasm memory never shrinks) size of the worker's wasm memory. */
  wasmMemoryBytes: number;
  /** GPU bytes held now (after a generation: the weights again; working buffers are freed
   *  between phases and after each generation). */
  gpuLiveBytes: number;
  /** GPU bytes of every buffer the worker's pool owns (in use + kept for reuse). */
  gpuTotalBytes: number;
  /** GPU bytes held at the peak of the last generation (weights + activations). */
  gpuPeakBytes: number;
  /** GPU bytes of the model's weights. */
  weightsBytes: number;
  /** GPU bytes held for LoRAs: their factors and the base copies of the weights the active
   *  ones change (for exact undo), and of the base copies alone. */
  loraBytes: number;
  loraBaseBytes: number;
  /** LoRAs loaded, and merged now. */
  lorasLoaded: number;
  lorasActive: number;
  /** Bytes of weight files streamed onto the GPU since the model's worker started (the model,
   *  the tiny VAE, a text encoder streamed back), and files begun: changing LoRAs adds nothing. */
  weightUploadBytes: number;
  weightUploadFiles: number;
  /** Bytes of LoRA files streamed onto the GPU, and LoRA files loaded. */
  loraUploadBytes: number;
  loraUploadFiles: number;
  /** LoRA merges run on the GPU and weights rebuilt (merged or restored), in all. */
  loraMerges: number;
  loraMergedTensors: number;
}

/** A loaded LoRA. */
export interface LoraInfo {
  /** What `loras: [{ name }]` and `<lora:name:scale>` call it (default: the file name without
   *  ".safetensors", as A1111). */
  name: string;
  file: string;
  /** How its tensors are named: "kohya" (kohya-ss / A1111), "peft" (diffusers / PEFT),
   *  "diffusers" (older attention-processor files). */
  format: "kohya" | "peft" | "diffusers";
  /** A1111's short hash (first 12 hex digits of the SHA-256 of the file after its header). */
  hash: string;
  /** Modules it changes in the UNet and in the text encoder. */
  modules: { unet: number; textEncoder: number };
  /** Its rank, or [smallest, largest]. */
  rank: number | [number, number];
  /** Its alphas ("rank" where a module has none). */
  alpha: string[];
  /** GPU bytes of its factors. */
  bytes: number;
  /** Keys that match no module of this model, and other notes. */
  warnings: string[];
  /** The scale merged now (0: not merged). */
  active?: number;
}

export interface LoadLoraOptions {
  /** Default: the file name without ".safetensors". May not contain ":", "<" or ">". A LoRA of
   *  the same name is replaced. */
  name?: string;
  /** Hugging Face revision for a repo file (default "main"). */
  revision?: string;
  /** Keep the file in the browser cache (default: as the model's load). */
  cache?: boolean;
  /** Download progress, as the model's. */
  onProgress?: (p: LoadProgress) => void;
  /** Cancels the load (AbortError); the model's worker restarts from the browser cache. */
  signal?: AbortSignal;
}

export interface CacheEntry {
  url: string;
  /** Bytes stored, and the file's full size. */
  bytes: number;
  total: number | null;
  complete: boolean;
  /** SHA-256 (hex) of the stored bytes, when asked for with cacheEntries({ sha256: true }). */
  sha256?: string;
}

export class StableDiffusion {
  /** Starts a worker, opens the GPU, streams the weights. Rejects with a readable Error. */
  static load(options?: LoadOptions): Promise<StableDiffusion>;
  /** Adapter information without loading a model (main thread). Rejects when WebGPU is missing. */
  static adapterInfo(): Promise<AdapterInfo>;
  /** What the browser cache holds. */
  static cacheEntries(opts?: { sha256?: boolean }): Promise<CacheEntry[]>;
  /** Delete every cached file. */
  static clearCache(): Promise<void>;

  readonly adapter: AdapterInfo;
  /** The model as resolved ("…/stable-diffusion-v1-5" or a file name). */
  readonly modelName: string;
  /** Non-fatal notes from loading (e.g. unexpected tensors). */
  readonly warnings: string[];
  /** The model's family and default settings. */
  readonly defaults: ModelDefaults;
  /** The tiny VAE loaded with `tinyVae`, by name, or null. */
  readonly tinyVae: string | null;
  /** The LoRAs loaded, in loading order. */
  readonly loras: LoraInfo[];

  /** Loads a LoRA for this model: `source` is a URL (absolute, or relative to the page:
   *  starting with "/", "./" or "../"), a Hugging Face repo file
   *  ("owner/repo/path/file.safetensors"), or a File. Streamed in chunks onto the GPU and
   *  cached (HTTP Range resume) like the model's files. Not merged until a generation names
   *  it. After a GPU device loss loaded LoRAs are loaded again (from the cache). Rejects with
   *  a TypeError for a bad source / name, else an Error naming the file (not safetensors, no
   *  LoRA keys, made for another model, download failure). */
  loadLora(source: string | File, options?: LoadLoraOptions): Promise<LoraInfo>;
  /** Unmerges (exactly) and frees a loaded LoRA; resolves to the LoRAs left. Rejects for a
   *  name that is not loaded. */
  removeLora(name: string): Promise<LoraInfo[]>;

  /** Rejects with a TypeError for malformed options (non-numbers, batchPos outside 1..batch,
   *  an unknown resizeMode), an "AbortError" DOMException when cancelled, else an Error. */
  generate(options: GenerateOptions): Promise<GenerateResult>;
  stats(): Promise<Stats>;
  /** Frees the GPU memory and ends the worker. */
  unload(): Promise<void>;
  /** Test hook: destroys the worker's GPU device, as a driver reset would (onDeviceLost
   *  fires; the next call reloads the model from the cache). */
  debugLoseDevice(): Promise<void>;
}
