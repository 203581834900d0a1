// Bundles the map's library (entry.js: cytoscape and the fCoSE layout) from node_modules, as `npm ci`
// installed it from package-lock.json, into ../assets/vendor/cytoscape.min.js, and writes the license
// of every package the bundle holds beside it (LICENSES.txt), read from that package's own files.
import { build } from "esbuild";
import { readFileSync, writeFileSync, readdirSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "assets", "vendor");
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: [join(here, "entry.js")], bundle: true, minify: true, format: "iife", target: "es2020",
  legalComments: "none", metafile: true, outfile: join(out, "cytoscape.min.js"), logLevel: "warning",
});

const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) packages.add(m[1]);
}
let text = "Third-party code in cytoscape.min.js, bundled by policygen/ui/web (make ui-assets).\n";
for (const name of [...packages].sort()) {
  const dir = join(here, "node_modules", name);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  if (!file) throw new Error(`${name}: no license file in its package`);
  text += `\n==== ${name} ${pkg.version} (${pkg.license}) ====\n\n` + readFileSync(join(dir, file), "utf8").trim() + "\n";
}
writeFileSync(join(out, "LICENSES.txt"), text);
console.log(`ui-assets: ${Object.keys(result.metafile.outputs).join(", ")} with ${[...packages].sort().join(", ")}`);
