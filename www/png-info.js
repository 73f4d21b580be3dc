// PNG info: the generation parameters stored in a PNG's text chunks (AUTOMATIC1111's
// `parameters` keyword, as this page and A1111 write it) read back and mapped onto the page's
// form. No DOM here: app.js applies the result.
//
//   readPngText(bytes)        {keyword: text} of the tEXt (Latin-1), zTXt (deflate, Latin-1) and
//                             iTXt (UTF-8, optionally deflated) chunks
//   parseParameters(text)     A1111's parse_generation_parameters: {prompt, negativePrompt,
//                             fields: [[key, value], …] (in order, quoted values unquoted),
//                             unparsed: [text the key: value pattern did not match]}
//   formFromParameters(p)     what the page's form takes from it: {form, loras, tags, used,
//                             unknown, notes}

const SIG = [137, 80, 78, 71, 13, 10, 26, 10];

/** Inflates zlib-wrapped deflate data (PNG's zTXt / compressed iTXt) with DecompressionStream. */
async function inflate(bytes) {
  if (typeof DecompressionStream === "undefined") throw new Error("this browser cannot decompress (no DecompressionStream)");
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const latin1 = (b) => new TextDecoder("latin1").decode(b);
const utf8 = (b) => new TextDecoder("utf-8").decode(b);

/**
 * The text chunks of a PNG: {keyword: text} (the first chunk of a keyword wins). Throws an
 * Error naming the problem for bytes that are no PNG or a truncated chunk list.
 */
export async function readPngText(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (bytes.length < 8 || SIG.some((v, i) => bytes[i] !== v)) throw new Error("not a PNG file (no PNG signature)");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = {};
  let off = 8;
  while (off + 8 <= bytes.length) {
    const len = view.getUint32(off);
    const type = latin1(bytes.subarray(off + 4, off + 8));
    const start = off + 8, end = start + len;
    if (end + 4 > bytes.length) throw new Error(`truncated PNG: the ${type} chunk at byte ${off} runs past the end of the file`);
    const data = bytes.subarray(start, end);
    if (type === "tEXt" || type === "zTXt" || type === "iTXt") {
      const z = data.indexOf(0);
      if (z > 0) {
        const key = latin1(data.subarray(0, z));
        let text = null;
        if (type === "tEXt") text = latin1(data.subarray(z + 1));
        else if (type === "zTXt") text = latin1(await inflate(data.subarray(z + 2))); // z+1: method 0
        else {
          const compressed = data[z + 1] === 1;
          let p = z + 3; // flag, method
          p = data.indexOf(0, p) + 1; // language tag
          p = p > 0 ? data.indexOf(0, p) + 1 : 0; // translated keyword
          if (p > 0) {
            const t = data.subarray(p);
            text = utf8(compressed ? await inflate(t) : t);
          }
        }
        if (text != null && !(key in out)) out[key] = text;
      }
    }
    off = end + 4;
    if (type === "IEND") break;
  }
  return out;
}

// A1111's infotext patterns (modules/infotext_utils.py): `key: value` with the value either a
// JSON string in quotes (when it holds a comma, a colon or a line break) or up to the next comma.
const RE_PARAM = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;
const RE_SIZE = /^(\d+)x(\d+)$/;

function unquote(v) {
  if (v.length >= 2 && v[0] === '"' && v[v.length - 1] === '"') {
    try { return JSON.parse(v); } catch { return v; }
  }
  return v;
}

/** Every `key: value` of A1111's last line, and the text between matches that none matched. */
function splitFields(line) {
  const fields = [];
  const unparsed = [];
  let last = 0;
  RE_PARAM.lastIndex = 0;
  for (let m; (m = RE_PARAM.exec(line)) !== null;) {
    const gap = line.slice(last, m.index).replace(/^[\s,]+|[\s,]+$/g, "");
    if (gap) unparsed.push(gap);
    fields.push([m[1].trim(), unquote(m[2].trim())]);
    last = RE_PARAM.lastIndex;
    if (m[0].length === 0) RE_PARAM.lastIndex++;
  }
  const tail = line.slice(last).replace(/^[\s,]+|[\s,]+$/g, "");
  if (tail) unparsed.push(tail);
  return { fields, unparsed };
}

/**
 * A1111's `parse_generation_parameters`: prompt lines, then lines after "Negative prompt:",
 * then the last line of `key: value` pairs (when it holds at least 3 of them).
 */
export function parseParameters(text) {
  const lines = String(text).trim().split("\n");
  let last = lines.pop() ?? "";
  RE_PARAM.lastIndex = 0;
  if ((last.match(RE_PARAM) || []).length < 3) {
    lines.push(last);
    last = "";
  }
  let prompt = "", negativePrompt = "", inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith("Negative prompt:")) {
      inNegative = true;
      line = line.slice(16).trim();
    }
    if (inNegative) negativePrompt += (negativePrompt === "" ? "" : "\n") + line;
    else prompt += (prompt === "" ? "" : "\n") + line;
  }
  const { fields, unparsed } = last ? splitFields(last) : { fields: [], unparsed: [] };
  return { prompt, negativePrompt, fields, unparsed };
}

// A1111's sampler names -> the page's. A1111 1.9+ writes the scheduler apart ("Schedule type:
// Karras"); older versions put it in the name ("DPM++ 2M Karras"). This page writes "PLMS" for
// PNDM (A1111's name of diffusers' PNDM-style sampler).
const SAMPLERS = {
  "ddpm": "ddpm", "ddim": "ddim", "plms": "pndm", "pndm": "pndm", "euler": "euler", "euler a": "euler_a",
  "dpm++ 2m karras": "dpmpp_2m_karras", "lcm": "lcm",
};

/** The page's sampler for A1111's Sampler (+ Schedule type) value, or null. */
export function samplerFromA1111(name, scheduleType) {
  const n = String(name).trim().toLowerCase();
  const s = scheduleType ? String(scheduleType).trim().toLowerCase() : "";
  if (s && s !== "automatic") {
    if (SAMPLERS[`${n} ${s}`]) return SAMPLERS[`${n} ${s}`];
    if (n === "euler" || n === "euler a" || n === "ddim" || n === "lcm") return null; // another schedule than ours
  }
  if (n === "dpm++ 2m" && s === "karras") return "dpmpp_2m_karras";
  return SAMPLERS[n] ?? null;
}

const RESIZE_MODES = { "crop and resize": "crop", "resize and fill": "fit", "just resize": "stretch" };

// `<lora:name:scale>` / `<lora:name>` tags (A1111), as the page's library reads them.
const RE_LORA_TAG = /<lora:([^:<>]+)(?::([^:<>]*))?>/g;

/** The `<lora:…>` tags of a prompt: [{name, scale, index, length}]. */
export function loraTags(prompt) {
  const out = [];
  for (const m of prompt.matchAll(RE_LORA_TAG)) {
    const scale = m[2] === undefined ? 1 : Number(m[2].trim());
    if (m[2] !== undefined && (m[2].trim() === "" || !Number.isFinite(scale))) continue;
    out.push({ name: m[1], scale, index: m.index, length: m[0].length });
  }
  return out;
}

/** `Lora hashes: "a: 0123abcd, b: 4567"` -> [{name, hash}]. */
function parseLoraHashes(v) {
  return String(v).split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
    const i = s.lastIndexOf(":");
    return i < 0 ? { name: s, hash: "" } : { name: s.slice(0, i).trim(), hash: s.slice(i + 1).trim() };
  });
}

/**
 * What the page's form takes from parsed parameters (see parseParameters).
 * `loadedLoras`: the names of the LoRAs loaded on the page.
 * Returns:
 *   form     {id: value} for the form's inputs ("random-seed" a boolean, the rest strings)
 *   loras    Map name -> scale for every loaded LoRA (0 for those the image did not use)
 *   tags     the LoRA tags of the image: [{name, scale, loaded, hash}]
 *   used     [[key, value]] of the fields applied to the form
 *   unknown  [[key, value]] of the fields this page has no input for (shown, not lost);
 *            text that was no `key: value` comes as ["(unparsed)", text]
 *   notes    sentences about what could not be applied
 */
export function formFromParameters(parsed, loadedLoras = []) {
  const form = {};
  const used = [];
  const unknown = [];
  const notes = [];
  const get = new Map(parsed.fields);
  let prompt = parsed.prompt;

  // LoRAs: the image's tags (in the prompt; the page appends one per list LoRA) and hashes.
  const hashes = get.has("Lora hashes") ? parseLoraHashes(get.get("Lora hashes")) : [];
  const loaded = new Set(loadedLoras);
  const tags = loraTags(prompt).map((t) => ({ ...t, loaded: loaded.has(t.name), hash: hashes.find((h) => h.name === t.name)?.hash ?? "" }));
  // Tags at the end of the prompt naming a loaded LoRA go to the LoRA list (this page appends
  // " <lora:name:scale>" for each LoRA of its list); the others stay in the prompt, which
  // applies them as the library reads it.
  for (;;) {
    const m = / ?<lora:([^:<>]+)(?::([^:<>]*))?>$/.exec(prompt);
    const t = m && tags.find((x) => x.loaded && x.name === m[1] && x.index + x.length === prompt.length);
    if (!t) break;
    t.moved = true;
    prompt = prompt.slice(0, m.index);
  }
  const loras = new Map([...loaded].map((n) => [n, 0]));
  for (const t of tags) if (t.loaded) loras.set(t.name, t.scale);
  for (const t of tags) if (!t.loaded) notes.push(`The image used LoRA ${t.name} (scale ${t.scale}${t.hash ? `, hash ${t.hash}` : ""}), which is not loaded: load it, its tag stays in the prompt.`);
  for (const h of hashes) if (!tags.some((t) => t.name === h.name)) notes.push(`Lora hashes names ${h.name} (${h.hash}) without a <lora:…> tag in the prompt.`);

  form.prompt = prompt;
  form.negative = parsed.negativePrompt;

  const num = (k, id, test = Number.isFinite) => {
    const v = get.get(k);
    const n = Number(v);
    if (v === undefined) return;
    if (v.trim() !== "" && test(n)) { form[id] = String(n); used.push([k, v]); }
    else { unknown.push([k, v]); notes.push(`${k}: ${JSON.stringify(v)} is not a number the form takes.`); }
  };
  num("Steps", "steps", (n) => Number.isInteger(n) && n >= 1);
  num("CFG scale", "guidance");
  if (get.has("Seed")) {
    const v = get.get("Seed");
    const n = Number(v);
    if (Number.isSafeInteger(n) && n >= 0) { form.seed = String(n); form["random-seed"] = false; used.push(["Seed", v]); }
    else { unknown.push(["Seed", v]); notes.push(`Seed ${JSON.stringify(v)} is not a whole number ≥ 0.`); }
  }
  if (get.has("Size")) {
    const m = RE_SIZE.exec(get.get("Size").trim());
    if (m) { form.width = m[1]; form.height = m[2]; used.push(["Size", get.get("Size")]); }
    else unknown.push(["Size", get.get("Size")]);
  }
  if (get.has("Sampler")) {
    const sched = get.get("Schedule type");
    const s = samplerFromA1111(get.get("Sampler"), sched);
    if (s) {
      form.sampler = s;
      used.push(["Sampler", get.get("Sampler")]);
      if (sched !== undefined) used.push(["Schedule type", sched]);
    } else {
      unknown.push(["Sampler", get.get("Sampler")]);
      if (sched !== undefined) unknown.push(["Schedule type", sched]);
      notes.push(`Sampler ${get.get("Sampler")}${sched ? ` (${sched})` : ""} is not one of this page's: the sampler is left as it is.`);
    }
  } else if (get.has("Schedule type")) unknown.push(["Schedule type", get.get("Schedule type")]);
  // Batch: A1111's "Batch size" and 0-based "Batch pos"; the form's "Only image #" is 1-based.
  const batch = get.has("Batch size") ? Number(get.get("Batch size")) : 1;
  if (get.has("Batch size")) {
    if (Number.isInteger(batch) && batch >= 1) { form.batch = String(batch); used.push(["Batch size", get.get("Batch size")]); }
    else unknown.push(["Batch size", get.get("Batch size")]);
  } else form.batch = "1";
  if (get.has("Batch pos")) {
    const pos = Number(get.get("Batch pos"));
    if (Number.isInteger(pos) && pos >= 0 && pos < batch) { form["batch-pos"] = String(pos + 1); used.push(["Batch pos", get.get("Batch pos")]); }
    else unknown.push(["Batch pos", get.get("Batch pos")]);
  } else form["batch-pos"] = "";
  num("Denoising strength", "strength", (n) => n > 0 && n <= 1);
  if (get.has("Resize mode")) {
    const r = RESIZE_MODES[get.get("Resize mode").trim().toLowerCase()];
    if (r) { form["resize-mode"] = r; used.push(["Resize mode", get.get("Resize mode")]); }
    else unknown.push(["Resize mode", get.get("Resize mode")]);
  }
  // "VAE: TAESD" is this page's fast decode; other VAE names are A1111's VAE files.
  if (get.get("VAE") === "TAESD") { form["fast-decode"] = true; used.push(["VAE", "TAESD"]); }
  else {
    form["fast-decode"] = false;
    if (get.has("VAE")) unknown.push(["VAE", get.get("VAE")]);
  }
  if (get.has("Lora hashes")) used.push(["Lora hashes", get.get("Lora hashes")]);

  const handled = new Set(["Steps", "CFG scale", "Seed", "Size", "Sampler", "Schedule type", "Batch size", "Batch pos", "Denoising strength", "Resize mode", "VAE", "Lora hashes"]);
  for (const [k, v] of parsed.fields) if (!handled.has(k)) unknown.push([k, v]);
  for (const u of parsed.unparsed) unknown.push(["(unparsed)", u]);
  return { form, loras, tags, used, unknown, notes };
}
