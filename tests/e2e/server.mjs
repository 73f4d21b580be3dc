// Static HTTP server for the end-to-end tests (node:http only, no dependencies).
//
//   const srv = new TestServer({ mounts: { "/": "dist", "/model/": "tests/fixtures/tiny-sd15/model" } });
//   await srv.start();            // srv.url = "http://127.0.0.1:PORT"
//   srv.setThrottle(/\/model\/.*\.safetensors$/, 1 << 20);   // bytes per second
//   srv.log                       // [{ method, path, range, ifRange, status, bytes, size, done, aborted }]
//   await srv.kill();             // drop every open connection at once and stop listening
//   await srv.start();            // listen again on the same port
//
// Responses: correct Content-Type, Accept-Ranges: bytes, a strong ETag (size + mtime),
// Last-Modified, Cache-Control: no-store (the browser's HTTP cache must never hide a refetch:
// the module's own cache is what is under test). Range "bytes=N-", "bytes=N-M" and "bytes=-S"
// -> 206 with Content-Range; unsatisfiable -> 416 with "Content-Range: bytes */SIZE"; several
// ranges are ignored (200, full body: allowed by RFC 9110). If-Range (ETag or HTTP date) is
// honoured: a mismatch serves the whole file with 200. If-None-Match -> 304. HEAD. 404/405/400.
//
// Hosts like Hugging Face's (tests of cross-origin loading):
//   new TestServer({ cors: { origin: "*", expose: ["ETag", ...], allowHeaders: ["range"] } })
//     adds Access-Control-Allow-Origin / -Expose-Headers to every answer and answers preflights
//     (OPTIONS, logged with the headers they ask for in `preflight`);
//   new TestServer({ redirect: (path) => url | null })  answers 302 Location: url (HEAD and GET);
//   srv.fail(/re/, [{ status: 503 }, { status: 429, retryAfter: "2" }])  the next matching
//     requests get these answers, one each, in order (then the file as usual).
//
// `bytes` in the log counts body bytes as they are handed to the kernel (write callbacks), so a
// transfer cut by kill() counts only what was actually sent (plus at most one chunk in flight).

import http from "node:http";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".svg": "image/svg+xml",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".map": "application/json",
  ".ts": "text/plain; charset=utf-8",
  ".safetensors": "application/octet-stream",
};

export function contentType(file) {
  return TYPES[path.extname(file).toLowerCase()] || "application/octet-stream";
}

export function etagOf(stat) {
  return `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
}

// Parses a Range header against a file size.
// Returns null (ignore the header: serve 200), "unsatisfiable" (416) or { start, end } (inclusive).
export function parseRange(header, size) {
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return null;
  const specs = m[1].split(",").map((s) => s.trim()).filter(Boolean);
  if (specs.length !== 1) return null; // multipart ranges are not supported: whole body
  const r = /^(\d*)-(\d*)$/.exec(specs[0]);
  if (!r || (r[1] === "" && r[2] === "")) return null;
  if (r[1] === "") {
    // suffix: the last S bytes
    const suffix = Number(r[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(r[1]);
  let end = r[2] === "" ? size - 1 : Number(r[2]);
  if (r[2] !== "" && end < start) return null; // invalid: ignore
  if (start >= size) return "unsatisfiable";
  end = Math.min(end, size - 1);
  return { start, end };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class TestServer {
  /**
   * @param {object} o
   * @param {Record<string,string>} o.mounts  URL prefix ("/", "/model/") -> folder
   * @param {number} [o.port]                 0: any free port (kept for later start() calls)
   * @param {string} [o.host]
   * @param {Record<string,string|Buffer>} [o.virtual] exact URL path -> body (served like a file)
   * @param {Record<string,string>} [o.headers] extra response headers
   * @param {boolean} [o.quiet]
   */
  constructor({ mounts = {}, port = 0, host = "127.0.0.1", virtual = {}, headers = {}, quiet = true, cors = null, redirect = null } = {}) {
    this.mounts = new Map();
    for (const [p, d] of Object.entries(mounts)) this.mount(p, d);
    this.port = port;
    this.host = host;
    this.virtual = new Map(Object.entries(virtual).map(([k, v]) => [k, Buffer.from(v)]));
    this.virtualTime = new Date();
    this.headers = headers;
    this.quiet = quiet;
    this.log = [];
    this.throttles = []; // [{ re, bps }]
    this.cors = cors; // { origin, expose: [], allowHeaders: [] } or null (no CORS headers at all)
    this.redirect = redirect; // (path) => URL string or null
    this.faults = []; // [{ re, answers: [{ status, retryAfter }] }]
    this.sockets = new Set();
    this.server = null;
    this.nextId = 1;
  }

  get url() {
    return `http://${this.host}:${this.port}`;
  }

  mount(prefix, dir) {
    if (!prefix.startsWith("/")) prefix = "/" + prefix;
    if (!prefix.endsWith("/")) prefix += "/";
    this.mounts.set(prefix, path.resolve(dir));
  }

  unmount(prefix) {
    if (!prefix.endsWith("/")) prefix += "/";
    this.mounts.delete(prefix);
  }

  /** Limit responses whose path matches `re` to `bps` bytes per second (checked per chunk). */
  setThrottle(re, bps) {
    this.throttles = this.throttles.filter((t) => String(t.re) !== String(re));
    this.throttles.push({ re, bps });
  }

  /** The next requests whose path matches `re` get these answers, one each, in order. */
  fail(re, answers) {
    this.faults.push({ re, answers: answers.slice() });
  }

  clearFaults() {
    this.faults = [];
  }

  corsHeaders() {
    if (!this.cors) return {};
    const h = { "Access-Control-Allow-Origin": this.cors.origin || "*" };
    if (this.cors.expose?.length) h["Access-Control-Expose-Headers"] = this.cors.expose.join(", ");
    return h;
  }

  clearThrottle(re) {
    this.throttles = re === undefined ? [] : this.throttles.filter((t) => String(t.re) !== String(re));
  }

  throttleFor(p) {
    let bps = 0;
    for (const t of this.throttles) if (t.re.test(p)) bps = bps ? Math.min(bps, t.bps) : t.bps;
    return bps;
  }

  clearLog() {
    this.log = [];
  }

  /** Log entries whose path matches a string prefix or a RegExp. */
  requests(match) {
    if (match === undefined) return this.log.slice();
    return this.log.filter((e) => (match instanceof RegExp ? match.test(e.path) : e.path.startsWith(match)));
  }

  /** Body bytes sent for matching paths (all requests). */
  bytesSent(match) {
    return this.requests(match).reduce((s, e) => s + e.bytes, 0);
  }

  resolve(urlPath) {
    let best = null;
    for (const [prefix, dir] of this.mounts) {
      if (urlPath === prefix.slice(0, -1) || urlPath.startsWith(prefix)) {
        if (!best || prefix.length > best[0].length) best = [prefix, dir];
      }
    }
    if (!best) return null;
    const [prefix, dir] = best;
    const rel = urlPath.length >= prefix.length ? urlPath.slice(prefix.length) : "";
    const file = path.resolve(dir, "." + path.posix.normalize("/" + rel));
    if (file !== dir && !file.startsWith(dir + path.sep)) return null; // traversal
    return file;
  }

  async start() {
    if (this.server) return this;
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        if (!this.quiet) console.error("server error", e);
        if (!res.headersSent) {
          res.statusCode = 500;
          res.end(String(e));
        } else res.destroy();
      });
    });
    server.keepAliveTimeout = 30_000;
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, this.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.port = server.address().port;
    this.server = server;
    return this;
  }

  /** Destroys every open socket and closes the listener at once (the server "dies"). */
  async kill() {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise((r) => server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Same as kill(): the tests never need a graceful drain. */
  async stop() {
    await this.kill();
  }

  async handle(req, res) {
    const u = new URL(req.url, "http://x");
    let p;
    try {
      p = decodeURIComponent(u.pathname);
    } catch {
      p = u.pathname;
    }
    const entry = {
      id: this.nextId++,
      time: Date.now(),
      method: req.method,
      path: p,
      query: u.search,
      range: req.headers.range ?? null,
      ifRange: req.headers["if-range"] ?? null,
      status: 0,
      size: null,
      bytes: 0,
      done: false,
      aborted: false,
    };
    this.log.push(entry);
    res.on("close", () => {
      if (!res.writableFinished) entry.aborted = true;
    });
    res.on("finish", () => {
      entry.done = true;
    });

    const common = { "Cache-Control": "no-store", ...this.corsHeaders(), ...this.headers };
    const fail = (status, msg, extra = {}) => {
      entry.status = status;
      res.writeHead(status, { ...common, "Content-Type": "text/plain; charset=utf-8", ...extra });
      res.end(req.method === "HEAD" ? undefined : msg);
    };

    if (req.method === "OPTIONS" && this.cors) {
      // A CORS preflight: which request headers the browser asked to send.
      entry.preflight = (req.headers["access-control-request-headers"] || "").toLowerCase();
      entry.status = 204;
      res.writeHead(204, {
        ...common,
        "Access-Control-Allow-Methods": "GET, HEAD",
        "Access-Control-Allow-Headers": (this.cors.allowHeaders || []).join(", "),
        "Access-Control-Max-Age": "0",
      });
      return res.end();
    }
    if (req.method !== "GET" && req.method !== "HEAD") return fail(405, "method not allowed", { Allow: "GET, HEAD" });
    const fault = this.faults.find((f) => f.re.test(p) && f.answers.length);
    if (fault) {
      const a = fault.answers.shift();
      entry.injected = true;
      return fail(a.status, `injected ${a.status}`, a.retryAfter != null ? { "Retry-After": String(a.retryAfter) } : {});
    }
    if (this.redirect) {
      const to = this.redirect(p + u.search);
      if (to) {
        entry.status = 302;
        entry.location = to;
        res.writeHead(302, { ...common, Location: to, "Content-Length": "0" });
        return res.end();
      }
    }

    let size, mtime, etag, type, source;
    if (this.virtual.has(p)) {
      source = this.virtual.get(p);
      size = source.length;
      mtime = this.virtualTime;
      etag = `"v${size.toString(16)}-${mtime.getTime().toString(16)}"`;
      type = contentType(p);
    } else {
      let file = this.resolve(p);
      if (!file) return fail(404, "not found");
      let st;
      try {
        st = await fsp.stat(file);
        if (st.isDirectory()) {
          if (!p.endsWith("/")) {
            entry.status = 301;
            res.writeHead(301, { ...common, Location: p + "/" + u.search });
            return res.end();
          }
          file = path.join(file, "index.html");
          st = await fsp.stat(file);
        }
      } catch {
        return fail(404, "not found");
      }
      if (!st.isFile()) return fail(404, "not found");
      source = file;
      size = st.size;
      mtime = st.mtime;
      etag = etagOf(st);
      type = contentType(file);
    }
    entry.size = size;

    const headers = {
      ...common,
      "Content-Type": type,
      "Accept-Ranges": "bytes",
      ETag: etag,
      "Last-Modified": mtime.toUTCString(),
    };

    const inm = req.headers["if-none-match"];
    if (inm && (inm.trim() === "*" || inm.split(",").some((t) => t.trim().replace(/^W\//, "") === etag))) {
      entry.status = 304;
      res.writeHead(304, headers);
      return res.end();
    }

    let start = 0;
    let end = size - 1;
    let status = 200;
    if (req.headers.range) {
      let useRange = true;
      const ir = req.headers["if-range"];
      if (ir !== undefined) {
        const v = ir.trim();
        if (v.startsWith('"') || v.startsWith("W/")) useRange = v === etag; // strong comparison
        else {
          const d = Date.parse(v);
          useRange = !Number.isNaN(d) && Math.floor(d / 1000) === Math.floor(mtime.getTime() / 1000);
        }
      }
      if (useRange) {
        const r = parseRange(req.headers.range, size);
        if (r === "unsatisfiable") return fail(416, "range not satisfiable", { "Content-Range": `bytes */${size}`, "Accept-Ranges": "bytes", ETag: etag });
        if (r) {
          start = r.start;
          end = r.end;
          status = 206;
          headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
        }
      }
    }
    const length = Math.max(0, end - start + 1);
    headers["Content-Length"] = String(length);
    entry.status = status;
    entry.start = start;
    entry.length = length;
    res.writeHead(status, headers);
    if (req.method === "HEAD" || length === 0) return res.end();

    if (Buffer.isBuffer(source)) {
      const body = source.subarray(start, end + 1);
      await this.pump(res, entry, p, async (pos, n) => body.subarray(pos - start, pos - start + n), start, end);
      return;
    }
    const fh = await fsp.open(source, "r");
    try {
      await this.pump(
        res,
        entry,
        p,
        async (pos, n) => {
          const buf = Buffer.allocUnsafe(n);
          const { bytesRead } = await fh.read(buf, 0, n, pos);
          return buf.subarray(0, bytesRead);
        },
        start,
        end,
      );
    } finally {
      await fh.close();
    }
  }

  async pump(res, entry, p, read, start, end) {
    let pos = start;
    while (pos <= end) {
      if (res.destroyed) return;
      const bps = this.throttleFor(p);
      // Throttled: ~20 chunks a second; otherwise 256 KiB chunks with back-pressure.
      const chunk = bps ? Math.max(1024, Math.min(256 * 1024, Math.floor(bps / 20))) : 256 * 1024;
      const n = Math.min(chunk, end - pos + 1);
      const buf = await read(pos, n);
      if (buf.length === 0) break; // the file shrank under us
      if (res.destroyed) return;
      const t0 = Date.now();
      await new Promise((resolve) => {
        let settled = false;
        const done = () => {
          if (!settled) {
            settled = true;
            res.off("close", done);
            resolve();
          }
        };
        const len = buf.length;
        res.once("close", done);
        // Count the bytes once the kernel has taken them (callback without error).
        res.write(buf, (err) => {
          if (!err) entry.bytes += len;
          done();
        });
      });
      pos += buf.length;
      if (bps) {
        const wait = (buf.length / bps) * 1000 - (Date.now() - t0);
        if (wait > 0) await sleep(wait);
      }
    }
    if (!res.destroyed) res.end();
  }
}
