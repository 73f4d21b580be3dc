// The npm package as its users get it: packs dist/npm (scripts/build-web.sh makes it), installs
// the tarball into three small consumer apps, and checks that each works unchanged:
//
//   ts/       tsc --noEmit (strict) against the package's d.ts, with moduleResolution
//             "bundler" and "nodenext"; @ts-expect-error lines check that wrong options fail
//   vite/     the Vite dev server (dependency pre-bundling on, as by default) and `vite build`
//   webpack/  `webpack --mode production`
//
// Each app (served: the dev server itself, the builds by tests/e2e/server.mjs) generates the
// golden DDIM case (tests/fixtures/e2e-short txt2img_ddim_3steps: the tiny SD-1.5, 3 steps,
// f32 storage) in Chromium through the bundled module and is compared with diffusers' image
// (tolerance as e2e's api test). load({ assetBase }) is checked in the builds: the same origin
// under another path (Vite build) and another origin with CORS (webpack, under a strict
// Content-Security-Policy): a load whose worker, modules and wasm come from there (server
// logs), the weights on the GPU (stats()).
//
//   node tests/consumers/run.mjs      (bash scripts/consumers.sh: the same, after what it needs)
// Environment: CONSUMERS_ONLY=ts,vite-dev,vite-build,webpack runs only those; CHROMIUM as e2e.
//
// Tool versions are pinned in each app's package-lock.json (npm ci); the package itself is
// installed from the tarball with `npm install --no-save`, so the lock files never change.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { spawn } from "node:child_process";
import { TestServer } from "../e2e/server.mjs";
import { ROOT, DIST, MODEL, FIXTURE_SHORT, sleep, assert, AssertionError, fmtBytes, golden, compareImage, fmtCompare, launch, closeQuietly, evaluate, removeProfiles } from "../e2e/lib.mjs";

const HERE = path.join(ROOT, "tests/consumers");
const PKG_DIR = path.join(DIST, "npm");
const OUT = path.join(ROOT, "target/consumers");
const API_TOL = 4e-3; // as e2e's api_generate_matches_golden: f32 storage + 8-bit rounding
const EXPOSE = ["ETag", "Content-Range", "Content-Length", "Accept-Ranges", "Retry-After"];
const MIN = 60_000;
const ONLY = process.env.CONSUMERS_ONLY ? new Set(process.env.CONSUMERS_ONLY.split(",").map((s) => s.trim())) : null;
const want = (name) => name == null || !ONLY || ONLY.has(name);
const T0 = Date.now();
const secs = (t) => ((Date.now() - t) / 1000).toFixed(1);
const log = (...a) => console.log(...a);

// ---------------------------------------------------------------------------------------------
// processes

/** Runs a command; resolves to { code, out } (stdout + stderr); rejects when it fails. */
function run(cmd, args, { cwd = ROOT, env = {}, quiet = false, what = `${cmd} ${args.join(" ")}` } = {}) {
  return new Promise((resolve, reject) => {
    const t = Date.now();
    const p = spawn(cmd, args, { cwd, env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    p.on("error", reject);
    p.on("close", (code) => {
      if (!quiet || code !== 0) log(out.trimEnd().split("\n").map((l) => `    ${l}`).join("\n"));
      log(`  ${what} (in ${path.relative(ROOT, cwd) || "."}): exit ${code}, ${secs(t)} s`);
      if (code === 0) resolve({ code, out });
      else reject(new AssertionError(`${what} failed (exit ${code})`));
    });
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// checks

const results = []; // { name, ok, seconds, note }
async function check(name, fn, gate = name) {
  if (!want(gate)) return;
  const t = Date.now();
  log(`--- ${name}`);
  try {
    const note = await fn();
    results.push({ name, ok: true, seconds: (Date.now() - t) / 1000, note });
    log(`ok ${name} (${secs(t)} s)${note ? `: ${note}` : ""}`);
  } catch (e) {
    results.push({ name, ok: false, seconds: (Date.now() - t) / 1000, note: e.message });
    log(`FAILED ${name} (${secs(t)} s): ${e instanceof AssertionError ? e.message : e.stack}`);
  }
}

// The package: npm pack --dry-run --json figures, package.json fields, the tarball.
async function pack() {
  assert(fs.existsSync(path.join(PKG_DIR, "package.json")), `${path.relative(ROOT, PKG_DIR)}/package.json is missing: run bash scripts/build-web.sh (or --js-only)`);
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  const dry = JSON.parse((await run("npm", ["pack", "--dry-run", "--json", PKG_DIR], { quiet: true })).out.replace(/^[^[]*/, ""))[0];
  log(`  npm pack --dry-run --json: ${dry.id}: ${dry.entryCount} files, package ${fmtBytes(dry.size)} (${dry.size} bytes), unpacked ${fmtBytes(dry.unpackedSize)} (${dry.unpackedSize} bytes), shasum ${dry.shasum}`);
  for (const f of dry.files) log(`    ${String(f.size).padStart(10)}  ${f.path}`);
  const pkg = JSON.parse(fs.readFileSync(path.join(PKG_DIR, "package.json"), "utf8"));
  const cargoVersion = /^\[package\][\s\S]*?^version\s*=\s*"([^"]+)"/m.exec(fs.readFileSync(path.join(ROOT, "Cargo.toml"), "utf8"))[1];
  assert(pkg.name === "sd-webgpu", `package name ${pkg.name}`);
  assert(pkg.version === cargoVersion && dry.version === cargoVersion, `package version ${pkg.version} / packed ${dry.version}, Cargo.toml ${cargoVersion}`);
  assert(pkg.type === "module", `package type ${pkg.type}`);
  assert(pkg.exports?.["."]?.types === "./sd-webgpu.d.ts" && pkg.exports?.["."]?.default === "./sd-webgpu.js", `exports["."] ${JSON.stringify(pkg.exports?.["."])}`);
  assert(pkg.types === "./sd-webgpu.d.ts", `types ${pkg.types}`);
  assert(pkg.sideEffects === false, `sideEffects ${pkg.sideEffects}`);
  assert(pkg.license, "no license");
  const packed = new Set(dry.files.map((f) => f.path));
  const need = ["package.json", "README.md", "sd-webgpu.js", "sd-webgpu.d.ts", "sd-webgpu-worker.js", "sd-webgpu-errors.js", "sd-webgpu-cache.js", "sd-webgpu-http.js", "sd-webgpu-sources.js", "wasm/sd-webgpu.js", "wasm/sd-webgpu_bg.wasm", "LICENSE-MIT", "LICENSE-APACHE"];
  const missing = need.filter((f) => !packed.has(f));
  assert(!missing.length, `the package lacks ${missing.join(", ")}`);
  const extra = [...packed].filter((f) => !need.includes(f));
  if (extra.length) log(`  also packed: ${extra.join(", ")}`);
  const wasm = dry.files.find((f) => f.path.endsWith(".wasm"));
  const real = await run("npm", ["pack", PKG_DIR, "--pack-destination", OUT, "--json"], { quiet: true });
  const tgz = path.join(OUT, JSON.parse(real.out.replace(/^[^[]*/, ""))[0].filename);
  assert(fs.existsSync(tgz), `npm pack wrote no ${tgz}`);
  // What a CDN (unpkg, jsDelivr) serves of the package: its files, for the assetBase checks.
  fs.mkdirSync(path.join(OUT, "cdn"));
  await run("tar", ["-xzf", tgz, "-C", path.join(OUT, "cdn")], { quiet: true });
  state.tgz = tgz;
  state.cdnDir = path.join(OUT, "cdn/package");
  return `${dry.id}: ${dry.entryCount} files, ${fmtBytes(dry.size)} packed, ${fmtBytes(dry.unpackedSize)} unpacked (wasm ${fmtBytes(wasm.size)}); ${path.relative(ROOT, tgz)}`;
}

// npm ci (the pinned tools), then the tarball without saving: package.json and the lock stay.
async function install(app) {
  const dir = path.join(HERE, app);
  const before = ["package.json", "package-lock.json"].map((f) => fs.readFileSync(path.join(dir, f), "utf8"));
  await run("npm", ["ci", "--no-audit", "--no-fund"], { cwd: dir, quiet: true });
  await run("npm", ["install", "--no-save", "--no-audit", "--no-fund", state.tgz], { cwd: dir, quiet: true });
  const after = ["package.json", "package-lock.json"].map((f) => fs.readFileSync(path.join(dir, f), "utf8"));
  assert(before[0] === after[0] && before[1] === after[1], `${app}: npm install --no-save changed package.json or package-lock.json`);
  const installed = JSON.parse(fs.readFileSync(path.join(dir, "node_modules/sd-webgpu/package.json"), "utf8"));
  assert(installed.version === JSON.parse(fs.readFileSync(path.join(PKG_DIR, "package.json"), "utf8")).version, `${app}: node_modules/sd-webgpu is ${installed.version}`);
}

function listBuild(dir) {
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else files.push({ rel: path.relative(dir, f).split(path.sep).join("/"), size: fs.statSync(f).size });
    }
  };
  walk(dir);
  return files.sort((a, b) => a.rel.localeCompare(b.rel));
}

/** The build's files; asserts one .wasm of the package's size and a worker chunk beside the entry. */
function checkBuild(name, dir) {
  const files = listBuild(dir);
  log(`  ${name} output (${path.relative(ROOT, dir)}/):`);
  for (const f of files) log(`    ${String(f.size).padStart(10)}  ${f.rel}`);
  const wasmSize = fs.statSync(path.join(PKG_DIR, "wasm/sd-webgpu_bg.wasm")).size;
  const wasm = files.filter((f) => f.rel.endsWith(".wasm"));
  assert(wasm.length === 1 && wasm[0].size === wasmSize, `${name}: expected one .wasm of ${wasmSize} bytes in the build, found ${JSON.stringify(wasm)}`);
  const js = files.filter((f) => f.rel.endsWith(".js"));
  assert(js.length >= 2, `${name}: expected the app's chunk and the worker's, found ${js.map((f) => f.rel).join(", ")}`);
  return files;
}

// ---------------------------------------------------------------------------------------------
// the apps in Chromium

const state = { tgz: null, cdnDir: null, browser: null, cdn: null, reference1: new Map() };
const G = () => golden("txt2img_ddim_3steps", FIXTURE_SHORT);

async function browser() {
  if (!state.browser) state.browser = await launch({ tag: "consumers" });
  return state.browser;
}

/** A new tab on the app's page, window.consumer ready; worker and wasm requests recorded. */
async function openApp(url, tag) {
  const b = await browser();
  const page = await b.context.newPage();
  const seen = { workers: [], wasm: [] };
  page.on("worker", (w) => seen.workers.push(w.url()));
  page.on("request", (r) => {
    if (/\.wasm(\?|$)/.test(r.url())) seen.wasm.push(r.url());
  });
  const resp = await page.goto(url);
  assert(resp && resp.ok(), `${tag}: ${url}: HTTP ${resp && resp.status()}`);
  await page.waitForFunction(() => window.consumer && window.consumer.ready, null, { timeout: 60_000 });
  return { page, seen };
}

// A load takes about a second here. One that gives no answer for 2 minutes is reported with
// its last progress event and tried again on a reloaded page, at most 5 times (a sixth hang
// fails the check). Open bug, older than the npm package (the previous stop's wasm hangs the
// same way): the vite-dev load (its model on another origin) hung in 4 of 7 runs on
// 2026-12-06, each time during the VAE's download (last events between 2 and 4 MiB of its
// 5.6 MB, 1.3-1.4 s into the load, nothing for 119 s after); the reloaded page's load passed
// each time, and no vite-build or webpack load hung (README: npm package).
async function load(page, tag, opts) {
  let r;
  for (let attempt = 1; ; attempt++) {
    try {
      r = await evaluate(page, (o) => window.consumer.load(o), opts, 2 * MIN, `${tag}: StableDiffusion.load${attempt > 1 ? ` (try ${attempt})` : ""}`);
      break;
    } catch (e) {
      if (attempt >= 6 || !(e instanceof AssertionError) || !/no answer after/.test(e.message)) throw e;
      const last = await evaluate(page, () => window.consumer.lastProgress(), null, 10_000, `${tag}: last progress`).catch((x) => `(not readable: ${x.message})`);
      log(`  ${tag}: RETRY: the load gave no answer in 2 minutes; its last progress event: ${JSON.stringify(last)}; reloading the page and loading again`);
      await page.reload();
      await page.waitForFunction(() => window.consumer && window.consumer.ready, null, { timeout: 60_000 });
    }
  }
  assert(r.ok, () => `${tag}: load rejected: ${r.error.name}: ${r.error.message}`);
  log(`  ${tag}: load ${r.seconds.toFixed(1)} s, phases ${r.phases.join(" ")}`);
  return r;
}

async function generate(page, tag, opts) {
  const r = await evaluate(page, (o) => window.consumer.generate(o), opts, 8 * MIN, `${tag}: generate`);
  assert(r.ok, () => `${tag}: generate rejected: ${r.error.name}: ${r.error.message}`);
  return r;
}

/** load (f32, variant null) + the golden case, compared with diffusers' image. */
async function golden3(page, tag, model) {
  const g = G();
  await load(page, tag, { model, variant: null, dtype: "f32" });
  const r = await generate(page, tag, { ...g.options, preview: false });
  assert(r.width === g.width && r.height === g.height, `${tag}: image ${r.width}x${r.height}, expected ${g.width}x${g.height}`);
  assert(r.steps === g.case.steps, `${tag}: onStep called ${r.steps} times, expected ${g.case.steps}`);
  assert(r.seed === g.case.seed, `${tag}: seed ${r.seed}`);
  const cmp = compareImage(Uint8Array.from(r.pixels), g);
  log(`  ${tag}: generate ${g.name} ${r.seconds.toFixed(1)} s; vs diffusers: ${fmtCompare(cmp)} (tolerance ${API_TOL})`);
  assert(cmp.mean <= API_TOL, `${tag}: mean error ${cmp.mean.toExponential(3)} > ${API_TOL}`);
  return { cmp, seconds: r.seconds };
}

// What a worker started from assetBase fetches from there.
const ASSET_FILES = ["sd-webgpu-worker.js", "sd-webgpu-errors.js", "sd-webgpu-cache.js", "sd-webgpu-http.js", "sd-webgpu-sources.js", "wasm/sd-webgpu.js", "wasm/sd-webgpu_bg.wasm"];

/** load({ assetBase }) (the model from the browser cache by now) and stats(): the worker, its
 *  modules and the wasm from assetBase run, the weights are on the GPU. No generation: the
 *  generation code is the same files, run by the golden case through the bundled worker. */
async function assetBaseLoad(page, tag, assetBase) {
  await load(page, tag, { model: "/model/", variant: null, dtype: "f32", assetBase });
  const st = await evaluate(page, () => window.consumer.stats(), null, MIN, `${tag}: stats`);
  assert(st.ok && st.weightsBytes > 0 && st.wasmMemoryBytes > 0, `${tag}: stats ${JSON.stringify(st)}`);
  log(`  ${tag}: stats: weights ${fmtBytes(st.weightsBytes)} on the GPU, wasm memory ${fmtBytes(st.wasmMemoryBytes)}`);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  log(`=== consumers: the npm package (${path.relative(ROOT, PKG_DIR)}) in Vite, webpack and TypeScript apps`);
  let ok = true;
  await check("pack", pack, null);
  if (!results.at(-1)?.ok) return finish();

  await check("install", async () => {
    const apps = ["ts", "vite", "webpack"].filter((a) => want(a) || (a === "vite" && (want("vite-dev") || want("vite-build"))));
    await Promise.all(apps.map(install));
    return `npm ci + the tarball in ${apps.join(", ")}`;
  }, null);
  if (!results.at(-1)?.ok) return finish();

  await check("ts", async () => {
    const dir = path.join(HERE, "ts");
    await run(path.join(dir, "node_modules/.bin/tsc"), ["--version"], { cwd: dir });
    await run(path.join(dir, "node_modules/.bin/tsc"), ["--noEmit", "-p", "tsconfig.json"], { cwd: dir });
    await run(path.join(dir, "node_modules/.bin/tsc"), ["--noEmit", "-p", "tsconfig.nodenext.json"], { cwd: dir });
    return "tsc --noEmit (strict; bundler and nodenext resolution): no errors";
  });

  const viteDir = path.join(HERE, "vite");
  const webpackDir = path.join(HERE, "webpack");
  const viteOut = path.join(OUT, "vite-build");
  const webpackOut = path.join(OUT, "webpack-build");
  const built = {};
  await check("vite-build:build", async () => {
    const t = Date.now();
    await run(path.join(viteDir, "node_modules/.bin/vite"), ["build", "--outDir", viteOut, "--emptyOutDir"], { cwd: viteDir });
    built.vite = checkBuild("vite build", viteOut);
    return `vite build ${secs(t)} s`;
  }, "vite-build");
  {
    await check("webpack:build", async () => {
      const t = Date.now();
      await run(path.join(webpackDir, "node_modules/.bin/webpack"), ["--mode", "production", "--env", `out=${webpackOut}`], { cwd: webpackDir });
      built.webpack = checkBuild("webpack", webpackOut);
      return `webpack ${secs(t)} s`;
    }, "webpack");
  }

  // The package's files as a CDN serves them (another origin, CORS), and the model there too.
  state.cdn = new TestServer({ mounts: { "/sd-webgpu@0.0/": state.cdnDir, "/model/": MODEL }, cors: { origin: "*", expose: EXPOSE, allowHeaders: [] } });
  await state.cdn.start();

  // The three apps in Chromium, one after the other (side by side in one browser, one of the
  // three loads once never answered).
  await check("vite-dev", async () => {
    const port = await freePort();
    // --force: the dependency pre-bundling runs now, as on a first `vite` (node_modules/.vite/deps).
    const dev = spawn(path.join(viteDir, "node_modules/.bin/vite"), ["--host", "127.0.0.1", "--port", String(port), "--strictPort", "--force"], { cwd: viteDir, env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let out = "";
    dev.stdout.on("data", (d) => (out += d));
    dev.stderr.on("data", (d) => (out += d));
    try {
      const url = `http://127.0.0.1:${port}/`;
      const t = Date.now();
      for (;;) {
        if (dev.exitCode != null) throw new AssertionError(`vite exited (${dev.exitCode}):\n${out}`);
        try {
          if ((await fetch(url)).ok) break;
        } catch {}
        if (Date.now() - t > MIN) throw new AssertionError(`the Vite dev server did not answer within 60 s:\n${out}`);
        await sleep(200);
      }
      log(`  vite dev server up in ${secs(t)} s`);
      const { page, seen } = await openApp(url, "vite-dev");
      // The model on another origin (CORS), as from Hugging Face.
      const r = await golden3(page, "vite-dev", `${state.cdn.url}/model/`);
      log(`  vite-dev: worker ${seen.workers.join(", ")}; wasm ${[...new Set(seen.wasm)].join(", ")}`);
      const deps = fs.existsSync(path.join(viteDir, "node_modules/.vite/deps")) ? fs.readdirSync(path.join(viteDir, "node_modules/.vite/deps")) : [];
      assert(deps.some((f) => f.startsWith("sd-webgpu")), `the package was not pre-bundled (node_modules/.vite/deps: ${deps.join(" ")}): the test would not cover Vite's optimizer`);
      log(`  vite-dev: pre-bundled deps: ${deps.join(" ")}`);
      await page.close();
      return `mean ${r.cmp.mean.toExponential(3)}, max ${r.cmp.max.toExponential(3)}; generate ${r.seconds.toFixed(1)} s`;
    } finally {
      try {
        process.kill(-dev.pid);
      } catch {}
      if (process.env.CONSUMERS_VERBOSE) log(out);
    }
  });

  if (built.vite) {
    await check("vite-build", async () => {
      // The build as a static site; the package's files also under /static/sd-webgpu/ (same
      // origin, another path) for assetBase.
      const site = new TestServer({ mounts: { "/": viteOut, "/model/": MODEL, "/static/sd-webgpu/": state.cdnDir } });
      await site.start();
      try {
        const { page, seen } = await openApp(`${site.url}/`, "vite-build");
        const r = await golden3(page, "vite-build", "/model/");
        log(`  vite-build: worker ${seen.workers.join(", ")}; wasm ${[...new Set(seen.wasm)].join(", ")}`);
        await evaluate(page, () => window.consumer.unload());
        site.clearLog();
        await assetBaseLoad(page, "vite-build assetBase", "/static/sd-webgpu/");
        const got = site.log.filter((e) => e.status === 200).map((e) => e.path);
        for (const f of ASSET_FILES) assert(got.includes(`/static/sd-webgpu/${f}`), `assetBase: /static/sd-webgpu/${f} was not fetched (fetched: ${got.join(" ")})`);
        const fromBuild = got.filter((p) => p.startsWith("/assets/"));
        assert(!fromBuild.length, `assetBase: the build's own worker files were fetched too: ${fromBuild.join(" ")}`);
        log(`  vite-build assetBase: fetched ${got.filter((p) => p.startsWith("/static/")).join(" ")}`);
        await page.close();
        return `mean ${r.cmp.mean.toExponential(3)}, max ${r.cmp.max.toExponential(3)}; generate ${r.seconds.toFixed(1)} s; assetBase same origin: worker + wasm from it, model loaded`;
      } finally {
        await site.kill();
      }
    });
  }

  if (built.webpack) {
    await check("webpack", async () => {
      // A strict Content-Security-Policy: what the module needs and nothing more (README).
      const cdnOrigin = state.cdn.url;
      const csp = [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        // the cross-origin assetBase: a blob: worker whose module graph (destination "worker")
        // comes from the CDN
        `worker-src 'self' blob: ${cdnOrigin}`,
        `connect-src 'self' ${cdnOrigin}`,
        "img-src 'self' blob: data:",
      ].join("; ");
      const site = new TestServer({ mounts: { "/": webpackOut, "/model/": MODEL }, headers: { "Content-Security-Policy": csp } });
      await site.start();
      try {
        const { page, seen } = await openApp(`${site.url}/`, "webpack");
        const violations = [];
        page.on("console", (m) => /Content.Security.Policy|Refused to/i.test(m.text()) && violations.push(m.text()));
        (await browser()).context.on("requestfailed", (r) => r.failure()?.errorText === "csp" && violations.push(`blocked: ${r.url()}`));
        log(`  webpack: served with Content-Security-Policy: ${csp}`);
        const r = await golden3(page, "webpack", "/model/");
        log(`  webpack: worker ${seen.workers.join(", ")}; wasm ${[...new Set(seen.wasm)].join(", ")}`);
        await evaluate(page, () => window.consumer.unload());
        state.cdn.clearLog();
        const base = `${cdnOrigin}/sd-webgpu@0.0/`;
        await assetBaseLoad(page, "webpack assetBase", base);
        const got = state.cdn.log.filter((e) => e.status === 200 && e.path.startsWith("/sd-webgpu@0.0/")).map((e) => e.path);
        for (const f of ASSET_FILES) assert(got.includes(`/sd-webgpu@0.0/${f}`), `assetBase: ${f} was not fetched from the other origin (fetched: ${got.join(" ")})`);
        log(`  webpack assetBase (other origin): worker ${seen.workers.at(-1)}; fetched from ${cdnOrigin}: ${got.join(" ")}`);
        assert(!violations.length, `CSP violations: ${violations.join("\n")}`);
        await page.close();
        return `mean ${r.cmp.mean.toExponential(3)}, max ${r.cmp.max.toExponential(3)}; generate ${r.seconds.toFixed(1)} s; assetBase another origin: worker + wasm from it, model loaded; strict CSP, no violation`;
      } finally {
        await site.kill();
      }
    });
  }
  return finish();
}

async function finish() {
  await closeQuietly(state.browser);
  await state.cdn?.kill();
  removeProfiles();
  const failed = results.filter((r) => !r.ok);
  log("=== consumers summary");
  for (const r of results) log(`  ${r.ok ? "ok    " : "FAILED"} ${r.name.padEnd(18)} ${r.seconds.toFixed(1).padStart(6)} s  ${r.note ?? ""}`);
  log(`consumers: ${results.length - failed.length} passed, ${failed.length} failed in ${secs(T0)} s${failed.length ? ` (${failed.map((r) => r.name).join(", ")})` : ""}`);
  process.exit(failed.length ? 1 : 0);
}

main().catch(async (e) => {
  log(`consumers: crashed: ${e.stack}`);
  await closeQuietly(state.browser);
  process.exit(1);
});
