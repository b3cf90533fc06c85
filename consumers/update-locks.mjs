// Refreshes the consumers' lock files after their package.json or this package's own
// dependencies change: `node consumers/update-locks.mjs` (then commit them). The tarball
// entry keeps no integrity hash, since the tarball is rebuilt on every run of the matrix.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const npm = (cwd, ...args) => execFileSync('npm', args, { cwd, encoding: 'utf8' });

const [{ filename }] = JSON.parse(
  npm(join(HERE, '..'), 'pack', '--json', '--pack-destination', HERE),
);
renameSync(join(HERE, filename), join(HERE, 'nest-idempotency-pg.tgz'));
for (const dir of [
  'nest12-esm-express',
  'nest11-cjs-express',
  'nest11-cjs-fastify',
  'client-only',
  'node-runtimes',
]) {
  const cwd = join(HERE, dir);
  const lockPath = join(cwd, 'package-lock.json');
  const readLock = () => JSON.parse(readFileSync(lockPath, 'utf8'));
  const writeLock = (lock) => writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
  // Without a hash, npm would keep the tarball's old metadata (its dependencies, its peers):
  // drop the entry so that npm reads the new tarball.
  if (existsSync(lockPath)) {
    const lock = readLock();
    delete lock.packages['node_modules/nest-idempotency-pg'];
    writeLock(lock);
  }
  npm(cwd, 'install', '--package-lock-only', '--no-audit', '--no-fund');
  const lock = readLock();
  const entry = lock.packages['node_modules/nest-idempotency-pg'];
  if (entry) delete entry.integrity;
  writeLock(lock);
  console.log(`${dir}: package-lock.json updated`);
}
