// Full-size measurement: streams synthetic SD-1.5 fp16 weights (diffusers layout, ~2 GB, made
// by `sd-webgpu synth --out DIR`) into the browser module without caching and reports the
// worker's peak wasm memory. Fails when it reaches 300 MB (the weights must stream into GPU
// buffers, never be held whole in wasm memory).
//
//   node tests/e2e/fullsize.mjs DIR        (or: bash scripts/e2e.sh --full-size DIR)
//
// Prints one JSON line: {"fullsize": {...}} with bytes fetched, seconds, max wasmMemoryBytes
// seen in onProgress, and sd.stats().

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TestServer } from "./server.mjs";
import { DIST, PAGES, launch, openHarness, evaluate, closeQuietly, fmtBytes, removeProfiles } from "./lib.mjs";

const LIMIT = 300 * 1000 * 1000; // 300 MB
const TIMEOUT = 20 * 60_000;

async function main() {
  const dir = process.argv[2];
  if (!dir || !fs.existsSync(path.join(dir, "unet/config.json"))) {
    console.log(`usage: node tests/e2e/fullsize.mjs DIR (a diffusers folder with unet/config.json; got ${JSON.stringify(dir)})`);
    process.exit(2);
  }
  if (!process.env.XDG_RUNTIME_DIR) {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "xdg-"));
    fs.chmodSync(d, 0o700);
    process.env.XDG_RUNTIME_DIR = d;
    process.on("exit", () => fs.rmSync(d, { recursive: true, force: true }));
  }
  const server = new TestServer({ mounts: { "/": DIST, "/full/": dir, "/__e2e__/": PAGES }, port: Number(process.env.E2E_PORT || 0) });
  await server.start();
  console.log(`fullsize: serving ${path.resolve(dir)} at ${server.url}/full/`);
  let b = null;
  let ok = false;
  const deadline = setTimeout(() => {
    console.log(`FAIL fullsize: timed out after ${TIMEOUT / 60_000} min`);
    process.exit(1);
  }, TIMEOUT);
  try {
    b = await launch({ tag: "fullsize" });
    await openHarness(b.page, server.url);
    const t0 = Date.now();
    let lastPrint = 0;
    await b.page.evaluate((o) => window.e2e.startLoad(o), { model: "/full/", cache: false });
    // progress lines every 15 s while it loads
    for (;;) {
      const st = await b.page.evaluate(() => ({ s: window.e2e.loadState, p: window.e2e.lastProgress, m: window.e2e.maxWasmMemoryBytes }));
      if (st.s !== "loading") break;
      if (Date.now() - lastPrint > 15_000) {
        lastPrint = Date.now();
        const p = st.p || {};
        console.log(`fullsize: ${((Date.now() - t0) / 1000).toFixed(0)} s, ${p.phase} ${p.file ?? ""} ${fmtBytes(p.overallLoaded || 0)}/${fmtBytes(p.overallTotal || 0)}, sent ${fmtBytes(server.bytesSent("/full/"))}, max wasm ${fmtBytes(st.m)}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    const load = await evaluate(b.page, () => window.e2e.waitLoad(), null, TIMEOUT, "load");
    const seconds = (Date.now() - t0) / 1000;
    if (!load.ok) throw new Error(`StableDiffusion.load rejected: ${load.error.name}: ${load.error.message}`);
    const stats = await evaluate(b.page, () => window.e2e.sd.stats(), null, 60_000, "stats");
    const maxWasm = Math.max(load.progress.maxWasmMemoryBytes || 0, stats.wasmMemoryBytes || 0);
    const result = {
      model: path.resolve(dir),
      modelName: load.modelName,
      bytesFetched: server.bytesSent("/full/"),
      requests: server.requests("/full/").length,
      seconds: Number(seconds.toFixed(1)),
      maxWasmMemoryBytes: maxWasm,
      progressEvents: load.progress.progressCount,
      wasmSamples: load.progress.wasmSamples,
      phases: load.progress.phases,
      warnings: load.warnings,
      stats,
    };
    console.log(JSON.stringify({ fullsize: result }));
    if (!load.progress.wasmSamples) throw new Error("onProgress never reported wasmMemoryBytes");
    if (maxWasm >= LIMIT) throw new Error(`wasm memory reached ${fmtBytes(maxWasm)} (limit 300 MB)`);
    ok = true;
    console.log(`PASS fullsize: ${fmtBytes(result.bytesFetched)} in ${result.seconds} s, max wasm memory ${fmtBytes(maxWasm)}`);
    console.log("e2e: 1 passed, 0 failed");
  } catch (e) {
    console.log(`FAIL fullsize: ${e && e.message ? e.message : e}`);
  } finally {
    clearTimeout(deadline);
    if (b) {
      await b.page.evaluate(() => window.e2e.sd && window.e2e.sd.unload()).catch(() => {});
      await closeQuietly(b);
    }
    await server.kill();
    removeProfiles();
  }
  process.exit(ok ? 0 : 1);
}

main();
