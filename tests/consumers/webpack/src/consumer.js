// What the test (tests/consumers/run.mjs) calls through page.evaluate: load, generate, unload
// with the package's public API; results made cloneable (pixels as arrays, errors as text).
// The same file is in each consumer app (tests/consumers/vite/src, webpack/src).
export function consumer(StableDiffusion, bundler) {
  let sd = null;
  let last = null; // the last progress event of a load (reported when a load does not answer)
  const err = (e) => ({ ok: false, error: { name: e?.name ?? typeof e, message: String(e?.message ?? e) } });
  return {
    bundler,
    ready: true,
    async load(options) {
      const t0 = performance.now();
      const phases = [];
      try {
        sd = await StableDiffusion.load({
          ...options,
          onProgress: (p) => {
            last = { phase: p.phase, file: p.file, loaded: p.loaded, total: p.total, at: performance.now() / 1000 };
            if (!phases.includes(p.phase)) phases.push(p.phase);
          },
        });
      } catch (e) {
        return err(e);
      }
      return { ok: true, seconds: (performance.now() - t0) / 1000, phases, modelName: sd.modelName, adapter: sd.adapter, warnings: sd.warnings };
    },
    async generate(options) {
      const t0 = performance.now();
      let steps = 0;
      try {
        const out = await sd.generate({ ...options, onStep: () => steps++ });
        const img = out.images[0];
        return {
          ok: true,
          seconds: (performance.now() - t0) / 1000,
          steps,
          width: img.imageData.width,
          height: img.imageData.height,
          pixels: Array.from(img.imageData.data),
          pngBytes: img.blob.size,
          seed: img.seed,
          warnings: out.warnings,
        };
      } catch (e) {
        return err(e);
      }
    },
    lastProgress() {
      return last && { ...last, secondsAgo: performance.now() / 1000 - last.at };
    },
    async stats() {
      try {
        return { ok: true, ...(await sd.stats()) };
      } catch (e) {
        return err(e);
      }
    },
    async unload() {
      await sd?.unload();
      sd = null;
    },
  };
}
