// Makes the npm package folder (dist/npm/) from a built dist/ (scripts/build-web.sh runs it):
//
//   node npm/make.mjs [DIST]        DIST default "dist"; writes DIST/npm/
//
// The files are the ES module, the d.ts, and everything the module reaches by relative
// imports and `new URL("…", import.meta.url)` (its worker, the worker's helper modules, the
// wasm-bindgen glue and the wasm), found by following those references from sd-webgpu.js, so a
// new helper module is packed without editing a list. package.json is
// npm/package.template.json with the version, description, license (and repository /
// homepage when Cargo.toml has them) from Cargo.toml's [package] table, and `files` = that
// list. README.md is the README's "npm package" section.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const DIST = path.resolve(ROOT, process.argv[2] || "dist");
const OUT = path.join(DIST, "npm");
const ENTRY = "sd-webgpu.js";
const TYPES = "sd-webgpu.d.ts";

const die = (msg) => {
  console.error(`npm/make.mjs: ${msg}`);
  process.exit(1);
};

// Cargo.toml's [package] string values (name = "…" lines; enough for this file).
function cargoPackage() {
  const text = fs.readFileSync(path.join(ROOT, "Cargo.toml"), "utf8");
  const table = /^\[package\]\s*$([\s\S]*?)(?=^\[)/m.exec(text);
  if (!table) die("Cargo.toml has no [package] table");
  const out = {};
  for (const m of table[1].matchAll(/^([A-Za-z_-]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$/gm)) out[m[1]] = JSON.parse(`"${m[2]}"`);
  return out;
}

// Relative references of one JS file: static / dynamic imports and re-exports ("./x", "../x")
// and new URL("x", import.meta.url) (the wasm-bindgen glue writes 'name_bg.wasm' without "./").
function references(file) {
  const code = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const refs = [];
  for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)(["'])([^"']+)\1/g)) {
    if (!/^\.\.?\//.test(m[2])) die(`${path.relative(ROOT, file)} imports "${m[2]}": the package has no dependencies, only relative imports are packed`);
    refs.push(m[2]);
  }
  for (const m of code.matchAll(/\bnew\s+URL\s*\(\s*(["'`])([^"'`$]+)\1\s*,\s*import\.meta\.url\s*\)/g)) {
    if (!/^[a-z][a-z0-9+.-]*:|^\//i.test(m[2])) refs.push(m[2]);
  }
  return refs;
}

function packedFiles() {
  const seen = new Set();
  const todo = [ENTRY];
  while (todo.length) {
    const rel = todo.pop();
    if (seen.has(rel)) continue;
    const file = path.join(DIST, rel);
    if (!fs.existsSync(file)) die(`${rel} (referenced from the module's files) is not in ${path.relative(ROOT, DIST) || "."}/: build it first (bash scripts/build-web.sh)`);
    seen.add(rel);
    if (/\.m?js$/.test(rel)) {
      for (const r of references(file)) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), r));
        if (target.startsWith("../")) die(`${rel} refers to ${r}, outside the package`);
        todo.push(target);
      }
    }
  }
  if (!fs.existsSync(path.join(DIST, TYPES))) die(`${TYPES} is not in ${DIST}`);
  seen.add(TYPES);
  for (const need of ["sd-webgpu-worker.js"]) if (!seen.has(need)) die(`${need} was not found by following ${ENTRY}'s references`);
  if (![...seen].some((f) => f.endsWith(".wasm"))) die("no .wasm file was found by following the worker's references");
  return [...seen].sort();
}

// The README's "## npm package" section (to the next "## " heading), as the package's README.
function readmeSection() {
  const text = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
  const m = /^## npm package\b[^\n]*\n([\s\S]*?)(?=^## |(?![\s\S]))/m.exec(text);
  if (!m) die('README.md has no "## npm package" section');
  return `# sd-webgpu\n\nStable Diffusion in the browser on the user's GPU through WebGPU: an ES module with its own\nWeb Worker and WebAssembly module. The project's README has the whole API (\`sd-webgpu.d.ts\`\ndescribes every option).\n\n${m[1].trim()}\n`;
}

const cargo = cargoPackage();
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "npm/package.template.json"), "utf8"));
if (cargo.name !== pkg.name) die(`Cargo.toml's package is "${cargo.name}", the template's "${pkg.name}"`);
for (const k of ["version", "description", "license"]) {
  if (!cargo[k]) die(`Cargo.toml's [package] has no ${k}`);
  pkg[k] = cargo[k];
}
for (const k of ["repository", "homepage"]) {
  if (cargo[k]) pkg[k] = k === "repository" ? { type: "git", url: `git+${cargo[k].replace(/^git\+/, "")}` } : cargo[k];
  else {
    delete pkg[k];
    console.error(`npm/make.mjs: warning: Cargo.toml's [package] has no ${k}: package.json has none`);
  }
}
const files = packedFiles();
pkg.files = [...files, "LICENSE-MIT", "LICENSE-APACHE"];

fs.rmSync(OUT, { recursive: true, force: true });
for (const rel of files) {
  fs.mkdirSync(path.dirname(path.join(OUT, rel)), { recursive: true });
  fs.copyFileSync(path.join(DIST, rel), path.join(OUT, rel));
}
fs.writeFileSync(path.join(OUT, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
fs.writeFileSync(path.join(OUT, "README.md"), readmeSection());
// The licence texts (named in `files`: npm adds only LICENSE / LICENCE by itself).
for (const lic of ["LICENSE-MIT", "LICENSE-APACHE"]) {
  if (!fs.existsSync(path.join(ROOT, lic))) die(`${lic} is missing from the repository root`);
  fs.copyFileSync(path.join(ROOT, lic), path.join(OUT, lic));
}
let bytes = 0;
for (const rel of files) bytes += fs.statSync(path.join(OUT, rel)).size;
console.log(`npm package ${pkg.name}@${pkg.version} in ${path.relative(ROOT, OUT)}/: ${files.length} files + package.json + README.md + LICENSE-MIT + LICENSE-APACHE, ${(bytes / 2 ** 20).toFixed(2)} MiB: ${files.join(" ")}`);
