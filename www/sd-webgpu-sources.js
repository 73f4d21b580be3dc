// sd-webgpu worker, sources: what a model spec names (Hugging Face repo id, folder URL,
// checkpoint URL, local files) and how its files are read (network through the cache, or
// File objects). The weight files of each component are chosen by the Rust code
// (weightCandidates / shardsOfIndex in src/web), the one implementation of that rule.
import * as wasm from "./wasm/sd-webgpu.js";
import { httpError, notDiffusersFolder, missingFromFolder } from "./sd-webgpu-errors.js";
import { keyOf, readMeta, writeMeta } from "./sd-webgpu-cache.js";
import { fetchRetry, streamUrl } from "./sd-webgpu-http.js";

// ---------------------------------------------------------------- model resolution
export const COMPONENTS = ["text_encoder", "unet", "vae"];
// SDXL (a UNet with addition_embed_type "text_time"): a second text encoder
// (CLIPTextModelWithProjection, OpenCLIP bigG) and tokenizer.
export const XL_COMPONENTS = [...COMPONENTS, "text_encoder_2"];

// Whether a UNet config.json is SDXL's (addition_embed_type "text_time": its micro-conditioning
// needs text_encoder_2's pooled output).
export function isXlUnet(text) {
  try {
    return JSON.parse(text)?.addition_embed_type === "text_time";
  } catch {
    return false; // the Rust code reports a broken config
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

export class FileSource {
  constructor(entries, progress) {
    this.progress = progress;
    // entries: [{file, path}] with paths relative to a folder the user picked; find the
    // model root (the folder holding unet/config.json).
    const paths = entries.map((e) => e.path.replace(/^\/+/, ""));
    const cfg = paths.find((p) => p === "unet/config.json" || p.endsWith("/unet/config.json"));
    if (!cfg) throw notDiffusersFolder();
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
      throw missingFromFolder(rel);
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

export async function streamFile(file, rel, sink, progress) {
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

// What a model spec names: {kind: "url", base | file} or {kind: "files", entries}.
export function describe(model, revision, cache, progress) {
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
  let url = repo ? hfResolve(model.spec, revision) : model.url;
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

// A file (or, with path "", the folder) of a Hugging Face repo at a revision.
const hfResolve = (repo, revision, path = "") => `https://huggingface.co/${repo}/resolve/${encodeURIComponent(revision || "main")}/${path}`;

// A LoRA: one safetensors file, named by a URL, a Hugging Face repo file ({kind: "url", url:
// null, spec: "owner/repo", path: "file.safetensors"}) or a File. Read through the same code
// paths as the model's files (the cache and HTTP Range resume for URLs). Returns
// {name: the file name, size(), stream(sink)}.
export function describeLora(spec, revision, cache, progress) {
  if (spec.kind === "files") {
    const e = spec.entries[0];
    wasm.refusePickle(e.file.name);
    return { name: e.file.name, size: async () => e.file.size, stream: (sink) => streamFile(e.file, e.file.name, sink, progress) };
  }
  const url = spec.url ?? hfResolve(spec.spec, revision, spec.path.split("/").map(encodeURIComponent).join("/"));
  wasm.refusePickle(url.split(/[?#]/)[0]);
  const name = decodeURIComponent(url.split(/[?#]/)[0].split("/").pop() || "") || url;
  const src = new UrlSource(url, cache, progress);
  return { name, size: () => src.size(url), stream: (sink) => src.stream(url, sink) };
}
