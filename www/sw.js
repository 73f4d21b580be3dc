// The page's service worker: keeps the app shell (HTML, JS, CSS, wasm) in Cache Storage so
// that the page loads and generates with the network off once a model is in the browser cache
// (the model itself is in OPFS, kept by the library's worker).
//
// - Only the app shell is answered here (respondWith): the files of SHELL and any other
//   .html/.js/.css/.wasm file directly in the page's folder or its wasm/ folder. Everything
//   else (model and LoRA downloads with their Range requests, the e2e harness under
//   /__e2e__/, other origins) is not touched: where the browser supports static routing it
//   does not even reach this worker, else the fetch handler returns without answering and the
//   browser fetches it as if there were no service worker.
// - Network first: online, every shell file comes from the network (a new build is used at
//   once) and replaces its copy in the cache; when the network fails, the copy is served.
//   After each page load from the network the whole SHELL is fetched again in the background,
//   so the cache holds one build's files together (not a new app.js beside an old wasm).
// - CACHE is versioned: a new version of this file's caching scheme installs its own cache
//   and deletes the old ones.

const VERSION = "1";
const CACHE = `sd-webgpu-shell-v${VERSION}`;
// What the page and the library's worker load (index.html's data-trunk links, the wasm and
// its glue). tests/e2e checks this list against dist/.
const SHELL = [
  "./",
  "index.html",
  "style.css",
  "app.js",
  "mask-editor.js",
  "png-info.js",
  "gallery.js",
  "zip.js",
  "queue.js",
  "sd-webgpu.js",
  "sd-webgpu-worker.js",
  "sd-webgpu-errors.js",
  "sd-webgpu-cache.js",
  "sd-webgpu-http.js",
  "sd-webgpu-sources.js",
  "wasm/sd-webgpu.js",
  "wasm/sd-webgpu_bg.wasm",
];

const scope = () => new URL(self.registration.scope);

/** The cache key of a shell file (its URL without query / hash; the folder = index.html), or null. */
function shellKey(url) {
  const u = new URL(url);
  const s = scope();
  if (u.origin !== s.origin || !u.pathname.startsWith(s.pathname)) return null;
  let rel = u.pathname.slice(s.pathname.length);
  if (rel === "") rel = "index.html";
  const ok = SHELL.includes(rel) || /^(wasm\/)?[^/]+\.(html|js|css|wasm)$/.test(rel);
  return ok ? new URL(rel, s).href : null;
}

// Diagnostics for the tests (in memory: lost when the browser stops this worker).
const answered = [];
let routes = "not tried";

async function fetchFresh(key) {
  const r = await fetch(key, { cache: "no-cache" });
  if (!r.ok) throw new Error(`${key}: HTTP ${r.status}`);
  return r;
}

/** Fetches every SHELL file and stores it; resolves to the number stored (a failure is logged, not fatal). */
async function refreshShell() {
  const cache = await caches.open(CACHE);
  const s = scope();
  const results = await Promise.allSettled(SHELL.map(async (rel) => {
    const key = shellKey(new URL(rel, s).href);
    await cache.put(key, await fetchFresh(key));
  }));
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) console.warn(`sd-webgpu service worker: ${failed.length} shell file(s) not cached: ${failed.map((f) => f.reason && f.reason.message).join("; ")}`);
  return results.length - failed.length;
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    // Static routing (Chromium 123+): requests that are not the shell's go to the network
    // without waking this worker (model downloads in particular).
    if (event.addRoutes) {
      const p = scope().pathname;
      const shell = ["", "*.html", "*.js", "*.css", "*.wasm"].map((x) => ({ urlPattern: new URLPattern({ pathname: p + x }) }));
      try {
        await event.addRoutes([{ condition: { not: { or: shell } }, source: "network" }]);
        routes = "added";
      } catch (e) {
        routes = `not supported (${e.message})`;
      }
    } else routes = "not supported";
    await refreshShell();
    await self.skipWaiting();
  })());
});

// No clients.claim(): the page of the first visit (and its worker, in the middle of a model
// download) is left alone; the next load is served through this worker.
self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const k of await caches.keys()) if (k.startsWith("sd-webgpu-shell-") && k !== CACHE) await caches.delete(k);
  })());
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || req.headers.has("range")) return;
  const key = shellKey(req.url);
  if (!key) return; // not the shell's: the browser fetches it, untouched
  answered.push(key);
  if (answered.length > 200) answered.shift();
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const r = await fetch(req.mode === "navigate" ? key : req, req.mode === "navigate" ? { cache: "no-cache" } : undefined);
      if (r.ok && r.type === "basic") {
        const copy = r.clone();
        event.waitUntil(cache.put(key, copy).catch(() => { /* storage full: served all the same */ }));
        if (req.mode === "navigate") event.waitUntil(refreshShell().catch(() => {}));
      }
      return r;
    } catch (e) {
      const hit = await cache.match(key);
      if (hit) return hit;
      throw e;
    }
  })());
});

self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "sd-webgpu-sw-status") {
    event.waitUntil((async () => {
      const cache = await caches.open(CACHE);
      const keys = (await cache.keys()).map((r) => r.url);
      event.source.postMessage({ type: "sd-webgpu-sw-status", cache: CACHE, cached: keys, answered: answered.slice(), routes });
    })());
  }
});
