// The sd-webgpu worker: one model per worker. It resolves the model's files, streams each
// one (network with HTTP Range resume, or the browser cache, or a local File) into the
// wasm module as the bytes arrive, and runs generations. Messages: see sd-webgpu.js.
import init, * as wasm from "./wasm/sd-webgpu.js";
import { LoadError, unreadableConfig, noWeights, imageSide, imagePixels, undecodableImage, loraError } from "./sd-webgpu-errors.js";
import { cacheDir } from "./sd-webgpu-cache.js";
import { COMPONENTS, XL_COMPONENTS, isXlUnet, describe, describeLora, streamFile } from "./sd-webgpu-sources.js";

const ready = init();

let memory = null; // the wasm instance's memory (its size is the peak: it never shrinks)
// With load({ evictTextEncoder }): where the text encoder's files are, to stream them back
// (from the browser cache) when a new prompt needs it.
let textEncoder = null;
// The browser cache of this model's load (null with load({ cache: false })): LoRA files go there too.
let cache = null;
const cancelled = new Set();

const wasmBytes = () => (memory ? memory.buffer.byteLength : 0);

// ---------------------------------------------------------------- progress
class Progress {
  constructor(post) {
    this.post = post;
    this.overallLoaded = 0;
    this.overallTotal = null;
    this.last = 0;
    this.rateBytes = 0;
    this.rateT0 = performance.now();
    this.rate = 0;
  }
  network(n) {
    this.rateBytes += n;
    const dt = (performance.now() - this.rateT0) / 1000;
    if (dt >= 0.5) {
      const r = this.rateBytes / dt;
      this.rate = this.rate ? 0.6 * this.rate + 0.4 * r : r;
      this.rateBytes = 0;
      this.rateT0 = performance.now();
    }
  }
  send(p, force = false) {
    const now = performance.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const remaining = this.overallTotal != null ? this.overallTotal - this.overallLoaded : null;
    const rate = p.phase === "download" ? this.rate : 0;
    this.post({
      phase: p.phase, file: p.file ?? null, loaded: p.loaded ?? 0, total: p.total ?? null,
      overallLoaded: this.overallLoaded, overallTotal: this.overallTotal,
      bytesPerSecond: rate, etaSeconds: rate > 0 && remaining != null ? remaining / rate : null,
      attempt: p.attempt, error: p.error, status: p.status, waitSeconds: p.waitSeconds, wasmMemoryBytes: wasmBytes(),
    });
  }
}

// Streams files of `src` into the wasm loader: [{ rel, size, component }] (component: the
// weight layout beginFile takes). Returns the bytes fed.
async function feedFiles(src, files) {
  let bytes = 0;
  for (const f of files) {
    wasm.beginFile(f.rel, f.size ?? undefined, f.component);
    await src.stream(f.rel, (chunk) => {
      bytes += chunk.length;
      wasm.feed(chunk);
    });
    wasm.endFile();
  }
  return bytes;
}

async function load(opts, post) {
  await ready.then((w) => (memory = w.memory));
  const progress = new Progress(post);
  const dir = opts.cache === false ? null : await cacheDir();
  cache = dir;
  if (dir) navigator.storage.persist?.().catch(() => {});
  const m = describe(opts.model, opts.revision, dir, progress);
  progress.send({ phase: "resolve", file: null }, true);
  let adapter;
  try {
    adapter = JSON.parse(await wasm.init(opts.dtype || "f16", opts.vaeDtype ?? undefined, opts.maxBindingBytes ?? undefined, (msg) => self.postMessage({ type: "device-lost", message: msg })));
  } catch (e) {
    throw new LoadError(String(e.message || e));
  }
  const src = m.source;
  // The weight files, per component.
  let plan;
  let texts = {};
  // SDXL (its UNet config says addition_embed_type "text_time"): text_encoder_2/ and
  // tokenizer_2/ too, and model_index.json (force_zeros_for_empty_prompt,
  // requires_aesthetics_score). Other models ask for none of these files.
  let xl = false;
  let modelIndex = null;
  if (m.single) {
    plan = [{ component: "checkpoint", rel: m.rel }];
    wasm.beginModel(undefined, undefined, undefined);
  } else {
    const readConfig = async (c) => {
      try {
        texts[c] = await src.text(`${c}/config.json`);
      } catch (e) {
        if (e.name === "QuotaExceededError" || e.name === "CorsError") throw e;
        throw unreadableConfig(m.name, c, e);
      }
    };
    for (const c of ["unet", "vae", "text_encoder"]) await readConfig(c);
    xl = isXlUnet(texts.unet);
    if (xl) {
      await readConfig("text_encoder_2");
      modelIndex = await src.text("model_index.json", true);
    }
    plan = [];
    for (const c of xl ? XL_COMPONENTS : COMPONENTS) {
      let files = null;
      for (const [file, isIndex] of JSON.parse(wasm.weightCandidates(c, opts.variant ?? undefined))) {
        const rel = `${c}/${file}`;
        if (!(await src.exists(rel))) continue;
        files = isIndex ? wasm.shardsOfIndex(rel, await src.text(rel)).map((s) => `${c}/${s}`) : [rel];
        break;
      }
      if (!files) {
        const pickle = `${c}/${c.startsWith("text_encoder") ? "model" : "diffusion_pytorch_model"}.bin`;
        if (await src.exists(pickle)) wasm.refusePickle(pickle);
        throw noWeights(m.name, c);
      }
      for (const rel of files) plan.push({ component: c, rel });
    }
    wasm.beginModel(texts.unet, texts.vae, texts.text_encoder, texts.text_encoder_2, modelIndex ?? undefined);
  }
  // Tokenizer and scheduler (optional: built-in CLIP BPE and diffusers' defaults).
  let tokenizer = null;
  let tokenizer2 = null;
  let scheduler = null;
  if (!m.single) {
    // A tokenizer folder's files (JSON for finishModel), or null without vocabulary files.
    const readTokenizer = async (dir) => {
      const tj = await src.text(`${dir}/tokenizer.json`, true);
      const vocab = tj ? null : await src.text(`${dir}/vocab.json`, true);
      const merges = vocab ? await src.text(`${dir}/merges.txt`, true) : null;
      const config = await src.text(`${dir}/tokenizer_config.json`, true);
      // transformers: special_tokens_map.json's tokens win (SD-2.x and SDXL's tokenizer_2 pad with "!").
      const specialTokensMap = await src.text(`${dir}/special_tokens_map.json`, true);
      return tj || (vocab && merges) ? JSON.stringify({ tokenizer_json: tj, vocab, merges, config, special_tokens_map: specialTokensMap }) : null;
    };
    tokenizer = await readTokenizer("tokenizer");
    // SDXL's tokenizer_2 (without its files: CLIP's BPE padded with "!", as stabilityai's).
    if (xl) tokenizer2 = await readTokenizer("tokenizer_2");
    scheduler = await src.text("scheduler/scheduler_config.json", true);
  }
  // The tiny VAE (TAESD): a diffusers AutoencoderTiny folder / repo (config.json +
  // diffusion_pytorch_model[.fp16].safetensors) or madebyollin's taesd_encoder/decoder.safetensors.
  let tiny = null;
  if (opts.tinyVae) {
    // Files (a picked TAESD folder, or its files): found by their names, wherever they are.
    const t = opts.tinyVae.kind === "files" ? tinyVaeFiles(opts.tinyVae.entries, progress) : describe(opts.tinyVae, undefined, dir, progress);
    let config = null;
    let files;
    if (t.single) {
      throw new LoadError(`${t.name}: give the tiny VAE's folder or repo (a diffusers AutoencoderTiny such as madebyollin/taesd, or a folder with taesd_encoder.safetensors and taesd_decoder.safetensors), not one file`);
    } else if (await t.source.exists("config.json")) {
      config = await t.source.text("config.json");
      const v = opts.variant ? `diffusion_pytorch_model.${opts.variant}.safetensors` : null;
      files = [{ rel: v && (await t.source.exists(v)) ? v : "diffusion_pytorch_model.safetensors", layout: "taesd" }];
    } else if (await t.source.exists("taesd_decoder.safetensors")) {
      files = [{ rel: "taesd_encoder.safetensors", layout: "taesd_encoder" }, { rel: "taesd_decoder.safetensors", layout: "taesd_decoder" }];
    } else {
      throw new LoadError(`${t.name}: not a tiny VAE: no config.json (diffusers AutoencoderTiny) and no taesd_encoder.safetensors / taesd_decoder.safetensors`);
    }
    tiny = { t, config, files, sizes: await Promise.all(files.map((f) => t.source.size(f.rel))) };
  }
  const sizes = await Promise.all(plan.map((p) => src.size(p.rel)));
  const allSizes = sizes.concat(tiny ? tiny.sizes : []);
  progress.overallTotal = allSizes.every((s) => s != null) ? allSizes.reduce((a, b) => a + b, 0) : null;
  const files = plan.map((p, i) => ({ ...p, size: sizes[i] }));
  await feedFiles(src, files);
  progress.send({ phase: "build", file: null }, true);
  const evict = !!opts.evictTextEncoder && !m.single;
  const warnings = JSON.parse(wasm.finishModel(m.name, tokenizer ?? undefined, scheduler ?? undefined, evict, tokenizer2 ?? undefined));
  if (opts.evictTextEncoder && m.single) warnings.push("evictTextEncoder is not available for a single-file checkpoint (its text encoder is inside the one file): the text encoder stays loaded");
  // Both text encoders of an SDXL model are freed and streamed back together.
  textEncoder = evict ? { src, files: files.filter((f) => f.component === "text_encoder" || f.component === "text_encoder_2") } : null;
  if (tiny) {
    wasm.beginTinyVae(tiny.config ?? undefined);
    await feedFiles(tiny.t.source, tiny.files.map((f, i) => ({ rel: f.rel, size: tiny.sizes[i], component: f.layout })));
    wasm.finishTinyVae(tiny.t.name);
  }
  progress.send({ phase: "ready", file: null }, true);
  return { adapter, modelName: m.name, warnings, defaults: JSON.parse(wasm.modelDefaults()), tinyVae: tiny ? tiny.t.name : null };
}

// A TAESD given as File objects: config.json + diffusion_pytorch_model[.fp16].safetensors, or
// taesd_encoder.safetensors + taesd_decoder.safetensors, by file name.
function tinyVaeFiles(entries, progress) {
  const byName = new Map(entries.map((e) => [e.file.name, e.file]));
  const folder = entries[0]?.path.includes("/") ? entries[0].path.split("/").slice(-2, -1)[0] : null;
  return {
    single: false,
    name: folder || "local tiny VAE",
    source: {
      exists: async (rel) => byName.has(rel),
      size: async (rel) => byName.get(rel)?.size ?? null,
      text: async (rel) => byName.get(rel).text(),
      stream: (rel, sink) => streamFile(byName.get(rel), rel, sink, progress),
    },
  };
}

// ---------------------------------------------------------------- LoRA
// A1111's name of a LoRA file: its file name without ".safetensors".
const loraName = (file) => file.replace(/\.safetensors$/i, "");

// Streams one LoRA file (URL through the cache with Range resume, or a File) into the model.
async function loadLora(opts, post) {
  const progress = new Progress(post);
  const l = describeLora(opts.source, opts.revision, opts.cache === false ? null : cache, progress);
  const name = opts.name ?? loraName(l.name);
  progress.send({ phase: "resolve", file: l.name }, true);
  const size = await l.size();
  progress.overallTotal = size;
  let info;
  try {
    wasm.beginLora(name, l.name, size ?? undefined);
    await l.stream((chunk) => wasm.feedLora(chunk));
    info = JSON.parse(wasm.finishLora());
  } catch (e) {
    wasm.abortLora(); // what of it is already on the GPU is freed
    // Download errors say what failed already; the module's (a broken file…) get its name.
    throw e instanceof LoadError || e.name !== "Error" ? e : loraError(l.name, e);
  }
  progress.send({ phase: "ready", file: l.name }, true);
  return info;
}

// ---------------------------------------------------------------- generation
// Width and height from a PNG's IHDR or a JPEG's first SOFn marker; null for other formats.
function sniffImageSize(b) {
  const u16 = (i) => (b[i] << 8) | b[i + 1];
  const u32 = (i) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && String.fromCharCode(...b.subarray(12, 16)) === "IHDR") {
    return { width: u32(16), height: u32(20) };
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    for (let i = 2; i + 9 < b.length; ) {
      if (b[i] !== 0xff) return null;
      const marker = b[i + 1];
      if (marker === 0xff) { i++; continue; }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
      // SOF0–SOF15 except DHT (C4), JPG (C8), DAC (CC): [len][precision][height][width]
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return { width: u16(i + 7), height: u16(i + 5) };
      i += 2 + u16(i + 2);
    }
  }
  return null;
}

// The start image's size is checked (the Rust limits) before its pixels are copied anywhere.
function checkImageSize(width, height) {
  const { maxSide, maxPixels } = JSON.parse(wasm.inputImageLimits());
  if (!(width >= 1 && height >= 1 && width <= maxSide && height <= maxSide)) {
    throw imageSide(width, height, maxSide);
  }
  if (width * height > maxPixels) {
    throw imagePixels(width, height, maxPixels);
  }
}

async function imageRgba(img) {
  if (!img) return null;
  let bitmap = img;
  if (typeof ImageData !== "undefined" && img instanceof ImageData) {
    checkImageSize(img.width, img.height);
    return { rgba: new Uint8Array(img.data.buffer.slice(0)), width: img.width, height: img.height };
  }
  if (img instanceof Blob) {
    // PNG and JPEG say their size in their first bytes: a huge image is refused before the
    // browser decodes it.
    const dims = sniffImageSize(new Uint8Array(await img.slice(0, 1 << 16).arrayBuffer()));
    if (dims) checkImageSize(dims.width, dims.height);
    try {
      bitmap = await createImageBitmap(img);
    } catch {
      throw undecodableImage();
    }
  }
  checkImageSize(bitmap.width, bitmap.height);
  const c = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = c.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const d = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  return { rgba: new Uint8Array(d.data.buffer), width: d.width, height: d.height };
}

async function generate(id, p, initImage, maskImage) {
  const init = await imageRgba(initImage);
  const mask = await imageRgba(maskImage);
  const seed = p.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  const params = JSON.stringify({ ...p, seed, preview: !!p.preview });
  // The text encoder was freed after the last prompt: stream it back (from the cache).
  let textEncoderReload = null;
  if (textEncoder && wasm.textEncoderNeeded(params)) {
    const t0 = performance.now();
    wasm.beginTextEncoder();
    const bytes = await feedFiles(textEncoder.src, textEncoder.files);
    wasm.finishTextEncoder();
    textEncoderReload = { ms: performance.now() - t0, bytes };
  }
  const onStep = (step, steps, pv) => {
    let preview = null;
    const transfer = [];
    if (pv) {
      preview = { width: pv.width, height: pv.height, rgba: pv.rgba };
      transfer.push(pv.rgba.buffer);
    }
    self.postMessage({ id, type: "step", step, steps, preview }, transfer);
    return !cancelled.has(id);
  };
  const out = await wasm.generate(params, init?.rgba, init?.width ?? 0, init?.height ?? 0, mask?.rgba, mask?.width ?? 0, mask?.height ?? 0, onStep);
  return {
    images: Array.from(out.images, (o) => ({ width: o.width, height: o.height, rgba: o.rgba, png: o.png, seed: o.seed, parameters: o.parameters, batchPos: o.batchPos })),
    warnings: Array.from(out.warnings ?? [], String),
    droppedTokens: { prompt: out.droppedTokens?.prompt ?? 0, negativePrompt: out.droppedTokens?.negativePrompt ?? 0 },
    vaeUpcast: !!out.vaeUpcast,
    decoder: out.decoder,
    loras: Array.from(out.loras ?? [], (l) => ({ name: l.name, scale: l.scale })),
    textEncoderReload,
  };
}

// ---------------------------------------------------------------- messages
self.onmessage = async (ev) => {
  const { id, type } = ev.data;
  const reply = (value, transfer = []) => self.postMessage({ id, type: "result", value }, transfer);
  try {
    switch (type) {
      case "load":
        reply(await load(ev.data.options, (p) => self.postMessage({ id, type: "progress", progress: p })));
        break;
      case "generate": {
        const out = await generate(id, ev.data.params, ev.data.initImage, ev.data.mask);
        cancelled.delete(id);
        reply(out, out.images.flatMap((i) => [i.rgba.buffer, i.png.buffer]));
        break;
      }
      case "loadLora":
        reply(await loadLora(ev.data.options, (p) => self.postMessage({ id, type: "progress", progress: p })));
        break;
      case "removeLora":
        wasm.removeLora(ev.data.name);
        reply(JSON.parse(wasm.loras()));
        break;
      case "loras":
        reply(JSON.parse(wasm.loras()));
        break;
      case "cancel":
        cancelled.add(ev.data.target);
        break;
      case "stats":
        reply({ ...JSON.parse(wasm.stats()), wasmMemoryBytes: wasmBytes() });
        break;
      case "unload":
        wasm.unload();
        reply(null);
        break;
      case "loseDevice":
        wasm.loseDevice();
        reply(null);
        break;
      default:
        throw new Error(`unknown message ${type}`);
    }
  } catch (e) {
    cancelled.delete(id);
    // A Rust panic or a trap leaves the wasm instance unusable: the module starts a new worker.
    const fatal = e instanceof WebAssembly.RuntimeError;
    self.postMessage({ id, type: "error", name: e?.name || "Error", message: String(e?.message || e), fatal });
  }
};
