// The page's inpainting mask editor: the start image on a canvas, the mask painted over it
// (brush, eraser, soft edge, clear, invert, upload), and outpainting (extending the image by a
// border that the mask marks for repainting). Used by app.js; no dependency on the library.
//
// The mask is kept as an opaque greyscale canvas at the image's own pixel size: black = keep,
// white = repaint, grey = soft edge. What `maskData()` returns is that canvas's pixels, exactly
// what the overlay shows (the overlay only tints it). The library reads luminance × alpha / 255,
// which for these opaque grey pixels is the grey value itself.

// ITU-R 601-2 luma in integers, as PIL's convert("L") computes it (what diffusers' mask
// processor does with an RGB mask).
const luma = (r, g, b) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;

const TINT = [255, 64, 160]; // overlay colour of the masked area
const TINT_ALPHA = 0.55;     // overlay opacity where the mask is white

function canvas(w, h) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  return c;
}

const ctx2d = (c) => c.getContext("2d", { willReadFrequently: true });

// A round-capped segment (a dot when a = b) of the given radius, opaque white, onto a layer.
function drawSegment(layer, a, b, radius) {
  const c = layer.getContext("2d");
  c.fillStyle = c.strokeStyle = "#fff";
  c.lineCap = c.lineJoin = "round";
  c.beginPath();
  if (a === b) {
    c.arc(b.x, b.y, radius, 0, 2 * Math.PI);
    c.fill();
  } else {
    c.lineWidth = 2 * radius;
    c.moveTo(a.x, a.y);
    c.lineTo(b.x, b.y);
    c.stroke();
  }
}

// `layer` in `colour` (its alpha kept), drawn into `into` (a canvas of the same size, reused).
function tint(layer, colour, into) {
  into ??= canvas(layer.width, layer.height);
  const c = into.getContext("2d");
  c.globalCompositeOperation = "copy";
  c.drawImage(layer, 0, 0);
  c.globalCompositeOperation = "source-in";
  c.fillStyle = colour;
  c.fillRect(0, 0, layer.width, layer.height);
  return into;
}

/** Decodes a File/Blob into an ImageBitmap, as the library's worker does (so the editor shows
 *  and extends exactly the pixels the library would read from the file). */
export async function decodeImage(blob) {
  return await createImageBitmap(blob);
}

export class MaskEditor {
  /**
   * @param {object} els  { stage, image (canvas), overlay (canvas), brushSize, softEdge, tool
   *                        (NodeList/array of radio inputs, value "brush" | "eraser") }
   * @param {object} hooks { onChange() } called after each change of the mask or the image
   */
  constructor(els, hooks = {}) {
    this.els = els;
    this.hooks = hooks;
    this.width = 0;
    this.height = 0;
    this.modified = false;   // the image differs from the chosen file (extended)
    this.mask = null;        // opaque greyscale canvas (image size)
    this.stroke = null;      // the current stroke: { layer, before, last, colour, id }
    this.dirty = null;       // overlay region to redraw: [x0, y0, x1, y1]
    this.frame = 0;
    const o = els.overlay;
    o.addEventListener("pointerdown", (e) => this.#down(e));
    o.addEventListener("pointermove", (e) => this.#move(e));
    o.addEventListener("pointerup", (e) => this.#up(e));
    o.addEventListener("pointercancel", (e) => this.#up(e));
    o.addEventListener("lostpointercapture", (e) => this.#up(e));
    o.addEventListener("contextmenu", (e) => e.preventDefault());
  }

  get loaded() { return this.width > 0; }

  /** Shows a new start image (a decoded bitmap): an empty (black) mask of its size. */
  setImage(bitmap) {
    const { image, overlay } = this.els;
    this.width = image.width = overlay.width = bitmap.width;
    this.height = image.height = overlay.height = bitmap.height;
    const ic = ctx2d(image);
    ic.clearRect(0, 0, this.width, this.height);
    ic.drawImage(bitmap, 0, 0);
    this.mask = canvas(this.width, this.height);
    this.#fillMask(0);
    this.modified = false;
    this.stroke = null;
    this.#aspect();
    this.#redraw();
  }

  clearImage() {
    this.width = this.height = 0;
    this.mask = null;
    this.stroke = null;
    this.modified = false;
  }

  /** The current image as ImageData (the extended one after an outpaint). */
  imageData() {
    return ctx2d(this.els.image).getImageData(0, 0, this.width, this.height);
  }

  /** The mask's pixels (opaque grey RGBA at the image size), or null when it is all black. */
  maskData() {
    if (!this.mask) return null;
    const d = ctx2d(this.mask).getImageData(0, 0, this.width, this.height);
    for (let i = 0; i < d.data.length; i += 4) if (d.data[i] !== 0) return d;
    return null;
  }

  /** The fraction of mask pixels ≥ 128 (what the pipeline repaints after binarising). */
  coverage() {
    if (!this.mask) return 0;
    const px = ctx2d(this.mask).getImageData(0, 0, this.width, this.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i] >= 128) n++;
    return n / (this.width * this.height);
  }

  clear() {
    if (!this.mask) return;
    this.#fillMask(0);
    this.#changed();
  }

  invert() {
    if (!this.mask) return;
    const c = ctx2d(this.mask);
    const d = c.getImageData(0, 0, this.width, this.height);
    const px = d.data;
    for (let i = 0; i < px.length; i += 4) px[i] = px[i + 1] = px[i + 2] = 255 - px[i];
    c.putImageData(d, 0, 0);
    this.#changed();
  }

  /** Replaces the mask by an image (any size: drawn scaled to the image's size), as grey =
   *  luminance × alpha / 255 (the library's reading of a mask), so black or transparent = keep. */
  loadMask(bitmap) {
    if (!this.mask) return;
    const tmp = canvas(this.width, this.height);
    const tc = ctx2d(tmp);
    tc.imageSmoothingQuality = "high";
    tc.drawImage(bitmap, 0, 0, this.width, this.height);
    const d = tc.getImageData(0, 0, this.width, this.height);
    const px = d.data;
    for (let i = 0; i < px.length; i += 4) {
      const v = Math.round((luma(px[i], px[i + 1], px[i + 2]) * px[i + 3]) / 255);
      px[i] = px[i + 1] = px[i + 2] = v;
      px[i + 3] = 255;
    }
    ctx2d(this.mask).putImageData(d, 0, 0);
    this.#changed();
  }

  /**
   * Outpainting: a border of left/right/top/bottom pixels around the image. The border is
   * filled by replicating the image's edge pixels (their colours continue into the new area,
   * which suits a 4-channel model, whose img2img starts from the noised fill; a 9-channel
   * inpainting UNet sees masked pixels as blank anyway) and is white (repaint) in the mask; the
   * old mask is kept where the old image is.
   */
  extend({ left = 0, right = 0, top = 0, bottom = 0 }) {
    if (!this.mask) return false;
    const [l, r, t, b] = [left, right, top, bottom].map((v) => Math.max(0, Math.floor(v) || 0));
    if (l + r + t + b === 0) return false;
    const W = this.width, H = this.height, nw = W + l + r, nh = H + t + b;
    const src = new Uint32Array(this.imageData().data.buffer);
    const out = new ImageData(nw, nh);
    const dst = new Uint32Array(out.data.buffer);
    for (let y = 0; y < nh; y++) {
      const sy = Math.min(H - 1, Math.max(0, y - t)) * W;
      for (let x = 0; x < nw; x++) dst[y * nw + x] = src[sy + Math.min(W - 1, Math.max(0, x - l))];
    }
    const oldMask = this.mask;
    const { image, overlay } = this.els;
    this.width = image.width = overlay.width = nw;
    this.height = image.height = overlay.height = nh;
    ctx2d(image).putImageData(out, 0, 0);
    this.mask = canvas(nw, nh);
    this.#fillMask(255);
    ctx2d(this.mask).drawImage(oldMask, l, t);
    this.modified = true;
    this.#aspect();
    this.#changed();
    return true;
  }

  // ---------- painting ----------

  /** Client coordinates -> image pixels (continuous: pixel x covers [x, x + 1)). */
  toImage(e) {
    const r = this.els.overlay.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * this.width) / r.width, y: ((e.clientY - r.top) * this.height) / r.height };
  }

  #radius(e) {
    const size = Math.max(1, Number(this.els.brushSize.value) || 1);
    // A pen's pressure scales the brush (full pressure = the set size); mouse, touch: the size.
    const p = e.pointerType === "pen" && e.pressure > 0 ? Math.max(0.1, Math.min(1, e.pressure)) : 1;
    return Math.max(0.5, (size * p) / 2);
  }

  #tool() {
    const checked = [...this.els.tool].find((t) => t.checked);
    return checked ? checked.value : "brush";
  }

  #down(e) {
    if (!this.mask || this.stroke || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    this.els.overlay.setPointerCapture?.(e.pointerId);
    const before = canvas(this.width, this.height);
    ctx2d(before).drawImage(this.mask, 0, 0);
    this.stroke = {
      id: e.pointerId,
      layer: canvas(this.width, this.height), // the stroke's shape, opaque white on transparent
      before,                                   // the mask before the stroke
      colour: this.#tool() === "eraser" ? "#000" : "#fff",
      soft: Math.max(0, Number(this.els.softEdge.value) || 0),
      last: null,
    };
    this.#segment(this.toImage(e), this.#radius(e));
  }

  #move(e) {
    if (!this.stroke || e.pointerId !== this.stroke.id) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) this.#segment(this.toImage(ev), this.#radius(ev));
  }

  #up(e) {
    if (!this.stroke || e.pointerId !== this.stroke.id) return;
    if (e.type === "pointerup") this.#segment(this.toImage(e), this.#radius(e));
    this.stroke = null;
    this.#changed();
  }

  // Adds a segment from the last point to `pt` (a dot at the first) to the stroke's layers,
  // then draws the mask again as the mask before the stroke + the stroke in the tool's colour:
  // overlapping segments never add up. A soft edge of s px is a Gaussian blur (sigma s) of the
  // stroke, with the unblurred stroke 2s narrower on top, so that the inside stays full
  // (blurred: 50 % at the brush's radius, ~98 % where the core begins).
  #segment(pt, radius) {
    const s = this.stroke;
    const from = s.last ?? pt;
    s.last = pt;
    const core = radius - 2 * s.soft;
    drawSegment(s.layer, from, pt, radius);
    if (s.soft > 0 && core > 0) drawSegment((s.core ??= canvas(this.width, this.height)), from, pt, core);
    const mc = ctx2d(this.mask);
    mc.save();
    mc.globalCompositeOperation = "copy";
    mc.drawImage(s.before, 0, 0);
    mc.restore();
    s.tinted = tint(s.layer, s.colour, s.tinted);
    mc.save();
    if (s.soft > 0) {
      if (typeof mc.filter === "string") mc.filter = `blur(${s.soft}px)`;
      else {
        // No canvas filters (older Safari): the blurred shadow of a copy drawn off the canvas.
        const off = this.width + 4 * s.soft + 10;
        mc.shadowColor = s.colour;
        mc.shadowBlur = 2 * s.soft; // shadowBlur is twice the Gaussian's sigma
        mc.shadowOffsetX = off;
        mc.translate(-off, 0);
      }
    }
    mc.drawImage(s.tinted, 0, 0);
    mc.restore();
    if (s.core) mc.drawImage((s.coreTinted = tint(s.core, s.colour, s.coreTinted)), 0, 0);
    // Only the new segment's neighbourhood changed (blur included).
    const pad = radius + 3 * s.soft + 2;
    this.#dirty(Math.min(pt.x, from.x) - pad, Math.min(pt.y, from.y) - pad, Math.max(pt.x, from.x) + pad, Math.max(pt.y, from.y) + pad);
  }

  // ---------- display ----------

  #fillMask(v) {
    const c = ctx2d(this.mask);
    c.fillStyle = `rgb(${v},${v},${v})`;
    c.fillRect(0, 0, this.width, this.height);
  }

  #aspect() {
    this.els.stage.style.aspectRatio = `${this.width} / ${this.height}`;
  }

  #changed() {
    this.#redraw();
    this.hooks.onChange?.();
  }

  #redraw() {
    this.#dirty(0, 0, this.width, this.height);
  }

  #dirty(x0, y0, x1, y1) {
    const d = this.dirty;
    this.dirty = d ? [Math.min(d[0], x0), Math.min(d[1], y0), Math.max(d[2], x1), Math.max(d[3], y1)] : [x0, y0, x1, y1];
    if (!this.frame) this.frame = requestAnimationFrame(() => this.#paintOverlay());
  }

  /** Redraws the overlay's dirty region: the tint colour with alpha = mask × TINT_ALPHA. */
  paintOverlayNow() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.#paintOverlay();
  }

  #paintOverlay() {
    this.frame = 0;
    const d = this.dirty;
    this.dirty = null;
    if (!d || !this.mask) return;
    const x0 = Math.max(0, Math.floor(d[0])), y0 = Math.max(0, Math.floor(d[1]));
    const x1 = Math.min(this.width, Math.ceil(d[2])), y1 = Math.min(this.height, Math.ceil(d[3]));
    if (x1 <= x0 || y1 <= y0) return;
    const m = ctx2d(this.mask).getImageData(x0, y0, x1 - x0, y1 - y0);
    const px = m.data;
    for (let i = 0; i < px.length; i += 4) {
      const v = px[i];
      px[i] = TINT[0];
      px[i + 1] = TINT[1];
      px[i + 2] = TINT[2];
      px[i + 3] = Math.round(v * TINT_ALPHA);
    }
    ctx2d(this.els.overlay).putImageData(m, x0, y0);
  }
}
