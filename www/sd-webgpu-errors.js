// sd-webgpu worker, errors: every message a failed load shows, in one place. A LoadError's
// name is what the page sees as error.name ("Error", "QuotaExceededError", "CorsError",
// "RangeError").

// ---------------------------------------------------------------- errors
export class LoadError extends Error {
  constructor(message, name = "Error") {
    super(message);
    this.name = name;
  }
}

export const mb = (n) => `${(n / 2 ** 20).toFixed(1)} MB`;

// Chromium reports a full origin quota on OPFS writes as QuotaExceededError or "No space available".
export const isQuota = (e) => e && (e.name === "QuotaExceededError" || /quota|no space/i.test(String(e.message)));

export const quotaError = (file, needed, free) =>
  new LoadError(
    `Not enough browser storage to cache the model (${file}${needed >= 2 ** 20 ? ` needs ${mb(needed)}` : ""}${free != null ? `, ${mb(free)} free` : ""}). ` +
      `Free space (Clear cache, or site data in the browser settings), or load without caching ({ cache: false }; the page's "Continue without caching").`,
    "QuotaExceededError",
  );

export function httpError(url, r, extra = "") {
  const hint = r.status === 401 || r.status === 403
    ? " (this repository needs a login or accepted terms: download the files and open them with the file picker)"
    : r.status === 404 ? " (not found)" : "";
  return new LoadError(`${url}: HTTP ${r.status} ${r.statusText}${hint}${extra}`);
}

export function corsError(url) {
  const host = new URL(url).host;
  return new LoadError(
    `${host} does not allow cross-origin requests (CORS), so this page cannot download ${url} from it. ` +
      "Download the model's files and open them with the folder picker, or serve them from a host that sends Access-Control-Allow-Origin.",
    "CorsError",
  );
}

export const networkError = (url, e, attempts, kept) =>
  new LoadError(`${url}: the download failed after ${attempts} attempts (${e.message}). Check the connection, then load again: ${kept}.`);

// Downloads.
export const changedDuringDownload = (url, why) => new LoadError(`${url} changed on the server during the download (${why}); load the model again.`);
export const wrongRange = (url, cr) => new LoadError(`${url}: the server answered a range request with the wrong range (${cr})`);
export const shortBody = (url, got, total) => new LoadError(`${url}: the server sent ${got} of ${total} bytes`);
export const cacheMismatch = (url, held, wrote) => new LoadError(`${url}: the cache holds ${held} bytes after writing ${wrote}`);

// Model folders and files.
export const notDiffusersFolder = () =>
  new LoadError("The chosen folder is not a diffusers model: it has no unet/config.json. Pick the model's top folder (with unet/, vae/, text_encoder/), or a single .safetensors checkpoint.");
export const missingFromFolder = (rel) => new LoadError(`${rel} is missing from the chosen folder`);
export const unreadableConfig = (model, component, e) =>
  new LoadError(`${model}: cannot read ${component}/config.json (${e.message}). Is this a diffusers Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)?`);
export const noWeights = (model, component) => new LoadError(`${model}: no ${component} weights (.safetensors) found in ${component}/`);

// Start images (img2img).
export const imageSide = (w, h, maxSide) => new LoadError(`initImage is ${w}×${h}: it must be between 1 and ${maxSide} pixels on a side`, "RangeError");
export const imagePixels = (w, h, maxPixels) =>
  new LoadError(`initImage is ${w}×${h} (${((w * h) / 1e6).toFixed(1)} megapixels): at most ${maxPixels / 1e6} megapixels are taken; scale it down first`, "RangeError");
export const undecodableImage = () => new LoadError("initImage: the file is not an image the browser can decode (use PNG or JPEG)");

// LoRAs.
export const loraError = (file, e) => {
  const m = String(e?.message || e);
  return new LoadError(m.startsWith(`${file}:`) ? `LoRA ${m}` : `LoRA ${file}: ${m}`);
};
