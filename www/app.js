// The sd-webgpu page: model loading (URL, file, folder, drag-and-drop), generation with live
// preview and a queue, the persistent gallery (gallery.js), PNG info (png-info.js), the
// offline shell (sw.js). Programs only against the API in sd-webgpu.d.ts.
import { StableDiffusion } from "./sd-webgpu.js";
import { MaskEditor, decodeImage } from "./mask-editor.js";
import { readPngText, parseParameters, formFromParameters } from "./png-info.js";
import { Gallery } from "./gallery.js";
import { JobQueue } from "./queue.js";

const $ = (s) => document.querySelector(s);
const STORE_KEY = "sd-webgpu.form";
const FIELDS = ["model", "tiny-vae", "variant", "dtype", "vae-dtype", "prompt", "negative", "steps", "guidance", "seed",
  "random-seed", "width", "height", "sampler", "batch", "batch-pos", "strength", "resize-mode", "prompt-weighting", "lora-url",
  "mask-size", "mask-soft", "paste-back", "extend-px", "preset", "prompt2", "negative2", "original-width", "original-height",
  "crop-top", "crop-left", "target-width", "target-height"];
// Model presets: the model and its tiny VAE (TAESD, or TAESDXL for SDXL: the same
// architecture in SDXL's latent space). Steps, guidance, sampler and size then come from the
// model itself (sd.defaults): SDXL base 1024², SDXL-Turbo 1 step, guidance 0, 512².
const PRESETS = {
  "sd15": { model: "stable-diffusion-v1-5/stable-diffusion-v1-5", tinyVae: "madebyollin/taesd" },
  "sd-turbo": { model: "stabilityai/sd-turbo", tinyVae: "madebyollin/taesd" },
  "sdxl": { model: "stabilityai/stable-diffusion-xl-base-1.0", tinyVae: "madebyollin/taesdxl" },
  "sdxl-turbo": { model: "stabilityai/sdxl-turbo", tinyVae: "madebyollin/taesdxl" },
};
const SAMPLER_NAMES = { ddpm: "DDPM", ddim: "DDIM", pndm: "PNDM", euler: "Euler", euler_a: "Euler a", dpmpp_2m_karras: "DPM++ 2M Karras", lcm: "LCM" };

let sd = null;            // the loaded StableDiffusion, or null
let gpuOk = false;        // adapterInfo succeeded
let busy = false;         // a load or a generation is running
let abort = null;         // AbortController of the running generation
let lastSource = null;    // what the last load was asked for (for "Continue without caching")
let deviceLost = null;    // message of the last device loss, until the next successful generation
const loraScales = new Map(); // LoRA name -> the scale of the next generation (the list's order)
let editor = null;        // the MaskEditor of the start image (inpainting / outpainting)
let lastGenerateOptions = null; // what the last Generate passed to sd.generate (for the tests)
let gallery = null;       // the Gallery (IndexedDB), or null where the browser has none
let queue = null;         // the JobQueue of Generate
let lastPngInfo = null;   // what the last PNG info read (for the tests)

// ---------- small helpers ----------

function setState(state) {
  document.body.dataset.state = state;
  const loaded = !!sd && !busy;
  // While a generation runs, Generate queues the next one.
  $("#generate").disabled = !(loaded || (sd && state === "generating"));
  $("#cancel").disabled = state !== "generating";
  for (const id of ["#load", "#model-file", "#model-folder"]) $(id).disabled = !gpuOk || busy;
  for (const id of ["#lora-load", "#lora-file"]) $(id).disabled = !loaded;
  for (const el of document.querySelectorAll("#lora-list .lora-remove")) el.disabled = !loaded;
  $("#clear-cache").disabled = busy;
  $("#drop").classList.toggle("disabled", !gpuOk || busy);
}

function message(text, isError = false) {
  const el = $("#message");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// Non-fatal notes of the last generation (dropped prompt tokens, a VAE re-run in f32, …).
function showWarnings(list) {
  const el = $("#warnings");
  el.replaceChildren(...list.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  el.hidden = list.length === 0;
}

const errorText = (e) => (e && e.message) || String(e);

function formatBytes(n) {
  if (n == null || !isFinite(n)) return "?";
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n} B`;
}

function formatTime(s) {
  if (s == null || !isFinite(s)) return "?";
  s = Math.round(s);
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

const roundTo64 = (n) => Math.max(64, Math.round(n / 64) * 64);

const baseName = (path) => (path ? String(path).split(/[/\\]/).filter(Boolean).pop() || path : "");

// ---------- form persistence and query parameters ----------

function saveForm() {
  const values = {};
  for (const id of FIELDS) {
    const el = document.getElementById(id);
    values[id] = el.type === "checkbox" ? el.checked : el.value;
  }
  try { localStorage.setItem(STORE_KEY, JSON.stringify(values)); } catch { /* private mode */ }
}

function restoreForm() {
  let values = {};
  try { values = JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {}; } catch { values = {}; }
  for (const id of FIELDS) {
    const el = document.getElementById(id);
    if (!(id in values)) continue;
    if (el.type === "checkbox") el.checked = !!values[id];
    else if (el.tagName !== "SELECT" || [...el.options].some((o) => o.value === values[id])) el.value = values[id];
  }
  const q = new URLSearchParams(location.search);
  if (q.has("model")) {
    $("#model").value = q.get("model");
    $("#preset").value = "";
  }
  if (q.has("tinyVae")) $("#tiny-vae").value = q.get("tinyVae");
  if (["fp16", "none"].includes(q.get("variant"))) $("#variant").value = q.get("variant");
  if (["f16", "f32"].includes(q.get("dtype"))) $("#dtype").value = q.get("dtype");
  if (["f16", "f32"].includes(q.get("vaeDtype"))) $("#vae-dtype").value = q.get("vaeDtype") === $("#dtype").value ? "" : q.get("vaeDtype");
  return q.get("autoload") === "1";
}

// ---------- adapter and cache ----------

async function showAdapter() {
  if (!("gpu" in navigator)) {
    throw new Error("WebGPU is not available in this browser. Use a recent Chrome or Edge (113+), " +
      "or Firefox / Safari with WebGPU enabled, on a device with a supported GPU.");
  }
  const info = await StableDiffusion.adapterInfo();
  const mib = (n) => (n == null ? "–" : `${(n / 2 ** 20).toFixed(0)} MiB`);
  const rows = [
    ["Name", info.name || "(not exposed by this browser)"],
    ["Backend", info.backend || "–"],
    ["shader-f16", info.shader_f16 ? "yes" : "no (f16 stored packed; slower)"],
    ["Subgroups", info.subgroups ? "yes" : "no"],
    ["Max buffer size", mib(info.max_buffer_size)],
    ["Max storage binding", mib(info.max_storage_buffer_binding_size)],
    ["Workgroup storage", info.max_compute_workgroup_storage_size == null ? "–" : `${info.max_compute_workgroup_storage_size} B`],
    ["Invocations / workgroup", info.max_compute_invocations_per_workgroup ?? "–"],
    ["Storage buffers / stage", info.max_storage_buffers_per_shader_stage ?? "–"],
  ];
  const tbody = $("#adapter tbody");
  tbody.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.scope = "row";
    th.textContent = k;
    td.textContent = String(v);
    tr.append(th, td);
    return tr;
  }));
}

async function showCache() {
  try {
    const entries = await StableDiffusion.cacheEntries();
    const bytes = entries.reduce((a, e) => a + (e.bytes || 0), 0);
    const partial = entries.filter((e) => !e.complete).length;
    $("#cache-info").textContent = entries.length === 0 ? "Cache: empty"
      : `Cache: ${entries.length} file${entries.length === 1 ? "" : "s"}, ${formatBytes(bytes)}` +
        (partial ? ` (${partial} partial)` : "");
  } catch (e) {
    $("#cache-info").textContent = `Cache: unavailable (${errorText(e)})`;
  }
}

// ---------- loading ----------

function onProgress(p) {
  const bar = $("#download-bar");
  const done = p.overallTotal ? p.overallLoaded : p.loaded;
  const total = p.overallTotal || p.total;
  if (p.phase === "ready") { bar.max = 1; bar.value = 1; }
  else if (total && (p.phase === "download" || p.phase === "cache" || p.phase === "retry")) {
    bar.max = total;
    bar.value = Math.min(done, total);
  } else bar.removeAttribute("value"); // indeterminate
  const file = baseName(p.file);
  const sizes = `${formatBytes(done)}${total ? ` / ${formatBytes(total)}` : ""}`;
  let text;
  switch (p.phase) {
    case "resolve": text = "Finding the model files…"; break;
    case "download":
      text = `Downloading ${file}: ${sizes}, ${formatBytes(p.bytesPerSecond)}/s` +
        (p.etaSeconds != null ? `, ${formatTime(p.etaSeconds)} left` : "");
      break;
    case "cache": text = `Reading ${file} from the browser cache: ${sizes}`; break;
    case "retry":
      text = `Connection dropped${p.error ? ` (${p.error})` : ""}; retrying ${file} from ${formatBytes(p.loaded)}` +
        (p.attempt ? ` (attempt ${p.attempt})` : "") + "…";
      break;
    case "build": text = "Weights are on the GPU; preparing the pipelines…"; break;
    case "ready": text = `Model ready (${sizes}).`; break;
    default: text = p.phase;
  }
  $("#download-text").textContent = text;
}

function onDeviceLost(msg) {
  deviceLost = `The GPU device was lost (${msg}). The model will be reloaded from the browser cache on the next Generate.`;
  message(deviceLost, true);
}

async function load(source, { cache = true } = {}) {
  if (busy) return;
  lastSource = source;
  busy = true;
  $("#no-cache").hidden = true;
  $("#confirm-load").hidden = true;
  $("#model-info").textContent = "";
  setState("loading");
  message("Loading the model…");
  onProgress({ phase: "resolve", file: null, loaded: 0, total: null, overallLoaded: 0, overallTotal: null, bytesPerSecond: 0, etaSeconds: null });
  if (sd) {
    const old = sd;
    sd = null;
    try { await old.unload(); } catch { /* already gone */ }
  }
  const variant = $("#variant").value === "none" ? null : "fp16";
  try {
    const vaeDtype = $("#vae-dtype").value || undefined; // "": the same as the weights
    const tinyVae = $("#tiny-vae").value.trim() || undefined;
    sd = await StableDiffusion.load({ model: source, tinyVae, variant, dtype: $("#dtype").value, vaeDtype, cache, onProgress, onDeviceLost });
    deviceLost = null;
    loraScales.clear(); // LoRAs belong to the model they were loaded for
    renderLoras();
    applyModelDefaults();
    busy = false;
    setState("ready");
    const warnings = sd.warnings && sd.warnings.length ? ` Warnings: ${sd.warnings.join("; ")}` : "";
    message(`Model loaded: ${sd.modelName}. Ready to generate.${warnings}`);
    showStats();
  } catch (e) {
    sd = null;
    busy = false;
    loraScales.clear();
    renderLoras();
    setState("error");
    message(errorText(e), true);
    $("#download-bar").value = 0;
    $("#download-text").textContent = "Load failed.";
    if (e && e.name === "QuotaExceededError") $("#no-cache").hidden = false;
  }
  showCache();
}

// The model says what it is (SD-Turbo: 1 step, guidance 0; LCM: 4 steps; SD-2-768: 768²):
// its settings fill the form; what it ignores is greyed.
function applyModelDefaults() {
  const d = sd && sd.defaults;
  // SDXL: the second prompts and the micro-conditioning.
  $("#xl-options").hidden = !(d && isXl(d));
  if (d) {
    $("#steps").value = String(d.steps);
    $("#guidance").value = String(d.guidanceScale);
    if ([...$("#sampler").options].some((o) => o.value === d.sampler)) $("#sampler").value = d.sampler;
    $("#width").value = String(d.width);
    $("#height").value = String(d.height);
  }
  $("#fast-decode").disabled = !(sd && sd.tinyVae);
  if ($("#fast-decode").disabled) $("#fast-decode").checked = false;
  updateNegative();
}

const isXl = (d) => d.family === "sdxl" || d.family === "sdxl-turbo";

// The negative prompt does nothing without classifier-free guidance (guidance ≤ 1, or an
// LCM-distilled UNet, whose guidance is an embedding).
function updateNegative() {
  const d = sd && sd.defaults;
  const lcmUnet = d && d.family === "lcm" && d.guidanceScale > 1 && !d.negativePromptUsed;
  const used = Number($("#guidance").value) > 1 && !lcmUnet;
  for (const id of ["#negative", "#negative2"]) {
    $(id).disabled = !used;
    $(id).title = used ? "" : "Ignored by this model at this guidance (no classifier-free guidance)";
  }
}

async function showStats() {
  if (!sd) return;
  try {
    const s = await sd.stats();
    $("#model-info").textContent = `${sd.modelName}: weights ${formatBytes(s.weightsBytes)} on the GPU, ` +
      `GPU memory peak ${formatBytes(s.gpuPeakBytes)}, worker memory ${formatBytes(s.wasmMemoryBytes)}.`;
  } catch { /* stats are informative only */ }
}

// Recursively turns dropped entries (files and folders) into File objects with their relative path.
async function entryFiles(entry) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    Object.defineProperty(file, "_relativePath", { value: entry.fullPath.replace(/^\/+/, "") });
    return [file];
  }
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const children = [];
  for (;;) { // readEntries returns the entries in batches, then an empty array
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  return (await Promise.all(children.map(entryFiles))).flat();
}

async function onDrop(ev) {
  ev.preventDefault();
  $("#drop").classList.remove("over");
  const dropped = [...(ev.dataTransfer.files || [])];
  if (dropped.length === 1 && isPng(dropped[0])) return; // PNG info (the page's drop handler)
  if (!gpuOk || busy) return;
  const items = [...(ev.dataTransfer.items || [])].filter((i) => i.kind === "file");
  const entries = items.map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  let files;
  try {
    files = entries.length ? (await Promise.all(entries.map(entryFiles))).flat() : [...ev.dataTransfer.files];
  } catch (e) {
    message(`Could not read the dropped files: ${errorText(e)}`, true);
    return;
  }
  if (files.length === 0) return;
  const single = entries.length <= 1 && files.length === 1 && !(entries[0] && entries[0].isDirectory);
  load(single ? files[0] : files);
}

// ---------- LoRAs ----------

async function loadLora(source) {
  if (!sd || busy) return;
  busy = true;
  setState("lora");
  const what = typeof source === "string" ? source : source.name;
  message(`Loading the LoRA ${baseName(what)}…`);
  $("#lora-status").textContent = "";
  const onLoraProgress = (p) => {
    const sizes = `${formatBytes(p.loaded)}${p.total ? ` / ${formatBytes(p.total)}` : ""}`;
    $("#lora-status").textContent = p.phase === "download" ? `Downloading ${baseName(p.file)}: ${sizes}`
      : p.phase === "cache" ? `Reading ${baseName(p.file)} from the browser cache: ${sizes}`
      : p.phase === "retry" ? `Connection dropped; retrying ${baseName(p.file)}…` : "";
  };
  try {
    const info = await sd.loadLora(source, { onProgress: onLoraProgress });
    if (!loraScales.has(info.name)) loraScales.set(info.name, 1);
    const notes = info.warnings.length ? ` Warnings: ${info.warnings.join("; ")}` : "";
    message(`LoRA ${info.name} loaded (${info.format}, rank ${[].concat(info.rank).join("–")}, ${info.modules.unet} UNet + ${info.modules.textEncoder} text-encoder modules).${notes}`);
    $("#lora-status").textContent = "";
    busy = false;
    setState("ready");
  } catch (e) {
    busy = false;
    message(errorText(e), true);
    $("#lora-status").textContent = "LoRA load failed.";
    setState(sd ? "ready" : "error");
  }
  renderLoras();
  showStats();
}

async function removeLora(name) {
  if (!sd || busy) return;
  busy = true;
  setState("lora");
  try {
    await sd.removeLora(name);
    loraScales.delete(name);
    message(`LoRA ${name} removed.`);
  } catch (e) {
    message(errorText(e), true);
  }
  busy = false;
  setState("ready");
  renderLoras();
  showStats();
}

// The loaded LoRAs, each with its scale (slider + number, kept in step) and a remove button.
function renderLoras() {
  const list = $("#lora-list");
  const infos = sd ? sd.loras : [];
  for (const n of [...loraScales.keys()]) if (!infos.some((l) => l.name === n)) loraScales.delete(n);
  for (const l of infos) if (!loraScales.has(l.name)) loraScales.set(l.name, 1);
  list.replaceChildren(...infos.map((info) => {
    const li = document.createElement("li");
    li.dataset.name = info.name;
    const head = document.createElement("div");
    head.className = "lora-head";
    const name = document.createElement("span");
    name.className = "lora-name";
    name.textContent = info.name;
    const meta = document.createElement("span");
    meta.className = "small";
    meta.textContent = `${info.format} · rank ${[].concat(info.rank).join("–")} · ${info.modules.unet} UNet + ${info.modules.textEncoder} text-encoder modules · ${formatBytes(info.bytes)} · hash ${info.hash}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary lora-remove";
    remove.textContent = "Remove";
    remove.disabled = busy || !sd;
    remove.onclick = () => removeLora(info.name);
    head.append(name, remove, meta);
    const row = document.createElement("div");
    row.className = "row";
    const id = `lora-scale-${[...loraScales.keys()].indexOf(info.name)}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = "Scale";
    const slider = document.createElement("input");
    slider.type = "range";
    slider.className = "lora-scale";
    slider.id = id;
    slider.min = "-2";
    slider.max = "2";
    slider.step = "0.05";
    const num = document.createElement("input");
    num.type = "number";
    num.className = "lora-scale-num";
    num.step = "0.05";
    num.setAttribute("aria-label", `Scale of ${info.name}`);
    const scale = loraScales.get(info.name) ?? 1;
    slider.value = num.value = String(scale);
    slider.oninput = () => { num.value = slider.value; loraScales.set(info.name, Number(slider.value)); };
    num.oninput = () => {
      const v = Number(num.value);
      if (num.value !== "" && Number.isFinite(v)) { loraScales.set(info.name, v); slider.value = String(v); }
    };
    row.append(label, slider, num);
    li.append(head, row);
    for (const w of info.warnings) {
      const p = document.createElement("p");
      p.className = "small lora-warn";
      p.textContent = w;
      li.append(p);
    }
    return li;
  }));
}

// ---------- generation ----------

function readParams() {
  const num = (id) => Number($(`#${id}`).value);
  const p = {
    prompt: $("#prompt").value,
    negativePrompt: $("#negative").value,
    steps: num("steps"), guidanceScale: num("guidance"),
    width: num("width"), height: num("height"),
    sampler: $("#sampler").value, batch: num("batch"),
    decoder: $("#fast-decode").checked ? "tiny" : "vae",
    promptWeighting: $("#prompt-weighting").checked,
    loras: [...loraScales].map(([name, scale]) => ({ name, scale })),
  };
  if (sd && sd.defaults && isXl(sd.defaults)) {
    // SDXL: an empty negative prompt is "none" (stabilityai's models then use zero
    // embeddings, as diffusers does when no negative prompt is passed).
    if (p.negativePrompt === "") delete p.negativePrompt;
    if ($("#prompt2").value !== "") p.prompt2 = $("#prompt2").value;
    if ($("#negative2").value !== "") p.negativePrompt2 = $("#negative2").value;
    const whole = (id, what, min) => {
      const v = Number($(`#${id}`).value);
      if (!Number.isInteger(v) || v < min) throw new Error(`${what} must be a whole number ≥ ${min} (or empty).`);
      return v;
    };
    const size = (a, b, what) => {
      if ($(`#${a}`).value === "" && $(`#${b}`).value === "") return undefined;
      return { width: $(`#${a}`).value === "" ? p.width : whole(a, `${what} width`, 1), height: $(`#${b}`).value === "" ? p.height : whole(b, `${what} height`, 1) };
    };
    const original = size("original-width", "original-height", "Original");
    if (original) p.originalSize = original;
    const target = size("target-width", "target-height", "Target");
    if (target) p.targetSize = target;
    const top = $("#crop-top").value === "" ? 0 : whole("crop-top", "Crop top", 0);
    const left = $("#crop-left").value === "" ? 0 : whole("crop-left", "Crop left", 0);
    if (top || left) p.cropsCoordsTopLeft = { top, left };
  }
  for (const l of p.loras) if (!Number.isFinite(l.scale)) throw new Error(`The scale of LoRA ${l.name} must be a number.`);
  if (!Number.isInteger(p.steps) || p.steps < 1 || p.steps > 1000) throw new Error("Steps must be a whole number from 1 to 1000.");
  if (!isFinite(p.guidanceScale) || $("#guidance").value === "") throw new Error("Guidance must be a number (7.5 is typical; 1 or less turns it off).");
  for (const k of ["width", "height"]) {
    // SD 1.5 needs multiples of 64; the module reports the exact rule of the loaded model.
    if (!Number.isInteger(p[k]) || p[k] < 8 || p[k] % 8 !== 0) throw new Error(`${k[0].toUpperCase() + k.slice(1)} must be a multiple of 64 for SD 1.5 (e.g. 512).`);
  }
  if (!Number.isInteger(p.batch) || p.batch < 1 || p.batch > 16) throw new Error("Batch must be a whole number from 1 to 16.");
  if ($("#batch-pos").value !== "") {
    const pos = num("batch-pos");
    if (!Number.isInteger(pos) || pos < 1 || pos > p.batch) throw new Error(`“Only image #” must be empty (the whole batch) or a whole number from 1 to the batch size (${p.batch}).`);
    p.batchPos = pos;
  }
  if (!$("#random-seed").checked) {
    const seed = num("seed");
    if ($("#seed").value === "" || !Number.isSafeInteger(seed) || seed < 0) throw new Error("The seed must be a whole number ≥ 0 (or tick “Random seed”).");
    p.seed = seed;
  }
  const init = $("#init-image").files[0];
  if (init) {
    // The file as chosen; once the editor has extended it (outpainting), the editor's image.
    p.initImage = editor.loaded && editor.modified ? editor.imageData() : init;
    p.strength = num("strength");
    if (!(p.strength > 0 && p.strength <= 1)) throw new Error("Strength must be in (0, 1].");
    p.resizeMode = $("#resize-mode").value;
    // Inpainting when the mask has any non-black pixel: the mask canvas at the image's size
    // (white = repaint, black = keep); an all-black mask is plain img2img.
    const mask = editor.loaded ? editor.maskData() : null;
    if (mask) {
      p.mask = mask;
      p.pasteBack = $("#paste-back").checked;
    }
  }
  return p;
}

function drawPreview(img) {
  const canvas = $("#preview");
  if (canvas.width !== img.width || canvas.height !== img.height) {
    canvas.width = img.width;
    canvas.height = img.height;
  }
  canvas.getContext("2d").putImageData(img, 0, 0);
}

// Generate: runs now, or, while a generation runs, queues a job with the settings as they are
// now (readParams' snapshot: the form, the LoRA scales, the start image and its mask).
function requestGenerate() {
  if (!sd) { message(gpuOk ? "Load a model first." : "WebGPU is needed to generate.", true); return; }
  if (busy && !queue.running) { message("Wait until the model or LoRA has finished loading, then generate.", true); return; }
  let params;
  try { params = readParams(); } catch (e) { message(errorText(e), true); return; }
  saveForm();
  const job = queue.job(params);
  if (queue.running) {
    const n = queue.push(job);
    $("#queue-status").textContent = `Queued as job #${job.id}: ${n} waiting after the running one.`;
    return;
  }
  runQueue(job);
}

// Runs `first`, then each waiting job in order, until none is left.
async function runQueue(first) {
  for (let job = queue.start(first); job; job = queue.start()) {
    $("#queue-status").textContent = queue.waiting.length ? `Job #${job.id} running; ${queue.waiting.length} waiting.` : "";
    await generate(job);
    if (!sd) { queue.clear(); break; }
  }
  queue.finish();
  $("#queue-status").textContent = "";
}

const describeJob = (p) => `${p.prompt.length > 40 ? `${p.prompt.slice(0, 40)}…` : p.prompt || "(empty prompt)"} · ` +
  `${p.seed == null ? "random seed" : `seed ${p.seed}`} · ${p.steps} steps · ${p.width}×${p.height}` +
  (p.batch > 1 ? ` · batch ${p.batch}${p.batchPos ? ` (image ${p.batchPos})` : ""}` : "");

async function generate(job) {
  const params = job.params;
  busy = true;
  abort = new AbortController();
  setState("generating");
  message(deviceLost ? "Reloading the model after the GPU device loss, then generating…" : `Generating${queue.waiting.length ? ` job #${job.id}` : ""}…`);
  showWarnings([]);
  const bar = $("#step-bar");
  bar.max = params.steps;
  bar.value = 0;
  $("#step-text").textContent = "Encoding the prompt…";
  const started = performance.now();
  const onStep = ({ step, steps, preview }) => {
    bar.max = steps;
    bar.value = step;
    const secs = (performance.now() - started) / 1000;
    $("#step-text").textContent = `Step ${step} / ${steps} · ${secs.toFixed(1)} s`;
    if (preview) drawPreview(preview);
  };
  try {
    const options = { ...params, onStep, signal: abort.signal };
    lastGenerateOptions = options;
    const { images, warnings = [] } = await sd.generate(options);
    const secs = (performance.now() - started) / 1000;
    deviceLost = null;
    const kept = await Promise.all(images.map((img) => addResult(img, params, job.id)));
    if (images.length) drawPreview(images[images.length - 1].imageData);
    showSeeds(images.map((i) => i.seed));
    $("#step-text").textContent = `Done: ${images.length} image${images.length === 1 ? "" : "s"} in ${secs.toFixed(1)} s.`;
    const storeError = kept.find((k) => k instanceof Error);
    message(storeError ? storeError.message : `Done in ${secs.toFixed(1)} s. Seed${images.length === 1 ? "" : "s"}: ${images.map((i) => i.seed).join(", ")}.` +
      (warnings.length ? ` ${warnings.length} warning${warnings.length === 1 ? "" : "s"}: see below.` : ""), !!storeError);
    showWarnings(warnings);
    busy = false;
    setState("ready");
    showStats();
  } catch (e) {
    busy = false;
    if (e && e.name === "AbortError") {
      $("#step-text").textContent = "Cancelled.";
      message("Cancelled");
      setState("ready");
    } else {
      message(deviceLost ? `${deviceLost} ${errorText(e)}` : errorText(e), true);
      setState("error");
    }
  } finally {
    abort = null;
  }
}

function showSeeds(seeds) {
  $("#last-seed").textContent = seeds.join(", ");
  const reuse = $("#reuse-last-seed");
  reuse.hidden = seeds.length === 0;
  reuse.onclick = () => reuseSeed(seeds[0]);
}

function reuseSeed(seed) {
  $("#seed").value = String(seed);
  $("#random-seed").checked = false;
  saveForm();
  $("#seed").focus();
}

// ---------- gallery (kept in IndexedDB by gallery.js) ----------

// A generated image into the gallery: shown at once, kept in the browser's storage. Resolves
// to the stored record, or to the Error that kept it from being stored (quota).
async function addResult(img, params, jobId) {
  const caption = `seed ${img.seed} · ${params.steps} steps · CFG ${params.guidanceScale} · ` +
    `${SAMPLER_NAMES[params.sampler] || params.sampler} · ${img.imageData.width}×${img.imageData.height}` +
    (params.batch > 1 ? ` · batch pos ${img.batchPos}/${params.batch}` : "") +
    (params.mask ? ` · inpaint ${params.strength}${params.pasteBack ? " · pasted back" : ""}` : params.initImage ? ` · img2img ${params.strength}` : "");
  const rec = {
    png: img.blob, name: params.batch > 1 ? `sd-${img.seed}-${img.batchPos}.png` : `sd-${img.seed}.png`,
    parameters: img.parameters || "", seed: img.seed, batchPos: img.batchPos ?? 1, width: img.imageData.width,
    height: img.imageData.height, prompt: params.prompt, caption, job: jobId,
  };
  const fig = renderFigure(rec);
  if (!gallery) return rec;
  try {
    const stored = await gallery.add(rec);
    fig.dataset.id = String(stored.id);
    showGalleryUsage();
    return stored;
  } catch (e) {
    fig.classList.add("not-kept");
    fig.querySelector(".kept").textContent = "not kept (storage full)";
    return e;
  }
}

// One gallery figure (newest first): the image, its caption and actions.
function renderFigure(rec) {
  const url = URL.createObjectURL(rec.png);
  const fig = document.createElement("figure");
  fig.className = "result";
  fig.dataset.seed = String(rec.seed);
  fig.dataset.batchPos = String(rec.batchPos);
  if (rec.id != null) fig.dataset.id = String(rec.id);
  if (rec.job != null) fig.dataset.job = String(rec.job);
  const el = document.createElement("img");
  el.src = url;
  el.alt = rec.prompt || "generated image";
  el.width = rec.width;
  el.height = rec.height;
  el.title = rec.parameters || "";
  const cap = document.createElement("figcaption");
  const prompt = document.createElement("span");
  prompt.className = "prompt";
  prompt.textContent = rec.prompt;
  const meta = document.createElement("span");
  meta.textContent = rec.caption;
  const kept = document.createElement("span");
  kept.className = "kept";
  const actions = document.createElement("span");
  actions.className = "actions";
  const a = document.createElement("a");
  a.className = "download";
  a.href = url;
  a.download = rec.name;
  a.textContent = "Download PNG";
  const button = (cls, text, label, onclick) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `link ${cls}`;
    b.textContent = text;
    if (label) b.setAttribute("aria-label", label);
    b.onclick = onclick;
    return b;
  };
  actions.append(a,
    button("reuse-seed", "Reuse seed", null, () => reuseSeed(rec.seed)),
    button("use-settings", "Use settings", `Use the settings of image seed ${rec.seed}`, () => showPngInfo(rec.png, rec.name)),
    button("delete", "Delete", `Delete image seed ${rec.seed}`, () => deleteFigure(fig, url)));
  cap.append(prompt, meta, kept, actions);
  fig.append(el, cap);
  $("#gallery").prepend(fig);
  return fig;
}

async function deleteFigure(fig, url) {
  try {
    if (gallery && fig.dataset.id) await gallery.delete(Number(fig.dataset.id));
  } catch (e) {
    message(`The image could not be deleted from the browser's storage: ${errorText(e)}`, true);
    return;
  }
  // Focus moves to the next image's Delete (or the gallery's toolbar) for keyboard users.
  const next = fig.nextElementSibling || fig.previousElementSibling;
  URL.revokeObjectURL(url);
  fig.remove();
  (next ? next.querySelector("button.delete") : $("#gallery-zip")).focus();
  showGalleryUsage();
}

async function deleteAll() {
  const n = $("#gallery").querySelectorAll("figure.result").length;
  if (n === 0) return;
  if (!confirm(`Delete all ${n} image${n === 1 ? "" : "s"} of the gallery from this browser?`)) return;
  try {
    if (gallery) await gallery.clear();
  } catch (e) {
    message(`The gallery could not be cleared: ${errorText(e)}`, true);
    return;
  }
  for (const img of $("#gallery").querySelectorAll("img")) URL.revokeObjectURL(img.src);
  $("#gallery").replaceChildren();
  showGalleryUsage();
  message("The gallery is empty.");
}

async function downloadAll() {
  if (!gallery) { message("This browser keeps no gallery (no IndexedDB): download the images one by one.", true); return; }
  try {
    const { blob, count } = await gallery.zip();
    if (count === 0) { message("The gallery is empty: nothing to download.", true); return; }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `sd-webgpu-gallery-${new Date().toISOString().slice(0, 10)}.zip`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    message(`Downloading ${count} image${count === 1 ? "" : "s"} as one ZIP file (${formatBytes(blob.size)}).`);
  } catch (e) {
    message(`The ZIP could not be made: ${errorText(e)}`, true);
  }
}

async function showGalleryUsage() {
  const el = $("#gallery-info");
  if (!gallery) { el.textContent = "Not kept: this browser gives the page no IndexedDB (private mode?); images are lost on reload."; return; }
  try {
    const u = await gallery.usage();
    el.textContent = `${u.count} image${u.count === 1 ? "" : "s"} kept in this browser (${formatBytes(u.bytes)})` +
      (u.usage != null && u.quota ? `; this site uses ${formatBytes(u.usage)} of ${formatBytes(u.quota)} (model cache included).` : ".");
  } catch (e) {
    el.textContent = `Gallery storage: unavailable (${errorText(e)})`;
  }
  $("#gallery-zip").disabled = $("#clear-gallery").disabled = $("#gallery").children.length === 0;
}

async function openGallery() {
  try {
    gallery = await Gallery.open();
    for (const rec of await gallery.list()) renderFigure(rec);
  } catch (e) {
    gallery = null;
    console.warn(`gallery: ${errorText(e)}`);
  }
  showGalleryUsage();
}

// ---------- PNG info ----------

// Reads the `parameters` text of a PNG (made here or by AUTOMATIC1111) into the form; shows
// what was applied and what the form has no place for.
async function showPngInfo(blob, name = "the image") {
  const out = $("#png-info");
  let text;
  try {
    const chunks = await readPngText(new Uint8Array(await blob.arrayBuffer()));
    text = chunks.parameters;
    if (text == null) {
      const keys = Object.keys(chunks);
      throw new Error(`no "parameters" text in it${keys.length ? ` (its text chunks: ${keys.join(", ")})` : " (no text chunks)"}: was it made by this page or AUTOMATIC1111?`);
    }
  } catch (e) {
    out.replaceChildren(Object.assign(document.createElement("p"), { className: "error", textContent: `${name}: ${errorText(e)}` }));
    out.hidden = false;
    message(`No settings read from ${name}: ${errorText(e)}`, true);
    return null;
  }
  const parsed = parseParameters(text);
  const r = formFromParameters(parsed, [...loraScales.keys()]);
  const notes = [...r.notes];
  for (const [id, v] of Object.entries(r.form)) {
    const el = document.getElementById(id);
    if (el.type === "checkbox") {
      if (id === "fast-decode" && v && el.disabled) { notes.push("The image used the tiny VAE (fast decode): load a tiny VAE with the model to use it."); continue; }
      if (!el.disabled) el.checked = v;
    } else el.value = v;
  }
  for (const [n, scale] of r.loras) loraScales.set(n, scale);
  renderLoras();
  updateNegative();
  saveForm();

  const dl = (pairs) => {
    const d = document.createElement("dl");
    for (const [k, v] of pairs) d.append(Object.assign(document.createElement("dt"), { textContent: k }), Object.assign(document.createElement("dd"), { textContent: v }));
    return d;
  };
  const h = (text) => Object.assign(document.createElement("h3"), { textContent: text });
  const parts = [h(`Read from ${name}`), dl([["Prompt", r.form.prompt || "(empty)"], ...(r.form.negative ? [["Negative prompt", r.form.negative]] : []), ...r.used])];
  const loras = [...r.loras].filter(([, s]) => s !== 0);
  if (r.loras.size) parts.push(h("LoRA scales set"), dl([...r.loras].map(([n, s]) => [n, String(s)])));
  if (r.unknown.length) parts.push(h("Not applied (no such setting on this page)"), Object.assign(dl(r.unknown), { className: "unknown" }));
  if (notes.length) {
    const ul = document.createElement("ul");
    ul.className = "notes";
    ul.append(...notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
    parts.push(ul);
  }
  const raw = document.createElement("details");
  raw.append(Object.assign(document.createElement("summary"), { textContent: "Parameters as stored" }), Object.assign(document.createElement("pre"), { textContent: text }));
  parts.push(raw);
  out.replaceChildren(...parts);
  out.hidden = false;
  message(`Settings read from ${name}: ${r.used.length + 1} applied${loras.length ? ` (LoRAs: ${loras.map(([n, s]) => `${n} ${s}`).join(", ")})` : ""}` +
    (r.unknown.length ? `, ${r.unknown.length} not applied (listed under PNG info)` : "") + ".");
  lastPngInfo = { seq: (lastPngInfo?.seq ?? 0) + 1, file: name, text, parsed, ...r, loras: Object.fromEntries(r.loras), notes };
  return lastPngInfo;
}

// A dropped file that is a PNG (and not a model) goes to PNG info.
const isPng = (f) => f && (f.type === "image/png" || /\.png$/i.test(f.name || ""));

// ---------- start image editor: inpainting mask and outpainting ----------

// Width and height follow the start image (the editor's, i.e. after an extension too),
// rounded to 64.
function startImageSized() {
  const w = editor.width, h = editor.height;
  $("#width").value = String(roundTo64(w));
  $("#height").value = String(roundTo64(h));
  $("#init-size").textContent = `Start image ${w}×${h}${editor.modified ? " (extended)" : ""}; output ${$("#width").value}×${$("#height").value}.`;
  saveForm();
}

function showMaskInfo() {
  const cover = editor.coverage();
  const any = !!editor.maskData();
  $("#mask-info").textContent = !any ? "No mask: plain image to image. Paint the area to repaint (white), or upload a mask."
    : `Inpainting: ${(cover * 100).toFixed(1)} % of the image is repainted (mask ≥ 50 %).`;
  $("#paste-back").disabled = !any;
}

function wireEditor() {
  editor = new MaskEditor({
    stage: $("#mask-stage"),
    image: $("#mask-image"),
    overlay: $("#mask-canvas"),
    brushSize: $("#mask-size"),
    softEdge: $("#mask-soft"),
    tool: document.querySelectorAll("input[name=mask-tool]"),
  }, { onChange: showMaskInfo });
  $("#mask-clear").onclick = () => editor.clear();
  $("#mask-invert").onclick = () => editor.invert();
  $("#mask-file").onchange = async (e) => {
    const f = e.target.files[0];
    if (!f || !editor.loaded) return;
    try {
      const bmp = await decodeImage(f);
      editor.loadMask(bmp);
      bmp.close?.();
    } catch {
      message("The mask could not be decoded: use a PNG (white = repaint, black = keep).", true);
    }
  };
  for (const side of ["left", "right", "top", "bottom"]) {
    $(`#extend-${side}`).onclick = () => {
      const n = Number($("#extend-px").value);
      if (!Number.isInteger(n) || n < 1 || n > 2048) { message("Extend by a whole number of pixels from 1 to 2048.", true); return; }
      if (editor.extend({ [side]: n })) startImageSized();
    };
  }
}

// ---------- wiring ----------

function wire() {
  for (const id of FIELDS) {
    const el = document.getElementById(id);
    el.addEventListener("change", saveForm);
    el.addEventListener("input", saveForm);
  }
  $("#guidance").addEventListener("input", updateNegative);
  $("#seed").addEventListener("input", () => { if ($("#seed").value !== "") $("#random-seed").checked = false; });
  $("#load").onclick = () => {
    const model = $("#model").value.trim();
    if (!model) { message("Enter a Hugging Face repo id or a URL, or choose a local model.", true); return; }
    saveForm();
    load(model);
  };
  $("#model").addEventListener("keydown", (e) => { if (e.key === "Enter") $("#load").click(); });
  $("#preset").addEventListener("change", () => {
    const pr = PRESETS[$("#preset").value];
    if (!pr) return;
    $("#model").value = pr.model;
    $("#tiny-vae").value = pr.tinyVae;
    saveForm();
  });
  // Editing the model by hand leaves the preset.
  for (const id of ["#model", "#tiny-vae"]) $(id).addEventListener("input", () => { $("#preset").value = ""; saveForm(); });
  $("#model-file").onchange = (e) => { const f = e.target.files[0]; if (f) load(f); e.target.value = ""; };
  $("#model-folder").onchange = (e) => { const fs = [...e.target.files]; if (fs.length) load(fs); e.target.value = ""; };
  $("#no-cache").onclick = () => { if (lastSource) load(lastSource, { cache: false }); };
  $("#clear-cache").onclick = async () => {
    try {
      await StableDiffusion.clearCache();
      message("The browser cache is cleared.");
    } catch (e) {
      message(errorText(e), true);
    }
    showCache();
  };

  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); if (gpuOk && !busy) drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", onDrop);
  // A file dropped next to the zone must not make the browser navigate away from the page; a
  // PNG dropped anywhere (the model zone included) fills the form from its parameters.
  addEventListener("dragover", (e) => e.preventDefault());
  addEventListener("drop", (e) => {
    e.preventDefault();
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length === 1 && isPng(files[0]) && !(e.target instanceof HTMLInputElement && e.target.type === "file")) showPngInfo(files[0], files[0].name);
  });
  $("#png-info-file").onchange = (e) => { const f = e.target.files[0]; if (f) showPngInfo(f, f.name); e.target.value = ""; };

  $("#lora-load").onclick = () => {
    const src = $("#lora-url").value.trim();
    if (!src) { message("Enter the LoRA's URL or Hugging Face file (owner/repo/file.safetensors), or choose a file.", true); return; }
    saveForm();
    loadLora(src);
  };
  $("#lora-url").addEventListener("keydown", (e) => { if (e.key === "Enter") $("#lora-load").click(); });
  $("#lora-file").onchange = (e) => { const f = e.target.files[0]; if (f) loadLora(f); e.target.value = ""; };

  $("#generate").onclick = requestGenerate;
  $("#cancel").onclick = cancelRunning;
  // Ctrl+Enter (Cmd+Enter on a Mac) anywhere on the page: Generate (queued while one runs).
  addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.altKey && !e.shiftKey && !e.repeat) {
      e.preventDefault();
      requestGenerate();
    }
  });
  queue = new JobQueue($("#queue"), { describe: describeJob, onCancelRunning: cancelRunning });

  wireEditor();
  $("#init-image").onchange = async (e) => {
    const f = e.target.files[0];
    $("#init-row").hidden = !f;
    $("#mask-editor").hidden = true;
    $("#init-size").textContent = "";
    $("#mask-file").value = "";
    editor.clearImage();
    if (!f) return;
    // Width and height start at the image's size rounded to 64 (what the library does when
    // they are left out); a user can change them: the image is then fitted by the resize mode.
    let bmp;
    try {
      bmp = await decodeImage(f);
    } catch {
      message("The start image could not be decoded: use a PNG, JPEG or WebP file.", true);
      return;
    }
    if ($("#init-image").files[0] !== f) { bmp.close?.(); return; } // another file was chosen meanwhile
    editor.setImage(bmp);
    bmp.close?.();
    $("#mask-editor").hidden = false;
    startImageSized();
    showMaskInfo();
  };
  $("#init-clear").onclick = () => { $("#init-image").value = ""; $("#init-image").dispatchEvent(new Event("change")); };
  $("#clear-gallery").onclick = deleteAll;
  $("#gallery-zip").onclick = downloadAll;
}

function cancelRunning() {
  if (abort) {
    abort.abort();
    $("#step-text").textContent = "Cancelling after this step…";
  }
}

// The service worker keeps the app shell for offline use (www/sw.js). Not on file:// or
// where the browser has none; a failure is logged only (the page works without it).
function registerServiceWorker() {
  if (!("serviceWorker" in navigator) || !isSecureContext) return;
  navigator.serviceWorker.register("./sw.js", { updateViaCache: "none" }).catch((e) => console.warn(`service worker not registered: ${errorText(e)}`));
}

async function main() {
  const autoload = restoreForm();
  wire();
  setState("idle");
  registerServiceWorker();
  openGallery();
  showCache();
  try {
    await showAdapter();
    gpuOk = true;
    setState("idle");
    message("WebGPU is available. Load a model to start (about 2 GB the first time; it is then kept in the browser).");
  } catch (e) {
    setState("error");
    message(errorText(e), true);
    return;
  }
  if (!autoload) return;
  // A shared link may name any site: a model on another origin is downloaded (gigabytes, from
  // a host the visitor did not choose) only after the visitor says so. Repo ids and models on
  // this page's own origin load at once.
  const host = foreignHost($("#model").value.trim());
  if (!host) {
    $("#load").click();
    return;
  }
  setState("confirm");
  message(`This link asks to download a model from ${host}, another site (about 2 GB for SD 1.5; it is then kept in the browser). Load it from there?`);
  const ok = $("#confirm-load");
  ok.textContent = `Load from ${host}`;
  ok.hidden = false;
  ok.onclick = () => {
    ok.hidden = true;
    $("#load").click();
  };
}

// The host of a model URL on another origin than this page's, or null (repo id, same origin).
function foreignHost(model) {
  if (!model || /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(model)) return null; // a Hugging Face repo id
  try {
    const u = new URL(model, location.href); // also "//host/…" and relative URLs
    return u.origin === location.origin ? null : u.host || u.origin;
  } catch {
    return null;
  }
}

// For the browser console (and the end-to-end tests): the loaded model, e.g.
// `await sdApp.model.stats()`.
// `sdApp.lastGenerateOptions`: the options object of the last sd.generate call (its mask is
// the ImageData sent); `sdApp.readParams()`: what Generate would pass now (throws like it).
// `sdApp.gallery`: the Gallery (IndexedDB; null without one); `sdApp.queue`: the JobQueue;
// `sdApp.lastPngInfo`: what the last PNG info read and applied.
globalThis.sdApp = {
  get model() { return sd; },
  get lastGenerateOptions() { return lastGenerateOptions; },
  readParams: () => readParams(),
  get editor() { return editor; },
  get gallery() { return gallery; },
  get queue() { return queue; },
  get lastPngInfo() { return lastPngInfo; },
};

main();
