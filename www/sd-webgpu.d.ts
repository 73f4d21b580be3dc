// sd-webgpu: Stable Diffusion 1.x on the user's GPU through WebGPU.
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
  /** Free the text encoder's weights after each encoding (SD-Turbo fp16: 681 MB), streaming
   *  them back from the browser cache when a new prompt needs them (`GenerateResult.
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
}

/** How an img2img start image whose size differs from width × height is fitted
 *  (AUTOMATIC1111's names): "crop" = "Crop and resize" (scale to cover, centre crop; the
 *  default), "fit" = "Resize and fill" (scale to fit, fill the borders from the image's
 *  edges), "stretch" = "Just resize" (ignore the aspect ratio). */
export type ResizeMode = "crop" | "fit" | "stretch";

export interface GenerateOptions {
  prompt: string;
  negativePrompt?: string;
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
   *  tokens: 9 token(s) at its end were dropped.", a VAE decode re-run in f32 after an f16
   *  overflow, a PNG metadata problem). Empty when all went as asked. */
  warnings: string[];
  /** CLIP tokens cut from the end of each prompt (it encodes 77 tokens: 75 + start and end). */
  droppedTokens: { prompt: number; negativePrompt: number };
  /** True when the f16 VAE decode overflowed and was re-run in f32. */
  vaeUpcast: boolean;
  /** The decoder that made the images. */
  decoder: "vae" | "tiny";
  /** With `evictTextEncoder`: the text encoder was streamed back for this prompt (time and
   *  bytes), else null. */
  textEncoderReload: { ms: number; bytes: number } | null;
}

/** What the loaded model is and the settings it is run with when none are given. */
export interface ModelDefaults {
  /** How it was detected: "lcm" (an LCM-distilled UNet, time_cond_proj_dim, or an
   *  LCMScheduler config), "sd-turbo" (trailing EulerDiscrete scheduler, or "turbo" in its
   *  name), "sd2" (OpenCLIP text encoder, hidden_act gelu), else "sd15". */
  family: "sd15" | "sd2" | "sd-turbo" | "lcm";
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
