// `npm run build` (and prepack): the ESM build in dist/esm and the CommonJS build in dist/cjs,
// from the same sources. dist/cjs/package.json marks its .js files as CommonJS for Node,
// bundlers and TypeScript; README.md ("ESM and CommonJS") says why both builds ship.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync('dist', { recursive: true, force: true });
for (const project of ['tsconfig.build.json', 'tsconfig.build-cjs.json']) {
  execFileSync(process.execPath, [tsc, '-p', project], { stdio: 'inherit' });
}
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n');
