// A plain webpack 5 production config: an entry, an output folder, an HTML page. Nothing for
// sd-webgpu: webpack finds its worker (new Worker(new URL(…, import.meta.url))) and the wasm
// (new URL(…, import.meta.url) in the worker's modules) by itself.
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

export default (env = {}) => ({
  mode: "production",
  entry: "./src/index.js",
  output: {
    path: path.resolve(env.out ?? path.join(here, "dist")),
    filename: "[name].[contenthash].js",
    clean: true,
  },
  plugins: [
    {
      // index.html loading the entry chunk (what html-webpack-plugin does, in a few lines).
      apply(compiler) {
        compiler.hooks.thisCompilation.tap("index-html", (compilation) => {
          compilation.hooks.processAssets.tap({ name: "index-html", stage: compiler.webpack.Compilation.PROCESS_ASSETS_STAGE_ADDITIONAL }, () => {
            const scripts = [...compilation.entrypoints.get("main").getFiles()].filter((f) => f.endsWith(".js"));
            const html = `<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8"><title>sd-webgpu under webpack</title></head>\n<body>\n<p>A webpack app that imports the <code>sd-webgpu</code> package.</p>\n${scripts.map((s) => `<script src="${s}"></script>`).join("\n")}\n</body>\n</html>\n`;
            compilation.emitAsset("index.html", new compiler.webpack.sources.RawSource(html));
          });
        });
      },
    },
  ],
});
