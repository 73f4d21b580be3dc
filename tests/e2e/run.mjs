// End-to-end tests of sd-webgpu in headless Chromium (WebGPU on SwiftShader) through
// playwright-core. Run with `bash scripts/e2e.sh` (builds dist/ first) or, with dist/ built,
// `node tests/e2e/run.mjs`.
//
// Environment:
//   E2E_ONLY=name,name   run only these tests (the others are reported as SKIP, never silently)
//   E2E_PORT=N           port of the test server (default: any free port)
//   CHROMIUM=path        browser binary (default /usr/bin/chromium)
//
// Tests, in order (a test that needs state from an earlier one rebuilds it when that one failed):
//   server_range_and_kill        the test server alone (Range, If-Range, 416, HEAD, throttle, kill)
//   adapter_info                 WebGPU present; StableDiffusion.adapterInfo()
//   api_generate_matches_golden  load (variant null, f32) + txt2img_ddim_3steps vs diffusers; a
//                                1-step run kept as the reference of the later loads
//   cancel_then_generate         AbortController at step 1 of 10 -> AbortError; then the 1-step run again
//   unicode_prompt_png           prompt with ’ “ ” — 東京 🙂: PNG "parameters" is iTXt (UTF-8), Latin-1 is tEXt
//   api_option_errors            TypeErrors for batchPos outside 1..batch, resizeMode, vaeDtype
//   api_size_limits              start image side / megapixels (before copying, a PNG before decoding),
//                                batch × width × height of output: clear errors at once
//   batch2_matches_diffusers     v2 real-config model at /model-real/: batch 2 vs diffusers' (3 steps),
//                                batchPos / "Batch pos" in the PNGs, GPU memory returned; batchPos 2
//                                alone = image 2 of the batch
//   long_prompt_warning          84-token prompt: without prompt weighting droppedTokens.prompt 9 + warning
//                                (API, and #warnings on the page with its checkbox off); with it (the
//                                default) 3 chunks of 75: nothing dropped, no warning
//   ui_img2img_any_size          the page: a 100x70 start image -> 128x64 inputs, "Resize and fill"
//   ui_inpaint                   the page's mask editor with the 9-channel inpainting model
//                                (/model-inpaint/): init.png + uploaded mask.png vs diffusers
//                                (e2e-short inpaint9_e2e); the mask sent is mask.png exactly; a painted
//                                stroke (pointer events) is exact in the mask; outpainting extends
//                                the image and the mask (screenshots inpaint-editor / outpaint-editor)
//   ui_generate                  the page (fp16 / f16 defaults), form, gallery, screenshots; vs diffusers
//   ui_lora                      the page: a kohya LoRA from a URL (/lora/), scale 1 / 0.4 / a <lora:…> tag /
//                                removed: images differ from no-LoRA and between scales, the tag equals
//                                the slider, removal gives the no-LoRA image back; PNG parameters name
//                                it; no model file fetched again, no weight bytes uploaded again, the
//                                LoRA file fetched once, its GPU memory freed on removal
//   ui_page_features             the page's conveniences in one profile: Ctrl+Enter; the queue (jobs queued
//                                while one runs, their settings snapshotted, one cancelled, the others in
//                                order); PNG info (the page's own iTXt PNG restores every field and remakes
//                                the same image; an A1111 tEXt / zTXt PNG: quoted commas, LoRA tags, unknown
//                                fields listed); the gallery in IndexedDB (delete, reload, download all as
//                                a ZIP read back here byte for byte, delete all); offline (service worker):
//                                reload, LoRA from the cache, the same image; sw.js's SHELL vs dist/;
//                                screenshots ui-queue, ui-png-info, ui-features-phone (390x844)
//
// Diffusers comparisons: tests/fixtures/e2e-short/ (3-step versions of tiny-sd15 txt2img_ddim and
// sd15-realconfig txt2img_batch2, scripts/make_e2e_goldens.py) and sd15-realconfig's own cases.
//   ui_turbo_taesd               SD-Turbo-style model: its defaults fill the form; 1 step vs diffusers;
//                                TAESD preview (full size) and fast decode
//   ui_sdxl_turbo                the tiny SDXL (tests/fixtures/sdxl) with sdxl-turbo's scheduler through the
//                                page: SDXL-Turbo defaults fill the form (1 step, guidance 0, Euler a), the
//                                SDXL fields show, the image equals diffusers' txt2img_turbo_1step; the
//                                presets fill model + TAESD / TAESDXL
//   api_sdxl_evict_text_encoders the tiny SDXL with evictTextEncoder: both text encoders freed after encoding,
//                                both streamed back from the cache for a new prompt, same images
//   api_evict_text_encoder       load({ evictTextEncoder }): freed after encoding, streamed back from
//                                the cache for a new prompt, same image
//   resume_after_server_kill     server killed at 40 % of the UNet; resume with Range; cache sha256
//   reload_fetches_nothing       same profile, page reload: zero requests under /model/
//   restart_fetches_nothing      same profile, browser restart: zero requests under /model/
//   device_lost_recovers         debugLoseDevice() -> onDeviceLost, next generate from the cache
//   ui_local_folder              the folder picker: nothing fetched, nothing cached
//   three_origin_redirect_host   page on A, model on B (302 to C), bytes on C with CORS: load, resume
//                                after C dies, second visit fetches nothing; no CORS preflight
//   no_cors_host_fails_fast      a host without CORS: a clear message within seconds
//   throttling_host_retries      404 at once, 5 failed loads leave no worker; 429 / 5xx with and without
//                                Retry-After; then exactly one worker
//   stale_cache_416_and_changed_file  416 for complete-but-unmarked bytes; a changed file re-downloaded
//   load_abort_keeps_the_cache   load({ signal }) aborted: AbortError, worker ends, bytes kept, resumed
//   url_model_on_another_origin_asks_first  ?model=<other origin>&autoload=1 waits for the visitor
//   quota_exceeded_offers_no_cache  a 1 MB quota: the page offers to continue without caching; the gallery's
//                                quota error is words
//   webgpu_missing_message       Chromium with --disable-features=WebGPU: the page's error message
//
// The module is driven through its public API (www/sd-webgpu.d.ts) from a harness page served
// at /__e2e__/blank.html on the app's origin (tests/e2e/pages/), and the page through its DOM.

import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { TestServer } from "./server.mjs";
import {
  ROOT, DIST, MODEL, MODEL_REAL, FIXTURE_REAL, FIXTURE_SHORT, PAGES, OUT, WEBGPU_ARGS, sleep, assert, AssertionError, fmtBytes,
  golden, compareImage, fmtCompare, parsePng, decodePng, encodePng, withTextChunks, readZip, sha256File, launch, closeQuietly,
  tmpProfile, waitFor, openHarness, evaluate, removeProfiles,
} from "./lib.mjs";

const MIN = 60_000;
const API_TOL = 4e-3; // f32 storage + 8-bit rounding
const UI_TOL = 2e-2; // f16 weights

// SD-Turbo-style tiny model: tests/fixtures/sd2/model-turbo holds sd-turbo's scheduler and UNet
// configs; its weights, the other configs and the tokenizer are model-v's (the same files, as
// in the reference bundle), served under /model-turbo/ as if they were in one folder.
const SD2 = path.join(ROOT, "tests/fixtures/sd2");
const turboVirtual = Object.fromEntries(
  [
    ["text_encoder/config.json", "model-v/text_encoder/config.json"],
    ["text_encoder/model.safetensors", "model-v/text_encoder/model.safetensors"],
    ["unet/diffusion_pytorch_model.safetensors", "model-v/unet/diffusion_pytorch_model.safetensors"],
    ["vae/config.json", "model-v/vae/config.json"],
    ["vae/diffusion_pytorch_model.safetensors", "model-v/vae/diffusion_pytorch_model.safetensors"],
    ["tokenizer/tokenizer_config.json", "model-v/tokenizer/tokenizer_config.json"],
    ["tokenizer/special_tokens_map.json", "model-v/tokenizer/special_tokens_map.json"],
    ["tokenizer/vocab.json", "../tiny-sd15/model/tokenizer/vocab.json"],
    ["tokenizer/merges.txt", "../tiny-sd15/model/tokenizer/merges.txt"],
  ].map(([url, file]) => [`/model-turbo/${url}`, fs.readFileSync(path.join(SD2, file))]),
);
// The tiny SDXL of the reference bundle sdxl/ (tests/fixtures/sdxl: model/ with the small
// tokenizer files only; the BPE is tiny-sd15's, byte-identical): served at /model-sdxl/ and, with
// sdxl-turbo's scheduler file (scheduler-turbo/), at /model-sdxl-turbo/.
const SDXL = path.join(ROOT, "tests/fixtures/sdxl");
const sdxlVirtual = fs.existsSync(path.join(SDXL, "model"))
  ? Object.fromEntries(
      ["/model-sdxl/", "/model-sdxl-turbo/"].flatMap((mount) =>
        ["tokenizer", "tokenizer_2"].flatMap((dir) =>
          ["vocab.json", "merges.txt"].map((f) => [`${mount}${dir}/${f}`, fs.readFileSync(path.join(ROOT, "tests/fixtures/tiny-sd15/model/tokenizer", f))]),
        ),
      ).concat([["/model-sdxl-turbo/scheduler/scheduler_config.json", fs.readFileSync(path.join(SDXL, "scheduler-turbo/scheduler_config.json"))]]),
    )
  : {};
// The inpainting bundle: model-inpaint (9-channel UNet; text encoder, VAE, tokenizer and
// scheduler are symlinks into sd15-realconfig/model), init.png and its soft-edged mask.png.
const INPAINT = path.join(ROOT, "tests/fixtures/inpaint");
const server = new TestServer({
  mounts: { "/": DIST, "/model/": MODEL, "/model-real/": MODEL_REAL, "/model-turbo/": path.join(SD2, "model-turbo"), "/taesd/": path.join(ROOT, "tests/fixtures/taesd/taesd"), "/lora/": path.join(ROOT, "tests/fixtures/lora"), "/model-inpaint/": path.join(INPAINT, "model-inpaint"), "/model-sdxl/": path.join(SDXL, "model"), "/model-sdxl-turbo/": path.join(SDXL, "model"), "/__e2e__/": PAGES },
  virtual: { ...turboVirtual, ...sdxlVirtual },
  port: Number(process.env.E2E_PORT || 0),
});
const base = () => server.url;

// ---------------------------------------------------------------------------------------------
// runner

const tests = [];
const test = (name, fn, { timeoutMs = 10 * MIN } = {}) => tests.push({ name, fn, timeoutMs });

// Browsers handed from one test to the next (a test that fails closes what it launched).
const shared = { api: null, profile: null, real: null, short: null };

function makeCtx(name) {
  const browsers = [];
  const kept = new Set();
  return {
    name,
    browsers,
    kept,
    log: (...a) => console.log(`[${name}]`, ...a),
    async launch(opts = {}) {
      const b = await launch({ tag: name, ...opts });
      browsers.push(b);
      return b;
    },
    /** Adopts a browser from an earlier test (closed with this test's unless kept again). */
    adopt(b) {
      b.tag = name;
      browsers.push(b);
      return b;
    },
    keep(b) {
      kept.add(b);
      return b;
    },
  };
}

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new AssertionError(`${name}: timed out after ${(ms / MIN).toFixed(0)} min`)), ms);
    }),
  ]);
}

// ---------------------------------------------------------------------------------------------
// helpers shared by the browser tests

const G = () => golden("txt2img_ddim");
// The v2 fixture: the tiny SD-1.5 with the real stable-diffusion-v1-5 scheduler and tokenizer files.
const REAL = "/model-real/";
const GR = (name) => golden(name, FIXTURE_REAL);
// Short versions (3 steps) of txt2img_ddim (tiny-sd15, served at /model/) and of the real-config
// batch of 2 (at /model-real/) for the diffusers comparisons through the module and the page.
const GS = (name) => golden(name, FIXTURE_SHORT);

function logLoad(t, load) {
  const p = load.progress || {};
  t.log(
    `load: ${load.ok ? `ok in ${load.seconds?.toFixed(1)} s, model ${load.modelName}` : `FAILED ${load.error?.name}: ${load.error?.message}`}; ` +
      `phases ${JSON.stringify(p.phases)} (${p.progressCount} events, ${p.retryCount} retries), max wasm memory ${fmtBytes(p.maxWasmMemoryBytes || 0)}` +
      (load.warnings?.length ? `; warnings: ${JSON.stringify(load.warnings)}` : ""),
  );
}

async function apiLoad(t, page, opts, timeoutMs = 8 * MIN) {
  const load = await evaluate(page, (o) => window.e2e.load(o), opts, timeoutMs, "StableDiffusion.load");
  logLoad(t, load);
  assert(load.ok, () => `StableDiffusion.load rejected: ${load.error.name}: ${load.error.message}`);
  return load;
}

async function apiGenerate(t, page, opts, extra = {}, timeoutMs = 8 * MIN) {
  return await evaluate(page, ([o, x]) => window.e2e.generate(o, x), [opts, extra], timeoutMs, "generate");
}

/** Checks one generate() result of the golden case: pixels, seed, PNG, parameters, steps. */
function checkGolden(t, gen, g, tol, { previews = true } = {}) {
  assert(gen.ok, () => `generate rejected: ${gen.error.name}: ${gen.error.message}`);
  t.log(`generate: ${gen.seconds.toFixed(1)} s, ${gen.steps.length} onStep calls`);
  assert(gen.images.length === 1, `expected 1 image, got ${gen.images.length}`);
  const img = gen.images[0];
  assert(img.width === g.width && img.height === g.height, `image is ${img.width}x${img.height}, expected ${g.width}x${g.height}`);
  const cmp = compareImage(img.pixels, g);
  t.log(`golden ${g.name}: ${fmtCompare(cmp)} (tolerance ${tol})`);
  assert(cmp.mean <= tol, `mean error ${cmp.mean.toExponential(3)} > ${tol} (${fmtCompare(cmp)})`);
  assert(img.seed === g.case.seed, `seed ${img.seed}, expected ${g.case.seed}`);

  // PNG: signature, parameters chunk, pixels equal to imageData
  const sig = img.png.slice(0, 8).join(",");
  assert(sig === "137,80,78,71,13,10,26,10", `PNG blob does not start with the PNG signature: ${sig}`);
  assert(img.pngSize > 100, `PNG blob is only ${img.pngSize} bytes`);
  const png = decodePng(img.png);
  assert(png.width === img.width && png.height === img.height, `PNG is ${png.width}x${png.height}`);
  let diff = 0;
  for (let i = 0; i < png.rgba.length; i++) if (i % 4 !== 3 && png.rgba[i] !== img.pixels[i]) diff++;
  assert(diff === 0, `PNG pixels differ from imageData in ${diff} channel values`);
  t.log(`PNG: ${img.pngSize} bytes, type "${img.blobType}", chunks ${png.chunks.join(" ")}`);
  assert(png.text.parameters !== undefined, `PNG has no "parameters" text chunk (chunks ${png.chunks.join(" ")})`);
  assert(png.text.parameters === img.parameters, `PNG parameters chunk differs from .parameters:\n${png.text.parameters}\nvs\n${img.parameters}`);
  const par = img.parameters;
  t.log(`parameters: ${JSON.stringify(par)}`);
  assert(par.startsWith(g.case.prompt), `parameters do not start with the prompt: ${JSON.stringify(par)}`);
  if (g.case.negative_prompt) assert(par.includes(`Negative prompt: ${g.case.negative_prompt}`), `parameters lack the negative prompt`);
  assert(new RegExp(`Steps: ${g.case.steps}\\b`).test(par), `parameters lack "Steps: ${g.case.steps}"`);
  assert(new RegExp(`Seed: ${g.case.seed}\\b`).test(par), `parameters lack "Seed: ${g.case.seed}"`);
  assert(par.includes(`Size: ${g.width}x${g.height}`), `parameters lack "Size: ${g.width}x${g.height}"`);

  // onStep
  assert(gen.steps.length === g.case.steps, `onStep was called ${gen.steps.length} times, expected ${g.case.steps}`);
  assert(gen.steps.every((s) => s.steps === g.case.steps), `onStep reported steps ${JSON.stringify(gen.steps.map((s) => s.steps))}`);
  if (previews) {
    const missing = gen.steps.filter((s) => !s.preview || !s.previewIsImageData);
    assert(missing.length === 0, `preview missing (or not ImageData) at steps ${JSON.stringify(missing.map((s) => s.step))}`);
    const p = gen.steps[gen.steps.length - 1].preview;
    assert(p.width > 0 && p.height > 0, `empty preview ${p.width}x${p.height}`);
    t.log(`previews: ${p.width}x${p.height}, last one: value range ${p.range}, max alpha ${p.maxAlpha}`);
  }
  return cmp;
}

// The tests that use the weights again after the first load (cancel, resume, reload, device
// loss) compare a short run of the golden case with the same short run made right after the
// first load, which is itself checked against diffusers: same weights, same adapter, same
// pixels (the 10-step golden takes ~3 min per run in SwiftShader).
const SHORT_STEPS = 1;

async function shortReference(t, page) {
  const g = G();
  const gen = await apiGenerate(t, page, { ...g.options, steps: SHORT_STEPS, preview: false });
  assert(gen.ok, () => `${SHORT_STEPS}-step run rejected: ${gen.error.name}: ${gen.error.message}`);
  shared.short = gen.images[0].pixels;
  t.log(`${SHORT_STEPS}-step run of ${g.name} kept as the reference of the later loads (${gen.seconds.toFixed(1)} s)`);
}

/** A short run of the golden case equals the first load's (or, without it, the golden). */
async function checkAgainstFirstLoad(t, page, what) {
  const g = G();
  if (!shared.short) {
    t.log(`${what}: no ${SHORT_STEPS}-step run of the first load (an earlier test failed): checking the golden instead`);
    checkGolden(t, await apiGenerate(t, page, { ...g.options, preview: true }), g, API_TOL);
    await shortReference(t, page);
    return;
  }
  const gen = await apiGenerate(t, page, { ...g.options, steps: SHORT_STEPS, preview: true });
  assert(gen.ok, () => `${what}: generate rejected: ${gen.error.name}: ${gen.error.message}`);
  assert(gen.images.length === 1, `${what}: expected 1 image, got ${gen.images.length}`);
  assert(gen.steps.length === SHORT_STEPS, `${what}: onStep was called ${gen.steps.length} times, expected ${SHORT_STEPS}`);
  const missing = gen.steps.filter((st) => !st.preview || !st.previewIsImageData);
  assert(missing.length === 0, `${what}: preview missing at steps ${JSON.stringify(missing.map((st) => st.step))}`);
  const px = gen.images[0].pixels, ref = shared.short;
  assert(px.length === ref.length, `${what}: ${px.length} RGBA values, the first load's run has ${ref.length}`);
  let max = 0, differ = 0;
  for (let i = 0; i < px.length; i++) {
    if (i % 4 === 3) continue;
    const d = Math.abs(px[i] - ref[i]);
    if (d) differ++;
    max = Math.max(max, d);
  }
  t.log(`${what}: ${SHORT_STEPS}-step run in ${gen.seconds.toFixed(1)} s vs the first load's: max |diff| ${max}/255, ${differ} values differ`);
  assert(max <= 1, `${what}: the ${SHORT_STEPS}-step run differs from the first load's by up to ${max}/255 (${differ} values)`);
}

/** Server-side: GET requests under a prefix. */
const gets = (prefix) => server.requests(prefix).filter((e) => e.method === "GET");

function modelRequestsSummary(prefix = "/model/") {
  return server
    .requests(prefix)
    .map((e) => `${e.method} ${e.path}${e.range ? ` [${e.range}]` : ""} -> ${e.status}, ${e.bytes} B${e.aborted ? " (aborted)" : ""}`)
    .join("\n    ");
}

async function loadedApiPage(t, { fresh = false } = {}) {
  if (!fresh && shared.api) {
    const b = t.adopt(shared.api);
    shared.api = null;
    return b;
  }
  t.log("no loaded page from an earlier test: loading the model here");
  const b = await t.launch();
  await openHarness(b.page, base());
  await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" });
  return b;
}

// ---------------------------------------------------------------------------------------------
// tests

test("server_range_and_kill", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sd-e2e-srv-"));
  const size = 3 * 2 ** 20 + 123;
  const data = crypto.randomBytes(size);
  fs.mkdirSync(path.join(dir, "sub"));
  fs.writeFileSync(path.join(dir, "sub/w.safetensors"), data);
  for (const [f, body] of [["a.js", "x"], ["b.wasm", "\0asm"], ["c.json", "{}"], ["index.html", "<p>hi"], ["d.css", "p{}"], ["e.png", "png"]]) {
    fs.writeFileSync(path.join(dir, f), body);
  }
  const srv = new TestServer({ mounts: { "/": dir, "/m/": path.join(dir, "sub") } });
  await srv.start();
  const port = srv.port;
  const u = (p) => `${srv.url}${p}`;
  const buf = async (r) => Buffer.from(await r.arrayBuffer());
  try {
    // content types, caching headers, index.html, 404, 405
    const types = { "/a.js": "text/javascript", "/b.wasm": "application/wasm", "/c.json": "application/json", "/index.html": "text/html", "/d.css": "text/css", "/e.png": "image/png", "/m/w.safetensors": "application/octet-stream" };
    for (const [p, ty] of Object.entries(types)) {
      const r = await fetch(u(p), { method: "HEAD" });
      assert(r.status === 200, `HEAD ${p}: ${r.status}`);
      assert((r.headers.get("content-type") || "").startsWith(ty), `${p}: Content-Type ${r.headers.get("content-type")}, expected ${ty}`);
    }
    let r = await fetch(u("/"));
    assert(r.status === 200 && (await r.text()) === "<p>hi", "/ does not serve index.html");
    r = await fetch(u("/nope.js"));
    assert(r.status === 404, `missing file: ${r.status}`);
    await r.arrayBuffer();
    const trav = await new Promise((res, rej) => http.get({ host: "127.0.0.1", port, path: "/m/..%2f..%2f..%2fetc%2fpasswd" }, (x) => { x.resume(); res(x.statusCode); }).on("error", rej));
    assert(trav === 404, `path traversal answered ${trav}`);
    r = await fetch(u("/a.js"), { method: "POST", body: "x" });
    assert(r.status === 405, `POST: ${r.status}`);

    // full GET
    r = await fetch(u("/m/w.safetensors"));
    const etag = r.headers.get("etag");
    const lastModified = r.headers.get("last-modified");
    assert(r.status === 200, `GET: ${r.status}`);
    assert(r.headers.get("accept-ranges") === "bytes", "no Accept-Ranges: bytes");
    assert(r.headers.get("cache-control") === "no-store", "no Cache-Control: no-store");
    assert(/^"[^"]+"$/.test(etag || ""), `ETag not strong: ${etag}`);
    assert(Number(r.headers.get("content-length")) === size, "Content-Length");
    assert((await buf(r)).equals(data), "GET body differs");

    // HEAD
    r = await fetch(u("/m/w.safetensors"), { method: "HEAD" });
    assert(r.status === 200 && Number(r.headers.get("content-length")) === size && r.headers.get("etag") === etag, "HEAD headers");

    // ranges
    const range = async (h, extra = {}) => {
      const x = await fetch(u("/m/w.safetensors"), { headers: { Range: h, ...extra } });
      return { status: x.status, cr: x.headers.get("content-range"), body: await buf(x) };
    };
    let x = await range("bytes=1000-");
    assert(x.status === 206 && x.cr === `bytes 1000-${size - 1}/${size}` && x.body.equals(data.subarray(1000)), `bytes=1000-: ${x.status} ${x.cr}`);
    x = await range("bytes=10-19");
    assert(x.status === 206 && x.cr === `bytes 10-19/${size}` && x.body.equals(data.subarray(10, 20)), `bytes=10-19: ${x.status} ${x.cr}`);
    x = await range(`bytes=${size - 5}-${size + 100}`);
    assert(x.status === 206 && x.body.equals(data.subarray(size - 5)), `range past the end: ${x.status} ${x.cr}`);
    x = await range("bytes=-7");
    assert(x.status === 206 && x.body.equals(data.subarray(size - 7)), `suffix range: ${x.status} ${x.cr}`);
    x = await range(`bytes=${size}-`);
    assert(x.status === 416 && x.cr === `bytes */${size}`, `bytes=size-: ${x.status} ${x.cr}`);
    x = await range("bytes=0-1,5-6");
    assert(x.status === 200 && x.body.length === size, `multi-range: ${x.status}`);
    // If-Range
    x = await range("bytes=100-", { "If-Range": etag });
    assert(x.status === 206 && x.body.equals(data.subarray(100)), `If-Range (same ETag): ${x.status}`);
    x = await range("bytes=100-", { "If-Range": '"other"' });
    assert(x.status === 200 && x.body.equals(data), `If-Range (other ETag): ${x.status}`);
    x = await range("bytes=100-", { "If-Range": lastModified });
    assert(x.status === 206, `If-Range (date): ${x.status}`);
    x = await range("bytes=100-", { "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT" });
    assert(x.status === 200, `If-Range (old date): ${x.status}`);
    r = await fetch(u("/m/w.safetensors"), { headers: { "If-None-Match": etag } });
    assert(r.status === 304, `If-None-Match: ${r.status}`);

    // counters
    const full = srv.requests("/m/").filter((e) => e.method === "GET" && e.status === 200 && !e.range);
    assert(full.length >= 1 && full.every((e) => e.bytes === size && e.done && !e.aborted), `log of full GETs: ${JSON.stringify(full)}`);
    const e1000 = srv.log.find((e) => e.range === "bytes=1000-" && !e.ifRange);
    assert(e1000 && e1000.bytes === size - 1000 && e1000.status === 206, `log of bytes=1000-: ${JSON.stringify(e1000)}`);
    assert(srv.log.filter((e) => e.method === "HEAD").every((e) => e.bytes === 0), "HEAD counted bytes");

    // throttle + kill mid-transfer, then resume with Range on the restarted server
    srv.clearLog();
    const bps = 1 << 20;
    srv.setThrottle(/\.safetensors$/, bps);
    let got = 0;
    const parts = [];
    const t0 = Date.now();
    const outcome = await new Promise((resolve) => {
      const req = http.get({ host: "127.0.0.1", port, path: "/m/w.safetensors", agent: false }, (res) => {
        res.on("data", (c) => {
          parts.push(c);
          got += c.length;
          if (got >= 600_000 && srv.server) srv.kill();
        });
        res.on("end", () => resolve("end"));
        res.on("error", (e) => resolve("error " + e.code));
        res.on("aborted", () => resolve("aborted"));
        res.on("close", () => resolve("close"));
      });
      req.on("error", (e) => resolve("req error " + e.code));
    });
    const secs = (Date.now() - t0) / 1000;
    const e = srv.log[0];
    t.log(`killed after ${fmtBytes(got)} received in ${secs.toFixed(2)} s (${outcome}); server counted ${fmtBytes(e.bytes)}`);
    assert(got < size, "the transfer was not cut");
    assert(secs >= 0.4, `throttle not applied: ${got} bytes in ${secs} s`);
    assert(e.aborted && !e.done, `log entry not marked aborted: ${JSON.stringify(e)}`);
    assert(e.bytes >= got && e.bytes <= got + 512 * 1024, `server counted ${e.bytes} bytes, client got ${got}`);
    let refused = false;
    try {
      await fetch(u("/a.js"));
    } catch {
      refused = true;
    }
    assert(refused, "the killed server still answers");
    await srv.start();
    assert(srv.port === port, `restarted on port ${srv.port}, not ${port}`);
    srv.clearThrottle();
    x = await range(`bytes=${got}-`, { "If-Range": etag });
    assert(x.status === 206, `resume: ${x.status}`);
    assert(Buffer.concat([...parts, x.body]).equals(data), "resumed body differs");
    assert(srv.bytesSent("/m/") === e.bytes + (size - got), `bytesSent ${srv.bytesSent("/m/")} != ${e.bytes} + ${size - got}`);
  } finally {
    await srv.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, { timeoutMs: 2 * MIN });

test("adapter_info", async (t) => {
  const b = await t.launch();
  await openHarness(b.page, base());
  const env = await b.page.evaluate(async () => {
    const a = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    return { gpu: !!navigator.gpu, adapter: !!a, secure: isSecureContext, ua: navigator.userAgent };
  });
  t.log(`navigator.gpu ${env.gpu}, adapter ${env.adapter}, secure context ${env.secure}; ${env.ua}`);
  assert(env.gpu && env.adapter, "WebGPU is not available in this Chromium (flags " + WEBGPU_ARGS.join(" ") + ")");
  const info = await evaluate(b.page, () => window.StableDiffusion.adapterInfo().then((i) => ({ ok: true, i }), (e) => ({ ok: false, e: String(e && e.message || e) })), null, MIN);
  assert(info.ok, `StableDiffusion.adapterInfo() rejected: ${info.e}`);
  t.log(`adapterInfo: ${JSON.stringify(info.i)}`);
  for (const k of ["backend", "shader_f16", "max_buffer_size", "max_storage_buffer_binding_size"]) assert(k in info.i, `adapterInfo lacks ${k}`);
}, { timeoutMs: 3 * MIN });

test("api_generate_matches_golden", async (t) => {
  const g = GS("txt2img_ddim_3steps");
  const b = await t.launch();
  await openHarness(b.page, base());
  server.clearLog();
  const load = await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" });
  const phases = load.progress.phases;
  assert(phases.includes("download"), `onProgress phases ${JSON.stringify(phases)} lack "download"`);
  assert(phases.includes("ready"), `onProgress phases ${JSON.stringify(phases)} lack "ready"`);
  assert(load.progress.last.phase === "ready", `last onProgress phase is ${load.progress.last.phase}, not "ready"`);

  // each file served exactly once, in full
  const served = gets("/model/").filter((e) => e.status === 200 || e.status === 206);
  const sizes = new Map(served.map((e) => [e.path, e.size]));
  const want = [...sizes.values()].reduce((s, n) => s + n, 0);
  const sent = server.bytesSent("/model/");
  t.log(`server: ${server.requests("/model/").length} requests under /model/, ${sizes.size} files (${fmtBytes(want)}), ${fmtBytes(sent)} sent:\n    ${modelRequestsSummary()}`);
  assert(sizes.size > 0, "no file was fetched under /model/");
  for (const w of ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"]) {
    assert(sizes.has(`/model/${w}`), `${w} (variant null) was not downloaded`);
  }
  assert(!served.some((e) => e.path.includes(".fp16.")), "variant null downloaded *.fp16.* files");
  assert(sent === want, `bytes sent under /model/ (${sent}) != sum of the sizes of the files served (${want}): some file was fetched twice or partially`);

  const gen = await apiGenerate(t, b.page, { ...g.options, preview: true });
  checkGolden(t, gen, g, API_TOL);
  await shortReference(t, b.page);
  shared.api = t.keep(b);
});

test("cancel_then_generate", async (t) => {
  const g = G();
  const b = await loadedApiPage(t);
  const cancelled = await apiGenerate(t, b.page, { ...g.options, preview: true }, { abortAfter: 1 });
  t.log(`cancelled run: ${cancelled.ok ? "resolved" : `rejected ${cancelled.error.name} (DOMException ${cancelled.error.isDOMException}): ${cancelled.error.message}`} after ${cancelled.steps.length} steps, ${cancelled.seconds.toFixed(1)} s`);
  assert(!cancelled.ok, "generate resolved although it was aborted at step 1");
  assert(cancelled.error.name === "AbortError", `rejected with ${cancelled.error.name}: ${cancelled.error.message}, expected AbortError`);
  assert(cancelled.steps.length >= 1 && cancelled.steps.length < g.case.steps, `onStep called ${cancelled.steps.length} times`);
  await checkAgainstFirstLoad(t, b.page, "after the cancel");
  shared.api = t.keep(b);
});

test("unicode_prompt_png", async (t) => {
  // A1111's "parameters" chunk must keep a non-Latin-1 prompt intact: iTXt (UTF-8), while a
  // Latin-1 prompt stays in tEXt (what most PNG readers show).
  const b = await loadedApiPage(t);
  const prompt = "a cat’s “dream” — 東京 🙂";
  const opts = { prompt, negativePrompt: "blurry", steps: 2, guidanceScale: 7.5, seed: 42, width: 64, height: 64, sampler: "ddim", batch: 1, preview: false };
  const gen = await apiGenerate(t, b.page, opts);
  assert(gen.ok, () => `generate rejected: ${gen.error.name}: ${gen.error.message}`);
  t.log(`generate (${opts.steps} steps): ${gen.seconds.toFixed(1)} s; warnings ${JSON.stringify(gen.warnings)}, droppedTokens ${JSON.stringify(gen.droppedTokens)}`);
  assert(gen.images.length === 1, `expected 1 image, got ${gen.images.length}`);
  const img = gen.images[0];
  assert(img.width === 64 && img.height === 64, `image is ${img.width}x${img.height}`);
  assert(img.batchPos === 1, `batchPos ${img.batchPos}, expected 1`);
  assert(gen.droppedTokens && gen.droppedTokens.prompt === 0 && gen.droppedTokens.negativePrompt === 0, `droppedTokens ${JSON.stringify(gen.droppedTokens)}`);
  const png = decodePng(img.png);
  t.log(`PNG: ${img.pngSize} bytes, chunks ${png.chunks.join(" ")}; parameters in ${png.textChunk.parameters}: ${JSON.stringify(png.text.parameters)}`);
  assert(png.textChunk.parameters === "iTXt", `the "parameters" chunk is ${png.textChunk.parameters}, expected iTXt for a non-Latin-1 prompt`);
  assert(png.text.parameters.startsWith(prompt + "\n"), `the PNG's parameters do not start with the prompt: ${JSON.stringify(png.text.parameters)}`);
  assert(png.text.parameters === img.parameters, `PNG parameters differ from .parameters:\n${png.text.parameters}\nvs\n${img.parameters}`);
  let diff = 0;
  for (let i = 0; i < png.rgba.length; i++) if (i % 4 !== 3 && png.rgba[i] !== img.pixels[i]) diff++;
  assert(diff === 0, `PNG pixels differ from imageData in ${diff} channel values`);

  const latin = "café crème, 50 × 50 °C";
  const gen2 = await apiGenerate(t, b.page, { ...opts, prompt: latin, steps: 1 });
  assert(gen2.ok, () => `generate rejected: ${gen2.error.name}: ${gen2.error.message}`);
  const png2 = decodePng(gen2.images[0].png);
  t.log(`Latin-1 prompt: parameters in ${png2.textChunk.parameters}: ${JSON.stringify(png2.text.parameters)} (${gen2.seconds.toFixed(1)} s)`);
  assert(png2.textChunk.parameters === "tEXt", `the "parameters" chunk is ${png2.textChunk.parameters} for a Latin-1 prompt, expected tEXt`);
  assert(png2.text.parameters === gen2.images[0].parameters && png2.text.parameters.startsWith(latin + "\n"), `Latin-1 parameters: ${JSON.stringify(png2.text.parameters)}`);
  shared.api = t.keep(b);
});

test("api_option_errors", async (t) => {
  // Malformed options reject with a TypeError before anything reaches the worker.
  const b = await loadedApiPage(t);
  const r = await evaluate(b.page, async () => {
    const sd = window.e2e.sd;
    const attempt = async (f) => {
      try {
        await f();
        return { rejected: false };
      } catch (e) {
        return { rejected: true, typeError: e instanceof TypeError, name: e.name, message: e.message };
      }
    };
    const base = { prompt: "x", steps: 1, width: 64, height: 64 };
    return {
      "batchPos 0": await attempt(() => sd.generate({ ...base, batch: 2, batchPos: 0 })),
      "batchPos 3 of 2": await attempt(() => sd.generate({ ...base, batch: 2, batchPos: 3 })),
      "batchPos 1.5": await attempt(() => sd.generate({ ...base, batch: 2, batchPos: 1.5 })),
      "batchPos 2, batch default": await attempt(() => sd.generate({ ...base, batchPos: 2 })),
      "batchPos string": await attempt(() => sd.generate({ ...base, batch: 2, batchPos: "2" })),
      "resizeMode zoom": await attempt(() => sd.generate({ ...base, resizeMode: "zoom" })),
      "vaeDtype f8": await attempt(() => window.StableDiffusion.load({ model: "/model/", vaeDtype: "f8" })),
      "dtype bf16": await attempt(() => window.StableDiffusion.load({ model: "/model/", dtype: "bf16" })),
    };
  }, null, MIN, "invalid options");
  for (const [what, x] of Object.entries(r)) {
    t.log(`${what}: ${x.rejected ? `${x.name}: ${x.message}` : "resolved"}`);
    assert(x.rejected && x.typeError, `${what}: ${x.rejected ? `rejected with ${x.name}, not a TypeError` : "did not reject"}`);
  }
  shared.api = t.keep(b);
}, { timeoutMs: 3 * MIN });

test("api_size_limits", async (t) => {
  // Sizes that cannot fit are refused at once with a clear message: a start image's side or
  // megapixels (checked before its pixels are copied; a PNG or JPEG before it is decoded), and
  // batch × width × height beyond what the readback holds.
  const b = await loadedApiPage(t);
  const r = await evaluate(b.page, async () => {
    const sd = window.e2e.sd;
    const attempt = async (f) => {
      const t0 = performance.now();
      try {
        await f();
        return { rejected: false };
      } catch (e) {
        return { rejected: true, name: e.name, rangeError: e instanceof RangeError, message: e.message, ms: performance.now() - t0 };
      }
    };
    // A PNG whose header says 30000×30000 (decoded that would be 3.6 GB of RGBA).
    const crc = (bytes) => {
      let c = ~0;
      for (const x of bytes) {
        c ^= x;
        for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
      }
      return ~c >>> 0;
    };
    const chunk = (type, data) => {
      const body = new Uint8Array([...new TextEncoder().encode(type), ...data]);
      const out = new Uint8Array(12 + data.length);
      const dv = new DataView(out.buffer);
      dv.setUint32(0, data.length);
      out.set(body, 4);
      dv.setUint32(8 + data.length, crc(body));
      return out;
    };
    const ihdr = new Uint8Array(13);
    new DataView(ihdr.buffer).setUint32(0, 30000);
    new DataView(ihdr.buffer).setUint32(4, 30000);
    ihdr.set([8, 2, 0, 0, 0], 8);
    const bomb = new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IEND", new Uint8Array(0))], { type: "image/png" });
    const base = { prompt: "x", steps: 1, width: 64, height: 64, preview: false };
    return {
      "initImage 16385×1 (ImageData)": await attempt(() => sd.generate({ ...base, initImage: new ImageData(16385, 1) })),
      "initImage 7000×6000 (ImageData, 42 MP)": await attempt(() => sd.generate({ ...base, initImage: new ImageData(7000, 6000) })),
      "initImage PNG header 30000×30000": await attempt(() => sd.generate({ ...base, initImage: bomb })),
      "batch 5 × 2048×2048": await attempt(() => sd.generate({ ...base, batch: 5, width: 2048, height: 2048 })),
    };
  }, null, 2 * MIN, "size limits");
  for (const [what, x] of Object.entries(r)) t.log(`${what}: ${x.rejected ? `${x.name} in ${x.ms.toFixed(0)} ms: ${x.message}` : "resolved"}`);
  const want = {
    "initImage 16385×1 (ImageData)": /16385×1: it must be between 1 and 16384 pixels on a side/,
    "initImage 7000×6000 (ImageData, 42 MP)": /42\.0 megapixels\): at most 40 megapixels/,
    "initImage PNG header 30000×30000": /30000×30000/,
    "batch 5 × 2048×2048": /21\.0 megapixels of output/,
  };
  for (const [what, re] of Object.entries(want)) {
    const x = r[what];
    assert(x.rejected && re.test(x.message), `${what}: ${x.rejected ? `message ${JSON.stringify(x.message)} lacks ${re}` : "was accepted"}`);
    assert(x.ms < 5000, `${what}: took ${x.ms.toFixed(0)} ms to refuse`);
  }
  for (const what of Object.keys(want).filter((w) => w.startsWith("initImage"))) assert(r[what].rangeError, `${what}: rejected with ${r[what].name}, expected a RangeError`);
  shared.api = t.keep(b);
}, { timeoutMs: 3 * MIN });

/** A browser with the v2 real-config model loaded through the API (f32, full-precision files). */
async function realApiPage(t) {
  if (shared.real) {
    const b = t.adopt(shared.real);
    shared.real = null;
    return b;
  }
  const b = await t.launch();
  await openHarness(b.page, base());
  await apiLoad(t, b.page, { model: REAL, variant: null, dtype: "f32" });
  return b;
}

const apiStats = (page) => evaluate(page, () => window.e2e.sd.stats(), null, MIN, "stats");

/** GPU memory after a generation is what it was before it: the weights' buffers alone. */
function checkMemoryReturned(t, before, after, what) {
  t.log(`stats ${what}: ${JSON.stringify(after)} (before: live ${before.gpuLiveBytes}, total ${before.gpuTotalBytes})`);
  // weightsBytes counts the tensors' bytes; the pool rounds each buffer up to 256 bytes.
  const padding = after.gpuLiveBytes - after.weightsBytes;
  t.log(`${what}: live - weights = ${padding} B (256-byte rounding of the weight buffers), peak ${fmtBytes(after.gpuPeakBytes)}`);
  assert(Math.abs(after.gpuLiveBytes - before.gpuLiveBytes) <= 1024, `${what}: gpuLiveBytes ${after.gpuLiveBytes} != ${before.gpuLiveBytes} before the generation (± 1 KiB): memory was not returned`);
  assert(Math.abs(after.gpuTotalBytes - after.gpuLiveBytes) <= 1024, `${what}: the pool still owns ${after.gpuTotalBytes - after.gpuLiveBytes} bytes of free buffers (gpuTotalBytes ${after.gpuTotalBytes}, live ${after.gpuLiveBytes})`);
  assert(padding >= 0 && padding <= 0.01 * after.weightsBytes, `${what}: gpuLiveBytes ${after.gpuLiveBytes} is not the weights (${after.weightsBytes} B + buffer rounding)`);
  assert(after.gpuPeakBytes > after.weightsBytes, `${what}: gpuPeakBytes ${after.gpuPeakBytes} <= weightsBytes ${after.weightsBytes}`);
}

test("batch2_matches_diffusers", async (t) => {
  const g = GS("txt2img_batch2_3steps");
  const b = await realApiPage(t);
  const st0 = await apiStats(b.page);
  const gen = await apiGenerate(t, b.page, { ...g.options, preview: true }, {}, 15 * MIN);
  assert(gen.ok, () => `generate rejected: ${gen.error.name}: ${gen.error.message}`);
  t.log(`batch ${g.batch}, ${g.case.steps} steps ${g.case.sampler}: ${gen.seconds.toFixed(1)} s, ${gen.steps.length} onStep calls; warnings ${JSON.stringify(gen.warnings)}`);
  assert(gen.images.length === g.batch, `expected ${g.batch} images, got ${gen.images.length}`);
  assert(gen.steps.length === g.case.steps, `onStep was called ${gen.steps.length} times, expected ${g.case.steps}`);
  gen.images.forEach((img, i) => {
    assert(img.width === g.width && img.height === g.height, `image ${i + 1} is ${img.width}x${img.height}`);
    const cmp = compareImage(img.pixels, g, i);
    t.log(`image ${i + 1} vs diffusers' batch image ${i + 1}: ${fmtCompare(cmp)} (tolerance ${API_TOL})`);
    assert(cmp.mean <= API_TOL, `image ${i + 1}: mean error ${cmp.mean.toExponential(3)} > ${API_TOL}`);
    assert(img.batchPos === i + 1, `images[${i}].batchPos is ${img.batchPos}, expected ${i + 1}`);
    assert(img.seed === g.case.seed, `images[${i}].seed is ${img.seed}, expected ${g.case.seed}`);
    const png = decodePng(img.png);
    assert(png.text.parameters === img.parameters, `image ${i + 1}: PNG parameters differ from .parameters`);
    assert(png.text.parameters.includes(`Batch size: ${g.batch}, Batch pos: ${i}`), `image ${i + 1}: parameters lack "Batch size: ${g.batch}, Batch pos: ${i}": ${JSON.stringify(png.text.parameters)}`);
  });
  const cross = compareImage(gen.images[0].pixels, g, 1);
  t.log(`image 1 vs golden image 2 (must differ): mean ${cross.mean.toExponential(3)}`);
  assert(cross.mean > 0.05, `the two images of the batch are (nearly) the same: ${cross.mean}`);
  const st = await apiStats(b.page);
  checkMemoryReturned(t, st0, st, "after the batch");

  // batchPos 2 alone: only that image, the same as in the whole batch (A1111's "Batch pos: 1").
  const one = await apiGenerate(t, b.page, { ...g.options, batchPos: 2, preview: false }, {}, 10 * MIN);
  assert(one.ok, () => `batchPos 2 rejected: ${one.error.name}: ${one.error.message}`);
  assert(one.images.length === 1 && one.images[0].batchPos === 2, `batchPos 2 gave ${one.images.length} image(s), batchPos ${one.images[0]?.batchPos}`);
  let maxDiff = 0;
  const px = one.images[0].pixels, whole = gen.images[1].pixels;
  for (let i = 0; i < px.length; i++) if (i % 4 !== 3) maxDiff = Math.max(maxDiff, Math.abs(px[i] - whole[i]));
  const c2 = compareImage(px, g, 1);
  t.log(`batchPos 2 alone: ${one.seconds.toFixed(1)} s; vs image 2 of the batch max |diff| ${maxDiff}/255; vs diffusers' image 2: ${fmtCompare(c2)}`);
  assert(maxDiff <= 1, `batchPos 2 differs from image 2 of the whole batch by up to ${maxDiff}/255`);
  assert(c2.mean <= API_TOL, `batchPos 2 vs diffusers' image 2: mean error ${c2.mean.toExponential(3)} > ${API_TOL}`);
  assert(decodePng(one.images[0].png).text.parameters.includes(`Batch size: ${g.batch}, Batch pos: 1`), "batchPos 2: the PNG lacks \"Batch size: 2, Batch pos: 1\"");

  shared.real = t.keep(b);
}, { timeoutMs: 25 * MIN });

test("long_prompt_warning", async (t) => {
  // 84 CLIP tokens: the end is cut at 77 (start + 75 + end), as diffusers does, and said so.
  const g = GR("txt2img_long_prompt");
  const b = await realApiPage(t);
  const steps = 1; // the warning is about the prompt, not the denoising
  const gen = await apiGenerate(t, b.page, { ...g.options, steps, preview: false });
  assert(gen.ok, () => `generate rejected: ${gen.error.name}: ${gen.error.message}`);
  t.log(`API (${steps} steps): ${gen.seconds.toFixed(1)} s; droppedTokens ${JSON.stringify(gen.droppedTokens)}; warnings ${JSON.stringify(gen.warnings)}`);
  assert(gen.droppedTokens.prompt === 9, `droppedTokens.prompt is ${gen.droppedTokens.prompt}, expected 9`);
  assert(gen.droppedTokens.negativePrompt === 0, `droppedTokens.negativePrompt is ${gen.droppedTokens.negativePrompt}, expected 0`);
  assert(gen.warnings.some((w) => /CLIP's 77 tokens: 9 token/.test(w)), `no warning says 9 tokens beyond CLIP's 77 were dropped: ${JSON.stringify(gen.warnings)}`);
  // With prompt weighting (A1111 syntax, the default) a long prompt is encoded in chunks of
  // 75 tokens (up to 3): these 84 tokens all count.
  const lpw = await apiGenerate(t, b.page, { ...g.options, promptWeighting: true, steps, preview: false });
  assert(lpw.ok, () => `generate (promptWeighting) rejected: ${lpw.error.name}: ${lpw.error.message}`);
  t.log(`API with promptWeighting: droppedTokens ${JSON.stringify(lpw.droppedTokens)}; warnings ${JSON.stringify(lpw.warnings)}`);
  assert(lpw.droppedTokens.prompt === 0 && lpw.droppedTokens.negativePrompt === 0, `promptWeighting: droppedTokens ${JSON.stringify(lpw.droppedTokens)}, expected none`);
  assert(!lpw.warnings.some((w) => /token/.test(w)), `promptWeighting: a token warning for an 84-token prompt: ${JSON.stringify(lpw.warnings)}`);
  const same = lpw.images[0].pixels.every((v, i) => v === gen.images[0].pixels[i]);
  assert(!same, "promptWeighting gave the same image as the prompt cut at 77 tokens: the last 9 tokens were not used");

  // The page, in the same profile (weights from the cache), with f16 weights and an f32 VAE,
  // its "prompt weighting" box off (diffusers' plain encode).
  const page = await b.context.newPage();
  try {
    await page.goto(`${base()}/index.html?model=${REAL}&variant=none&dtype=f16&vaeDtype=f32&autoload=1`);
    const state = await waitForState(page, ["ready", "error"], 5 * MIN);
    assert(state === "ready", `page state "${state}": ${await page.textContent("#message")}`);
    const sel = await page.evaluate(() => ({ dtype: document.querySelector("#dtype").value, vae: document.querySelector("#vae-dtype").value }));
    assert(sel.dtype === "f16" && sel.vae === "f32", `the page's selects read ${JSON.stringify(sel)} for ?dtype=f16&vaeDtype=f32`);
    await page.fill("#prompt", g.case.prompt);
    await page.fill("#negative", "");
    await setValue(page, "#steps", String(steps));
    await page.setChecked("#random-seed", false);
    await setValue(page, "#seed", String(g.case.seed));
    await setValue(page, "#width", "64");
    await setValue(page, "#height", "64");
    await setValue(page, "#batch", "1");
    await page.selectOption("#sampler", g.case.sampler);
    assert(await page.isChecked("#prompt-weighting"), "the page's prompt weighting box is not on by default");
    await page.setChecked("#prompt-weighting", false);
    const t0 = Date.now();
    await page.click("#generate");
    await page.waitForSelector("#gallery figure.result img", { timeout: 5 * MIN });
    const end = await waitForState(page, ["ready", "error"], 2 * MIN);
    const shown = await page.evaluate(() => ({ warnings: document.querySelector("#warnings")?.textContent ?? null, message: document.querySelector("#message").textContent }));
    const visible = await page.isVisible("#warnings");
    t.log(`page: generated in ${((Date.now() - t0) / 1000).toFixed(1)} s, state "${end}"; #message ${JSON.stringify(shown.message)}; #warnings (visible ${visible}) ${JSON.stringify(shown.warnings)}`);
    assert(end === "ready", `state after generation: "${end}": ${shown.message}`);
    assert(visible && /CLIP's 77 tokens: 9 token/.test(shown.warnings || ""), `the page does not show the dropped-token warning: #warnings ${JSON.stringify(shown.warnings)} (visible ${visible})`);
    await page.setViewportSize({ width: 390, height: 844 });
    fs.mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: path.join(OUT, "ui-warning-phone.png"), fullPage: true });
    const sw = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth }));
    assert(sw.scrollWidth <= sw.innerWidth, `horizontal scroll at 390 px: scrollWidth ${sw.scrollWidth} > ${sw.innerWidth}`);
  } finally {
    await page.close().catch(() => {});
  }
  shared.real = t.keep(b);
});

test("ui_img2img_any_size", async (t) => {
  // A start image of a size that is no multiple of 64: the page proposes its size rounded to
  // 64, and the library fits it with the chosen resize mode.
  const b = await realApiPage(t);
  const page = await b.context.newPage();
  try {
    await page.goto(`${base()}/index.html?model=${REAL}&variant=none&dtype=f32&autoload=1`);
    const state = await waitForState(page, ["ready", "error"], 5 * MIN);
    assert(state === "ready", `page state "${state}": ${await page.textContent("#message")}`);
    const [w, h] = [100, 70];
    const rgb = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rgb.set([(x * 255) / (w - 1), (y * 255) / (h - 1), 128], (y * w + x) * 3);
    await page.setInputFiles("#init-image", { name: "photo-100x70.png", mimeType: "image/png", buffer: encodePng(w, h, rgb) });
    await page.waitForFunction(() => document.querySelector("#width").value === "128" && document.querySelector("#height").value === "64", null, { timeout: 30_000 })
      .catch(async () => { throw new AssertionError(`width/height are ${await page.inputValue("#width")}x${await page.inputValue("#height")} after a 100x70 start image, expected 128x64`); });
    await page.selectOption("#resize-mode", "fit");
    await page.fill("#prompt", "a watercolour landscape");
    await setValue(page, "#steps", "4");
    await setValue(page, "#strength", "0.5");
    await page.setChecked("#random-seed", false);
    await setValue(page, "#seed", "5");
    await setValue(page, "#batch", "1");
    const t0 = Date.now();
    await page.click("#generate");
    await page.waitForSelector("#gallery figure.result img", { timeout: 5 * MIN });
    const end = await waitForState(page, ["ready", "error"], 2 * MIN);
    const res = await page.evaluate(async () => {
      const img = document.querySelector("#gallery figure.result img");
      await img.decode();
      return { w: img.naturalWidth, h: img.naturalHeight, title: img.title, caption: document.querySelector("#gallery figure.result figcaption").textContent, size: document.querySelector("#init-size").textContent };
    });
    t.log(`img2img through the page: ${((Date.now() - t0) / 1000).toFixed(1)} s, state "${end}"; ${res.w}x${res.h}; #init-size ${JSON.stringify(res.size)}; parameters ${JSON.stringify(res.title)}`);
    assert(end === "ready", `state after generation: "${end}": ${await page.textContent("#message")}`);
    assert(res.w === 128 && res.h === 64, `output is ${res.w}x${res.h}, expected 128x64`);
    assert(res.title.includes("Denoising strength: 0.5") && res.title.includes("Resize mode: Resize and fill"), `parameters lack the img2img strength / resize mode: ${JSON.stringify(res.title)}`);
  } finally {
    await page.close().catch(() => {});
  }
  shared.real = t.keep(b);
}, { timeoutMs: 8 * MIN });

test("ui_inpaint", async (t) => {
  // The page's mask editor: diffusers' StableDiffusionInpaintPipeline golden (e2e-short
  // inpaint9_e2e: init.png + mask.png, 4 DDIM steps with CFG, 64²) generated through the page
  // with the uploaded mask; then a painted stroke and an outpainting extension, read through
  // the hook sdApp.readParams() (what Generate passes to sd.generate) without generating.
  const g = GS("inpaint9_e2e");
  const initPng = path.join(INPAINT, "init.png"), maskPng = path.join(INPAINT, "mask.png");
  const init = decodePng(fs.readFileSync(initPng)), maskFile = decodePng(fs.readFileSync(maskPng));
  const W = init.width, H = init.height;
  assert(W === g.width && H === g.height && maskFile.width === W && maskFile.height === H, `fixture sizes: init ${W}x${H}, mask ${maskFile.width}x${maskFile.height}, golden ${g.width}x${g.height}`);
  const b = await t.launch({ viewport: { width: 1280, height: 900 } });
  const page = b.page;
  const resp = await page.goto(`${base()}/index.html?model=/model-inpaint/&variant=none&dtype=f32&autoload=1`);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  const state = await waitForState(page, ["ready", "error"], 5 * MIN);
  assert(state === "ready", `page state "${state}": ${await page.textContent("#message")}`);

  // A mask as the hook returns it: { w, h, grey (R), opaqueGrey (R = G = B, alpha 255) }.
  const sentMask = (expr) => page.evaluate((e) => {
    const o = e === "last" ? window.sdApp.lastGenerateOptions : window.sdApp.readParams();
    const m = o && o.mask;
    if (!m) return null;
    const d = m.data;
    let opaqueGrey = true;
    const grey = [];
    for (let i = 0; i < d.length; i += 4) {
      grey.push(d[i]);
      if (d[i + 1] !== d[i] || d[i + 2] !== d[i] || d[i + 3] !== 255) opaqueGrey = false;
    }
    const init = o.initImage;
    return { isImageData: m instanceof ImageData, w: m.width, h: m.height, grey, opaqueGrey, pasteBack: o.pasteBack,
      init: init instanceof File ? { file: init.name } : init instanceof ImageData ? { w: init.width, h: init.height, rgba: Array.from(init.data) } : String(init) };
  }, expr);
  const maskGrey = (x, y) => maskFile.rgba[(y * W + x) * 4];
  const sameAsMaskPng = (m, what) => {
    assert(m && m.isImageData, `${what}: no mask ImageData (${JSON.stringify(m && { w: m.w, h: m.h })})`);
    assert(m.w === W && m.h === H && m.opaqueGrey, `${what}: mask is ${m.w}x${m.h}, opaque grey ${m.opaqueGrey}`);
    let differ = 0;
    for (let i = 0; i < W * H; i++) if (m.grey[i] !== maskFile.rgba[i * 4]) differ++;
    assert(differ === 0, `${what}: ${differ} mask pixels differ from mask.png`);
  };

  // (a) init.png + mask.png upload, the golden's parameters.
  await page.setInputFiles("#init-image", initPng);
  await page.waitForFunction(() => !document.querySelector("#mask-editor").hidden, null, { timeout: 30_000 });
  const sized = await page.evaluate(() => ({ w: document.querySelector("#width").value, h: document.querySelector("#height").value, size: document.querySelector("#init-size").textContent, info: document.querySelector("#mask-info").textContent }));
  t.log(`start image chosen: width/height ${sized.w}x${sized.h}; #init-size ${JSON.stringify(sized.size)}; #mask-info ${JSON.stringify(sized.info)}`);
  assert(sized.w === String(W) && sized.h === String(H), `width/height ${sized.w}x${sized.h}, expected ${W}x${H}`);
  assert((await sentMask("now")) === null, "an empty (black) mask is sent: it must be plain img2img");
  await page.setInputFiles("#mask-file", maskPng);
  await page.waitForFunction(() => /Inpainting/.test(document.querySelector("#mask-info").textContent), null, { timeout: 30_000 });
  t.log(`mask uploaded: #mask-info ${JSON.stringify(await page.textContent("#mask-info"))}`);
  sameAsMaskPng(await sentMask("now"), "uploaded mask (readParams)");

  await fillGoldenForm(page, g);
  await setValue(page, "#strength", String(g.case.strength));
  await page.setChecked("#prompt-weighting", false); // diffusers' plain prompt encoding
  assert(!(await page.isChecked("#paste-back")), "#paste-back is checked by default");
  const t0 = Date.now();
  await page.click("#generate");
  await page.waitForFunction(() => document.querySelector("#gallery figure.result") || document.body.dataset.state === "error", null, { timeout: 6 * MIN });
  const end = await waitForState(page, ["ready", "error"], 2 * MIN);
  const secs = (Date.now() - t0) / 1000;
  const sent = await sentMask("last");
  t.log(`generated through the page in ${secs.toFixed(1)} s, state "${end}"; sent initImage ${JSON.stringify(sent && sent.init)}, pasteBack ${sent && sent.pasteBack}`);
  sameAsMaskPng(sent, "mask passed to sd.generate");
  assert(sent.init && sent.init.file === "init.png", `initImage passed to sd.generate: ${JSON.stringify(sent.init)}, expected the chosen file`);
  assert(sent.pasteBack === false, `pasteBack passed: ${sent.pasteBack}, expected false`);
  assert(end === "ready", `state after generation: "${end}": ${await page.textContent("#message")}`);
  const res = await page.evaluate(async () => {
    const img = document.querySelector("#gallery figure.result img");
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    c.getContext("2d").drawImage(img, 0, 0);
    return { px: Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data), parameters: img.title, caption: document.querySelector("#gallery figure.result figcaption").textContent };
  });
  t.log(`parameters ${JSON.stringify(res.parameters)}; caption ${JSON.stringify(res.caption)}`);
  const cmp = compareImage(res.px, g);
  t.log(`golden ${g.name}: ${fmtCompare(cmp)} (tolerance ${API_TOL})`);
  assert(cmp.mean <= API_TOL, `mean error ${cmp.mean.toExponential(3)} > ${API_TOL} (${fmtCompare(cmp)})`);
  assert(res.parameters.includes(`Denoising strength: ${g.case.strength}`) && /Mask blur: \d+/.test(res.parameters), `parameters lack "Denoising strength: ${g.case.strength}" / "Mask blur: N": ${JSON.stringify(res.parameters)}`);

  // (b) one stroke with the mouse (pointer events) over the uploaded mask: brush 12 px (radius
  // 6), hard edge. Client coordinates -> image pixels through the canvas's box, as the page.
  const R = 6;
  await setValue(page, "#mask-size", String(2 * R));
  await setValue(page, "#mask-soft", "0");
  await page.locator("#mask-canvas").scrollIntoViewIfNeeded();
  const box = await page.locator("#mask-canvas").boundingBox();
  const [ax, ay, bx, by] = [14, 46, 50, 18]; // image pixels
  const client = (x, y) => [box.x + (x * box.width) / W, box.y + (y * box.height) / H];
  await page.mouse.move(...client(ax, ay));
  await page.mouse.down();
  await page.mouse.move(...client(bx, by), { steps: 12 });
  await page.mouse.up();
  await page.waitForFunction(() => /Inpainting/.test(document.querySelector("#mask-info").textContent), null, { timeout: 5_000 });
  const stroked = await sentMask("now");
  assert(stroked && stroked.w === W && stroked.h === H && stroked.opaqueGrey, `mask after the stroke: ${JSON.stringify(stroked && { w: stroked.w, h: stroked.h, opaqueGrey: stroked.opaqueGrey })}`);
  const segDist = (px, py) => {
    const dx = bx - ax, dy = by - ay;
    const u = Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)));
    return Math.hypot(px - (ax + u * dx), py - (ay + u * dy));
  };
  let inside = 0, insideBad = 0, away = 0, awayBad = 0, firstBad = null;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const d = segDist(x + 0.5, y + 0.5), v = stroked.grey[y * W + x];
      if (d < R - 1.5) {
        inside++;
        if (v !== 255) { insideBad++; firstBad ??= { x, y, d, v, want: 255 }; }
      } else if (d > R + 1.5) {
        away++;
        if (v !== maskGrey(x, y)) { awayBad++; firstBad ??= { x, y, d, v, want: maskGrey(x, y) }; }
      }
    }
  }
  t.log(`stroke (${ax},${ay})-(${bx},${by}) radius ${R} on a ${box.width.toFixed(0)}x${box.height.toFixed(0)} px canvas: ${inside} pixels inside (${insideBad} not 255), ${away} away (${awayBad} not mask.png's)${firstBad ? `; first bad ${JSON.stringify(firstBad)}` : ""}`);
  assert(inside > 100 && insideBad === 0 && awayBad === 0, `the stroke is not exact in the mask sent: ${insideBad} inside pixels not 255, ${awayBad} pixels away from it differ from mask.png (first ${JSON.stringify(firstBad)})`);
  fs.mkdirSync(OUT, { recursive: true });
  await page.locator("#mask-editor").screenshot({ path: path.join(OUT, "inpaint-editor.png") });

  // (c) outpainting: 64 px on the right -> a 128x64 image (the old one at x < 64, the border
  // its last column replicated) and mask (the old one, the border white); width becomes 128.
  await setValue(page, "#extend-px", "64");
  await page.click("#extend-right");
  await page.waitForFunction(() => document.querySelector("#width").value === "128", null, { timeout: 5_000 })
    .catch(async () => { throw new AssertionError(`width is ${await page.inputValue("#width")} after extending 64 px to the right, expected 128`); });
  const ext = await sentMask("now");
  const extSize = await page.evaluate(() => ({ w: document.querySelector("#width").value, h: document.querySelector("#height").value, size: document.querySelector("#init-size").textContent }));
  t.log(`extended: width/height ${extSize.w}x${extSize.h}; #init-size ${JSON.stringify(extSize.size)}; mask ${ext && ext.w}x${ext && ext.h}; initImage ${ext && ext.init && (ext.init.file ?? `${ext.init.w}x${ext.init.h} ImageData`)}`);
  assert(extSize.h === "64" && /128×64/.test(extSize.size), `after extending: height ${extSize.h}, #init-size ${JSON.stringify(extSize.size)}`);
  const W2 = 2 * W;
  assert(ext && ext.w === W2 && ext.h === H && ext.opaqueGrey, `extended mask: ${JSON.stringify(ext && { w: ext.w, h: ext.h, opaqueGrey: ext.opaqueGrey })}`);
  assert(ext.init && ext.init.w === W2 && ext.init.h === H, `extended initImage: ${JSON.stringify(ext.init && { file: ext.init.file, w: ext.init.w, h: ext.init.h })}, expected ${W2}x${H} ImageData`);
  let maskBad = 0, imgBad = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W2; x++) {
      const want = x < W ? stroked.grey[y * W + x] : 255;
      if (ext.grey[y * W2 + x] !== want) maskBad++;
      const sx = Math.min(x, W - 1);
      for (let c = 0; c < 4; c++) if (ext.init.rgba[(y * W2 + x) * 4 + c] !== init.rgba[(y * W + sx) * 4 + c]) imgBad++;
    }
  }
  t.log(`extended mask: ${maskBad} pixels differ from (old mask | white border); extended image: ${imgBad} values differ from (init.png | its last column)`);
  assert(maskBad === 0 && imgBad === 0, `outpainting: ${maskBad} mask pixels and ${imgBad} image values are wrong`);
  await page.locator("#mask-editor").screenshot({ path: path.join(OUT, "outpaint-editor.png") });
  t.log(`screenshots: ${path.relative(ROOT, OUT)}/inpaint-editor.png, outpaint-editor.png`);
}, { timeoutMs: 10 * MIN });

test("ui_generate", async (t) => {
  const g = GS("txt2img_ddim_3steps");
  const b = await t.launch({ viewport: { width: 1280, height: 900 } });
  const page = b.page;
  server.clearLog();
  const resp = await page.goto(`${base()}/index.html?model=/model/&autoload=1`);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  const state = await waitForState(page, ["ready", "error"], 8 * MIN);
  const msg = await page.locator("#message").textContent().catch(() => null);
  t.log(`page state "${state}" (message: ${JSON.stringify(msg)})`);
  assert(state === "ready", `page state "${state}": ${msg}`);
  const fp16 = gets("/model/").filter((e) => e.path.endsWith(".safetensors"));
  t.log(`weights fetched: ${fp16.map((e) => e.path).join(", ")}; requests:\n    ${modelRequestsSummary()}`);
  assert(fp16.length > 0 && fp16.every((e) => e.path.includes(".fp16.")), "the page's default (variant fp16) did not fetch the *.fp16.safetensors files");
  const served = new Map(gets("/model/").filter((e) => e.status === 200 || e.status === 206).map((e) => [e.path, e.size]));
  const want = [...served.values()].reduce((a, n) => a + n, 0);
  assert(server.bytesSent("/model/") === want, `the page fetched ${server.bytesSent("/model/")} bytes under /model/ for ${want} bytes of files: something was downloaded twice`);

  await fillGoldenForm(page, g);
  const form = await page.evaluate(() => Object.fromEntries(["#prompt", "#negative", "#steps", "#guidance", "#seed", "#width", "#height", "#sampler", "#batch"].map((s) => [s, document.querySelector(s).value]).concat([["#random-seed", document.querySelector("#random-seed").checked]])));
  t.log(`form: ${JSON.stringify(form)}`);
  const t0 = Date.now();
  await page.click("#generate");
  await page.waitForSelector("#gallery figure.result img", { timeout: 8 * MIN });
  const end = await waitForState(page, ["ready", "error"], 2 * MIN);
  t.log(`generated in ${((Date.now() - t0) / 1000).toFixed(1)} s, state "${end}"`);
  assert(end === "ready", `state after generation: "${end}": ${await page.locator("#message").textContent().catch(() => "")}`);

  const res = await page.evaluate(async () => {
    const figs = document.querySelectorAll("#gallery figure.result");
    const img = figs[0].querySelector("img");
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const px = Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
    // preview canvas, whatever its context: through toDataURL
    const pv = document.querySelector("canvas#preview");
    let preview = null;
    if (pv) {
      const im = new Image();
      im.src = pv.toDataURL("image/png");
      await im.decode();
      const c2 = document.createElement("canvas");
      c2.width = pv.width;
      c2.height = pv.height;
      const x2 = c2.getContext("2d");
      x2.drawImage(im, 0, 0);
      const d = x2.getImageData(0, 0, c2.width, c2.height).data;
      let lo = 255, hi = 0, alpha = 0;
      for (let i = 0; i < d.length; i += 4) {
        for (let k = 0; k < 3; k++) { lo = Math.min(lo, d[i + k]); hi = Math.max(hi, d[i + k]); }
        alpha = Math.max(alpha, d[i + 3]);
      }
      preview = { width: pv.width, height: pv.height, range: hi - lo, alpha };
    }
    const bar = document.querySelector("#step-bar");
    return {
      figures: figs.length,
      width: c.width,
      height: c.height,
      px,
      lastSeed: document.querySelector("#last-seed")?.textContent ?? null,
      preview,
      bar: bar ? { value: Number(bar.value), max: Number(bar.max), tag: bar.tagName } : null,
    };
  });
  t.log(`gallery: ${res.figures} figure(s), ${res.width}x${res.height}; #last-seed ${JSON.stringify(res.lastSeed)}; preview ${JSON.stringify(res.preview)}; #step-bar ${JSON.stringify(res.bar)}`);
  assert(res.figures === 1, `${res.figures} figure.result in #gallery, expected 1`);
  assert(res.width === g.width && res.height === g.height, `image is ${res.width}x${res.height}`);
  const cmp = compareImage(res.px, g);
  t.log(`golden ${g.name}: ${fmtCompare(cmp)} (tolerance ${UI_TOL})`);
  assert(cmp.mean <= UI_TOL, `mean error ${cmp.mean.toExponential(3)} > ${UI_TOL}`);
  assert(res.lastSeed !== null && /(^|\D)42(\D|$)/.test(res.lastSeed), `#last-seed is ${JSON.stringify(res.lastSeed)}`);
  assert(res.preview, "no canvas#preview");
  assert(res.preview.alpha > 0 && res.preview.range > 8, `canvas#preview looks blank: ${JSON.stringify(res.preview)}`);
  assert(res.bar && res.bar.max > 0 && res.bar.value === res.bar.max, `#step-bar ${JSON.stringify(res.bar)}`);

  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, "ui-after-generation.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  await page.screenshot({ path: path.join(OUT, "ui-phone.png"), fullPage: true });
  const sw = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth }));
  t.log(`screenshots in ${path.relative(ROOT, OUT)}/; at 390 px: scrollWidth ${sw.scrollWidth}, innerWidth ${sw.innerWidth}`);
  assert(sw.scrollWidth <= sw.innerWidth, `horizontal scroll at 390 px: scrollWidth ${sw.scrollWidth} > ${sw.innerWidth}`);
});

test("ui_lora", async (t) => {
  // The kohya LoRA of tests/fixtures/lora (made for the real-config tiny SD-1.5) through the
  // page: loaded from a URL, merged at scale 1, then 0.4, then through a <lora:…> tag, then
  // removed. Each generation: 1 step, no CFG, 64² (SwiftShader: seconds).
  const LORA = "/lora/lora_kohya_a.safetensors";
  const loraSize = fs.statSync(path.join(ROOT, "tests/fixtures/lora/lora_kohya_a.safetensors")).size;
  const b = await t.launch({ viewport: { width: 1280, height: 900 } });
  const page = b.page;
  server.clearLog();
  const resp = await page.goto(`${base()}/index.html?model=${REAL}&variant=none&dtype=f32&autoload=1`);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  const state = await waitForState(page, ["ready", "error"], 8 * MIN);
  assert(state === "ready", `page state "${state}": ${await page.textContent("#message")}`);
  const stats = () => evaluate(page, () => window.sdApp.model.stats(), null, MIN, "stats");
  const modelGets = () => {
    const m = new Map();
    for (const e of gets(REAL)) m.set(e.path, (m.get(e.path) || 0) + 1);
    return m;
  };
  const afterLoad = modelGets();
  const logAtLoad = server.log.length;
  t.log(`model loaded: ${afterLoad.size} files fetched (${[...afterLoad].map(([p, n]) => `${p} x${n}`).join(", ")})`);
  assert([...afterLoad.values()].every((n) => n === 1), `a model file was fetched more than once during the load: ${JSON.stringify([...afterLoad])}`);

  await page.fill("#prompt", "a cozy cabin in a pine forest, evening light");
  await setValue(page, "#steps", "1");
  await setValue(page, "#guidance", "1");
  await page.setChecked("#random-seed", false);
  await setValue(page, "#seed", "41");
  await setValue(page, "#width", "64");
  await setValue(page, "#height", "64");
  await setValue(page, "#batch", "1");
  await page.selectOption("#sampler", "euler");
  const generate = async (what) => {
    const before = await page.locator("#gallery figure.result").count();
    const t0 = Date.now();
    await page.click("#generate");
    await page.waitForFunction((n) => document.querySelectorAll("#gallery figure.result").length > n || document.body.dataset.state === "error", before, { timeout: 4 * MIN });
    const end = await waitForState(page, ["ready", "error"], 2 * MIN);
    assert(end === "ready", `${what}: state "${end}": ${await page.textContent("#message")}`);
    const res = await page.evaluate(async () => {
      const img = document.querySelector("#gallery figure.result img");
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      c.getContext("2d").drawImage(img, 0, 0);
      const w = document.querySelector("#warnings");
      return { px: Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data), parameters: img.title, warnings: w.hidden ? "" : w.textContent };
    });
    t.log(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s; parameters ${JSON.stringify(res.parameters)}${res.warnings ? `; warnings ${JSON.stringify(res.warnings)}` : ""}`);
    return res;
  };
  const maxDiff = (a, b) => {
    let m = 0;
    for (let i = 0; i < a.length; i++) if (i % 4 !== 3) m = Math.max(m, Math.abs(a[i] - b[i]));
    return m;
  };
  const meanDiff = (a, b) => {
    let s = 0;
    for (let i = 0; i < a.length; i++) if (i % 4 !== 3) s += Math.abs(a[i] - b[i]);
    return s / ((a.length / 4) * 3) / 255;
  };

  const base0 = await generate("no LoRA");
  const st0 = await stats();
  t.log(`stats before the LoRA: ${JSON.stringify(st0)}`);
  assert(st0.weightUploadBytes > 0 && st0.loraBytes === 0, `stats before the LoRA: ${JSON.stringify(st0)}`);

  // Load it from its URL through the page.
  await page.fill("#lora-url", LORA);
  await page.click("#lora-load");
  await waitForState(page, ["ready", "error"], 2 * MIN);
  const listed = await page.evaluate(() => [...document.querySelectorAll("#lora-list li")].map((li) => ({ name: li.dataset.name, text: li.textContent, scale: li.querySelector("input.lora-scale-num")?.value })));
  t.log(`#lora-list: ${JSON.stringify(listed)}; #message ${JSON.stringify(await page.textContent("#message"))}`);
  assert(listed.length === 1 && listed[0].name === "lora_kohya_a" && listed[0].scale === "1", `the LoRA list after loading ${LORA}: ${JSON.stringify(listed)}`);
  const info = await evaluate(page, () => window.sdApp.model.loras[0], null, MIN, "loras");
  t.log(`LoraInfo: ${JSON.stringify(info)}`);
  assert(info.format === "kohya" && info.rank === 4 && info.modules.unet === 277 && info.modules.textEncoder === 18, `LoraInfo does not describe lora_kohya_a (kohya, rank 4, 277 UNet + 18 text-encoder modules): ${JSON.stringify(info)}`);
  assert(/^[0-9a-f]{12}$/.test(info.hash), `LoraInfo.hash ${JSON.stringify(info.hash)} is not 12 hex digits`);
  const st1 = await stats();
  assert(st1.loraUploadBytes === loraSize && st1.loraUploadFiles === 1, `the LoRA's bytes streamed: ${st1.loraUploadBytes} in ${st1.loraUploadFiles} file(s), the file has ${loraSize}`);
  assert(st1.loraBytes > 0 && st1.loraBaseBytes === 0, `after loading (nothing merged): loraBytes ${st1.loraBytes}, loraBaseBytes ${st1.loraBaseBytes}`);

  // Errors as clear messages, the worker still usable after them (the generations below): a
  // 404, a safetensors file without LoRA tensors, bytes that are no safetensors, a bad name,
  // a generation naming a LoRA that is not loaded.
  const errors = await evaluate(page, async () => {
    const sd = window.sdApp.model;
    const err = async (f) => {
      try {
        await f();
        return null;
      } catch (e) {
        return { name: e.name, message: e.message };
      }
    };
    const junk = new Uint8Array(4096);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 2654435761) >>> 24;
    return {
      missing: await err(() => sd.loadLora("/lora/no_such_lora.safetensors")),
      notLora: await err(() => sd.loadLora("/lora/golden.safetensors")),
      junk: await err(() => sd.loadLora(new File([junk], "junk.safetensors"))),
      badName: await err(() => sd.loadLora("/lora/lora_kohya_a.safetensors", { name: "a:b" })),
      notLoaded: await err(() => sd.generate({ prompt: "x", steps: 1, seed: 1, width: 64, height: 64, loras: [{ name: "nope", scale: 1 }] })),
      badScale: await err(() => sd.generate({ prompt: "x", loras: [{ name: "lora_kohya_a", scale: "high" }] })),
      removeUnknown: await err(() => sd.removeLora("nope")),
      loras: sd.loras.map((l) => l.name),
    };
  }, null, 2 * MIN, "LoRA errors");
  t.log(`errors: ${JSON.stringify(errors)}`);
  assert(errors.missing && /no_such_lora\.safetensors: HTTP 404/.test(errors.missing.message), `a missing LoRA URL: ${JSON.stringify(errors.missing)}`);
  assert(errors.notLora && /golden\.safetensors/.test(errors.notLora.message) && /LoRA/.test(errors.notLora.message), `a safetensors file without LoRA tensors: ${JSON.stringify(errors.notLora)}`);
  assert(errors.junk && /junk\.safetensors/.test(errors.junk.message) && errors.junk.name === "Error", `bytes that are no safetensors: ${JSON.stringify(errors.junk)}`);
  assert(errors.badName && /cannot contain/.test(errors.badName.message), `a name with ':': ${JSON.stringify(errors.badName)}`);
  assert(errors.notLoaded && /"nope" is not loaded \(loaded: lora_kohya_a\)/.test(errors.notLoaded.message), `generate naming a LoRA that is not loaded: ${JSON.stringify(errors.notLoaded)}`);
  assert(errors.badScale && errors.badScale.name === "TypeError", `a scale that is no number: ${JSON.stringify(errors.badScale)}`);
  assert(errors.removeUnknown && /not loaded/.test(errors.removeUnknown.message), `removeLora of an unknown name: ${JSON.stringify(errors.removeUnknown)}`);
  assert(JSON.stringify(errors.loras) === '["lora_kohya_a"]', `sd.loras after the failed loads: ${JSON.stringify(errors.loras)}`);
  const stErr = await stats();
  assert(stErr.loraBytes === st1.loraBytes, `failed LoRA loads left GPU memory behind: loraBytes ${stErr.loraBytes}, ${st1.loraBytes} before`);
  assert(Math.abs(stErr.gpuLiveBytes - st1.gpuLiveBytes) <= 1024, `failed LoRA loads left GPU memory behind: gpuLiveBytes ${stErr.gpuLiveBytes}, ${st1.gpuLiveBytes} before`);

  const scale = async (v) => {
    await page.fill("#lora-list li[data-name=lora_kohya_a] input.lora-scale-num", String(v));
    const slider = await page.inputValue("#lora-list li[data-name=lora_kohya_a] input.lora-scale");
    assert(Number(slider) === v, `the scale slider reads ${slider} after typing ${v}`);
  };
  const one = await generate("scale 1");
  const lora1 = await stats();
  await scale(0.4);
  const mid = await generate("scale 0.4");
  const stMid = await stats();
  // Scale 0 in the list, 1 through the prompt's tag (A1111), and a tag naming no loaded LoRA.
  await scale(0);
  await page.fill("#prompt", "a cozy cabin in a pine forest, evening light <lora:lora_kohya_a:1> <lora:not_loaded:0.5>");
  const tag = await generate("scale 0 + <lora:lora_kohya_a:1> tag");
  await page.fill("#prompt", "a cozy cabin in a pine forest, evening light");
  await page.click("#lora-list li[data-name=lora_kohya_a] button.lora-remove");
  await waitForState(page, ["ready", "error"], MIN);
  const left = await page.locator("#lora-list li").count();
  assert(left === 0, `${left} LoRA(s) still listed after Remove`);
  const removed = await generate("LoRA removed");
  const st2 = await stats();
  t.log(`stats: scale 1 ${JSON.stringify(lora1)}; scale 0.4 ${JSON.stringify(stMid)}; after removal ${JSON.stringify(st2)}`);

  const d = { lora1VsBase: meanDiff(one.px, base0.px), midVsBase: meanDiff(mid.px, base0.px), midVsOne: meanDiff(mid.px, one.px), tagVsOne: maxDiff(tag.px, one.px), removedVsBase: maxDiff(removed.px, base0.px) };
  t.log(`image differences: ${JSON.stringify(d)} (mean |diff| in [0,1]; tag vs scale 1 and removed vs no-LoRA: max |diff| /255)`);
  assert(d.lora1VsBase > 0.01, `the LoRA at scale 1 barely changes the image (mean |diff| ${d.lora1VsBase})`);
  assert(d.midVsBase > 0.002 && d.midVsOne > 0.002, `scale 0.4 does not give an image between: vs no-LoRA ${d.midVsBase}, vs scale 1 ${d.midVsOne}`);
  assert(d.midVsBase < d.lora1VsBase, `scale 0.4 is farther from no-LoRA (${d.midVsBase}) than scale 1 (${d.lora1VsBase})`);
  assert(d.tagVsOne <= 1, `<lora:lora_kohya_a:1> in the prompt differs from the slider at 1 by up to ${d.tagVsOne}/255`);
  assert(d.removedVsBase <= 1, `after removing the LoRA the image differs from the no-LoRA one by up to ${d.removedVsBase}/255: the base weights were not restored`);

  // PNG parameters name the LoRA (A1111: a tag for a LoRA the prompt does not name, and its hash).
  assert(one.parameters.startsWith("a cozy cabin in a pine forest, evening light <lora:lora_kohya_a:1>") && one.parameters.includes(`Lora hashes: "lora_kohya_a: ${info.hash}"`), `scale 1: parameters lack the LoRA: ${JSON.stringify(one.parameters)}`);
  assert(mid.parameters.includes("<lora:lora_kohya_a:0.4>"), `scale 0.4: parameters lack <lora:lora_kohya_a:0.4>: ${JSON.stringify(mid.parameters)}`);
  assert(tag.parameters.includes(`Lora hashes: "lora_kohya_a: ${info.hash}"`) && !/<lora:lora_kohya_a:1>.*<lora:lora_kohya_a/.test(tag.parameters), `tag: parameters ${JSON.stringify(tag.parameters)}`);
  assert(/not_loaded/.test(tag.warnings), `no warning for <lora:not_loaded:0.5>: ${JSON.stringify(tag.warnings)}`);
  assert(!removed.parameters.includes("Lora hashes") && !removed.parameters.includes("<lora:"), `after removal the parameters still name a LoRA: ${JSON.stringify(removed.parameters)}`);

  // No reload: no model file was fetched again, no weight byte streamed again; only merges.
  const later = server.log.slice(logAtLoad);
  const modelAgain = later.filter((e) => e.path.startsWith(REAL));
  const loraReqs = later.filter((e) => e.path === LORA);
  t.log(`requests after the model load: ${later.map((e) => `${e.method} ${e.path} -> ${e.status}`).join(", ")}`);
  assert(modelAgain.length === 0, `model files were fetched again: ${modelAgain.map((e) => `${e.method} ${e.path}`).join(", ")}`);
  const loraGets = loraReqs.filter((e) => e.method === "GET" && e.status === 200);
  assert(loraGets.length === 1 && loraGets[0].status === 200 && loraGets[0].bytes === loraSize, `the LoRA file was fetched ${loraGets.length} time(s): ${JSON.stringify(loraGets)}`);
  for (const [k, st] of [["scale 1", lora1], ["scale 0.4", stMid], ["removed", st2]]) {
    assert(st.weightUploadBytes === st0.weightUploadBytes && st.weightUploadFiles === st0.weightUploadFiles, `${k}: weight bytes were uploaded again (${st.weightUploadBytes} B in ${st.weightUploadFiles} files, ${st0.weightUploadBytes} B in ${st0.weightUploadFiles} at load)`);
    assert(st.weightsBytes === st0.weightsBytes, `${k}: weightsBytes ${st.weightsBytes} != ${st0.weightsBytes}`);
  }
  assert(lora1.loraMerges >= 295 && lora1.loraBaseBytes > 0 && stMid.loraMerges > lora1.loraMerges, `merges: ${lora1.loraMerges} at scale 1 (base copies ${lora1.loraBaseBytes} B), ${stMid.loraMerges} after 0.4`);
  // Removal frees the LoRA's factors and the base copies: GPU memory is the model's again.
  assert(st2.loraBytes === 0 && st2.loraBaseBytes === 0 && st2.lorasLoaded === 0, `after removal: loraBytes ${st2.loraBytes}, loraBaseBytes ${st2.loraBaseBytes}, lorasLoaded ${st2.lorasLoaded}`);
  assert(Math.abs(st2.gpuLiveBytes - st0.gpuLiveBytes) <= 1024, `after removal gpuLiveBytes is ${st2.gpuLiveBytes}, ${st0.gpuLiveBytes} before the LoRA: its memory was not freed`);

  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, "ui-lora.png"), fullPage: true });
}, { timeoutMs: 12 * MIN });

test("ui_page_features", async (t) => {
  // The page's conveniences in one profile (real-config tiny SD-1.5, kohya LoRA; every
  // generation 1 step at 64², SwiftShader seconds): the keyboard shortcut, the queue, PNG info
  // (a PNG of the page and an A1111 one), the persistent gallery (delete, download all as a
  // ZIP, delete all), the service worker's offline shell (reload + generate offline).
  const T0 = Date.now();
  const times = [];
  const lap = (what, t0) => times.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const LORA = "/lora/lora_kohya_a.safetensors";
  const url = `${base()}/index.html?model=${REAL}&variant=none&dtype=f32&autoload=1`;

  // The service worker's SHELL list names every file of dist/ the page and the library load.
  const swText = fs.readFileSync(path.join(ROOT, "www/sw.js"), "utf8");
  const shell = JSON.parse(`[${/const SHELL = \[([^\]]*)\]/.exec(swText)[1].trim().replace(/,\s*$/, "")}]`);
  const distFiles = [...fs.readdirSync(DIST).filter((f) => /\.(html|js|css|wasm)$/.test(f) && f !== "sw.js"),
    ...fs.readdirSync(path.join(DIST, "wasm")).map((f) => `wasm/${f}`)];
  const unlisted = distFiles.filter((f) => !shell.includes(f));
  const missing = shell.filter((f) => f !== "./" && !distFiles.includes(f));
  t.log(`sw.js SHELL: ${shell.length} entries; dist/: ${distFiles.join(", ")}`);
  assert(unlisted.length === 0 && missing.length === 0, `www/sw.js SHELL and dist/ differ: not in SHELL ${JSON.stringify(unlisted)}, not in dist/ ${JSON.stringify(missing)}`);

  const b = await t.launch({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = b.page;
  server.clearLog();
  let t0 = Date.now();
  const resp = await page.goto(url);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  let state = await waitForState(page, ["ready", "error"], 5 * MIN);
  assert(state === "ready", `page state "${state}": ${await page.textContent("#message")}`);
  const swState = await evaluate(page, () => navigator.serviceWorker.ready.then((r) => r.active && r.active.state), null, MIN, "the service worker's registration");
  assert(swState === "activated", `the service worker is ${swState} after the first visit`);
  lap("first visit + model load", t0);
  // The service worker installed during this load let the model's downloads through untouched:
  // each file fetched once, whole.
  const firstGets = gets(REAL).filter((e) => e.status === 200 || e.status === 206);
  const perFile = new Map();
  for (const e of firstGets) perFile.set(e.path, (perFile.get(e.path) || 0) + 1);
  t.log(`model requests of the first visit:\n    ${modelRequestsSummary(REAL)}`);
  assert([...perFile.values()].every((n) => n === 1), `a model file was fetched more than once during the first visit: ${JSON.stringify([...perFile])}`);
  assert(firstGets.every((e) => e.done && !e.aborted), `a model download was cut: ${JSON.stringify(firstGets.filter((e) => !e.done || e.aborted))}`);

  t0 = Date.now();
  await page.fill("#lora-url", LORA);
  await page.click("#lora-load");
  state = await waitForState(page, ["ready", "error"], 2 * MIN);
  assert(state === "ready" && (await page.locator("#lora-list li").count()) === 1, `LoRA load: state "${state}": ${await page.textContent("#message")}`);
  await page.fill("#lora-list li[data-name=lora_kohya_a] input.lora-scale-num", "0.6");
  lap("LoRA load", t0);

  // The settings of job A (iTXt: the prompt is not Latin-1; a line break in it). Guidance 1
  // (no CFG: half the UNet work; the negative prompt is still written into the PNG).
  const A = { prompt: "a red fox in the snow,\n“winter” 雪", negative: "blurry, low quality", steps: "1", guidance: "1", sampler: "dpmpp_2m_karras", seed: "1234", width: "64", height: "64", batch: "2" };
  await page.fill("#prompt", A.prompt);
  await page.fill("#negative", A.negative); // before guidance 1 disables the box
  await setValue(page, "#guidance", A.guidance);
  await setValue(page, "#steps", A.steps);
  await page.selectOption("#sampler", A.sampler);
  await page.setChecked("#random-seed", false);
  await setValue(page, "#seed", A.seed);
  await setValue(page, "#width", A.width);
  await setValue(page, "#height", A.height);
  await setValue(page, "#batch", A.batch);
  await page.fill("#batch-pos", "");

  // Ctrl+Enter (focus in another field than the prompt) starts job A; while it runs, Generate
  // and Ctrl+Enter queue jobs B (seed 5) and C (seed 6), batch 1 each; B is cancelled.
  t0 = Date.now();
  await page.focus("#negative");
  await page.keyboard.press("Control+Enter");
  state = await waitForState(page, ["generating", "error"], 10_000).catch(() => "not generating");
  assert(state === "generating", `Ctrl+Enter did not start a generation: state "${state}": ${await page.textContent("#message")}`);
  await setValue(page, "#batch", "1");
  await setValue(page, "#seed", "5");
  await page.click("#generate");
  await setValue(page, "#seed", "6");
  await page.focus("#prompt");
  await page.keyboard.press("Control+Enter");
  const queued = await page.evaluate(() => ({ state: document.body.dataset.state, items: [...document.querySelectorAll("#queue li")].map((li) => ({ job: li.dataset.job, state: li.dataset.state, text: li.textContent })), status: document.querySelector("#queue-status").textContent }));
  t.log(`queue while job A runs: ${JSON.stringify(queued)}`);
  assert(queued.state === "generating", `job A ended before B and C were queued (state "${queued.state}"): the queue is not tested`);
  assert(queued.items.length === 3 && queued.items[0].state === "running" && queued.items[1].state === "waiting" && queued.items[2].state === "waiting", `#queue lists ${JSON.stringify(queued.items)}, expected the running job and 2 waiting`);
  assert(/seed 1234/.test(queued.items[0].text) && /seed 5\b/.test(queued.items[1].text) && /seed 6\b/.test(queued.items[2].text), `queued jobs do not show their own seeds (settings not snapshotted?): ${JSON.stringify(queued.items.map((i) => i.text))}`);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, "ui-queue.png"), fullPage: true });
  const jobB = queued.items[1].job;
  await page.click(`#queue li[data-job="${jobB}"] button.job-cancel`);
  const afterCancel = await page.evaluate(() => [...document.querySelectorAll("#queue li")].map((li) => li.dataset.job));
  assert(afterCancel.length === 2 && !afterCancel.includes(jobB), `after cancelling job ${jobB}: #queue lists jobs ${JSON.stringify(afterCancel)}`);
  await page.waitForFunction(() => !window.sdApp.queue.running && window.sdApp.queue.waiting.length === 0 && ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 4 * MIN });
  state = await page.evaluate(() => document.body.dataset.state);
  assert(state === "ready", `after the queue: state "${state}": ${await page.textContent("#message")}`);
  lap("jobs A (batch 2) + C through the queue", t0);

  // The gallery's figures, newest first, with their PNG bytes.
  const figures = () => page.evaluate(async () => Promise.all([...document.querySelectorAll("#gallery figure.result")].map(async (f) => {
    const a = f.querySelector("a.download");
    return { id: f.dataset.id ?? null, job: f.dataset.job ?? null, pos: f.dataset.batchPos, name: a.download, title: f.querySelector("img").title, png: Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer())) };
  })));
  let figs = await figures();
  t.log(`gallery after the queue: ${JSON.stringify(figs.map((f) => ({ id: f.id, job: f.job, pos: f.pos, name: f.name })))}`);
  assert(figs.length === 3, `${figs.length} images in the gallery after jobs A (batch 2) and C, expected 3`);
  assert(figs.every((f) => f.job !== jobB) && !figs.some((f) => /Seed: 5\b/.test(f.title)), "the cancelled job B made an image");
  assert(figs[0].job !== figs[1].job && figs[1].job === figs[2].job, `jobs did not finish in order (newest first: jobs ${figs.map((f) => f.job)})`);
  assert(/Seed: 6\b/.test(figs[0].title) && !/Batch size/.test(figs[0].title), `job C's parameters (seed 6, batch 1): ${JSON.stringify(figs[0].title)}`);
  assert(figs.every((f) => f.id && /^\d+$/.test(f.id)), `not every image was kept in IndexedDB: ids ${figs.map((f) => f.id)}`);
  const a2 = figs.find((f) => f.job === figs[2].job && f.pos === "2");
  assert(a2, `no image at batch position 2 of job A: ${JSON.stringify(figs.map((f) => [f.job, f.pos]))}`);
  const a2png = Buffer.from(a2.png);
  const a2parsed = parsePng(a2png);
  t.log(`job A image 2: ${a2png.length} bytes, "parameters" in ${a2parsed.textChunk.parameters}: ${JSON.stringify(a2parsed.text.parameters)}`);
  assert(a2parsed.textChunk.parameters === "iTXt", `the non-Latin-1 parameters are in ${a2parsed.textChunk.parameters}, expected iTXt`);
  assert(/Batch size: 2, Batch pos: 1\b/.test(a2parsed.text.parameters) && a2parsed.text.parameters.includes("<lora:lora_kohya_a:0.6>"), `job A image 2's parameters: ${JSON.stringify(a2parsed.text.parameters)}`);

  const maxDiffPng = (x, y) => {
    const p = decodePng(Buffer.from(x)).rgba, q = decodePng(Buffer.from(y)).rgba;
    if (p.length !== q.length) return Infinity;
    let m = 0;
    for (let i = 0; i < p.length; i++) if (i % 4 !== 3) m = Math.max(m, Math.abs(p[i] - q[i]));
    return m;
  };

  // PNG info round trip: other values in every field, then job A's second image chosen back.
  const formValues = () => page.evaluate(() => {
    const v = (id) => document.getElementById(id).value;
    return { prompt: v("prompt"), negative: v("negative"), steps: v("steps"), guidance: v("guidance"), sampler: v("sampler"), seed: v("seed"), randomSeed: document.getElementById("random-seed").checked, width: v("width"), height: v("height"), batch: v("batch"), batchPos: v("batch-pos"), lora: document.querySelector("#lora-list li[data-name=lora_kohya_a] input.lora-scale-num")?.value ?? null, loraSlider: document.querySelector("#lora-list li[data-name=lora_kohya_a] input.lora-scale")?.value ?? null };
  });
  await page.fill("#prompt", "something else");
  await setValue(page, "#guidance", "3");
  await page.fill("#negative", "nothing");
  await setValue(page, "#steps", "9");
  await page.selectOption("#sampler", "euler");
  await setValue(page, "#seed", "77");
  await page.setChecked("#random-seed", true);
  await setValue(page, "#width", "128");
  await setValue(page, "#height", "192");
  await setValue(page, "#batch", "1");
  await page.fill("#lora-list li[data-name=lora_kohya_a] input.lora-scale-num", "0.2");
  const readInfo = async (trigger, what) => {
    const before = await page.evaluate(() => window.sdApp.lastPngInfo?.seq ?? 0);
    await trigger();
    await page.waitForFunction((n) => (window.sdApp.lastPngInfo?.seq ?? 0) > n, before, { timeout: 10_000 })
      .catch(async () => { throw new AssertionError(`${what}: the form was not filled: #message ${JSON.stringify(await page.textContent("#message"))}`); });
  };
  await readInfo(() => page.setInputFiles("#png-info-file", { name: "fox-2.png", mimeType: "image/png", buffer: a2png }), "PNG info of job A's image 2");
  let form = await formValues();
  t.log(`form after PNG info: ${JSON.stringify(form)}`);
  const wantA = { prompt: A.prompt, negative: A.negative, steps: A.steps, guidance: A.guidance, sampler: A.sampler, seed: A.seed, randomSeed: false, width: A.width, height: A.height, batch: "2", batchPos: "2", lora: "0.6", loraSlider: "0.6" };
  for (const [k, v] of Object.entries(wantA)) assert(form[k] === v, `PNG info round trip: ${k} is ${JSON.stringify(form[k])}, expected ${JSON.stringify(v)}`);
  const shownA = await page.evaluate(() => [...document.querySelectorAll("#png-info dl.unknown dt")].map((d) => [d.textContent, d.nextElementSibling.textContent]));
  assert(shownA.length === 1 && shownA[0][0] === "Model", `PNG info of the page's own PNG lists as not applied ${JSON.stringify(shownA)}, expected only Model`);
  // (Generating from it is checked offline below: "Use settings" of this image, same pixels.)

  // An AUTOMATIC1111 PNG (tEXt), dropped on the page: quoted values with commas, a LoRA tag
  // for the loaded LoRA (to the LoRA list) and one for a LoRA that is not loaded (kept in the
  // prompt), A1111 1.9's "Sampler: DPM++ 2M, Schedule type: Karras", unknown fields.
  const a1111Prompt = "masterpiece, best quality, a castle on a hill at dusk, (dramatic lighting:1.2) <lora:detail_tweaker:0.5>";
  const a1111 = `${a1111Prompt} <lora:lora_kohya_a:0.7>\nNegative prompt: lowres, bad anatomy,\nwatermark\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "lora_kohya_a: 0a1b2c3d4e5f, detail_tweaker: ee3bd0e1ea34", TI hashes: "easynegative: c74b4e810b03, bad, hands: 123", ADetailer prompt: "face, \\"smile\\"", Version: v1.9.4`;
  const rgb = new Uint8Array(8 * 8 * 3).fill(200);
  const a1111Png = withTextChunks(encodePng(8, 8, rgb), [{ type: "tEXt", key: "parameters", text: a1111 }]);
  const dropPng = async (buffer, name) => {
    const dt = await page.evaluateHandle(([bytes, n]) => {
      const d = new DataTransfer();
      d.items.add(new File([new Uint8Array(bytes)], n, { type: "image/png" }));
      return d;
    }, [[...buffer], name]);
    await page.dispatchEvent("#output-section", "drop", { dataTransfer: dt });
  };
  await readInfo(() => dropPng(a1111Png, "a1111.png"), "PNG info of the A1111 PNG (dropped)");
  form = await formValues();
  t.log(`form after the A1111 PNG: ${JSON.stringify(form)}`);
  const wantB = { prompt: a1111Prompt, negative: "lowres, bad anatomy,\nwatermark", steps: "28", guidance: "6.5", sampler: "dpmpp_2m_karras", seed: "3141592653", randomSeed: false, width: "512", height: "768", batch: "1", batchPos: "", lora: "0.7", loraSlider: "0.7" };
  for (const [k, v] of Object.entries(wantB)) assert(form[k] === v, `A1111 PNG: ${k} is ${JSON.stringify(form[k])}, expected ${JSON.stringify(v)}`);
  assert((await page.inputValue("#strength")) === "0.45", `A1111 PNG: strength ${await page.inputValue("#strength")}, expected 0.45`);
  const info = await page.evaluate(() => ({
    unknown: [...document.querySelectorAll("#png-info dl.unknown dt")].map((d) => [d.textContent, d.nextElementSibling.textContent]),
    notes: document.querySelector("#png-info .notes")?.textContent ?? "",
    raw: document.querySelector("#png-info pre")?.textContent ?? "",
    message: document.querySelector("#message").textContent,
  }));
  t.log(`A1111 PNG info: not applied ${JSON.stringify(info.unknown)}; notes ${JSON.stringify(info.notes)}; #message ${JSON.stringify(info.message)}`);
  const wantUnknown = [["Model hash", "6ce0161689"], ["Model", "v1-5-pruned-emaonly"], ["VAE hash", "735e4c3a44"], ["VAE", "vae-ft-mse-840000-ema-pruned.safetensors"], ["Clip skip", "2"], ["Hires upscale", "2"], ["Hires upscaler", "Latent"], ["TI hashes", "easynegative: c74b4e810b03, bad, hands: 123"], ["ADetailer prompt", 'face, "smile"'], ["Version", "v1.9.4"]];
  for (const [k, v] of wantUnknown) assert(info.unknown.some(([a, b]) => a === k && b === v), `A1111 PNG: "${k}: ${v}" is not listed as not applied: ${JSON.stringify(info.unknown)}`);
  assert(info.unknown.length === wantUnknown.length, `A1111 PNG: not applied ${JSON.stringify(info.unknown)}, expected exactly ${wantUnknown.length}`);
  assert(/detail_tweaker/.test(info.notes) && /not loaded/.test(info.notes), `A1111 PNG: no note about the LoRA that is not loaded: ${JSON.stringify(info.notes)}`);
  assert(info.raw === a1111, "A1111 PNG: the stored parameters are not shown as they are");
  // The same text in a zTXt chunk (deflated) reads the same.
  const a1111z = withTextChunks(encodePng(8, 8, rgb), [{ type: "zTXt", key: "parameters", text: a1111 }]);
  await page.fill("#prompt", "x");
  await readInfo(() => page.setInputFiles("#png-info-file", { name: "a1111-ztxt.png", mimeType: "image/png", buffer: a1111z }), "PNG info of the zTXt PNG");
  const formZ = await formValues();
  assert(JSON.stringify(formZ) === JSON.stringify(form), `zTXt: the form reads ${JSON.stringify(formZ)}, tEXt gave ${JSON.stringify(form)}`);
  await page.screenshot({ path: path.join(OUT, "ui-png-info.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  await page.screenshot({ path: path.join(OUT, "ui-features-phone.png"), fullPage: true });
  const sw = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth }));
  t.log(`at 390x844: scrollWidth ${sw.scrollWidth}, innerWidth ${sw.innerWidth}`);
  assert(sw.scrollWidth <= sw.innerWidth, `horizontal scroll at 390 px: scrollWidth ${sw.scrollWidth} > ${sw.innerWidth}`);
  await page.setViewportSize({ width: 1280, height: 900 });

  // Delete one image (job C's); then offline: reload, the gallery is there, generate.
  const jobC = figs[0].job;
  await page.click(`#gallery figure.result[data-job="${jobC}"] button.delete`);
  await page.waitForFunction((n) => document.querySelectorAll("#gallery figure.result").length === n, 2, { timeout: 10_000 });
  const kept = await figures();
  assert(!kept.some((f) => f.job === jobC), "job C's image is still shown after Delete");
  const swStatus = () => page.evaluate(() => new Promise((resolve, reject) => {
    const c = navigator.serviceWorker.controller;
    if (!c) return reject(new Error("no service worker controls the page"));
    navigator.serviceWorker.addEventListener("message", (e) => resolve(e.data), { once: true });
    c.postMessage({ type: "sd-webgpu-sw-status" });
    setTimeout(() => reject(new Error("the service worker did not answer")), 10_000);
  }));
  server.clearLog();
  t0 = Date.now();
  await b.context.setOffline(true);
  await page.reload();
  state = await waitForState(page, ["ready", "error"], 5 * MIN);
  assert(state === "ready", `offline reload: page state "${state}": ${await page.textContent("#message")}`);
  lap("offline reload + model load from the cache", t0);
  const st = await swStatus();
  t.log(`service worker: cache ${st.cache}, static routes ${st.routes}, ${st.cached.length} cached, answered ${JSON.stringify(st.answered.map((u) => new URL(u).pathname))}`);
  const foreign = st.answered.filter((u) => !shell.some((f) => new URL(u).pathname === new URL(f === "./" ? "index.html" : f, `${base()}/`).pathname));
  assert(foreign.length === 0, `the service worker answered requests outside the app shell: ${JSON.stringify(foreign)}`);
  await page.waitForFunction((n) => document.querySelectorAll("#gallery figure.result").length >= n, 2, { timeout: 10_000 }).catch(() => {});
  const after = await figures();
  t.log(`gallery after the reload: ${JSON.stringify(after.map((f) => ({ id: f.id, job: f.job, pos: f.pos })))}; #gallery-info ${JSON.stringify(await page.textContent("#gallery-info"))}`);
  assert(after.length === 2, `${after.length} images in the gallery after the reload, expected 2 (job A's)`);
  for (let i = 0; i < 2; i++) {
    assert(after[i].id === kept[i].id && Buffer.from(after[i].png).equals(Buffer.from(kept[i].png)) && after[i].title === kept[i].title, `gallery image ${i} (id ${kept[i].id}) differs after the reload`);
  }
  // Offline: the LoRA from the browser cache, the settings from job A's image 2 in the gallery
  // ("Use settings"), the same image again (batchPos 2 alone of a batch of 2: the PNG's
  // settings remake it exactly, parameters included).
  t0 = Date.now();
  await page.click("#lora-load");
  state = await waitForState(page, ["ready", "error"], 2 * MIN);
  assert(state === "ready" && (await page.locator("#lora-list li").count()) === 1, `offline LoRA load: state "${state}": ${await page.textContent("#message")}`);
  await readInfo(() => page.click(`#gallery figure.result[data-id="${a2.id}"] button.use-settings`), "Use settings of job A's image 2");
  form = await formValues();
  for (const [k, v] of Object.entries(wantA)) assert(form[k] === v, `offline "Use settings": ${k} is ${JSON.stringify(form[k])}, expected ${JSON.stringify(v)}`);
  await page.click("#generate");
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state) && !window.sdApp.queue.running, null, { timeout: 4 * MIN });
  state = await page.evaluate(() => document.body.dataset.state);
  assert(state === "ready", `offline generation: state "${state}": ${await page.textContent("#message")}`);
  lap("offline LoRA load + generate", t0);
  const offline = (await figures())[0];
  const offDiff = maxDiffPng(offline.png, a2png);
  // (Chromium's check for a new sw.js, made by the browser itself, is not held back by
  // Playwright's offline emulation: that one request may reach the server.)
  const reached = server.log.filter((e) => e.path !== "/sw.js");
  t.log(`offline: image (batch pos ${offline.pos}) max |diff| ${offDiff}/255 vs job A's image 2 made online, parameters equal: ${offline.title === a2parsed.text.parameters}; requests that reached the server while offline: ${JSON.stringify(server.log.map((e) => `${e.method} ${e.path}`))}`);
  assert(offline.pos === "2" && offDiff <= 1, `the offline image (batch pos ${offline.pos}) differs from job A's image 2 by up to ${offDiff}/255`);
  assert(offline.title === a2parsed.text.parameters, `the offline image's parameters differ from the PNG's:\n${offline.title}\nvs\n${a2parsed.text.parameters}`);
  assert(reached.length === 0, `requests reached the server while offline: ${reached.map((e) => e.path).join(", ")}`);

  // Download all: one ZIP of the 3 kept PNGs (oldest first), byte for byte.
  const all = (await figures()).reverse();
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click("#gallery-zip")]);
  const zipFile = await download.path();
  const entries = readZip(fs.readFileSync(zipFile));
  t.log(`zip ${download.suggestedFilename()}: ${fs.statSync(zipFile).size} bytes, ${entries.map((e) => `${e.name} (${e.data.length} B, method ${e.method})`).join(", ")}`);
  assert(entries.length === all.length && all.length === 3, `the ZIP holds ${entries.length} files, the gallery ${all.length} (expected 3)`);
  for (let i = 0; i < entries.length; i++) {
    assert(entries[i].method === 0 && entries[i].name.endsWith(all[i].name) && entries[i].data.equals(Buffer.from(all[i].png)), `ZIP entry ${i} (${entries[i].name}) is not the gallery's PNG ${all[i].name} byte for byte`);
  }
  // Delete all (confirmed): nothing shown, nothing kept.
  page.once("dialog", (d) => d.accept());
  await page.click("#clear-gallery");
  await page.waitForFunction(() => document.querySelectorAll("#gallery figure.result").length === 0, null, { timeout: 10_000 });
  const left = await page.evaluate(async () => (await window.sdApp.gallery.list()).length);
  const infoText = await page.textContent("#gallery-info");
  t.log(`after Delete all: ${left} kept; #gallery-info ${JSON.stringify(infoText)}`);
  assert(left === 0 && /^0 images/.test(infoText), `after Delete all: ${left} images kept; #gallery-info ${JSON.stringify(infoText)}`);
  await b.context.setOffline(false);
  // Online again, the page controlled by the service worker: a Range request for the LoRA
  // file goes to the server untouched (206, the bytes asked for), and the worker answered none.
  server.clearLog();
  const ranged = await page.evaluate(async (u) => {
    const r = await fetch(u, { headers: { Range: "bytes=100-199" }, cache: "no-store" });
    return { status: r.status, range: r.headers.get("content-range"), bytes: (await r.arrayBuffer()).byteLength, controlled: !!navigator.serviceWorker.controller };
  }, LORA);
  const seen = server.log.filter((e) => e.path === LORA);
  const st2 = await swStatus();
  t.log(`Range request on the controlled page: ${JSON.stringify(ranged)}; the server saw ${JSON.stringify(seen.map((e) => [e.range, e.status, e.bytes]))}; the service worker answered ${st2.answered.filter((u) => u.includes("/lora/")).length} LoRA requests`);
  assert(ranged.controlled && ranged.status === 206 && ranged.bytes === 100 && seen.length === 1 && seen[0].range === "bytes=100-199" && seen[0].status === 206, `a Range request through the controlled page: ${JSON.stringify(ranged)}, server log ${JSON.stringify(seen)}`);
  assert(!st2.answered.some((u) => u.includes("/lora/") || u.includes("/model-real/")), `the service worker answered model / LoRA requests: ${JSON.stringify(st2.answered)}`);
  t.log(`timings: ${times.join("; ")}; total ${((Date.now() - T0) / 1000).toFixed(1)} s`);
}, { timeoutMs: 10 * MIN });

const UNET = "/model/unet/diffusion_pytorch_model.safetensors";
const WEIGHTS = ["/model/text_encoder/model.safetensors", UNET, "/model/vae/diffusion_pytorch_model.safetensors"];

test("ui_turbo_taesd", async (t) => {
  // sd2/turbo_single_step through the page: the model's own defaults (1 step, guidance 0,
  // Euler, 64² for this tiny model) fill the form, the negative prompt is greyed, and the
  // image equals diffusers'; with the TAESD at /taesd/ loaded the live preview is TAESD's
  // full-size decode of x0, and "fast decode" makes the image with TAESD.
  const g = golden("turbo_single_step", SD2);
  const b = await t.launch({ viewport: { width: 1280, height: 900 } });
  const page = b.page;
  const resp = await page.goto(`${base()}/index.html?model=/model-turbo/&tinyVae=/taesd/&autoload=1`);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  const state = await waitForState(page, ["ready", "error"], 8 * MIN);
  const msg = await page.locator("#message").textContent().catch(() => null);
  assert(state === "ready", `page state "${state}": ${msg}`);
  const form = await page.evaluate(() => ({
    steps: document.querySelector("#steps").value, guidance: document.querySelector("#guidance").value,
    sampler: document.querySelector("#sampler").value, width: document.querySelector("#width").value,
    height: document.querySelector("#height").value, negativeDisabled: document.querySelector("#negative").disabled,
    fastDecodeEnabled: !document.querySelector("#fast-decode").disabled,
  }));
  t.log(`form after load: ${JSON.stringify(form)}`);
  assert(form.steps === "1" && Number(form.guidance) === 0 && form.sampler === "euler", `SD-Turbo defaults not applied: ${JSON.stringify(form)}`);
  assert(form.width === "64" && form.height === "64", `size defaults: ${form.width}x${form.height}`);
  assert(form.negativeDisabled, "the negative prompt should be greyed at guidance 0");
  assert(form.fastDecodeEnabled, "fast decode (TAESD) should be available with a tiny VAE loaded");
  await page.fill("#prompt", g.case.prompt);
  await page.setChecked("#random-seed", false);
  await setValue(page, "#seed", String(g.case.seed));
  const run = async (fast) => {
    await page.setChecked("#fast-decode", fast);
    const before = await page.locator("#gallery figure.result").count();
    const t0 = Date.now();
    await page.click("#generate");
    await page.waitForFunction((n) => document.querySelectorAll("#gallery figure.result").length > n, before, { timeout: 4 * MIN });
    const end = await waitForState(page, ["ready", "error"], 2 * MIN);
    assert(end === "ready", `state after generation: "${end}"`);
    const res = await page.evaluate(async () => {
      const img = document.querySelector("#gallery figure.result img");
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      c.getContext("2d").drawImage(img, 0, 0);
      const pv = document.querySelector("canvas#preview");
      const d = pv.getContext("2d").getImageData(0, 0, pv.width, pv.height).data;
      let lo = 255, hi = 0;
      for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) { lo = Math.min(lo, d[i + k]); hi = Math.max(hi, d[i + k]); }
      return { px: Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data), width: c.width, height: c.height, preview: { width: pv.width, height: pv.height, range: hi - lo } };
    });
    t.log(`fast decode ${fast}: ${res.width}x${res.height} in ${((Date.now() - t0) / 1000).toFixed(1)} s; preview ${JSON.stringify(res.preview)}`);
    return res;
  };
  const full = await run(false);
  const cmp = compareImage(full.px, g);
  t.log(`golden turbo_single_step (KL VAE): ${fmtCompare(cmp)} (tolerance ${UI_TOL})`);
  assert(cmp.mean <= UI_TOL, `mean error ${cmp.mean.toExponential(3)} > ${UI_TOL}`);
  // TAESD preview: the full-size decode of x0 (64x64), not the 8x8 latent map.
  assert(full.preview.width === 64 && full.preview.height === 64 && full.preview.range > 8, `the preview is not TAESD's: ${JSON.stringify(full.preview)}`);
  const fast = await run(true);
  const diff = compareImage(fast.px, g);
  t.log(`fast decode vs the KL-VAE golden: ${fmtCompare(diff)} (TAESD decodes differently)`);
  assert(fast.width === 64 && fast.height === 64, `fast-decode image ${fast.width}x${fast.height}`);
  assert(diff.mean > 1e-3, "fast decode gave the KL VAE's image: TAESD was not used");
  const params = await page.evaluate(() => document.querySelector("#gallery figure.result figcaption")?.textContent ?? "");
  t.log(`caption: ${JSON.stringify(params)}`);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, "ui-turbo-taesd.png"), fullPage: true });
});

test("ui_sdxl_turbo", async (t) => {
  // sdxl/txt2img_turbo_1step (StableDiffusionXLPipeline, sdxl-turbo's EulerAncestral trailing
  // scheduler, 1 step, guidance 0, seed 42, 64²) through the page: the model's defaults fill the
  // form, the SDXL fieldset is shown, and the image equals diffusers'. The page's f16 storage:
  // UI_TOL. diffusers' plain encode_prompt made the golden: prompt weighting off.
  const g = golden("txt2img_turbo_1step", SDXL);
  const b = await t.launch({ viewport: { width: 1280, height: 900 } });
  const page = b.page;
  server.clearLog();
  const t0 = Date.now();
  const resp = await page.goto(`${base()}/index.html?model=/model-sdxl-turbo/&autoload=1`);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  const state = await waitForState(page, ["ready", "error"], 8 * MIN);
  const msg = await page.locator("#message").textContent().catch(() => null);
  assert(state === "ready", `page state "${state}": ${msg}`);
  const loadSeconds = (Date.now() - t0) / 1000;
  const files = server.requests("/model-sdxl-turbo/").filter((e) => e.method === "GET").map((e) => e.path.slice("/model-sdxl-turbo/".length));
  t.log(`loaded in ${loadSeconds.toFixed(1)} s; files fetched: ${[...new Set(files)].sort().join(", ")}`);
  for (const f of ["text_encoder_2/config.json", "text_encoder_2/model.safetensors", "tokenizer_2/special_tokens_map.json", "model_index.json"]) {
    assert(files.includes(f), `${f} was not fetched`);
  }
  const form = await page.evaluate(() => ({
    steps: document.querySelector("#steps").value, guidance: document.querySelector("#guidance").value,
    sampler: document.querySelector("#sampler").value, width: document.querySelector("#width").value,
    height: document.querySelector("#height").value, negativeDisabled: document.querySelector("#negative").disabled,
    xlShown: !document.querySelector("#xl-options").hidden,
  }));
  t.log(`form after load: ${JSON.stringify(form)}`);
  assert(form.steps === "1" && Number(form.guidance) === 0 && form.sampler === "euler_a", `SDXL-Turbo defaults not applied: ${JSON.stringify(form)}`);
  assert(form.width === "64" && form.height === "64", `size defaults: ${form.width}x${form.height}`);
  assert(form.negativeDisabled, "the negative prompt should be greyed at guidance 0");
  assert(form.xlShown, "the SDXL fields (prompt 2, micro-conditioning) are hidden for an SDXL model");
  await page.fill("#prompt", g.case.prompt);
  await page.fill("#prompt2", "");
  await page.setChecked("#prompt-weighting", false);
  await page.setChecked("#random-seed", false);
  await setValue(page, "#seed", String(g.case.seed));
  const before = await page.locator("#gallery figure.result").count();
  const t1 = Date.now();
  await page.click("#generate");
  await page.waitForFunction((n) => document.querySelectorAll("#gallery figure.result").length > n, before, { timeout: 6 * MIN });
  const end = await waitForState(page, ["ready", "error"], 2 * MIN);
  assert(end === "ready", `state after generation: "${end}"`);
  const genSeconds = (Date.now() - t1) / 1000;
  const res = await page.evaluate(async () => {
    const img = document.querySelector("#gallery figure.result img");
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    c.getContext("2d").drawImage(img, 0, 0);
    return { px: Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data), width: c.width, height: c.height };
  });
  assert(res.width === g.width && res.height === g.height, `image ${res.width}x${res.height}, expected ${g.width}x${g.height}`);
  const cmp = compareImage(res.px, g);
  t.log(`generated in ${genSeconds.toFixed(1)} s; golden txt2img_turbo_1step: ${fmtCompare(cmp)} (tolerance ${UI_TOL})`);
  assert(cmp.mean <= UI_TOL, `mean error ${cmp.mean.toExponential(3)} > ${UI_TOL}`);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, "ui-sdxl-turbo.png"), fullPage: true });
  // The presets fill the model and its tiny VAE (nothing is loaded until Load); editing the
  // model field by hand leaves the preset.
  const presets = {};
  for (const v of ["sdxl", "sdxl-turbo", "sd15"]) {
    await page.selectOption("#preset", v);
    presets[v] = await page.evaluate(() => [document.querySelector("#model").value, document.querySelector("#tiny-vae").value]);
  }
  t.log(`presets: ${JSON.stringify(presets)}`);
  assert(presets.sdxl[0] === "stabilityai/stable-diffusion-xl-base-1.0" && presets.sdxl[1] === "madebyollin/taesdxl", `SDXL preset: ${presets.sdxl}`);
  assert(presets["sdxl-turbo"][0] === "stabilityai/sdxl-turbo" && presets["sdxl-turbo"][1] === "madebyollin/taesdxl", `SDXL-Turbo preset: ${presets["sdxl-turbo"]}`);
  assert(presets.sd15[1] === "madebyollin/taesd", `SD 1.5 preset: ${presets.sd15}`);
  await page.fill("#model", "/model-sdxl/");
  assert((await page.evaluate(() => document.querySelector("#preset").value)) === "", "editing the model kept the preset");
});

test("api_sdxl_evict_text_encoders", async (t) => {
  // load({ evictTextEncoder }) on the tiny SDXL: both text encoders are freed after encoding
  // (weightsBytes drops by both), a new prompt streams both back from the browser cache (the
  // bytes of text_encoder/ and text_encoder_2/ files, no request to the server), the same
  // prompts again need neither, and the images after the re-stream are the same.
  const b = await t.launch();
  await openHarness(b.page, base());
  const load = await apiLoad(t, b.page, { model: "/model-sdxl-turbo/", variant: null, dtype: "f32", evictTextEncoder: true });
  assert(load.ok, "load");
  const te = ["text_encoder/model.safetensors", "text_encoder_2/model.safetensors"].map((f) => fs.statSync(path.join(SDXL, "model", f)).size);
  const before = await evaluate(b.page, () => window.e2e.sd.stats(), null, MIN);
  const opts = { prompt: "a majestic lion jumping from a big stone at night", seed: 42, preview: false, promptWeighting: false };
  const other = { ...opts, prompt: "a watercolor painting of a harbor", prompt2: "soft evening light" };
  const a0 = await apiGenerate(t, b.page, opts);
  assert(a0.ok, () => `generate: ${a0.error?.message}`);
  server.clearLog();
  const a1 = await apiGenerate(t, b.page, other);
  const a2 = await apiGenerate(t, b.page, other);
  const a3 = await apiGenerate(t, b.page, opts);
  for (const r of [a1, a2, a3]) assert(r.ok, () => `generate: ${r.error?.message}`);
  const requests = server.requests("/model-sdxl-turbo/").length;
  const freed = before.weightsBytes - a0.stats.weightsBytes;
  t.log(`weights on the GPU: ${fmtBytes(before.weightsBytes)} after load, ${fmtBytes(a0.stats.weightsBytes)} after an evicting generation (${fmtBytes(freed)} freed); ` +
    `text encoder files ${te.map(fmtBytes).join(" + ")}; streamed back: new prompt ${JSON.stringify(a1.textEncoderReload)}, same prompt ${JSON.stringify(a2.textEncoderReload)}, ` +
    `first prompt again ${JSON.stringify(a3.textEncoderReload)}; ${requests} requests under /model-sdxl-turbo/ meanwhile`);
  assert(a0.textEncoderReload === null && a2.textEncoderReload === null, "the text encoders were streamed back without need");
  for (const r of [a1, a3]) assert(r.textEncoderReload && r.textEncoderReload.bytes === te[0] + te[1], `a new prompt streamed back ${JSON.stringify(r.textEncoderReload)}, expected both files (${te[0] + te[1]} B)`);
  // f32 storage: the freed bytes are both encoders' tensors (the files hold f32 too).
  assert(freed > 0.95 * (te[0] + te[1]) && freed <= te[0] + te[1], `freed ${freed} B for text encoder files of ${te[0] + te[1]} B`);
  assert(requests === 0, `streaming the text encoders back fetched ${requests} files from the server instead of the cache`);
  assert(a3.images[0].pixels.every((v, i) => v === a0.images[0].pixels[i]), "the image after the text encoders came back differs from the first one");
  assert(a2.images[0].pixels.every((v, i) => v === a1.images[0].pixels[i]), "the cached text states gave another image");
  assert(!a1.images[0].pixels.every((v, i) => v === a0.images[0].pixels[i]), "another prompt gave the same image");
}, { timeoutMs: 6 * MIN });

test("api_evict_text_encoder", async (t) => {
  // load({ evictTextEncoder, tinyVae: File[] }): the text encoder is freed after encoding (the GPU holds less
  // after a generation), a new prompt streams it back from the browser cache (no request to
  // the server), the same prompt again needs no text encoder, and the images are the same as
  // with the text encoder kept (the first prompt again; diffusers' golden for the second).
  const g = golden("turbo_single_step", SD2);
  const b = await t.launch();
  await openHarness(b.page, base());
  // The TAESD comes as File objects here (a picked folder's files), the model from a URL.
  const load = await evaluate(b.page, async () => {
    const file = async (n) => new File([await (await fetch(`/taesd/${n}`)).blob()], n);
    const tinyVae = [await file("config.json"), await file("diffusion_pytorch_model.safetensors")];
    const r = await window.e2e.load({ model: "/model-turbo/", variant: null, dtype: "f32", evictTextEncoder: true, tinyVae });
    return { ...r, tinyVae: window.e2e.sd?.tinyVae ?? null };
  }, null, 4 * MIN, "load");
  logLoad(t, load);
  assert(load.ok, () => `load: ${load.error?.name}: ${load.error?.message}`);
  assert(load.tinyVae, "the tiny VAE given as File objects was not loaded");
  const before = await evaluate(b.page, () => window.e2e.sd.stats(), null, MIN);
  // The golden is diffusers' plain StableDiffusionPipeline: its encoding, not LPW's (with an
  // SD-2 tokenizer LPW pads before the end token, so even a plain prompt differs).
  const opts = { prompt: g.case.prompt, steps: 1, guidanceScale: 0, seed: g.case.seed, width: 64, height: 64, sampler: "euler", preview: false, promptWeighting: false };
  const other = { ...opts, prompt: "a watercolor painting of a harbor", decoder: "tiny" };
  const a0 = await apiGenerate(t, b.page, other);
  assert(a0.ok, () => `generate: ${a0.error?.message}`);
  assert(a0.decoder === "tiny", `decoder "tiny" gave ${a0.decoder}`);
  server.clearLog();
  const a1 = await apiGenerate(t, b.page, opts);
  assert(a1.ok, () => `generate: ${a1.error?.message}`);
  checkGolden(t, a1, g, API_TOL, { previews: false });
  const a2 = await apiGenerate(t, b.page, opts);
  const a3 = await apiGenerate(t, b.page, other);
  for (const r of [a2, a3]) assert(r.ok, () => `generate: ${r.error?.message}`);
  const requests = server.requests("/model-turbo/").length;
  t.log(`weights on the GPU: ${fmtBytes(before.weightsBytes)} after load, ${fmtBytes(a0.stats.weightsBytes)} after an evicting generation; ` +
    `text encoder streamed back: first prompt ${JSON.stringify(a0.textEncoderReload)}, new prompt ${JSON.stringify(a1.textEncoderReload)}, ` +
    `same prompt ${JSON.stringify(a2.textEncoderReload)}, first prompt again ${JSON.stringify(a3.textEncoderReload)}; ${requests} requests under /model-turbo/ meanwhile`);
  assert(a0.stats.weightsBytes < before.weightsBytes, "the text encoder's weights were not freed");
  assert(a0.textEncoderReload === null && a2.textEncoderReload === null, "the text encoder was streamed back without need");
  for (const r of [a1, a3]) assert(r.textEncoderReload && r.textEncoderReload.bytes > 0, "a new prompt did not stream the text encoder back");
  assert(requests === 0, `streaming the text encoder back fetched ${requests} files from the server instead of the cache`);
  assert(a3.images[0].pixels.every((v, i) => v === a0.images[0].pixels[i]), "the image after the text encoder came back differs from the first one");
  assert(a2.images[0].pixels.every((v, i) => v === a1.images[0].pixels[i]), "the cached text states gave another image");
}, { timeoutMs: 6 * MIN });

test("resume_after_server_kill", async (t) => {
  const g = G();
  const b = await t.launch();
  await openHarness(b.page, base());
  server.clearLog();
  const unetSize = fs.statSync(path.join(MODEL, "unet/diffusion_pytorch_model.safetensors")).size;
  server.setThrottle(/^\/model\/.*\.safetensors$/, 1 << 20);
  await b.page.evaluate((o) => window.e2e.startLoad(o), { model: "/model/", variant: null, dtype: "f32" });
  const threshold = Math.ceil(0.4 * unetSize);
  await waitFor(
    async () => {
      const st = await b.page.evaluate(() => ({ s: window.e2e.loadState, e: window.e2e.loadError }));
      if (st.s === "error") throw new AssertionError(`load failed before the kill: ${st.e.name}: ${st.e.message}`);
      if (st.s === "ready") throw new AssertionError(`load finished before ${fmtBytes(threshold)} of the UNet were sent (throttle not effective?)`);
      return server.bytesSent(UNET) >= threshold;
    },
    { timeoutMs: 5 * MIN, intervalMs: 100, what: `40 % of ${UNET} sent` },
  );
  const atKill = server.bytesSent(UNET);
  await server.kill();
  t.log(`server killed after ${fmtBytes(atKill)} of ${fmtBytes(unetSize)} of the UNet were sent`);
  const killedAt = server.log.length;
  await sleep(2000);
  await server.start();
  server.clearThrottle();
  t.log("server restarted, throttle removed");
  const load = await evaluate(b.page, () => window.e2e.waitLoad(), null, 8 * MIN, "load after the restart");
  logLoad(t, load);
  t.log(`requests:\n    ${modelRequestsSummary()}`);
  if (load.progress.retries.length) t.log(`retry events: ${JSON.stringify(load.progress.retries.slice(0, 5))}`);
  assert(load.ok, () => `load did not recover: ${load.error.name}: ${load.error.message}`);
  assert(load.progress.phases.includes("retry"), `onProgress phases ${JSON.stringify(load.progress.phases)} lack "retry"`);

  const after = server.log.slice(killedAt).filter((e) => e.path === UNET && e.method === "GET");
  const resumed = after.filter((e) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec((e.range || "").trim());
    return m && Number(m[1]) > 0 && e.status === 206;
  });
  assert(resumed.length > 0, `no request for ${UNET} after the restart carried Range: bytes=N- (N > 0) and got 206: ${JSON.stringify(after.map((e) => [e.range, e.status]))}`);
  const total = server.bytesSent(UNET);
  t.log(`UNet: resumed with ${resumed.map((e) => e.range).join(", ")}; ${fmtBytes(total)} sent over all requests (file ${fmtBytes(unetSize)})`);
  assert(total <= unetSize + 2 * 2 ** 20, `${total} bytes sent for the UNet > size + 2 MiB: the download started over`);

  await checkCache(t, b.page, WEIGHTS);

  await checkAgainstFirstLoad(t, b.page, "after the resumed load");
  shared.profile = t.keep(b);
});

/** cacheEntries({ sha256: true }): every weight file once, complete, right size and hash. */
async function checkCache(t, page, weights) {
  const entries = await evaluate(page, () => window.StableDiffusion.cacheEntries({ sha256: true }), null, 3 * MIN, "cacheEntries");
  const pathOf = (e) => {
    try {
      return new URL(e.url, base()).pathname;
    } catch {
      return e.url;
    }
  };
  t.log(`cacheEntries: ${entries.map((e) => `${pathOf(e)} ${e.bytes}/${e.total} ${e.complete ? "complete" : "INCOMPLETE"}`).join("; ")}`);
  const incomplete = entries.filter((e) => !e.complete);
  assert(incomplete.length === 0, `incomplete cache entries: ${JSON.stringify(incomplete)}`);
  for (const w of weights) {
    const file = path.join(MODEL, w.slice("/model/".length));
    const size = fs.statSync(file).size;
    const hits = entries.filter((e) => pathOf(e) === w || e.url.endsWith(w));
    assert(hits.length === 1, `${w} is listed ${hits.length} times in cacheEntries`);
    const e = hits[0];
    assert(e.bytes === size, `${w}: cached ${e.bytes} bytes, file has ${size}`);
    assert(e.total === null || e.total === size, `${w}: total ${e.total}, file has ${size}`);
    const sha = sha256File(file);
    assert(e.sha256 === sha, `${w}: cached sha256 ${e.sha256}, file ${sha}`);
  }
  // any other cached file of the model folder must be byte-exact too
  for (const e of entries) {
    const p = pathOf(e);
    if (!p.startsWith("/model/") || weights.includes(p)) continue;
    const file = path.join(MODEL, p.slice("/model/".length));
    if (!fs.existsSync(file)) continue;
    assert(e.bytes === fs.statSync(file).size, `${p}: cached ${e.bytes} bytes, file has ${fs.statSync(file).size}`);
    if (e.sha256) assert(e.sha256 === sha256File(file), `${p}: sha256 differs`);
  }
}

/** The kept profile of the resume test, or a fresh one with the model loaded (cache filled). */
async function cachedProfile(t) {
  if (shared.profile) {
    const b = t.adopt(shared.profile);
    shared.profile = null;
    return b;
  }
  t.log("no profile from an earlier test: filling the cache with a first load");
  const b = await t.launch();
  await openHarness(b.page, base());
  await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" });
  return b;
}

test("reload_fetches_nothing", async (t) => {
  const g = G();
  const b = await cachedProfile(t);
  server.clearLog();
  await b.page.reload();
  await b.page.waitForFunction(() => window.e2e && window.e2e.ready, null, { timeout: MIN });
  const load = await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" });
  const reqs = server.requests("/model/");
  assert(reqs.length === 0, `${reqs.length} requests under /model/ after the reload:\n    ${modelRequestsSummary()}`);
  assert(load.progress.phases.includes("cache"), `onProgress phases ${JSON.stringify(load.progress.phases)} lack "cache"`);
  await checkAgainstFirstLoad(t, b.page, "after the reload");
  shared.profile = t.keep(b);
});

test("restart_fetches_nothing", async (t) => {
  // The same profile after the browser is closed and started again (OPFS on disk).
  let b = await cachedProfile(t);
  const dir = b.userDataDir;
  await closeQuietly(b);
  b = await t.launch({ userDataDir: dir });
  await openHarness(b.page, base());
  server.clearLog();
  const load = await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" });
  const reqs = server.requests("/model/");
  assert(reqs.length === 0, `${reqs.length} requests under /model/ after a browser restart:\n    ${modelRequestsSummary()}`);
  assert(load.progress.phases.includes("cache"), `onProgress phases ${JSON.stringify(load.progress.phases)} lack "cache"`);
  shared.profile = t.keep(b);
}, { timeoutMs: 5 * MIN });

test("device_lost_recovers", async (t) => {
  const g = G();
  const b = await cachedProfile(t);
  const page = b.page;
  const hook = await page.evaluate(() => typeof (window.e2e.sd && window.e2e.sd.debugLoseDevice));
  assert(hook === "function", `sd.debugLoseDevice is ${hook}: the test hook is missing`);
  const before = await page.evaluate(() => window.e2e.deviceLost.length);
  await evaluate(page, () => Promise.resolve(window.e2e.sd.debugLoseDevice()).then(() => null), null, MIN, "debugLoseDevice");
  await waitFor(() => page.evaluate((n) => window.e2e.deviceLost.length > n, before), { timeoutMs: MIN, what: "onDeviceLost" });
  const msgs = await page.evaluate(() => window.e2e.deviceLost);
  t.log(`onDeviceLost: ${JSON.stringify(msgs)}`);
  server.clearLog();
  await checkAgainstFirstLoad(t, page, "after the device loss");
  const sent = server.bytesSent("/model/");
  t.log(`after the device loss: ${server.requests("/model/").length} requests, ${sent} bytes under /model/`);
  assert(sent === 0, `the reload after the device loss fetched ${sent} bytes from the server:\n    ${modelRequestsSummary()}`);
});

test("ui_local_folder", async (t) => {
  // A diffusers folder from this computer through the folder picker: read from the Files,
  // nothing fetched, nothing cached.
  const b = await t.launch();
  const page = b.page;
  await page.goto(`${base()}/index.html`);
  await waitForState(page, ["idle", "ready"], MIN);
  server.clearLog();
  await page.setInputFiles("#model-folder", MODEL);
  assert((await waitForState(page, ["ready", "error"], 5 * MIN)) === "ready", `the local folder did not load: ${await page.textContent("#message")}`);
  const info = await page.evaluate(() => ({ message: document.querySelector("#message").textContent, model: document.querySelector("#model-info")?.textContent }));
  t.log(`loaded from the folder picker: ${JSON.stringify(info)}`);
  const reqs = server.requests("/model/");
  assert(reqs.length === 0, `${reqs.length} requests under /model/ for a local folder:\n    ${modelRequestsSummary()}`);
  const entries = await page.evaluate(async () => (await import("/sd-webgpu.js")).StableDiffusion.cacheEntries());
  assert(entries.length === 0, `local files were cached: ${JSON.stringify(entries.map((e) => e.url))}`);
}, { timeoutMs: 6 * MIN });

// ---------------------------------------------------------------------------------------------
// hosts of the real internet (local servers on other ports = other origins)

const unetOf = (srv, prefix = "/model/") => srv.requests(`${prefix}unet/diffusion_pytorch_model.safetensors`);
const fmtReqs = (srv) => srv.log.map((e) => `${e.method} ${e.path}${e.range ? ` [${e.range}]` : ""}${e.preflight != null ? ` (preflight for "${e.preflight}")` : ""} -> ${e.status}${e.location ? ` ${e.location}` : ""}, ${e.bytes} B${e.injected ? " (injected)" : ""}${e.aborted ? " (aborted)" : ""}`).join("\n    ");
// What the worker may need to read of another origin's answers.
const EXPOSE = ["ETag", "Content-Range", "Content-Length", "Accept-Ranges", "Retry-After"];

async function untilBytes(t, page, srv, pathName, bytes) {
  await waitFor(
    async () => {
      const st = await page.evaluate(() => ({ s: window.e2e.loadState, e: window.e2e.loadError }));
      if (st.s === "error") throw new AssertionError(`load failed early: ${st.e.name}: ${st.e.message}`);
      if (st.s === "ready") throw new AssertionError(`load finished before ${fmtBytes(bytes)} of ${pathName} were sent (throttle not effective?)`);
      return srv.bytesSent(pathName) >= bytes;
    },
    { timeoutMs: 5 * MIN, intervalMs: 100, what: `${fmtBytes(bytes)} of ${pathName} sent` },
  );
}

test("three_origin_redirect_host", async (t) => {
  // Like Hugging Face: the page on origin A, the model URL on B (resolve/), which answers every
  // file, HEAD and GET, with 302 to C (the CDN); C serves the bytes with Range, ETag and CORS.
  const cdn = new TestServer({ mounts: { "/model/": MODEL }, cors: { origin: "*", expose: EXPOSE, allowHeaders: [] } });
  await cdn.start();
  const hub = new TestServer({ cors: { origin: "*", expose: EXPOSE, allowHeaders: [] }, redirect: (p) => (p.startsWith("/repo/resolve/main/") ? `${cdn.url}/model/${p.slice("/repo/resolve/main/".length)}` : null) });
  await hub.start();
  try {
    const b = await t.launch();
    await openHarness(b.page, base());
    const model = `${hub.url}/repo/resolve/main/`;
    const unetSize = fs.statSync(path.join(MODEL, "unet/diffusion_pytorch_model.safetensors")).size;
    cdn.setThrottle(/^\/model\/unet\/.*\.safetensors$/, 1 << 20);
    await b.page.evaluate((o) => window.e2e.startLoad(o), { model, variant: null, dtype: "f32" });
    await untilBytes(t, b.page, cdn, "/model/unet/diffusion_pytorch_model.safetensors", Math.ceil(0.4 * unetSize));
    const atKill = cdn.bytesSent("/model/unet/");
    await cdn.kill();
    const killedAt = cdn.log.length;
    t.log(`CDN (origin C) killed after ${fmtBytes(atKill)} of the UNet (${fmtBytes(unetSize)})`);
    await sleep(1500);
    await cdn.start();
    cdn.clearThrottle();
    const load = await evaluate(b.page, () => window.e2e.waitLoad(), null, 5 * MIN, "load through the redirect");
    logLoad(t, load);
    t.log(`origin B (${hub.url}):\n    ${fmtReqs(hub)}`);
    t.log(`origin C (${cdn.url}):\n    ${fmtReqs(cdn)}`);
    assert(load.ok, () => `the load through B -> C failed: ${load.error.name}: ${load.error.message}`);
    assert(hub.log.length > 0 && hub.log.every((e) => e.status === 302), "origin B answered something other than 302");
    const resumed = cdn.log.slice(killedAt).filter((e) => e.path.endsWith("unet/diffusion_pytorch_model.safetensors") && e.status === 206 && /^bytes=[1-9]\d*-$/.test(e.range || ""));
    assert(resumed.length > 0, "the UNet was not resumed with Range: bytes=N- (N > 0) on origin C after the kill");
    const sent = cdn.bytesSent("/model/unet/diffusion_pytorch_model.safetensors");
    assert(sent <= unetSize + 2 * 2 ** 20, `${sent} bytes of the UNet sent for a ${unetSize}-byte file: the download started over`);
    // Preflights: the worker sends no request header but Range "bytes=N-" (CORS-safelisted), so
    // none is needed; If-Range (not safelisted) would cost one per request.
    const preflights = [...hub.log, ...cdn.log].filter((e) => e.method === "OPTIONS");
    t.log(`preflights: ${preflights.length}${preflights.length ? ` (${preflights.map((e) => e.preflight).join("; ")})` : ""}; Range requests: ${cdn.log.filter((e) => e.range).length}`);
    assert(preflights.length === 0, `${preflights.length} CORS preflight(s): the worker sent a header that is not CORS-safelisted`);
    assert(!cdn.log.some((e) => e.ifRange), "a request carried If-Range");
    const entries = await evaluate(b.page, () => window.StableDiffusion.cacheEntries({ sha256: true }), null, MIN, "cacheEntries");
    const ue = entries.find((e) => e.url === `${model}unet/diffusion_pytorch_model.safetensors`);
    t.log(`cache: ${entries.length} entries, all complete: ${entries.every((e) => e.complete)}; UNet ${ue ? `${ue.bytes} B, sha256 ${ue.sha256.slice(0, 16)}…` : "missing"}`);
    assert(entries.every((e) => e.complete), `incomplete cache entries: ${JSON.stringify(entries.filter((e) => !e.complete))}`);
    assert(ue && ue.bytes === unetSize && ue.sha256 === sha256File(path.join(MODEL, "unet/diffusion_pytorch_model.safetensors")), `the cached UNet is not the file: ${JSON.stringify(ue)}`);

    // A second visit: everything from the cache, nothing asked of B or C.
    hub.clearLog();
    cdn.clearLog();
    await b.page.reload();
    await b.page.waitForFunction(() => window.e2e && window.e2e.ready, null, { timeout: MIN });
    const again = await apiLoad(t, b.page, { model, variant: null, dtype: "f32" });
    assert(hub.log.length === 0 && cdn.log.length === 0, `the second visit asked B ${hub.log.length} and C ${cdn.log.length} times:\n    ${fmtReqs(hub)}\n    ${fmtReqs(cdn)}`);
    assert(again.progress.phases.includes("cache"), `phases ${JSON.stringify(again.progress.phases)} lack "cache"`);
  } finally {
    await hub.stop();
    await cdn.stop();
  }
}, { timeoutMs: 6 * MIN });

test("no_cors_host_fails_fast", async (t) => {
  // A mirror without CORS headers: the browser hides every answer. The load must say so within
  // seconds, with the way out (download the files, use the folder picker), not retry for minutes.
  const bare = new TestServer({ mounts: { "/model/": MODEL } });
  await bare.start();
  try {
    const b = await t.launch();
    await openHarness(b.page, base());
    const r = await evaluate(b.page, (o) => window.e2e.load(o), { model: `${bare.url}/model/`, variant: null, dtype: "f32" }, 2 * MIN, "load from a host without CORS");
    t.log(`load from ${bare.url} (no CORS): ${r.ok ? "ok?!" : `${r.error.name}: ${r.error.message}`} after ${r.seconds?.toFixed(1)} s; ${bare.log.length} requests`);
    assert(!r.ok, "the load from a host without CORS succeeded");
    assert(/cross-origin/i.test(r.error.message) && /folder picker/i.test(r.error.message), `the message does not explain CORS and the folder picker: ${r.error.message}`);
    assert(r.seconds < 10, `it took ${r.seconds.toFixed(1)} s to fail`);
  } finally {
    await bare.stop();
  }
}, { timeoutMs: 3 * MIN });

test("throttling_host_retries", async (t) => {
  // A 404 fails at once, naming the file, and five failed loads in a row leave no worker behind;
  // then 429 and 5xx, with and without Retry-After (seconds and an HTTP date), on HEAD, small
  // GETs and the weights: retried with backoff, waiting what Retry-After says; after the good
  // load exactly one worker exists.
  server.clearFaults();
  try {
    const b = await t.launch();
    await openHarness(b.page, base());
    const failures = [];
    for (let i = 0; i < 5; i++) {
      failures.push(await evaluate(b.page, (o) => window.e2e.load(o), { model: "/no-such-model/", variant: null, dtype: "f32" }, MIN, "load of a missing model"));
    }
    const f = failures[0];
    t.log(`missing model: ${f.ok ? "ok?!" : `${f.error.name}: ${f.error.message}`} (5 tries: ${failures.map((x) => x.seconds?.toFixed(2)).join(", ")} s)`);
    assert(failures.every((x) => !x.ok), "a load of a missing model succeeded");
    assert(/unet\/config\.json/.test(f.error.message) && /404/.test(f.error.message), `the 404 message does not name the file: ${f.error.message}`);
    assert(failures.every((x) => x.seconds < 3), `a 404 took ${Math.max(...failures.map((x) => x.seconds)).toFixed(1)} s to fail (retried?)`);
    await waitFor(async () => b.page.workers().length === 0, { timeoutMs: 5000, intervalMs: 100, what: `the failed loads' workers to end (${b.page.workers().length} alive)` });

    // unet/config.json is the first file asked for: its Retry-After date is 5 s ahead then.
    server.fail(/^\/model\/unet\/config\.json$/, [{ status: 504, retryAfter: new Date(Date.now() + 5000).toUTCString() }]);
    server.fail(/^\/model\/unet\/diffusion_pytorch_model\.safetensors$/, [{ status: 429, retryAfter: "2" }, { status: 502 }]);
    server.fail(/^\/model\/vae\/diffusion_pytorch_model\.safetensors$/, [{ status: 500 }, { status: 503 }]);
    server.clearLog();
    const load = await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" }, 3 * MIN);
    const injected = server.log.filter((e) => e.injected).map((e) => `${e.method} ${e.path} -> ${e.status}`);
    const retries = load.progress.retries.map((r) => `${r.file}: ${r.error} (attempt ${r.attempt}, waited ${r.waitSeconds} s)`);
    t.log(`injected: ${injected.join("; ")}\n    retries: ${retries.join("\n             ")}`);
    assert(injected.length === 5, `${injected.length} injected answers were served, expected 5`);
    for (const st of [429, 500, 502, 503, 504]) assert(load.progress.retries.some((r) => r.status === st), `no retry for HTTP ${st}`);
    const r429 = load.progress.retries.find((r) => r.status === 429);
    assert(r429.waitSeconds === 2, `Retry-After: 2 gave a wait of ${r429.waitSeconds} s`);
    const r504 = load.progress.retries.find((r) => r.status === 504);
    assert(r504.waitSeconds >= 2 && r504.waitSeconds <= 5, `Retry-After as an HTTP date (5 s ahead when set, whole seconds) gave a wait of ${r504.waitSeconds} s`);
    const waited = load.progress.retries.reduce((a, r) => a + r.waitSeconds, 0);
    assert(load.seconds >= waited, `the load took ${load.seconds} s, less than the ${waited} s of waits it reported`);
    const workers = b.page.workers().map((w) => w.url());
    t.log(`workers after 5 failed loads and a good one: ${workers.length} ${JSON.stringify(workers)}`);
    assert(workers.length === 1, `${workers.length} workers alive after 5 failed loads and a good one, expected 1`);
  } finally {
    server.clearFaults();
  }
}, { timeoutMs: 4 * MIN });

test("stale_cache_416_and_changed_file", async (t) => {
  // (1) The cache holds every byte of the UNet but the tab died before marking it complete:
  // the Range request from the end gets 416, and the load completes from the cache by itself.
  // (2) The file changed on the server (other ETag) while a partial copy is cached: it is
  // downloaded again from the start, never spliced onto the old prefix.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sd-e2e-model-"));
  fs.cpSync(MODEL, dir, { recursive: true });
  server.mount("/model-copy/", dir);
  const rel = "unet/diffusion_pytorch_model.safetensors";
  const unetPath = `/model-copy/${rel}`;
  const file = path.join(dir, rel);
  try {
    const b = await t.launch();
    await openHarness(b.page, base());
    const opts = { model: "/model-copy/", variant: null, dtype: "f32" };
    await apiLoad(t, b.page, opts);
    const url = `${base()}${unetPath}`;
    const size = fs.statSync(file).size;

    await b.page.evaluate(() => window.e2e.sd.unload());
    const e1 = await evaluate(b.page, ([u]) => window.e2e.editCacheEntry(u, { meta: { complete: false } }), [url], MIN, "mark the UNet incomplete");
    t.log(`cache entry of the UNet marked incomplete (was ${JSON.stringify(e1.before)})`);
    server.clearLog();
    await apiLoad(t, b.page, opts);
    const u1 = server.requests(unetPath);
    t.log(`UNet requests: ${u1.map((e) => `${e.method} [${e.range}] -> ${e.status}, ${e.bytes} B`).join("; ")}`);
    assert(u1.some((e) => e.status === 416 && e.range === `bytes=${size}-`), `no Range request from the end (bytes=${size}-) answered 416`);
    assert(server.bytesSent(unetPath) === 0, `${server.bytesSent(unetPath)} UNet bytes were downloaded again`);
    let entries = await evaluate(b.page, () => window.StableDiffusion.cacheEntries({ sha256: true }), null, MIN, "cacheEntries");
    let e = entries.find((x) => x.url === url);
    assert(e && e.complete && e.bytes === size && e.sha256 === sha256File(file), `after the 416: ${JSON.stringify(e)}`);

    // (2) new content, same length, new mtime (so a new ETag); half of the old file cached.
    await b.page.evaluate(() => window.e2e.sd.unload());
    const buf = fs.readFileSync(file);
    buf.fill(0, size - 4096);
    fs.writeFileSync(file, buf);
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(file, later, later);
    const half = Math.floor(size / 2);
    await evaluate(b.page, ([u, n]) => window.e2e.editCacheEntry(u, { meta: { complete: false }, keepBytes: n }), [url, half], MIN, "cut the cached UNet to half");
    server.clearLog();
    const load2 = await apiLoad(t, b.page, opts);
    const u2 = server.requests(unetPath);
    t.log(`UNet requests after the change: ${u2.map((x) => `${x.method} [${x.range}] -> ${x.status}, ${x.bytes} B`).join("; ")}; retries ${JSON.stringify(load2.progress.retries.map((r) => r.error))}`);
    assert(u2.some((x) => x.range === `bytes=${half}-`), `the cached half was not offered for resuming (no bytes=${half}-)`);
    assert(u2.some((x) => !x.range && x.method === "GET" && x.status === 200 && x.bytes === size), "the changed file was not downloaded again whole");
    entries = await evaluate(b.page, () => window.StableDiffusion.cacheEntries({ sha256: true }), null, MIN, "cacheEntries");
    e = entries.find((x) => x.url === url);
    assert(e && e.complete && e.bytes === size && e.sha256 === sha256File(file), `after the change the cache holds ${JSON.stringify(e)}, not the new file (sha256 ${sha256File(file)})`);
  } finally {
    server.unmount("/model-copy/");
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, { timeoutMs: 5 * MIN });

test("load_abort_keeps_the_cache", async (t) => {
  // load({ signal }): aborted mid-download it rejects with AbortError at once, its worker
  // ends, the bytes so far stay cached, and the next load continues from them.
  const b = await t.launch();
  await openHarness(b.page, base());
  const unetSize = fs.statSync(path.join(MODEL, "unet/diffusion_pytorch_model.safetensors")).size;
  server.clearLog();
  server.setThrottle(/^\/model\/unet\/.*\.safetensors$/, 1 << 20);
  try {
    await b.page.evaluate((o) => window.e2e.startLoad(o), { model: "/model/", variant: null, dtype: "f32", abortable: true });
    await untilBytes(t, b.page, server, UNET, Math.ceil(0.3 * unetSize));
    const t0 = Date.now();
    await b.page.evaluate(() => window.e2e.abortLoad());
    const r = await evaluate(b.page, () => window.e2e.waitLoad(), null, MIN, "the aborted load");
    const ms = Date.now() - t0;
    t.log(`aborted load: ${r.ok ? "resolved?!" : `${r.error.name} (DOMException ${r.error.isDOMException}): ${r.error.message}`} ${ms} ms after abort()`);
    assert(!r.ok && r.error.name === "AbortError", `the aborted load ${r.ok ? "resolved" : `rejected with ${r.error.name}`}`);
    assert(ms < 3000, `the abort took ${ms} ms`);
    await waitFor(async () => b.page.workers().length === 0, { timeoutMs: 5000, intervalMs: 100, what: "the aborted load's worker to end" });
  } finally {
    server.clearThrottle();
  }
  const entries = await evaluate(b.page, () => window.StableDiffusion.cacheEntries(), null, MIN, "cacheEntries");
  const e = entries.find((x) => x.url.endsWith(UNET));
  t.log(`cached after the abort: UNet ${e ? `${e.bytes}/${e.total} bytes, complete ${e.complete}` : "nothing"}`);
  assert(e && e.bytes > 0 && !e.complete, `the UNet's downloaded part was not kept: ${JSON.stringify(e)}`);
  const kept = e.bytes;
  server.clearLog();
  await apiLoad(t, b.page, { model: "/model/", variant: null, dtype: "f32" });
  const gets2 = server.requests(UNET).filter((x) => x.method === "GET");
  t.log(`next load: ${gets2.map((x) => `[${x.range}] -> ${x.status}, ${x.bytes} B`).join("; ")}`);
  assert(gets2.some((x) => x.range === `bytes=${kept}-` && x.status === 206), `the next load did not continue from the ${kept} cached bytes`);
  assert(server.bytesSent(UNET) === unetSize - kept, `${server.bytesSent(UNET)} UNet bytes sent after the abort, expected ${unetSize - kept}`);
}, { timeoutMs: 5 * MIN });

test("url_model_on_another_origin_asks_first", async (t) => {
  // index.html?model=<URL on another origin>&autoload=1 (a shared link): nothing is fetched
  // from that host until the visitor agrees; then it loads.
  const cdn = new TestServer({ mounts: { "/model/": MODEL }, cors: { origin: "*", expose: EXPOSE, allowHeaders: [] } });
  await cdn.start();
  try {
    const b = await t.launch();
    const page = b.page;
    const model = `${cdn.url}/model/`;
    await page.goto(`${base()}/index.html?model=${encodeURIComponent(model)}&variant=none&dtype=f32&autoload=1`);
    const st = await waitForState(page, ["confirm", "loading", "ready", "error"], MIN);
    const text = await page.textContent("#message");
    t.log(`state "${st}"; #message ${JSON.stringify(text)}; button ${JSON.stringify(await page.textContent("#confirm-load"))}`);
    assert(st === "confirm", `the page went to "${st}" without asking`);
    assert(text.includes(new URL(model).host), `the question does not name the host: ${text}`);
    await sleep(1500);
    assert(cdn.log.length === 0, `${cdn.log.length} requests to the other host before the visitor agreed:\n    ${fmtReqs(cdn)}`);
    await page.click("#confirm-load");
    const end = await waitForState(page, ["ready", "error"], 3 * MIN);
    t.log(`after "Load from …": state "${end}", ${cdn.log.length} requests to ${cdn.url}; #message ${JSON.stringify(await page.textContent("#message"))}`);
    assert(end === "ready", `the load after agreeing ended in "${end}"`);
    assert(cdn.log.length > 0, "nothing was fetched from the other host");
  } finally {
    await cdn.stop();
  }
}, { timeoutMs: 4 * MIN });

test("quota_exceeded_offers_no_cache", async (t) => {
  // Browser storage too small for the model (1 MB quota for the origin, through the DevTools
  // protocol): the page says so and offers to continue without caching; that load works,
  // and the cache keeps no partial file.
  const b = await t.launch();
  const page = b.page;
  const origin = base();
  const cdp = await b.context.newCDPSession(page);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 1_000_000 });
  server.clearLog();
  await page.goto(`${origin}/index.html?model=/model/&variant=none&dtype=f32&autoload=1`);
  // (Chromium enforces the override on writes but still reports the old quota in
  // navigator.storage.estimate(): the module's write error is what is tested.)
  assert((await waitForState(page, ["error", "ready"], 5 * MIN)) === "error", "the load succeeded despite a 1 MB quota");
  const msg = await page.evaluate(() => ({ text: document.querySelector("#message").textContent, cls: document.querySelector("#message").className, offer: !document.querySelector("#no-cache").hidden }));
  t.log(`#message (${msg.cls}): ${JSON.stringify(msg.text)}; "Continue without caching" shown: ${msg.offer}`);
  assert(/storage/i.test(msg.text), `the message does not mention storage: ${JSON.stringify(msg.text)}`);
  assert(msg.offer, "#no-cache is not offered after a quota error");
  // The gallery (IndexedDB) under the same quota: a 2 MB PNG is refused with words.
  const full = await page.evaluate(async () => {
    const data = new Uint8Array(2_000_000);
    for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
    try {
      await window.sdApp.gallery.add({ png: new Blob([data], { type: "image/png" }), name: "big.png", parameters: "", seed: 0, batchPos: 1, width: 1, height: 1, prompt: "", caption: "" });
      return null;
    } catch (e) {
      return { name: e.name, message: e.message };
    }
  });
  t.log(`a 2 MB PNG into the gallery: ${JSON.stringify(full)}`);
  assert(full && full.name === "QuotaExceededError" && /storage for this page is full/.test(full.message), `the gallery's error for a full storage: ${JSON.stringify(full)}`);
  const partial = (await page.evaluate(async () => (await import("/sd-webgpu.js")).StableDiffusion.cacheEntries())).filter((e) => !e.complete);
  assert(partial.length === 0, `partial cache entries left after the quota error: ${JSON.stringify(partial)}`);
  await page.click("#no-cache");
  assert((await waitForState(page, ["ready", "error"], 5 * MIN)) === "ready", "the load without caching failed");
  const entries = await page.evaluate(async () => (await import("/sd-webgpu.js")).StableDiffusion.cacheEntries());
  t.log(`loaded without caching; cache entries: ${entries.length}, ${entries.reduce((a, e) => a + e.bytes, 0)} bytes`);
  assert(entries.every((e) => e.complete) && entries.reduce((a, e) => a + e.bytes, 0) <= 1_000_000, `cache after the no-cache load: ${JSON.stringify(entries)}`);
}, { timeoutMs: 8 * MIN });

test("webgpu_missing_message", async (t) => {
  const b = await t.launch({ args: ["--no-sandbox", "--disable-features=WebGPU"] });
  const page = b.page;
  const resp = await page.goto(`${base()}/index.html`);
  assert(resp && resp.ok(), `index.html: HTTP ${resp && resp.status()}`);
  const env = await page.evaluate(async () => {
    let adapter = null, err = null;
    try {
      adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    } catch (e) {
      err = String(e);
    }
    return { gpu: !!navigator.gpu, adapter: !!adapter, err, secure: isSecureContext };
  });
  t.log(`without WebGPU: navigator.gpu ${env.gpu}, adapter ${env.adapter}${env.err ? `, requestAdapter threw ${env.err}` : ""}, secure context ${env.secure}`);
  assert(env.secure, "the page is not a secure context: the check would prove nothing");
  assert(!env.adapter, "WebGPU is still available with --disable-features=WebGPU: cannot test the message");
  const state = await waitForState(page, ["error"], MIN).catch((e) => e);
  const info = await page.evaluate(() => {
    const m = document.querySelector("#message");
    return { state: document.body.dataset.state ?? null, cls: m ? m.className : null, text: m ? m.textContent : null };
  });
  t.log(`body[data-state] ${JSON.stringify(info.state)}, #message class ${JSON.stringify(info.cls)}: ${JSON.stringify(info.text)}`);
  assert(info.cls !== null, "no #message element");
  assert(info.cls.split(/\s+/).includes("error"), `#message has class "${info.cls}", expected "error"`);
  assert(/WebGPU/.test(info.text), `#message does not mention WebGPU: ${JSON.stringify(info.text)}`);
  assert(state === "error", `body[data-state] is ${JSON.stringify(info.state)}, expected "error"`);
}, { timeoutMs: 3 * MIN });

// ---------------------------------------------------------------------------------------------
// page helpers

/** Waits until body[data-state] is one of `states`; returns it. */
async function waitForState(page, states, timeoutMs) {
  const h = await page.waitForFunction((s) => s.includes(document.body && document.body.dataset.state) && document.body.dataset.state, states, { timeout: timeoutMs, polling: 200 });
  return await h.jsonValue();
}

/** Sets an input/select value like a user would (fill where possible, else value + events). */
// The page's form set to a golden case's parameters (batch 1, the case's seed).
async function fillGoldenForm(page, g) {
  await page.fill("#prompt", g.case.prompt);
  await page.fill("#negative", g.case.negative_prompt);
  await setValue(page, "#steps", String(g.case.steps));
  await setValue(page, "#guidance", String(g.case.guidance_scale));
  await page.setChecked("#random-seed", false);
  await setValue(page, "#seed", String(g.case.seed));
  await setValue(page, "#width", String(g.width));
  await setValue(page, "#height", String(g.height));
  await page.selectOption("#sampler", g.case.sampler);
  await setValue(page, "#batch", "1");
}

async function setValue(page, sel, value) {
  const kind = await page.evaluate((s) => {
    const el = document.querySelector(s);
    return el ? `${el.tagName.toLowerCase()}:${el.type || ""}:${el.disabled}` : null;
  }, sel);
  if (!kind) throw new AssertionError(`no element ${sel}`);
  const [tag, type, disabled] = kind.split(":");
  if (disabled === "true") throw new AssertionError(`${sel} is disabled`);
  if (tag === "select") await page.selectOption(sel, value);
  else if (tag === "input" && (type === "range" || type === "hidden")) {
    await page.evaluate(([s, v]) => {
      const el = document.querySelector(s);
      el.value = v;
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }, [sel, value]);
  } else await page.fill(sel, value);
  const now = await page.evaluate((s) => document.querySelector(s).value, sel);
  if (Number.isNaN(Number(value)) ? now !== value : Number(now) !== Number(value)) throw new AssertionError(`${sel}: set to ${value}, reads ${now} (outside its min/max/step?)`);
}

// ---------------------------------------------------------------------------------------------
// main

async function main() {
  if (!process.env.XDG_RUNTIME_DIR) {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "xdg-"));
    fs.chmodSync(d, 0o700);
    process.env.XDG_RUNTIME_DIR = d;
    process.on("exit", () => fs.rmSync(d, { recursive: true, force: true }));
  }
  const only = process.env.E2E_ONLY ? process.env.E2E_ONLY.split(",").map((s) => s.trim()).filter(Boolean) : null;
  if (only) {
    const unknown = only.filter((n) => !tests.some((t) => t.name === n));
    if (unknown.length) {
      console.log(`E2E_ONLY names unknown tests: ${unknown.join(", ")} (known: ${tests.map((t) => t.name).join(", ")})`);
      process.exit(1);
    }
  }
  await server.start();
  const missing = ["index.html", "app.js", "sd-webgpu.js", "sd-webgpu-worker.js"].filter((f) => !fs.existsSync(path.join(DIST, f)));
  console.log(`e2e: server ${server.url} (dist ${path.relative(ROOT, DIST)}/, model ${path.relative(ROOT, MODEL)}/), Chromium ${process.env.CHROMIUM || "/usr/bin/chromium"}`);
  if (missing.length) console.log(`e2e: WARNING dist/ lacks ${missing.join(", ")} (run bash scripts/build-web.sh): the browser tests will fail`);

  let passed = 0, failed = 0, skipped = 0;
  const failures = [];
  for (const tc of tests) {
    if (only && !only.includes(tc.name)) {
      console.log(`SKIP ${tc.name} (not selected by E2E_ONLY)`);
      skipped++;
      continue;
    }
    if (!server.server) await server.start();
    server.clearThrottle();
    server.clearLog();
    const t = makeCtx(tc.name);
    const t0 = Date.now();
    let ok = false;
    console.log(`--- ${tc.name}`);
    try {
      await withTimeout(Promise.resolve().then(() => tc.fn(t)), tc.timeoutMs, tc.name);
      ok = true;
    } catch (e) {
      const reason = e instanceof AssertionError ? e.message : e && e.stack ? e.stack : String(e);
      console.log(`FAIL ${tc.name}: ${reason}`);
      failures.push(tc.name);
      failed++;
    }
    for (const b of t.browsers) {
      if (ok && t.kept.has(b)) continue;
      if (shared.api === b) shared.api = null;
      if (shared.profile === b) shared.profile = null;
      if (shared.real === b) shared.real = null;
      await closeQuietly(b);
    }
    if (ok) {
      console.log(`PASS ${tc.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      passed++;
    }
  }
  await closeQuietly(shared.api);
  await closeQuietly(shared.profile);
  await closeQuietly(shared.real);
  await server.kill();
  removeProfiles();
  const ran = passed + failed;
  console.log(`e2e: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped (E2E_ONLY)` : ""}${failures.length ? ` (${failures.join(", ")})` : ""}`);
  process.exit(failed > 0 || ran === 0 ? 1 : 0);
}

main().catch((e) => {
  console.log(`e2e: runner error: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
