// `npm run bench [NAME...]`: run the benchmarks in bench/ (each exports a default async run()
// returning compare() results) and print a summary table of ratios ours/reference.
import { readdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join, dirname } from 'node:path';

const dir = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.mjs') && !['lib.mjs', 'run.mjs', 'nspawn-common.mjs'].includes(f))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.startsWith(w)))
  .sort();
const results = [];
for (const f of files) {
  console.log(`\n## ${f}`);
  const mod = await import(pathToFileURL(join(dir, f)).href);
  if (typeof mod.default !== 'function') continue;
  try {
    results.push(...((await mod.default()) ?? []));
  } catch (err) {
    console.log(`${f}: failed: ${err.message}`);
    process.exitCode = 1;
  }
}
console.log('\n| benchmark | ours | reference | ratio |\n|---|---|---|---|');
for (const r of results) console.log(`| ${r.name} | ${r.ours.toFixed(1)} ${r.unit} | ${r.reference.toFixed(1)} ${r.unit} | ${r.ratio.toFixed(2)} |`);
