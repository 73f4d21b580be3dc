// Shared helpers of the end-to-end tests: paths, safetensors and PNG readers, golden-image
// comparison, Chromium launching (playwright-core) with console forwarding, waiting helpers.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";

export const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(E2E_DIR, "../..");
export const DIST = path.join(ROOT, "dist");
export const FIXTURE = path.join(ROOT, "tests/fixtures/tiny-sd15");
export const MODEL = path.join(FIXTURE, "model");
// v2 fixtures: the tiny SD-1.5 with the real stable-diffusion-v1-5 scheduler and tokenizer files
export const FIXTURE_REAL = path.join(ROOT, "tests/fixtures/sd15-realconfig");
export const MODEL_REAL = path.join(FIXTURE_REAL, "model");
// The same cases with 3 steps (scripts/make_e2e_goldens.py: diffusers, validated against the
// bundles' own goldens first): SwiftShader takes ~13 s per CFG step of the tiny UNet.
export const FIXTURE_SHORT = path.join(ROOT, "tests/fixtures/e2e-short");
export const PAGES = path.join(E2E_DIR, "pages");
export const OUT = path.join(ROOT, "target/e2e");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export const WEBGPU_ARGS = ["--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader"];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class AssertionError extends Error {}
export function assert(cond, msg) {
  if (!cond) throw new AssertionError(typeof msg === "function" ? msg() : msg);
}

export const fmtBytes = (n) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

// ---------------------------------------------------------------------------------------------
// safetensors (F32 only; enough for the golden file)

export function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const base = 8 + n;
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    tensors[name] = {
      dtype: info.dtype,
      shape: info.shape,
      get data() {
        const [a, b] = info.data_offsets;
        if (info.dtype !== "F32") throw new Error(`${name}: dtype ${info.dtype} not supported (F32 only)`);
        const bytes = buf.subarray(base + a, base + b);
        const out = new Float32Array((b - a) / 4);
        for (let i = 0; i < out.length; i++) out[i] = bytes.readFloatLE(i * 4);
        return out;
      },
    };
  }
  return { header, tensors };
}

const goldenFiles = new Map();
/** A fixture folder's cases and golden tensors: tiny-sd15 has golden.json ({cases: {name: case}}),
 *  sd15-realconfig cases.json ({cases: [{name, golden: {image}, …}]}); both golden.safetensors. */
function goldenFile(dir) {
  if (!goldenFiles.has(dir)) {
    const v1 = path.join(dir, "golden.json");
    const json = JSON.parse(fs.readFileSync(fs.existsSync(v1) ? v1 : path.join(dir, "cases.json"), "utf8"));
    const cases = Array.isArray(json.cases) ? Object.fromEntries(json.cases.map((c) => [c.name, c])) : json.cases;
    goldenFiles.set(dir, { cases, st: readSafetensors(path.join(dir, "golden.safetensors")) });
  }
  return goldenFiles.get(dir);
}

/**
 * A golden txt2img case of a fixture folder (default: tiny-sd15's `txt2img_ddim`):
 * { name, case, width, height, batch, images: [Float32Array HWC per batch image], image (the
 * first), options: GenerateOptions for the module }. `case.guidance_scale` is filled in from
 * the v2 files' `guidance`.
 */
export function golden(caseName = "txt2img_ddim", dir = FIXTURE) {
  const f = goldenFile(dir);
  const raw = f.cases[caseName];
  if (!raw) throw new Error(`${path.relative(ROOT, dir)} has no case ${caseName}`);
  const c = { ...raw, guidance_scale: raw.guidance_scale ?? raw.guidance };
  const tname = raw.golden?.image ?? `${caseName}_image`;
  const t = f.st.tensors[tname];
  if (!t) throw new Error(`${path.relative(ROOT, dir)}/golden.safetensors has no tensor ${tname}`);
  const [b, h, w, ch] = t.shape;
  if (ch !== 3 || b !== (c.batch ?? 1)) throw new Error(`${tname}: unexpected shape ${t.shape} for batch ${c.batch ?? 1}`);
  const data = t.data;
  const images = Array.from({ length: b }, (_, i) => data.subarray(i * h * w * 3, (i + 1) * h * w * 3));
  return {
    name: caseName,
    case: c,
    width: w,
    height: h,
    batch: b,
    images,
    image: images[0],
    // GenerateOptions for the module
    options: {
      prompt: c.prompt,
      negativePrompt: c.negative_prompt ?? undefined,
      steps: c.steps,
      guidanceScale: c.guidance_scale,
      seed: c.seed,
      width: c.width,
      height: c.height,
      sampler: c.sampler,
      batch: b,
      // diffusers' plain StableDiffusionPipeline made these: no A1111 prompt syntax (the
      // module's default), brackets are text and the prompt is cut at 75 tokens
      promptWeighting: false,
    },
  };
}

/**
 * Compares RGBA bytes (row-major, width × height) with image `index` of a golden NHWC float
 * batch in [0, 1]. Returns { mean, max, maxIndex: { x, y, c, ours, golden } }.
 */
export function compareImage(rgba, g, index = 0) {
  const gi = g.images ? g.images[index] : g.image;
  if (!gi) throw new AssertionError(`golden ${g.name} has no image ${index}`);
  const n = g.width * g.height;
  if (!rgba || rgba.length !== n * 4) throw new AssertionError(`image has ${rgba ? rgba.length : 0} RGBA bytes, expected ${n * 4} (${g.width}x${g.height})`);
  let sum = 0, max = -1, at = 0;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const e = Math.abs(rgba[i * 4 + c] / 255 - gi[i * 3 + c]);
      sum += e;
      if (e > max) {
        max = e;
        at = i * 3 + c;
      }
    }
  }
  const pix = Math.floor(at / 3);
  return {
    mean: sum / (n * 3),
    max,
    maxIndex: { x: pix % g.width, y: Math.floor(pix / g.width), c: "RGB"[at % 3], ours: rgba[pix * 4 + (at % 3)] / 255, golden: gi[at] },
  };
}

export function fmtCompare(r) {
  const m = r.maxIndex;
  return `mean |err| ${r.mean.toExponential(3)}, max ${r.max.toExponential(3)} at (x ${m.x}, y ${m.y}, ${m.c}): ours ${m.ours.toFixed(4)} vs golden ${m.golden.toFixed(4)}`;
}

// ---------------------------------------------------------------------------------------------
// PNG: chunks, text, 8-bit RGB/RGBA decoding (non-interlaced), enough to check the module's PNGs.

const PNG_SIG = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

export function parsePng(bytes) {
  const buf = Buffer.from(bytes);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(PNG_SIG)) throw new AssertionError(`not a PNG (first bytes ${[...buf.subarray(0, 8)].join(",")})`);
  let off = 8;
  const chunks = [];
  const text = {};
  const textChunk = {}; // keyword -> the chunk type that carried it ("tEXt", "iTXt" or "zTXt")
  let ihdr = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.subarray(off + 4, off + 8).toString("latin1");
    const data = buf.subarray(off + 8, off + 8 + len);
    const crc = buf.readUInt32BE(off + 8 + len);
    const want = zlib.crc32 ? zlib.crc32(buf.subarray(off + 4, off + 8 + len)) : crc;
    if (want !== crc) throw new AssertionError(`PNG chunk ${type}: bad CRC`);
    chunks.push(type);
    if (type === "IHDR") {
      ihdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), bitDepth: data[8], colorType: data[9], interlace: data[12] };
    } else if (type === "IDAT") idat.push(data);
    else if (type === "tEXt") {
      const z = data.indexOf(0);
      const key = data.subarray(0, z).toString("latin1");
      text[key] = data.subarray(z + 1).toString("latin1");
      textChunk[key] = type;
    } else if (type === "iTXt") {
      const z = data.indexOf(0);
      const key = data.subarray(0, z).toString("latin1");
      const compressed = data[z + 1];
      let p = z + 3;
      p = data.indexOf(0, p) + 1; // language tag
      p = data.indexOf(0, p) + 1; // translated keyword
      const t = data.subarray(p);
      text[key] = (compressed ? zlib.inflateSync(t) : t).toString("utf8");
      textChunk[key] = type;
    } else if (type === "zTXt") {
      const z = data.indexOf(0);
      const key = data.subarray(0, z).toString("latin1");
      text[key] = zlib.inflateSync(data.subarray(z + 2)).toString("latin1");
      textChunk[key] = type;
    }
    off += 12 + len;
    if (type === "IEND") break;
  }
  if (!ihdr) throw new AssertionError("PNG without IHDR");
  return { ...ihdr, chunks, text, textChunk, idat: Buffer.concat(idat) };
}

/** Decodes an 8-bit non-interlaced grey/RGB/RGBA PNG into RGBA bytes. */
export function decodePng(bytes) {
  const png = parsePng(bytes);
  const { width, height, bitDepth, colorType, interlace } = png;
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[colorType];
  if (bitDepth !== 8 || !channels || interlace !== 0) throw new AssertionError(`PNG decoding: unsupported bit depth ${bitDepth} / color type ${colorType} / interlace ${interlace}`);
  const raw = zlib.inflateSync(png.idat);
  const stride = width * channels;
  const out = new Uint8Array(width * height * 4);
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = Uint8Array.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? line[i - channels] : 0;
      const b = prev[i];
      const c = i >= channels ? prev[i - channels] : 0;
      let v = line[i];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (f !== 0) throw new AssertionError(`PNG: bad filter ${f}`);
      line[i] = v & 255;
    }
    for (let x = 0; x < width; x++) {
      const s = x * channels, d = (y * width + x) * 4;
      if (channels === 1 || channels === 2) {
        out[d] = out[d + 1] = out[d + 2] = line[s];
        out[d + 3] = channels === 2 ? line[s + 1] : 255;
      } else {
        out[d] = line[s];
        out[d + 1] = line[s + 1];
        out[d + 2] = line[s + 2];
        out[d + 3] = channels === 4 ? line[s + 3] : 255;
      }
    }
    prev = line;
  }
  return { ...png, rgba: out };
}

/** One PNG chunk: length, type, data, CRC-32 of type + data. */
function pngChunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** Encodes 8-bit RGB bytes (row-major) as a PNG (filter 0, one IDAT), for test inputs. */
export function encodePng(width, height, rgb) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc(height * (width * 3 + 1));
  for (let y = 0; y < height; y++) Buffer.from(rgb.subarray(y * width * 3, (y + 1) * width * 3)).copy(raw, y * (width * 3 + 1) + 1);
  return Buffer.concat([PNG_SIG, pngChunk("IHDR", ihdr), pngChunk("IDAT", zlib.deflateSync(raw)), pngChunk("IEND", Buffer.alloc(0))]);
}

/**
 * `png` with text chunks added before IEND: [{type: "tEXt" | "zTXt" | "iTXt", key, text}]
 * (tEXt / zTXt Latin-1, zTXt deflated; iTXt UTF-8, uncompressed), as PIL writes them.
 */
export function withTextChunks(png, chunks) {
  const buf = Buffer.from(png);
  const iend = buf.length - 12;
  if (buf.subarray(iend + 4, iend + 8).toString("latin1") !== "IEND") throw new Error("withTextChunks: the PNG does not end with IEND");
  const parts = chunks.map(({ type, key, text }) => {
    const k = Buffer.from(key, "latin1");
    const data = type === "tEXt" ? Buffer.concat([k, Buffer.from([0]), Buffer.from(text, "latin1")])
      : type === "zTXt" ? Buffer.concat([k, Buffer.from([0, 0]), zlib.deflateSync(Buffer.from(text, "latin1"))])
      : Buffer.concat([k, Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, "utf8")]);
    return pngChunk(type, data);
  });
  return Buffer.concat([buf.subarray(0, iend), ...parts, buf.subarray(iend)]);
}

/**
 * The files of a ZIP archive, read through its central directory (stored or deflated
 * entries): [{name, data, method}]; throws on a bad signature, a size or a CRC-32 mismatch.
 */
export function readZip(bytes) {
  const buf = Buffer.from(bytes);
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw new AssertionError("ZIP: no end of central directory record");
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const out = [];
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new AssertionError(`ZIP: central directory entry ${n}: bad signature`);
    const flags = buf.readUInt16LE(p + 8), method = buf.readUInt16LE(p + 10), crc = buf.readUInt32LE(p + 16);
    const csize = buf.readUInt32LE(p + 20), usize = buf.readUInt32LE(p + 24);
    const nlen = buf.readUInt16LE(p + 28), xlen = buf.readUInt16LE(p + 30), clen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nlen).toString(flags & 0x800 ? "utf8" : "latin1");
    if (buf.readUInt32LE(local) !== 0x04034b50) throw new AssertionError(`ZIP: ${name}: bad local header signature`);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(start, start + csize);
    const data = method === 0 ? Buffer.from(raw) : method === 8 ? zlib.inflateRawSync(raw) : null;
    if (!data) throw new AssertionError(`ZIP: ${name}: compression method ${method}`);
    if (data.length !== usize) throw new AssertionError(`ZIP: ${name}: ${data.length} bytes, the directory says ${usize}`);
    if (zlib.crc32(data) !== crc) throw new AssertionError(`ZIP: ${name}: CRC-32 mismatch`);
    out.push({ name, data, method });
    p += 46 + nlen + xlen + clen;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// files of the model folder (sizes, sha256), for the server-side checks

export function sha256File(file) {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

/** Every file under `dir` as { rel, file, size }. */
export function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.isFile()) out.push({ rel: path.relative(dir, f).split(path.sep).join("/"), file: f, size: fs.statSync(f).size });
    }
  };
  walk(dir);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Chromium

let chromiumMod = null;
export async function playwright() {
  if (!chromiumMod) {
    try {
      chromiumMod = (await import("playwright-core")).chromium;
    } catch (e) {
      throw new Error(`playwright-core is not installed (run: npm ci --prefix tests/e2e): ${e.message}`);
    }
  }
  return chromiumMod;
}

export const createdProfiles = [];
export function tmpProfile(tag = "profile") {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `sd-e2e-${tag}-`));
  createdProfiles.push(d);
  return d;
}

/** Deletes the temporary profiles (unless E2E_KEEP_PROFILES=1). */
export function removeProfiles() {
  if (process.env.E2E_KEEP_PROFILES === "1") return;
  for (const d of createdProfiles.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/**
 * Launches Chromium with a persistent profile (OPFS survives reloads and restarts) and forwards
 * console messages and page errors of every page and worker to stdout, prefixed with `tag`.
 */
export async function launch({ tag, userDataDir = tmpProfile(), args = WEBGPU_ARGS, viewport = { width: 1280, height: 900 }, log = console.log, acceptDownloads = false } = {}) {
  const chromium = await playwright();
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport,
    acceptDownloads,
  });
  // b.tag is read at each message: a browser handed to a later test logs under that test's name.
  const b = { context, page: null, userDataDir, tag };
  const say = (m) => log(`[${b.tag}] ${m}`);
  const watch = (page) => {
    // Worker console messages arrive here too (checked with Playwright 1.65).
    page.on("console", (msg) => {
      let text = msg.text();
      if (text.length > 2000) text = text.slice(0, 2000) + ` … (${text.length} chars)`;
      say(`console.${msg.type()}: ${text}`);
    });
    page.on("pageerror", (e) => say(`pageerror: ${e && e.stack ? e.stack : e}`));
    page.on("crash", () => say("page crashed"));
    page.on("response", (r) => {
      if (r.status() >= 400) say(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    });
    page.on("requestfailed", (r) => {
      const err = r.failure()?.errorText;
      // Chromium reports a HEAD whose (empty) body nobody read as ERR_ABORTED: not a failure.
      if (r.method() === "HEAD" && err === "net::ERR_ABORTED") return;
      say(`request failed: ${r.method()} ${r.url()}: ${err}`);
    });
    page.on("worker", (w) => {
      say(`worker started: ${w.url()}`);
      w.on("close", () => say(`worker closed: ${w.url()}`));
    });
  };
  context.pages().forEach(watch);
  context.on("page", watch);
  b.page = context.pages()[0] || (await context.newPage());
  return b;
}

export async function closeQuietly(b) {
  if (!b) return;
  try {
    await b.context.close();
  } catch {}
}

/** Polls fn() until it returns a truthy value; throws with `what` after timeoutMs. */
export async function waitFor(fn, { timeoutMs = 60_000, intervalMs = 250, what = "condition" } = {}) {
  const t0 = Date.now();
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() - t0 > timeoutMs) throw new AssertionError(`timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Opens the harness page (/__e2e__/blank.html) and waits until it has imported /sd-webgpu.js. */
export async function openHarness(page, base) {
  const resp = await page.goto(`${base}/__e2e__/blank.html`);
  assert(resp && resp.ok(), `harness page: HTTP ${resp && resp.status()}`);
  await page.waitForFunction(() => window.e2e && window.e2e.ready, null, { timeout: 60_000 });
  const err = await page.evaluate(() => window.e2e.importError);
  assert(!err, `import("/sd-webgpu.js") failed: ${err}`);
}

/** page.evaluate with a deadline (page.evaluate itself has none). */
export async function evaluate(page, fn, arg, timeoutMs = 600_000, what = "page.evaluate") {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AssertionError(`${what}: no answer after ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    return await Promise.race([page.evaluate(fn, arg), deadline]);
  } finally {
    clearTimeout(timer);
  }
}
