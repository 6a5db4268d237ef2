import { existsSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildIrisModel } from '../src/models/builders/iris.js';

// Walk up rather than hardcode '..': this runs both as scripts/*.ts and as dist/scripts/*.js.
function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

function main(argv: string[]): void {
  const root = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
  const out = join(root, 'models', 'iris', '1', 'model.onnx');
  const shown = relative(root, out);
  if (argv.includes('--if-missing') && existsSync(out)) {
    console.log(`iris: ${shown} exists, skipping`);
    return;
  }
  const { trainAccuracy, testAccuracy, bytes } = buildIrisModel(out);
  console.log(
    `iris: test accuracy ${testAccuracy.toFixed(3)} (train ${trainAccuracy.toFixed(3)}), wrote ${shown} (${bytes} bytes)`,
  );
}

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error(`buildModels: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
