#!/bin/sh
":" //; exec node --initial-old-space-size=256 "$0" "$@"
// Thin launcher for the compiled CLI (`npm ci` builds dist/ through `prepare`).
// Run as a command (an npm bin link, `npx actorserve`), sh reads the line above and execs node, in the
// same process, with the old-generation floor a node needs (OLD_SPACE_FLOOR_FLAG, src/heapGrowth.ts),
// which V8 reads only at start (`env -S` would do it too, but BusyBox's env, on Alpine, has no -S).
// Node skips the #! line and reads the line above as a string and a comment.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('actorserve: dist/ is missing; run `npm ci` (or `npm run build`) first\n');
  process.exit(1);
}
const { main, USAGE } = await import(cli);
try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  const code = e && typeof e === 'object' && 'code' in e ? e.code : undefined;
  const isUsage = e instanceof RangeError || e instanceof TypeError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'));
  process.stderr.write(`actorserve: ${e instanceof Error ? e.message : String(e)}\n`);
  if (isUsage) process.stderr.write(`\n${USAGE}`);
  process.exit(isUsage ? 2 : 1);
}
