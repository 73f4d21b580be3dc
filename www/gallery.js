// The persistent gallery: generated PNGs (with their `parameters` chunk) kept in IndexedDB
// across reloads. IndexedDB rather than OPFS: it stores Blobs with their metadata in one
// transaction on every browser (OPFS writes from a page need createWritable, missing in older
// Safari), and StableDiffusion.clearCache() (which removes the model cache's OPFS folder)
// cannot touch it.
import { zipStore } from "./zip.js";

const DB_NAME = "sd-webgpu-gallery";
const STORE = "images";

/** The error for a full origin storage, or `e` itself. */
function storageError(e, what) {
  if (e && (e.name === "QuotaExceededError" || /quota/i.test(e.message || ""))) {
    const err = new Error(`The browser's storage for this page is full: ${what}. Delete images from the gallery (or clear the model cache) to make room.`);
    err.name = "QuotaExceededError";
    return err;
  }
  return e instanceof Error ? e : new Error(String(e));
}

const request = (r) => new Promise((resolve, reject) => {
  r.onsuccess = () => resolve(r.result);
  r.onerror = () => reject(r.error);
});

// A transaction's end: resolves on complete, rejects with its error (or abort).
const done = (tx) => new Promise((resolve, reject) => {
  tx.oncomplete = () => resolve();
  tx.onerror = () => reject(tx.error);
  tx.onabort = () => reject(tx.error || new DOMException("the transaction was aborted", "AbortError"));
});

export class Gallery {
  #db;
  constructor(db) { this.#db = db; }

  /** Opens (creates) the database; rejects when IndexedDB is unavailable. */
  static async open() {
    if (typeof indexedDB === "undefined") throw new Error("IndexedDB is not available in this browser (private mode?)");
    const r = indexedDB.open(DB_NAME, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
    const db = await request(r);
    db.onversionchange = () => db.close();
    return new Gallery(db);
  }

  /**
   * Keeps one image: {png: Blob, name, parameters, seed, batchPos, width, height, prompt,
   * caption}; returns the stored record (with its id and `created` time).
   */
  async add(entry) {
    const rec = { ...entry, created: Date.now() };
    try {
      const tx = this.#db.transaction(STORE, "readwrite");
      const id = request(tx.objectStore(STORE).add(rec));
      await done(tx);
      rec.id = await id;
      return rec;
    } catch (e) {
      throw storageError(e, "the image was not kept in the gallery (it stays on the page until you leave; download it to keep it)");
    }
  }

  /** Every kept image, oldest first. */
  async list() {
    const tx = this.#db.transaction(STORE, "readonly");
    const all = request(tx.objectStore(STORE).getAll());
    await done(tx);
    return await all;
  }

  async delete(id) {
    const tx = this.#db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(id);
    await done(tx);
  }

  async clear() {
    const tx = this.#db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).clear();
    await done(tx);
  }

  /** {count, bytes} of the kept PNGs, and the origin's {usage, quota} when the browser says. */
  async usage() {
    const all = await this.list();
    let estimate = null;
    try { estimate = await navigator.storage?.estimate?.(); } catch { /* not exposed */ }
    return { count: all.length, bytes: all.reduce((a, r) => a + (r.png?.size || 0), 0), usage: estimate?.usage ?? null, quota: estimate?.quota ?? null };
  }

  /** A store-only ZIP of every kept PNG, oldest first, named "0001_<its name>" (unique, in order). */
  async zip() {
    const all = await this.list();
    const files = all.map((r, i) => ({ name: `${String(i + 1).padStart(4, "0")}_${r.name || `sd-${r.id}.png`}`, data: r.png, date: new Date(r.created) }));
    return { blob: await zipStore(files), count: files.length };
  }
}
