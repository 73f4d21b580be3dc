// The sd-webgpu worker: one model per worker. It resolves the model's files, streams each
// one (network with HTTP Range resume, or the browser cache, or a local File) into the
// wasm module as the bytes arrive, and runs generations. Messages: see sd-webgpu.js.
import init, * as wasm from "./wasm/sd-webgpu.js";

const ready = init();
let memory = null; // the wasm instance's memory (its size is the peak: it never shrinks)
const cancelled = new Set();
const wasmBytes = () => (memory ? memory.buffer.byteLength : 0);

const CACHE_DIR = "sd-webgpu-cache";
const RETRIES = 10;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- errors
class LoadError extends Error {
  constructor(message, name = "Error") {
    super(message);
    this.name = name;
  }
}
const mb = (n) => `${(n / 2 ** 20).toFixed(1)} MB`;

// ---------------------------------------------------------------- cache (OPFS)
// Per URL: <key>.json {url, total, etag, complete, missing} and <key>.bin (the bytes so far,
// always a prefix of the resource with that etag).
async function cacheDir() {
  if (!navigator.storage?.getDirectory) return null;
  try {
    return await navigator.storage.getDirectory().then((root) => root.getDirectoryHandle(CACHE_DIR, { create: true }));
  } catch {
    return null;
  }
}

async function keyOf(url) {
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(url));
  return [...new Uint8Array(h).slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function readMeta(dir, key) {
  try {
    const f = await (await dir.getFileHandle(`${key}.json`)).getFile();
    return JSON.parse(await f.text());
  } catch {
    return null;
  }
}

async function writeMeta(dir, key, meta) {
  const h = await (await dir.getFileHandle(`${key}.json`, { create: true })).createSyncAccessHandle();
  try {
    const bytes = new TextEncoder().encode(JSON.stringify(meta));
    h.truncate(0);
    h.write(bytes, { at: 0 });
    h.flush();
  } finally {
    h.close();
  }
}

async function removeEntry(dir, key) {
  for (const ext of [".json", ".bin"]) await dir.removeEntry(key + ext).catch(() => {});
}

// Chromium reports a full origin quota on OPFS writes as QuotaExceededError or "No space available".
const isQuota = (e) => e && (e.name === "QuotaExceededError" || /quota|no space/i.test(String(e.message)));
const quotaError = (file, needed, free) =>
  new LoadError(
    `Not enough browser storage to cache the model (${file}${needed >= 2 ** 20 ? ` needs ${mb(needed)}` : ""}${free != null ? `, ${mb(free)} free` : ""}). ` +
      `Free space (Clear cache, or site data in the browser settings), or load without caching ({ cache: false }; the page's "Continue without caching").`,
    "QuotaExceededError",
  );

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

// ---------------------------------------------------------------- sources
// A source answers exists(rel), size(rel), text(rel) and stream(rel, sink) for paths
// relative to the model's root ("unet/config.json").

class UrlSource {
  constructor(base, cache, progress) {
    this.base = base;
    this.cache = cache; // OPFS dir or null
    this.progress = progress;
  }
  url(rel) {
    return new URL(rel, this.base).href;
  }
  // Existence and size, remembered in the cache (also "missing") so a second visit asks
  // nothing, and for this load (one request per file).
  probe(rel) {
    this.probes ??= new Map();
    if (!this.probes.has(rel)) this.probes.set(rel, this.probeOnce(rel));
    return this.probes.get(rel);
  }
  async probeOnce(rel) {
    const url = this.url(rel);
    const key = this.cache && (await keyOf(url));
    const meta = this.cache && (await readMeta(this.cache, key));
    if (meta) return meta.missing ? null : { total: meta.total };
    const r = await fetchRetry(url, { method: "HEAD" }, this.progress, rel);
    if (r.status === 404) {
      if (this.cache) await writeMeta(this.cache, key, { url, missing: true }).catch(() => {});
      return null;
    }
    if (!r.ok) throw httpError(url, r);
    const total = Number(r.headers.get("content-length")) || null;
    return { total, etag: r.headers.get("etag") };
  }
  async exists(rel) {
    return (await this.probe(rel)) != null;
  }
  async size(rel) {
    return (await this.probe(rel))?.total ?? null;
  }
  async text(rel, optional = false) {
    if (optional && !(await this.exists(rel))) return null;
    const parts = [];
    await this.stream(rel, (c) => parts.push(c), { quiet: true });
    return new TextDecoder().decode(concat(parts));
  }
  async stream(rel, sink, { quiet = false } = {}) {
    const url = this.url(rel);
    await streamUrl(url, rel, this.cache, sink, this.progress, quiet);
  }
}

class FileSource {
  constructor(entries, progress) {
    this.progress = progress;
    // entries: [{file, path}] with paths relative to a folder the user picked; find the
    // model root (the folder holding unet/config.json).
    const paths = entries.map((e) => e.path.replace(/^\/+/, ""));
    const cfg = paths.find((p) => p === "unet/config.json" || p.endsWith("/unet/config.json"));
    if (!cfg) throw new LoadError("The chosen folder is not a diffusers model: it has no unet/config.json. Pick the model's top folder (with unet/, vae/, text_encoder/), or a single .safetensors checkpoint.");
    const root = cfg.slice(0, cfg.length - "unet/config.json".length);
    this.files = new Map();
    entries.forEach((e, i) => {
      if (paths[i].startsWith(root)) this.files.set(paths[i].slice(root.length), e.file);
    });
    this.name = root.replace(/\/$/, "").split("/").pop() || "local model";
  }
  async exists(rel) {
    return this.files.has(rel);
  }
  async size(rel) {
    return this.files.get(rel)?.size ?? null;
  }
  async text(rel, optional = false) {
    const f = this.files.get(rel);
    if (!f) {
      if (optional) return null;
      throw new LoadError(`${rel} is missing from the chosen folder`);
    }
    return f.text();
  }
  async stream(rel, sink) {
    await streamFile(this.files.get(rel), rel, sink, this.progress);
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function httpError(url, r, extra = "") {
  const hint = r.status === 401 || r.status === 403
    ? " (this repository needs a login or accepted terms: download the files and open them with the file picker)"
    : r.status === 404 ? " (not found)" : "";
  return new LoadError(`${url}: HTTP ${r.status} ${r.statusText}${hint}${extra}`);
}

// Answers worth another try: rate limits, timeouts and server errors of busy mirrors and CDNs.
const TRANSIENT = new Set([408, 425, 429, 500, 502, 503, 504]);
const MAX_RETRY_AFTER_MS = 60_000;
const backoff = (attempt) => Math.min(1000 * 2 ** (attempt - 1), 15000);

// The wait a Retry-After header asks for (seconds or an HTTP date), at most a minute; null
// without one (or when CORS hides it: the host must list it in Access-Control-Expose-Headers).
function retryAfterMs(r) {
  const v = r.headers.get("retry-after");
  if (!v) return null;
  const s = Number(v.trim());
  const ms = Number.isFinite(s) ? s * 1000 : Date.parse(v) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS) : null;
}

// A fetch that fails outright (TypeError) for another origin is either the network or a host
// that does not allow cross-origin requests. A no-cors HEAD tells them apart at once: it
// reaches a host that is up whatever its CORS headers (the answer is opaque to us).
async function corsRefused(url) {
  if (new URL(url).origin === self.location.origin) return false;
  try {
    await fetch(url, { method: "HEAD", mode: "no-cors", cache: "no-store" });
    return true;
  } catch {
    return false;
  }
}

function corsError(url) {
  const host = new URL(url).host;
  return new LoadError(
    `${host} does not allow cross-origin requests (CORS), so this page cannot download ${url} from it. ` +
      "Download the model's files and open them with the folder picker, or serve them from a host that sends Access-Control-Allow-Origin.",
    "CorsError",
  );
}

const networkError = (url, e, kept) =>
  new LoadError(`${url}: the download failed after ${RETRIES} attempts (${e.message}). Check the connection, then load again: ${kept}.`);

// fetch() for small requests (HEAD, configs): network errors and transient answers (429, 5xx)
// are retried with backoff, honouring Retry-After; other answers are returned as they are.
async function fetchRetry(url, init, progress, file) {
  for (let attempt = 1; ; attempt++) {
    let r;
    try {
      r = await fetch(url, { cache: "no-store", ...init });
    } catch (e) {
      if (await corsRefused(url)) throw corsError(url);
      if (attempt >= RETRIES) throw networkError(url, e, "what was downloaded is kept");
      progress?.send({ phase: "retry", file, attempt, error: String(e.message || e), waitSeconds: backoff(attempt) / 1000 }, true);
      await sleep(backoff(attempt));
      continue;
    }
    if (!TRANSIENT.has(r.status)) return r;
    r.body?.cancel().catch(() => {});
    if (attempt >= RETRIES) throw httpError(url, r, ` (still after ${RETRIES} attempts)`);
    const wait = retryAfterMs(r) ?? backoff(attempt);
    progress?.send({ phase: "retry", file, attempt, error: `HTTP ${r.status}`, status: r.status, waitSeconds: wait / 1000 }, true);
    await sleep(wait);
  }
}

async function streamFile(file, rel, sink, progress) {
  const total = file.size;
  let loaded = 0;
  const reader = file.stream().getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    sink(value);
    loaded += value.length;
    if (progress) {
      progress.overallLoaded += value.length;
      progress.send({ phase: "cache", file: rel, loaded, total });
    }
  }
}

// Stream `url` into `sink`, through the cache when there is one: a complete entry is read
// from disk; a partial one is continued with `Range: bytes=N-` when the server still has the
// file it began with (same ETag and length); a connection that drops is retried with a Range
// from the last byte received; 429 / 5xx answers are retried, honouring Retry-After.
// `quiet` (configs, tokenizer files): only "retry" events are reported, no byte counts.
async function streamUrl(url, rel, dir, sink, progress, quiet = false) {
  const key = dir ? await keyOf(url) : null;
  let meta = dir ? await readMeta(dir, key) : null;
  if (meta?.missing) meta = null;
  let handle = null;
  let caching = !!dir;
  let pos = 0; // bytes given to the sink
  let total = meta?.total ?? null;
  let etag = meta?.etag ?? null;
  const report = (phase, extra = {}) => {
    if (!quiet || phase === "retry") progress?.send({ phase, file: rel, loaded: pos, total, ...extra }, phase === "retry");
  };
  const give = (chunk, phase) => {
    sink(chunk);
    pos += chunk.length;
    if (progress && !quiet) {
      progress.overallLoaded += chunk.length;
      if (phase === "download") progress.network(chunk.length);
    }
    report(phase);
  };
  try {
    if (dir) {
      const fh = await dir.getFileHandle(`${key}.bin`, { create: true });
      if (meta?.complete) {
        const f = await fh.getFile();
        if (f.size === meta.total) {
          const reader = f.stream().getReader();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            give(value, "cache");
          }
          report("cache");
          return;
        }
        meta = null; // a complete entry of the wrong size: start again
      }
      try {
        handle = await fh.createSyncAccessHandle();
      } catch (e) {
        // Another tab is downloading this file into the cache: fetch it without caching.
        if (e.name !== "NoModificationAllowedError") throw e;
        handle = null;
        meta = null;
      }
      if (handle && !meta) handle.truncate(0);
    }
    let cached = handle ? handle.getSize() : 0;
    let attempt = 0;
    let prefixFed = false;
    // Resuming from the cache: give the stored prefix first.
    const feedPrefix = () => {
      const f = new Uint8Array(Math.max(1, Math.min(cached, 8 << 20)));
      for (let at = 0; at < cached; ) {
        const n = handle.read(f.subarray(0, Math.min(f.length, cached - at)), { at });
        give(f.slice(0, n), "cache");
        at += n;
      }
      prefixFed = true;
    };
    // The cached prefix belongs to the file with the stored ETag and length. Each answer is
    // checked against them here rather than with If-Range, which is no CORS-safelisted
    // header and would cost a preflight per request on another origin.
    const changedOnServer = (r, size) => {
      const e = r.headers.get("etag");
      return !!((etag && e && e !== etag) || (total != null && size != null && size !== total));
    };
    const startOver = async (why) => {
      if (prefixFed) {
        // Bytes of the old file are already in the model: this load cannot continue.
        handle?.truncate(0);
        if (dir) await removeEntry(dir, key);
        throw new LoadError(`${url} changed on the server during the download (${why}); load the model again.`);
      }
      handle?.truncate(0);
      cached = 0;
      meta = null;
      etag = null;
      total = null;
      report("retry", { attempt, error: `the file on the server is not the one in the cache (${why}): downloading it again` });
    };
    for (;;) {
      const start = prefixFed ? pos : cached;
      const headers = start > 0 ? { Range: `bytes=${start}-` } : {};
      let r;
      try {
        r = await fetch(url, { cache: "no-store", headers });
      } catch (e) {
        if (await corsRefused(url)) throw corsError(url);
        if (++attempt >= RETRIES) throw networkError(url, e, `the ${mb(pos)} downloaded are kept`);
        report("retry", { attempt, error: String(e.message || e), waitSeconds: backoff(attempt) / 1000 });
        await sleep(backoff(attempt));
        continue;
      }
      if (TRANSIENT.has(r.status)) {
        r.body?.cancel().catch(() => {});
        if (++attempt >= RETRIES) throw httpError(url, r, ` (still after ${RETRIES} attempts; the ${mb(pos)} downloaded are kept)`);
        const wait = retryAfterMs(r) ?? backoff(attempt);
        report("retry", { attempt, error: `HTTP ${r.status}`, status: r.status, waitSeconds: wait / 1000 });
        await sleep(wait);
        continue;
      }
      if (r.status === 416 && start > 0) {
        // Asked from the end of the file: the cache holds every byte but was never marked
        // complete (the tab closed at the last moment). Complete if the length is the file's.
        r.body?.cancel().catch(() => {});
        const m = /bytes \*\/(\d+)/.exec(r.headers.get("content-range") || "");
        const size = m ? Number(m[1]) : null;
        if (!prefixFed && handle && !changedOnServer(r, size) && (size ?? total) === start) {
          total = start;
          feedPrefix();
          report("cache");
          break;
        }
        await startOver(`416 for bytes=${start}-, file length ${size ?? "not given"}`);
        continue;
      }
      if (!r.ok) throw httpError(url, r);
      let skip = 0;
      if (r.status === 206) {
        // Content-Range may be hidden from scripts (CORS without Access-Control-Expose-Headers):
        // then the 206 is taken as the range asked for.
        const cr = r.headers.get("content-range");
        const m = /bytes (\d+)-\d+\/(\d+|\*)/.exec(cr || "");
        if (cr && (!m || Number(m[1]) !== start)) throw new LoadError(`${url}: the server answered a range request with the wrong range (${cr})`);
        const size = m && m[2] !== "*" ? Number(m[2]) : null;
        if (changedOnServer(r, size)) {
          r.body?.cancel().catch(() => {});
          await startOver(`ETag ${r.headers.get("etag") ?? "?"} vs ${etag ?? "?"}, length ${size ?? "?"} vs ${total ?? "?"}`);
          continue;
        }
        if (size != null) total = size;
      } else {
        // A full response: no range asked, or the server ignored it.
        const newTotal = Number(r.headers.get("content-length")) || null;
        if (prefixFed && pos > 0 && changedOnServer(r, newTotal)) {
          r.body?.cancel().catch(() => {});
          await startOver(`ETag ${r.headers.get("etag") ?? "?"} vs ${etag ?? "?"}`);
        }
        if (!prefixFed) {
          // Nothing given yet: drop the cached prefix and take the whole response.
          if (handle) handle.truncate(0);
          cached = 0;
          prefixFed = true;
        } else {
          skip = pos; // the same file from the start: skip what we already have
        }
        total = newTotal;
      }
      etag = r.headers.get("etag") || etag;
      if (handle && !meta) {
        meta = { url, total, etag, complete: false };
        if (total != null) {
          const est = await navigator.storage.estimate?.().catch(() => null);
          const free = est ? est.quota - est.usage : null;
          if (free != null && free < total - start) throw quotaError(rel, total - start, free);
        }
        await writeMeta(dir, key, meta);
      }
      if (!prefixFed) feedPrefix();
      const reader = r.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          let chunk = value;
          if (skip > 0) {
            const s = Math.min(skip, chunk.length);
            skip -= s;
            chunk = chunk.subarray(s);
            if (!chunk.length) continue;
          }
          if (handle && caching) {
            try {
              handle.write(chunk, { at: pos });
            } catch (e) {
              if (isQuota(e)) throw quotaError(rel, (total ?? pos) - pos, null);
              throw e;
            }
          }
          attempt = 0;
          give(chunk, "download");
        }
      } catch (e) {
        if (e instanceof LoadError) throw e;
        if (++attempt >= RETRIES) throw networkError(url, e, `the ${mb(pos)} downloaded are kept`);
        handle?.flush();
        report("retry", { attempt, error: String(e.message || e), waitSeconds: backoff(attempt) / 1000 });
        await sleep(backoff(attempt));
        continue;
      }
      if (total != null && pos !== total) {
        if (++attempt >= RETRIES) throw new LoadError(`${url}: the server sent ${pos} of ${total} bytes`);
        report("retry", { attempt, error: "the connection closed early", waitSeconds: backoff(attempt) / 1000 });
        await sleep(backoff(attempt));
        continue;
      }
      break;
    }
    if (handle) {
      handle.flush();
      if (handle.getSize() !== pos) throw new LoadError(`${url}: the cache holds ${handle.getSize()} bytes after writing ${pos}`);
      handle.close();
      handle = null;
      await writeMeta(dir, key, { url, total: pos, etag, complete: true });
    }
  } catch (e) {
    if (handle) {
      try {
        handle.flush();
        handle.close();
      } catch {}
      handle = null;
    }
    if (isQuota(e)) {
      if (dir) await removeEntry(dir, key);
      if (!(e instanceof LoadError)) throw quotaError(rel, total != null ? total - pos : pos, null);
    }
    throw e;
  } finally {
    if (handle) handle.close();
  }
}

// ---------------------------------------------------------------- model resolution
const COMPONENTS = ["text_encoder", "unet", "vae"];

// What a model spec names: {kind: "url", base | file} or {kind: "files", entries}.
function describe(model, revision, cache, progress) {
  if (model.kind === "files") {
    const entries = model.entries;
    const single = entries.filter((e) => /\.safetensors$/i.test(e.path));
    if (entries.length === 1 || (single.length === 1 && !entries.some((e) => e.path.includes("/")))) {
      const e = single[0] || entries[0];
      wasm.refusePickle(e.file.name);
      return { single: true, name: e.file.name, source: { exists: async () => true, size: async () => e.file.size, stream: (rel, sink) => streamFile(e.file, e.file.name, sink, progress) }, rel: e.file.name };
    }
    const src = new FileSource(entries, progress);
    return { single: false, name: src.name, source: src };
  }
  // model.url is null for a Hugging Face repo id.
  const repo = model.url == null;
  let url = repo ? `https://huggingface.co/${model.spec}/resolve/${encodeURIComponent(revision || "main")}/` : model.url;
  wasm.refusePickle(url.split("?")[0]);
  if (/\.safetensors(\?|$)/i.test(url)) {
    const name = decodeURIComponent(url.split("?")[0].split("/").pop());
    const src = new UrlSource(url, cache, progress);
    return { single: true, name, source: src, rel: url };
  }
  if (!url.endsWith("/")) url += "/";
  const name = repo ? model.spec : decodeURIComponent(new URL(url).pathname.split("/").filter(Boolean).pop() || new URL(url).host);
  return { single: false, name, source: new UrlSource(url, cache, progress) };
}

async function load(opts, post) {
  await ready.then((w) => (memory = w.memory));
  const progress = new Progress(post);
  const dir = opts.cache === false ? null : await cacheDir();
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
  if (m.single) {
    plan = [{ component: "checkpoint", rel: m.rel }];
    wasm.beginModel(undefined, undefined, undefined);
  } else {
    for (const c of ["unet", "vae", "text_encoder"]) {
      try {
        texts[c] = await src.text(`${c}/config.json`);
      } catch (e) {
        if (e.name === "QuotaExceededError" || e.name === "CorsError") throw e;
        throw new LoadError(`${m.name}: cannot read ${c}/config.json (${e.message}). Is this a diffusers Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)?`);
      }
    }
    plan = [];
    for (const c of COMPONENTS) {
      let files = null;
      for (const [file, isIndex] of JSON.parse(wasm.weightCandidates(c, opts.variant ?? undefined))) {
        const rel = `${c}/${file}`;
        if (!(await src.exists(rel))) continue;
        files = isIndex ? wasm.shardsOfIndex(rel, await src.text(rel)).map((s) => `${c}/${s}`) : [rel];
        break;
      }
      if (!files) {
        const pickle = `${c}/${c === "text_encoder" ? "model" : "diffusion_pytorch_model"}.bin`;
        if (await src.exists(pickle)) wasm.refusePickle(pickle);
        throw new LoadError(`${m.name}: no ${c} weights (.safetensors) found in ${c}/`);
      }
      for (const rel of files) plan.push({ component: c, rel });
    }
    wasm.beginModel(texts.unet, texts.vae, texts.text_encoder);
  }
  // Tokenizer and scheduler (optional: built-in CLIP BPE and diffusers' defaults).
  let tokenizer = null;
  let scheduler = null;
  if (!m.single) {
    const tj = await src.text("tokenizer/tokenizer.json", true);
    const vocab = tj ? null : await src.text("tokenizer/vocab.json", true);
    const merges = vocab ? await src.text("tokenizer/merges.txt", true) : null;
    const config = await src.text("tokenizer/tokenizer_config.json", true);
    if (tj || (vocab && merges)) tokenizer = JSON.stringify({ tokenizer_json: tj, vocab, merges, config });
    scheduler = await src.text("scheduler/scheduler_config.json", true);
  }
  const sizes = await Promise.all(plan.map((p) => src.size(p.rel)));
  progress.overallTotal = sizes.every((s) => s != null) ? sizes.reduce((a, b) => a + b, 0) : null;
  for (let i = 0; i < plan.length; i++) {
    const { component, rel } = plan[i];
    wasm.beginFile(rel, sizes[i] ?? undefined, component);
    await src.stream(rel, (chunk) => wasm.feed(chunk));
    wasm.endFile();
  }
  progress.send({ phase: "build", file: null }, true);
  const warnings = JSON.parse(wasm.finishModel(m.name, tokenizer ?? undefined, scheduler ?? undefined));
  progress.send({ phase: "ready", file: null }, true);
  return { adapter, modelName: m.name, warnings };
}

// ---------------------------------------------------------------- generation
async function imageRgba(img) {
  if (!img) return null;
  let bitmap = img;
  if (typeof ImageData !== "undefined" && img instanceof ImageData) return { rgba: new Uint8Array(img.data.buffer.slice(0)), width: img.width, height: img.height };
  if (img instanceof Blob) {
    try {
      bitmap = await createImageBitmap(img);
    } catch {
      throw new LoadError("initImage: the file is not an image the browser can decode (use PNG or JPEG)");
    }
  }
  const c = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = c.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const d = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  return { rgba: new Uint8Array(d.data.buffer), width: d.width, height: d.height };
}

async function generate(id, p, initImage) {
  const init = await imageRgba(initImage);
  const seed = p.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  const params = JSON.stringify({ ...p, seed, preview: !!p.preview });
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
  const out = await wasm.generate(params, init?.rgba, init?.width ?? 0, init?.height ?? 0, onStep);
  return {
    images: Array.from(out.images, (o) => ({ width: o.width, height: o.height, rgba: o.rgba, png: o.png, seed: o.seed, parameters: o.parameters, batchPos: o.batchPos })),
    warnings: Array.from(out.warnings ?? [], String),
    droppedTokens: { prompt: out.droppedTokens?.prompt ?? 0, negativePrompt: out.droppedTokens?.negativePrompt ?? 0 },
    vaeUpcast: !!out.vaeUpcast,
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
        const out = await generate(id, ev.data.params, ev.data.initImage);
        cancelled.delete(id);
        reply(out, out.images.flatMap((i) => [i.rgba.buffer, i.png.buffer]));
        break;
      }
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
