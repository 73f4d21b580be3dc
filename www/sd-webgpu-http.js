// sd-webgpu worker, HTTP: the one retry policy (network errors, 429 / 5xx with Retry-After,
// the no-CORS check) and the resumable, cache-backed download of one file.
import { LoadError, mb, isQuota, quotaError, httpError, corsError, networkError, changedDuringDownload, wrongRange, shortBody, cacheMismatch } from "./sd-webgpu-errors.js";
import { keyOf, readMeta, writeMeta, removeEntry } from "./sd-webgpu-cache.js";

export const RETRIES = 10;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Answers worth another try: rate limits, timeouts and server errors of busy mirrors and CDNs.
const TRANSIENT = new Set([408, 425, 429, 500, 502, 503, 504]);

const MAX_RETRY_AFTER_MS = 60_000;

export const backoff = (attempt) => Math.min(1000 * 2 ** (attempt - 1), 15000);

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

// fetch() for small requests (HEAD, configs): network errors and transient answers (429, 5xx)
// are retried with backoff, honouring Retry-After; other answers are returned as they are.
export async function fetchRetry(url, init, progress, file) {
  for (let attempt = 1; ; attempt++) {
    let r;
    try {
      r = await fetch(url, { cache: "no-store", ...init });
    } catch (e) {
      if (await corsRefused(url)) throw corsError(url);
      if (attempt >= RETRIES) throw networkError(url, e, RETRIES, "what was downloaded is kept");
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

// An error of the sink (the wasm parser refusing the bytes): never retried, thrown as it is.
class SinkError {
  constructor(error) {
    this.error = error;
  }
}

// Stream `url` into `sink`, through the cache when there is one: a complete entry is read
// from disk; a partial one is continued with `Range: bytes=N-` when the server still has the
// file it began with (same ETag and length); a connection that drops is retried with a Range
// from the last byte received; 429 / 5xx answers are retried, honouring Retry-After.
// `quiet` (configs, tokenizer files): only "retry" events are reported, no byte counts.
export async function streamUrl(url, rel, dir, sink, progress, quiet = false) {
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
    try {
      sink(chunk);
    } catch (e) {
      throw new SinkError(e);
    }
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
        throw changedDuringDownload(url, why);
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
        if (++attempt >= RETRIES) throw networkError(url, e, RETRIES, `the ${mb(pos)} downloaded are kept`);
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
        if (cr && (!m || Number(m[1]) !== start)) throw wrongRange(url, cr);
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
        if (e instanceof LoadError || e instanceof SinkError) {
          reader.cancel().catch(() => {});
          throw e;
        }
        if (++attempt >= RETRIES) throw networkError(url, e, RETRIES, `the ${mb(pos)} downloaded are kept`);
        handle?.flush();
        report("retry", { attempt, error: String(e.message || e), waitSeconds: backoff(attempt) / 1000 });
        await sleep(backoff(attempt));
        continue;
      }
      if (total != null && pos !== total) {
        if (++attempt >= RETRIES) throw shortBody(url, pos, total);
        report("retry", { attempt, error: "the connection closed early", waitSeconds: backoff(attempt) / 1000 });
        await sleep(backoff(attempt));
        continue;
      }
      break;
    }
    if (handle) {
      handle.flush();
      if (handle.getSize() !== pos) throw cacheMismatch(url, handle.getSize(), pos);
      handle.close();
      handle = null;
      await writeMeta(dir, key, { url, total: pos, etag, complete: true });
    }
  } catch (err) {
    if (handle) {
      try {
        handle.flush();
        handle.close();
      } catch {}
      handle = null;
    }
    // The bytes that reached the cache are the server's: a later load continues from them.
    if (err instanceof SinkError) throw err.error;
    const e = err;
    if (isQuota(e)) {
      if (dir) await removeEntry(dir, key);
      if (!(e instanceof LoadError)) throw quotaError(rel, total != null ? total - pos : pos, null);
    }
    throw e;
  } finally {
    if (handle) handle.close();
  }
}
