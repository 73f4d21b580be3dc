// sd-webgpu: Stable Diffusion (1.x, 2.x, SDXL) on the user's GPU through WebGPU, as an ES module.
// The model lives in a module Web Worker (sd-webgpu-worker.js next to this file), so the
// page never freezes. Types: sd-webgpu.d.ts. Usage:
//   const sd = await StableDiffusion.load({ model: "stable-diffusion-v1-5/stable-diffusion-v1-5" });
//   const { images, warnings } = await sd.generate({ prompt: "an astronaut riding a horse" });

const CACHE_DIR = "sd-webgpu-cache";
const RESIZE_MODES = ["crop", "fit", "stretch"];
const WORKER_FILE = "sd-webgpu-worker.js";

// The folder of the worker, its modules and wasm/ given as load({ assetBase }): absolute, or
// relative to the page; a missing final "/" is added.
function assetBaseUrl(assetBase) {
  const s = assetBase instanceof URL ? assetBase.href : assetBase;
  if (typeof s !== "string" || !s.trim()) throw new TypeError(`load: assetBase must be a URL (string or URL) of the folder holding ${WORKER_FILE} and wasm/ (got ${JSON.stringify(assetBase)})`);
  const url = new URL(s.trim(), globalThis.location?.href);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.search = "";
  url.hash = "";
  return url;
}

// The model's worker. Without assetBase it is the file next to this module, written inline as
// `new Worker(new URL("./…", import.meta.url), { type: "module" })`: the form that Vite and
// webpack recognise, so a bundled app gets the worker (with its modules and the wasm it loads
// by `new URL(…, import.meta.url)`) as files of its own build. With assetBase it is
// `${assetBase}sd-webgpu-worker.js`; a browser constructs no worker from another origin's URL,
// so a cross-origin one is started by a same-origin blob: module that imports it (the host
// must then send CORS headers for the worker's files). Returns { worker, url, shim }: the
// blob: URL to revoke once the worker runs.
function startWorker(assetBase) {
  if (assetBase == null) {
    const worker = new Worker(new URL("./sd-webgpu-worker.js", import.meta.url), { type: "module" });
    return { worker, url: null, shim: null };
  }
  const url = new URL(WORKER_FILE, assetBase).href;
  if (new URL(url).origin === globalThis.location?.origin) return { worker: new Worker(url, { type: "module" }), url, shim: null };
  const shim = URL.createObjectURL(new Blob([`import ${JSON.stringify(url)};\n`], { type: "text/javascript" }));
  return { worker: new Worker(shim, { type: "module" }), url, shim };
}

function abortError(message = "generation cancelled") {
  return new DOMException(message, "AbortError");
}

function toError(m) {
  if (m.name === "AbortError") return abortError(m.message);
  if (m.name === "RangeError") return new RangeError(m.message);
  const e = new Error(m.message);
  e.name = m.name || "Error";
  return e;
}

// A model spec the worker can take: URLs resolved against the page, File objects with their
// relative paths (a cloned File loses extra properties).
function modelSpec(model) {
  if (model == null) model = "stable-diffusion-v1-5/stable-diffusion-v1-5";
  if (typeof model === "string") {
    const spec = model.trim();
    const isRepo = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(spec) && !/^\.{1,2}\//.test(spec);
    return { kind: "url", spec, url: isRepo ? null : new URL(spec, globalThis.location?.href).href };
  }
  const files = typeof File !== "undefined" && model instanceof File ? [model] : Array.from(model);
  if (!files.length) throw new Error("No files were given: pick a .safetensors checkpoint or a diffusers model folder.");
  return { kind: "files", entries: files.map((f) => ({ file: f, path: f._relativePath || f.webkitRelativePath || f.name })) };
}

// A LoRA source the worker can take: a URL (absolute, or relative to the page: starting with
// "/", "./" or "../"), a Hugging Face repo file "owner/repo/path/file.safetensors" (at
// `revision`), or a File.
function loraSpec(source) {
  if (typeof File !== "undefined" && source instanceof File) return { kind: "files", entries: [{ file: source, path: source.name }] };
  if (typeof source !== "string" || !source.trim()) throw new TypeError("loadLora: source must be a URL, a Hugging Face file (\"owner/repo/file.safetensors\") or a File");
  const spec = source.trim();
  const hf = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)\/(.+)$/.exec(spec);
  if (hf && !/^\.{1,2}\//.test(spec) && !/^[a-z][a-z0-9+.-]*:/i.test(spec)) return { kind: "url", url: null, spec: hf[1], path: hf[2] };
  return { kind: "url", url: new URL(spec, globalThis.location?.href).href, spec };
}

const loraFileName = (spec) => (spec.kind === "files" ? spec.entries[0].file.name : decodeURIComponent((spec.url ?? spec.path).split(/[?#]/)[0].split("/").pop() || ""));

export class StableDiffusion {
  #options;
  #worker = null;
  #pending = new Map();
  #nextId = 1;
  #lost = null; // message, when the device (or the worker) was lost
  #loading = null;
  // The LoRAs loaded, in order: name -> { spec, options } (loaded again after a device loss).
  #loraSources = new Map();

  adapter = null;
  modelName = "";
  warnings = [];
  /** What the model is and its settings when none are given: {family ("sd15" | "sd2" |
   * "sd-turbo" | "lcm" | "sdxl" | "sdxl-turbo"), steps, guidanceScale, sampler, width, height, negativePromptUsed,
   * predictionType, samplers}. */
  defaults = null;
  /** The tiny VAE (TAESD) loaded with `tinyVae`, by name, or null. */
  tinyVae = null;
  /** The LoRAs loaded with loadLora(), in loading order (LoraInfo). */
  loras = [];

  constructor(options, token) {
    if (token !== StableDiffusion.#token) throw new TypeError("use StableDiffusion.load(options)");
    this.#options = options;
  }
  static #token = Symbol("StableDiffusion");

  /** Start a worker, open the GPU and stream the weights in. */
  static async load(options = {}) {
    if (typeof navigator === "undefined" || !("gpu" in navigator)) {
      throw new Error("WebGPU is not available in this browser. Use Chrome or Edge 113+ (or Firefox / Safari with WebGPU enabled) on a device with a supported GPU.");
    }
    for (const k of ["dtype", "vaeDtype"]) {
      if (options[k] != null && options[k] !== "f16" && options[k] !== "f32") throw new TypeError(`load: ${k} must be "f16" or "f32" (got ${JSON.stringify(options[k])})`);
    }
    const { signal, ...opts } = options;
    if (signal != null && !(typeof AbortSignal !== "undefined" && signal instanceof AbortSignal)) throw new TypeError("load: signal must be an AbortSignal");
    if (signal?.aborted) throw abortError("load cancelled");
    const tinyVae = opts.tinyVae == null ? null : modelSpec(opts.tinyVae);
    const assetBase = opts.assetBase == null ? null : assetBaseUrl(opts.assetBase);
    const sd = new StableDiffusion({ ...opts, variant: opts.variant === undefined ? "fp16" : opts.variant, model: modelSpec(opts.model), tinyVae, assetBase }, StableDiffusion.#token);
    await sd.#start(signal);
    return sd;
  }

  /** Adapter information (main thread, no model). */
  static async adapterInfo() {
    if (typeof navigator === "undefined" || !("gpu" in navigator)) {
      throw new Error("WebGPU is not available in this browser. Use Chrome or Edge 113+ (or Firefox / Safari with WebGPU enabled) on a device with a supported GPU.");
    }
    const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!a) throw new Error("WebGPU is available but no GPU adapter was found (the GPU may be blocklisted or the driver too old). Update the GPU driver or enable hardware acceleration in the browser settings.");
    const i = a.info || {};
    const l = a.limits;
    return {
      name: [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" ") || "(not exposed by this browser)",
      backend: "WebGPU",
      shader_f16: a.features.has("shader-f16"),
      subgroups: a.features.has("subgroups"),
      max_buffer_size: l.maxBufferSize,
      max_storage_buffer_binding_size: l.maxStorageBufferBindingSize,
      max_compute_workgroup_storage_size: l.maxComputeWorkgroupStorageSize,
      max_compute_invocations_per_workgroup: l.maxComputeInvocationsPerWorkgroup,
      max_storage_buffers_per_shader_stage: l.maxStorageBuffersPerShaderStage,
    };
  }

  /** What the browser cache (Origin Private File System) holds. */
  static async cacheEntries({ sha256 = false } = {}) {
    const dir = await cacheDirectory(false);
    if (!dir) return [];
    const out = [];
    for await (const [name, h] of dir.entries()) {
      if (!name.endsWith(".json") || h.kind !== "file") continue;
      let meta;
      try {
        meta = JSON.parse(await (await h.getFile()).text());
      } catch {
        continue;
      }
      if (meta.missing) continue;
      const key = name.slice(0, -5);
      let data = null;
      try {
        data = await (await dir.getFileHandle(`${key}.bin`)).getFile();
      } catch {}
      const e = { url: meta.url, bytes: data ? data.size : 0, total: meta.total ?? null, complete: !!meta.complete && !!data && data.size === meta.total };
      if (sha256 && data) {
        const d = await crypto.subtle.digest("SHA-256", await data.arrayBuffer());
        e.sha256 = [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
      }
      out.push(e);
    }
    return out.sort((a, b) => a.url.localeCompare(b.url));
  }

  /** Delete every cached file. */
  static async clearCache() {
    const root = await navigator.storage?.getDirectory?.();
    if (root) await root.removeEntry(CACHE_DIR, { recursive: true }).catch((e) => {
      if (e.name !== "NotFoundError") throw new Error(`Could not clear the cache (${e.message}); is a model still loading in another tab?`);
    });
  }

  // A worker that loads the model. A load that fails or is cancelled ends its worker (and
  // with it the downloads and the GPU device): what was downloaded stays in the cache.
  async #start(signal = null) {
    const { worker, url, shim } = startWorker(this.#options.assetBase);
    this.#worker = worker;
    worker.onmessage = (ev) => this.#onMessage(ev.data);
    worker.onerror = (ev) => {
      ev.preventDefault?.();
      this.#fail(`the sd-webgpu worker failed to start or crashed (${ev.message || "see the console"})${url ? `; worker URL ${url} (load's assetBase: it must hold ${WORKER_FILE}, its modules and wasm/${shim ? ", with CORS headers" : ""})` : ""}`);
    };
    const { onProgress, onDeviceLost, assetBase, ...rest } = this.#options;
    let onAbort = null;
    const aborted = new Promise((_, reject) => {
      onAbort = () => reject(abortError("load cancelled: what was downloaded stays in the browser cache"));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const r = await Promise.race([this.#call("load", { options: rest }, { onProgress }), aborted]);
      this.adapter = r.adapter;
      this.modelName = r.modelName;
      this.warnings = r.warnings;
      this.defaults = r.defaults;
      this.tinyVae = r.tinyVae;
      this.#lost = null;
    } catch (e) {
      worker.terminate();
      if (this.#worker === worker) this.#worker = null;
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (shim) URL.revokeObjectURL(shim);
    }
  }

  // The worker is gone (device lost, crash, or a cancelled LoRA download): pending calls
  // reject, and the next call starts a new worker (model and LoRAs from the cache).
  #fail(message, { notify = true } = {}) {
    const lost = !this.#lost && notify;
    this.#lost = message;
    this.#worker?.terminate();
    this.#worker = null;
    for (const p of this.#pending.values()) p.reject(new Error(`${message[0].toUpperCase()}${message.slice(1)}. Try again: the model reloads from the browser cache.`));
    this.#pending.clear();
    if (lost) this.#options.onDeviceLost?.(message);
  }

  #onMessage(m) {
    if (m.type === "device-lost") return this.#fail(m.message);
    const p = this.#pending.get(m.id);
    if (!p) return;
    switch (m.type) {
      case "progress":
        p.onProgress?.(m.progress);
        break;
      case "step":
        p.onStep?.({ step: m.step, steps: m.steps, preview: m.preview ? new ImageData(m.preview.rgba, m.preview.width, m.preview.height) : null });
        break;
      case "result":
        this.#pending.delete(m.id);
        p.resolve(m.value);
        break;
      case "error":
        this.#pending.delete(m.id);
        p.reject(toError(m));
        if (m.fatal) this.#fail(`the model's worker stopped after an internal error (${m.message})`);
        break;
    }
  }

  #call(type, payload = {}, hooks = {}) {
    if (!this.#worker) return Promise.reject(new Error("This model was unloaded: load it again."));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...hooks });
      this.#worker.postMessage({ id, type, ...payload });
    });
  }

  // After a lost device: a new worker, weights from the cache.
  async #ensure() {
    if (this.#lost === "unloaded") throw new Error("This model was unloaded: load it again.");
    if (!this.#lost) return;
    this.#loading ??= this.#start()
      .then(() => this.#reloadLoras())
      .finally(() => (this.#loading = null));
    await this.#loading;
  }

  // A new worker after a device loss: the LoRAs come back too (from the browser cache).
  async #reloadLoras() {
    const infos = [];
    for (const [name, { spec, options }] of this.#loraSources) {
      try {
        infos.push(await this.#call("loadLora", { options: { ...options, source: spec, name } }));
      } catch (e) {
        this.#loraSources.delete(name);
        this.warnings = [...this.warnings, `LoRA ${name} could not be loaded again after the GPU device was lost: ${e.message}`];
      }
    }
    this.loras = infos;
  }

  /** Load a LoRA (kohya / A1111 or diffusers / PEFT .safetensors) for this model: streamed
   *  and cached like the model's files. Resolves to its LoraInfo; it is merged only when a
   *  generation names it (`loras: [{ name, scale }]` or `<lora:name:scale>` in the prompt). */
  async loadLora(source, options = {}) {
    const { onProgress, signal, ...rest } = options || {};
    const spec = loraSpec(source);
    if (rest.name != null && (typeof rest.name !== "string" || !rest.name.trim())) throw new TypeError("loadLora: name must be a non-empty string");
    if (rest.revision != null && typeof rest.revision !== "string") throw new TypeError("loadLora: revision must be a string");
    if (signal?.aborted) throw abortError("LoRA load cancelled");
    await this.#ensure();
    const name = rest.name?.trim() ?? loraFileName(spec).replace(/\.safetensors$/i, "");
    const opts = { name, revision: rest.revision, cache: rest.cache ?? this.#options.cache };
    let onAbort = null;
    const aborted = new Promise((_, reject) => {
      onAbort = () => reject(abortError("LoRA load cancelled: the model's worker restarts (what was downloaded stays in the browser cache)"));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    let info;
    try {
      info = await Promise.race([this.#call("loadLora", { options: { ...opts, source: spec } }, { onProgress }), aborted]);
    } catch (e) {
      // An aborted download cannot be stopped inside the worker: it restarts (model from the cache).
      if (e.name === "AbortError" && this.#worker) this.#fail("the LoRA load was cancelled", { notify: false });
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    this.#loraSources.delete(info.name);
    this.#loraSources.set(info.name, { spec, options: opts });
    this.loras = [...this.loras.filter((l) => l.name !== info.name), info];
    return info;
  }

  /** Remove a loaded LoRA: its weights are restored (exactly, from the kept base copies) and
   *  its GPU memory freed. */
  async removeLora(name) {
    if (typeof name !== "string") throw new TypeError("removeLora: name must be a string");
    await this.#ensure();
    const list = await this.#call("removeLora", { name });
    this.#loraSources.delete(name);
    this.loras = this.loras.filter((l) => list.some((x) => x.name === l.name));
    return list;
  }

  async generate(options) {
    const { onStep, signal, initImage, mask, preview, ...p } = options || {};
    if (signal?.aborted) throw abortError();
    if (typeof p.prompt !== "string") throw new TypeError("generate: prompt must be a string");
    for (const k of ["steps", "guidanceScale", "seed", "width", "height", "strength", "batch", "batchPos"]) {
      if (p[k] != null && (typeof p[k] !== "number" || !Number.isFinite(p[k]))) throw new TypeError(`generate: ${k} must be a finite number (got ${p[k]})`);
    }
    if (p.sampler != null && typeof p.sampler !== "string") throw new TypeError("generate: sampler must be a string");
    // SDXL: the second text encoder's prompts and the micro-conditioning.
    for (const k of ["negativePrompt", "prompt2", "negativePrompt2"]) {
      if (p[k] != null && typeof p[k] !== "string") throw new TypeError(`generate: ${k} must be a string`);
    }
    for (const [k, a, b, min] of [["originalSize", "width", "height", 1], ["targetSize", "width", "height", 1], ["cropsCoordsTopLeft", "top", "left", 0]]) {
      const v = p[k];
      if (v == null) continue;
      if (typeof v !== "object" || ![a, b].every((f) => Number.isInteger(v[f]) && v[f] >= min && v[f] <= 1 << 16)) {
        throw new TypeError(`generate: ${k} must be { ${a}, ${b} } with whole numbers${min ? " ≥ 1" : " ≥ 0"} (got ${JSON.stringify(v)})`);
      }
      p[k] = { [a]: v[a], [b]: v[b] };
    }
    if (p.batchPos != null) {
      const batch = p.batch ?? 1;
      if (!Number.isInteger(p.batchPos) || p.batchPos < 1 || p.batchPos > batch) throw new TypeError(`generate: batchPos must be a whole number from 1 to batch (${batch}) (got ${p.batchPos})`);
    }
    for (const [k, allowed] of [["decoder", ["vae", "tiny"]], ["timestepSpacing", ["leading", "linspace", "trailing"]], ["predictionType", ["epsilon", "v_prediction"]]]) {
      if (p[k] != null && !allowed.includes(p[k])) throw new TypeError(`generate: ${k} must be one of ${allowed.map((m) => `"${m}"`).join(", ")} (got ${JSON.stringify(p[k])})`);
    }
    if (p.decoder === "tiny" && !this.tinyVae) throw new TypeError('generate: decoder "tiny" needs a tiny VAE: StableDiffusion.load({ tinyVae: "madebyollin/taesd", ... })');
    if (p.promptWeighting != null && typeof p.promptWeighting !== "boolean") throw new TypeError(`generate: promptWeighting must be true or false (got ${JSON.stringify(p.promptWeighting)})`);
    if (p.loras != null) {
      if (!Array.isArray(p.loras)) throw new TypeError("generate: loras must be an array of { name, scale }");
      p.loras = p.loras.map((l, i) => {
        if (!l || typeof l.name !== "string") throw new TypeError(`generate: loras[${i}].name must be a string`);
        const scale = l.scale ?? 1;
        if (typeof scale !== "number" || !Number.isFinite(scale)) throw new TypeError(`generate: loras[${i}].scale must be a finite number (got ${l.scale})`);
        return { name: l.name, scale };
      });
    }
    if (mask != null && initImage == null) throw new TypeError("generate: mask needs an initImage to inpaint (white = repaint, black = keep)");
    if (p.pasteBack != null && typeof p.pasteBack !== "boolean") throw new TypeError(`generate: pasteBack must be true or false (got ${JSON.stringify(p.pasteBack)})`);
    if (p.resizeMode != null && !RESIZE_MODES.includes(p.resizeMode)) throw new TypeError(`generate: resizeMode must be one of ${RESIZE_MODES.map((m) => `"${m}"`).join(", ")} (got ${JSON.stringify(p.resizeMode)})`);
    await this.#ensure();
    const want = preview ?? !!onStep;
    let id;
    const abort = () => this.#worker?.postMessage({ type: "cancel", target: id });
    signal?.addEventListener("abort", abort, { once: true });
    try {
      const pr = this.#call("generate", { params: { ...p, preview: want }, initImage, mask }, { onStep });
      id = this.#nextId - 1;
      const out = await pr;
      return {
        images: out.images.map((o) => ({
          imageData: new ImageData(o.rgba, o.width, o.height),
          blob: new Blob([o.png], { type: "image/png" }),
          seed: o.seed,
          parameters: o.parameters,
          batchPos: o.batchPos,
        })),
        warnings: out.warnings,
        droppedTokens: out.droppedTokens,
        vaeUpcast: out.vaeUpcast,
        decoder: out.decoder,
        loras: out.loras,
        textEncoderReload: out.textEncoderReload,
      };
    } finally {
      signal?.removeEventListener("abort", abort);
    }
  }

  /** Memory figures: worker wasm memory, GPU bytes now and peak, weights. */
  async stats() {
    await this.#ensure();
    return this.#call("stats");
  }

  /** Free the GPU memory and end the worker. */
  async unload() {
    if (this.#worker && !this.#lost) await this.#call("unload").catch(() => {});
    this.#worker?.terminate();
    this.#worker = null;
    this.#lost = "unloaded";
  }

  /** Test hook: destroy the worker's GPU device, as a driver reset would. */
  async debugLoseDevice() {
    await this.#call("loseDevice");
  }
}

async function cacheDirectory(create) {
  try {
    const root = await navigator.storage.getDirectory();
    return await root.getDirectoryHandle(CACHE_DIR, { create });
  } catch {
    return null;
  }
}
