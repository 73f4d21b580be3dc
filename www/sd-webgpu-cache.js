// sd-webgpu worker, the download cache in the Origin Private File System.

export const CACHE_DIR = "sd-webgpu-cache";

// ---------------------------------------------------------------- cache (OPFS)
// Per URL: <key>.json {url, total, etag, complete, missing} and <key>.bin (the bytes so far,
// always a prefix of the resource with that etag).
export async function cacheDir() {
  if (!navigator.storage?.getDirectory) return null;
  try {
    return await navigator.storage.getDirectory().then((root) => root.getDirectoryHandle(CACHE_DIR, { create: true }));
  } catch {
    return null;
  }
}

export async function keyOf(url) {
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(url));
  return [...new Uint8Array(h).slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function readMeta(dir, key) {
  try {
    const f = await (await dir.getFileHandle(`${key}.json`)).getFile();
    return JSON.parse(await f.text());
  } catch {
    return null;
  }
}

export async function writeMeta(dir, key, meta) {
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

export async function removeEntry(dir, key) {
  for (const ext of [".json", ".bin"]) await dir.removeEntry(key + ext).catch(() => {});
}
