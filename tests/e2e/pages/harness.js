// Page-side half of the end-to-end tests, served at /__e2e__/harness.js next to the app
// (same origin, so the same Origin Private File System as the app). Uses only the public API
// of sd-webgpu.js (www/sd-webgpu.d.ts) plus the debugLoseDevice() test hook.
// The tests call window.e2e.* through page.evaluate and poll window.e2e state.

const errInfo = (e) => ({
  name: e && e.name ? String(e.name) : typeof e,
  message: e && e.message !== undefined ? String(e.message) : String(e),
  isDOMException: typeof DOMException !== "undefined" && e instanceof DOMException,
});

function blankness(img) {
  // img: ImageData. Returns { width, height, maxAlpha, range } (range: max-min over RGB values).
  if (!img || !img.data) return null;
  let lo = 255, hi = 0, maxAlpha = 0;
  const d = img.data;
  for (let i = 0; i < d.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      if (d[i + c] < lo) lo = d[i + c];
      if (d[i + c] > hi) hi = d[i + c];
    }
    if (d[i + 3] > maxAlpha) maxAlpha = d[i + 3];
  }
  return { width: img.width, height: img.height, maxAlpha, range: hi - lo };
}

const e2e = {
  ready: false,
  importError: null,
  StableDiffusion: null,
  sd: null,
  loadState: "idle",
  loadError: null,
  loadPromise: null,
  loadSeconds: null,
  // progress bookkeeping (onProgress may fire for every chunk: keep a summary)
  phases: [],          // distinct phases in order of first appearance
  phaseCounts: {},
  lastByPhase: {},
  retries: [],         // every "retry" event
  progressCount: 0,
  lastProgress: null,
  maxWasmMemoryBytes: 0,
  wasmSamples: 0,
  files: {},           // file -> { phases: [...], lastLoaded, total }
  deviceLost: [],

  resetProgress() {
    this.phases = [];
    this.phaseCounts = {};
    this.lastByPhase = {};
    this.retries = [];
    this.progressCount = 0;
    this.lastProgress = null;
    this.maxWasmMemoryBytes = 0;
    this.wasmSamples = 0;
    this.files = {};
  },

  onProgress(p) {
    const q = {};
    for (const k of ["phase", "file", "loaded", "total", "overallLoaded", "overallTotal", "bytesPerSecond", "etaSeconds", "attempt", "error", "status", "waitSeconds", "wasmMemoryBytes"]) {
      if (p[k] !== undefined) q[k] = p[k];
    }
    this.progressCount++;
    this.lastProgress = q;
    if (!this.phases.includes(q.phase)) this.phases.push(q.phase);
    this.phaseCounts[q.phase] = (this.phaseCounts[q.phase] || 0) + 1;
    this.lastByPhase[q.phase] = q;
    if (q.phase === "retry") this.retries.push(q);
    if (typeof q.wasmMemoryBytes === "number") {
      this.wasmSamples++;
      if (q.wasmMemoryBytes > this.maxWasmMemoryBytes) this.maxWasmMemoryBytes = q.wasmMemoryBytes;
    }
    if (q.file) {
      const f = (this.files[q.file] ||= { phases: [], lastLoaded: 0, total: null });
      if (!f.phases.includes(q.phase)) f.phases.push(q.phase);
      f.lastLoaded = q.loaded;
      f.total = q.total;
    }
  },

  progressSummary() {
    return {
      phases: this.phases,
      phaseCounts: this.phaseCounts,
      retries: this.retries.slice(0, 20),
      retryCount: this.retries.length,
      progressCount: this.progressCount,
      last: this.lastProgress,
      lastByPhase: this.lastByPhase,
      maxWasmMemoryBytes: this.maxWasmMemoryBytes,
      wasmSamples: this.wasmSamples,
      files: this.files,
    };
  },

  /** Starts StableDiffusion.load(opts) without waiting (poll loadState / await waitLoad()). */
  startLoad({ abortable = false, ...opts } = {}) {
    if (!this.StableDiffusion) throw new Error("sd-webgpu.js did not import: " + this.importError);
    this.resetProgress();
    this.loadState = "loading";
    this.loadError = null;
    this.loadSeconds = null;
    this.loadAbort = abortable ? new AbortController() : null;
    const t0 = performance.now();
    this.loadPromise = this.StableDiffusion.load({
      ...opts,
      ...(this.loadAbort ? { signal: this.loadAbort.signal } : {}),
      onProgress: (p) => this.onProgress(p),
      onDeviceLost: (m) => this.deviceLost.push(String(m)),
    }).then(
      (sd) => {
        this.sd = sd;
        this.loadState = "ready";
        this.loadSeconds = (performance.now() - t0) / 1000;
        return sd;
      },
      (e) => {
        this.loadState = "error";
        this.loadError = errInfo(e);
        this.loadSeconds = (performance.now() - t0) / 1000;
        throw e;
      },
    );
    this.loadPromise.catch(() => {}); // reported through loadState
    return true;
  },

  async waitLoad() {
    try {
      await this.loadPromise;
    } catch (e) {
      return { ok: false, error: errInfo(e), seconds: this.loadSeconds, progress: this.progressSummary() };
    }
    const sd = this.sd;
    return {
      ok: true,
      seconds: this.loadSeconds,
      modelName: sd.modelName,
      warnings: sd.warnings,
      adapter: sd.adapter,
      progress: this.progressSummary(),
    };
  },

  /** Aborts the load started with startLoad({ abortable: true }). */
  abortLoad() {
    this.loadAbort?.abort();
    return !!this.loadAbort;
  },

  /** Rewrites the module's cache entry of `url` (Origin Private File System, same origin):
   *  meta fields to change, and/or the cached bytes cut to `keepBytes`. */
  async editCacheEntry(url, { meta = {}, keepBytes = null } = {}) {
    const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(url));
    const key = [...new Uint8Array(h).slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("sd-webgpu-cache");
    const mh = await dir.getFileHandle(`${key}.json`);
    const old = JSON.parse(await (await mh.getFile()).text());
    const w = await mh.createWritable();
    await w.write(JSON.stringify({ ...old, ...meta }));
    await w.close();
    if (keepBytes != null) {
      const bw = await (await dir.getFileHandle(`${key}.bin`)).createWritable({ keepExistingData: true });
      await bw.truncate(keepBytes);
      await bw.close();
    }
    return { before: old, after: { ...old, ...meta } };
  },

  async load(opts) {
    this.startLoad(opts);
    return await this.waitLoad();
  },

  /**
   * Runs sd.generate(opts). abortAfter: abort (AbortController) inside the onStep callback
   * once that many steps have been reported. Returns a plain, serialisable summary.
   */
  async generate(opts, { abortAfter = null } = {}) {
    if (!this.sd) throw new Error("no model loaded");
    const ac = new AbortController();
    const steps = [];
    const t0 = performance.now();
    const o = {
      ...opts,
      onStep: (s) => {
        steps.push({ step: s.step, steps: s.steps, t: (performance.now() - t0) / 1000, preview: s.preview ? blankness(s.preview) : null, previewIsImageData: s.preview instanceof ImageData });
        if (abortAfter !== null && steps.length >= abortAfter) ac.abort();
      },
    };
    if (abortAfter !== null) o.signal = ac.signal;
    let res;
    try {
      res = await this.sd.generate(o);
    } catch (e) {
      return { ok: false, error: errInfo(e), steps, seconds: (performance.now() - t0) / 1000 };
    }
    const images = [];
    for (const img of res.images) {
      const png = new Uint8Array(await img.blob.arrayBuffer());
      images.push({
        width: img.imageData.width,
        height: img.imageData.height,
        pixels: Array.from(img.imageData.data),
        seed: img.seed,
        parameters: img.parameters,
        batchPos: img.batchPos,
        blobType: img.blob.type,
        pngSize: png.length,
        png: Array.from(png),
      });
    }
    return {
      ok: true,
      images,
      warnings: res.warnings,
      droppedTokens: res.droppedTokens,
      vaeUpcast: res.vaeUpcast,
      decoder: res.decoder,
      textEncoderReload: res.textEncoderReload,
      stats: await this.sd.stats(),
      steps,
      seconds: (performance.now() - t0) / 1000,
    };
  },
};

window.e2e = e2e;
try {
  const mod = await import("/sd-webgpu.js");
  e2e.StableDiffusion = mod.StableDiffusion;
  window.StableDiffusion = mod.StableDiffusion;
  if (typeof mod.StableDiffusion !== "function") e2e.importError = "sd-webgpu.js has no export StableDiffusion";
} catch (e) {
  e2e.importError = `${e && e.name}: ${e && e.message}`;
}
e2e.ready = true;
