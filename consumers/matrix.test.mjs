// The consumer matrix: packs this repository as `npm publish` would, installs the tarball into
// each app under consumers/ with `npm ci` (each has its own lock file), builds the apps, then
// boots every server app on real Postgres under Node 20, 22 and 24 and checks the contract's
// main outcomes from the outside: 201, the 409 replay, the 422 and the 423 as problem+json,
// with no warning in the app's output. Run: `npm run test:consumers` (DATABASE_URL, default
// postgres://postgres@127.0.0.1:5432/test).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HERE = fileURLToPath(new URL('.', import.meta.url));
const TARBALL = join(HERE, 'nest-idempotency-pg.tgz');
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** The server apps: each boots, listens on a free port and prints `READY <port>`. */
const SERVERS = [
  { dir: 'nest12-esm-express', format: 'esm', nest: '12', typeorm: '1' },
  { dir: 'nest11-cjs-express', format: 'cjs', nest: '11', typeorm: '0.3' },
  { dir: 'nest11-cjs-fastify', format: 'cjs', nest: '11', typeorm: '0.3' },
];
const CLIENT = 'client-only';
const CONSUMERS = [...SERVERS.map((server) => server.dir), CLIENT];

/**
 * Node binaries to run the apps with: this one, plus Node 22 and 24 from the registry packages
 * that ship the official Linux x64 build (versions and hashes pinned by node-runtimes/'s lock).
 */
const RUNTIME_DIR = join(HERE, 'node-runtimes');
const PINNED = JSON.parse(readFileSync(join(RUNTIME_DIR, 'package-lock.json'), 'utf8')).packages;
const LINUX_X64 = process.platform === 'linux' && process.arch === 'x64';
const RUNTIMES = [
  { name: `node ${process.version}`, exec: process.execPath },
  ...['node22', 'node24'].map((name) => ({
    name: `${name} (${PINNED[`node_modules/${name}`].version})`,
    exec: join(RUNTIME_DIR, 'bin', name),
    pinned: PINNED[`node_modules/${name}`],
    skip: LINUX_X64 ? false : 'the pinned Node builds are for Linux x64',
  })),
];

const npm = (cwd, ...args) =>
  run('npm', args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NODE_OPTIONS: '' } });

/** Runs `tasks` at most `limit` at a time (two cores: npm ci is mostly waiting on I/O). */
async function inPool(limit, tasks) {
  const queue = [...tasks];
  const worker = async () => {
    while (queue.length) await queue.shift()();
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

/**
 * Fetches one pinned Node build with npm, checks it against the lock file's hash and keeps
 * only its binary (npm ci of the whole package unpacks thousands of headers: 40 s, not 3).
 */
async function fetchRuntime({ exec, pinned }) {
  const spec = `${pinned.name}@${pinned.version}`;
  const { stdout } = await npm(
    RUNTIME_DIR,
    'pack',
    spec,
    '--json',
    '--pack-destination',
    RUNTIME_DIR,
  );
  const [{ filename, integrity }] = JSON.parse(stdout);
  assert.equal(integrity, pinned.integrity, `${spec}: not the build the lock file pinned`);
  mkdirSync(dirname(exec), { recursive: true });
  const tarball = join(RUNTIME_DIR, filename);
  await run('tar', ['-xzf', tarball, '-C', RUNTIME_DIR, 'package/bin/node']);
  renameSync(join(RUNTIME_DIR, 'package', 'bin', 'node'), exec);
  rmSync(join(RUNTIME_DIR, 'package'), { recursive: true, force: true });
  rmSync(tarball);
}

before(
  async () => {
    const { stdout } = await npm(ROOT, 'pack', '--json', '--pack-destination', HERE);
    renameSync(join(HERE, JSON.parse(stdout)[0].filename), TARBALL);
    await inPool(2, [
      ...CONSUMERS.map((dir) => async () => {
        const cwd = join(HERE, dir);
        await npm(cwd, 'ci', '--no-audit', '--no-fund', '--loglevel=error');
        await npm(cwd, 'run', 'build');
      }),
      ...RUNTIMES.filter((runtime) => runtime.pinned && !runtime.skip).map(
        (runtime) => () => fetchRuntime(runtime),
      ),
    ]);
  },
  { timeout: 900_000 },
);

const db = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
after(() => db.end());

/** Every copy of a package installed under `dir`/node_modules, however deep. */
function installedCopies(dir, name) {
  const found = [];
  const visit = (modules) => {
    if (!existsSync(modules)) return;
    if (existsSync(join(modules, name, 'package.json'))) found.push(join(modules, name));
    for (const entry of readdirSync(modules)) {
      const paths = entry.startsWith('@')
        ? readdirSync(join(modules, entry)).map((sub) => join(modules, entry, sub))
        : [join(modules, entry)];
      for (const path of paths) visit(join(path, 'node_modules'));
    }
  };
  visit(join(dir, 'node_modules'));
  return found;
}

/** Starts `dist/main.js` of a consumer; resolves once it printed `READY <port>`. */
function startApp(cwd, exec, env) {
  const child = spawn(exec, ['dist/main.js'], {
    cwd,
    env: { ...process.env, ...env, DATABASE_URL, NO_COLOR: '1', NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no READY within 30 s:\n${output}`));
    }, 30_000);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`exited before READY (${code ?? signal}):\n${output}`));
    });
    child.stdout.on('data', () => {
      const match = /^READY (\d+)$/m.exec(output);
      if (!match) return;
      clearTimeout(timer);
      resolve({
        url: `http://127.0.0.1:${match[1]}`,
        output: () => output,
        async stop() {
          child.kill('SIGTERM');
          const timeout = setTimeout(() => child.kill('SIGKILL'), 10_000);
          const result = await exited;
          clearTimeout(timeout);
          return result;
        },
      });
    });
  });
}

async function post(url, path, key, body) {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-idempotency-key': key },
    body: JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

function assertProblem(response, status, code) {
  assert.equal(response.status, status, response.text);
  assert.match(response.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(JSON.parse(response.text).code, code);
}

function assertReplayOf(replay, first) {
  assert.equal(replay.status, 409, replay.text);
  assert.equal(replay.text, first.text);
  assert.equal(replay.headers.get('content-type'), first.headers.get('content-type'));
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.headers.get('x-idempotency-original-status'), String(first.status));
}

async function waitForInProgress(table, key) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { rowCount } = await db.query(
      `SELECT 1 FROM "${table}" WHERE idempotency_key = $1 AND state = 'in_progress'`,
      [key],
    );
    if (rowCount) return;
    if (Date.now() > deadline) throw new Error(`no in-flight record for ${key}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function dropTables(table) {
  await db.query(`DROP TABLE IF EXISTS "${table}", "${table}_migrations"`);
}

for (const server of SERVERS) {
  const cwd = join(HERE, server.dir);
  describe(`${server.dir} (Nest ${server.nest}, ${server.format.toUpperCase()}, TypeORM ${server.typeorm})`, () => {
    it('has exactly one copy of @nestjs/common and @nestjs/core installed', () => {
      assert.equal(installedCopies(cwd, '@nestjs/common').length, 1);
      assert.equal(installedCopies(cwd, '@nestjs/core').length, 1);
    });

    for (const runtime of RUNTIMES) {
      const title = `under ${runtime.name}: 201, 409 replay, 422 and 423 problem+json, no warning`;
      it(title, { skip: runtime.skip }, async (t) => {
        const table = `consumer_${server.dir.replaceAll('-', '_')}_${randomUUID().slice(0, 8)}`;
        await dropTables(table);
        const app = await startApp(cwd, runtime.exec, { IDEM_TABLE: table, REPORT_MODULES: '1' });
        try {
          const k1 = randomUUID();
          const first = await post(app.url, '/bookings', k1, { product: 'travel' });
          await t.test('a first request runs the handler: 201', () => {
            assert.equal(first.status, 201, first.text);
            assert.deepEqual(JSON.parse(first.text), { booking: 1, product: 'travel' });
            assert.equal(first.headers.get('idempotent-replayed'), null);
          });
          const replay = await post(app.url, '/bookings', k1, { product: 'travel' });
          await t.test('the same request again: 409 with the stored body, replayed', () =>
            assertReplayOf(replay, first),
          );
          const reused = await post(app.url, '/bookings', k1, { product: 'other' });
          await t.test('the same key with another body: 422 problem+json', () =>
            assertProblem(reused, 422, 'idempotency_key_reused'),
          );
          const k2 = randomUUID();
          const slow = post(app.url, '/bookings', k2, { product: 'slow', delayMs: 1_500 });
          await waitForInProgress(table, k2);
          const duplicate = await post(app.url, '/bookings', k2, {
            product: 'slow',
            delayMs: 1_500,
          });
          const slowDone = await slow;
          await t.test('a duplicate while the first is in flight: 423 problem+json', () => {
            assertProblem(duplicate, 423, 'idempotency_request_in_flight');
            assert.match(duplicate.headers.get('retry-after') ?? '', /^\d+$/);
            assert.equal(slowDone.status, 201, slowDone.text);
          });
          const k3 = randomUUID();
          const transfer = await post(app.url, '/transfers', k3, { product: 'tx' });
          const transferReplay = await post(app.url, '/transfers', k3, { product: 'tx' });
          await t.test('transactional: true commits the response with the handler', () => {
            assert.equal(transfer.status, 201, transfer.text);
            assert.deepEqual(JSON.parse(transfer.text), { echoed: 'tx', inTransaction: true });
            assertReplayOf(transferReplay, transfer);
          });
          const k4 = randomUUID();
          const passthrough = await post(app.url, '/passthrough', k4, {});
          const passthroughReplay = await post(app.url, '/passthrough', k4, {});
          const writesItself = await post(app.url, '/writes-itself', randomUUID(), {});
          await t.test('@Res({ passthrough: true }) is stored; @Res() is refused with 500', () => {
            assert.equal(passthrough.status, 201, passthrough.text);
            assert.equal(passthrough.headers.get('location'), '/passthrough/1');
            assertReplayOf(passthroughReplay, passthrough);
            assert.equal(passthroughReplay.headers.get('location'), '/passthrough/1');
            assertProblem(writesItself, 500, 'idempotency_unsupported_response');
          });
          const runs = await fetch(`${app.url}/runs`).then((response) => response.json());
          await t.test('each handler ran once per key', () => {
            assert.deepEqual(runs, { bookings: 2, transfers: 1, passthrough: 1, writesItself: 0 });
          });
        } finally {
          const { code, signal } = await app.stop();
          await dropTables(table);
          const log = app.output().replace(/^MODULES .*$/m, 'MODULES [...]');
          await t.test('stops on SIGTERM after its shutdown hooks and printed no warning', () => {
            // Nest's shutdown hooks re-raise the signal once they have run.
            assert.ok(code === 0 || signal === 'SIGTERM', `exit ${code ?? signal}\n${log}`);
            assert.doesNotMatch(log, /WARN|Warning|doesn't match/, log);
          });
          if (server.format === 'cjs') {
            await t.test('loaded one @nestjs/common and only the CommonJS build', () => {
              const match = /^MODULES (.*)$/m.exec(app.output());
              assert.ok(match, 'the app reports its loaded modules');
              const loaded = JSON.parse(match[1]);
              const commons = loaded.filter((path) => path.endsWith('/@nestjs/common/index.js'));
              assert.equal(commons.length, 1, commons.join('\n'));
              const ours = loaded.filter((path) => path.includes('/nest-idempotency-pg/'));
              assert.ok(ours.length > 0);
              assert.deepEqual(
                ours.filter((path) => !path.includes('/nest-idempotency-pg/dist/cjs/')),
                [],
              );
            });
          }
        }
      });
    }
  });
}

describe('nest11-cjs-express: jest + ts-jest, as `nest new` sets them up', () => {
  it('runs its unit tests of an @Idempotent() controller (nest-idempotency-pg/testing)', async () => {
    const { stdout, stderr } = await npm(join(HERE, 'nest11-cjs-express'), 'test', '--silent');
    assert.match(`${stdout}${stderr}`, /Tests:\s+\d+ passed, \d+ total/);
  });
});

describe(`${CLIENT} (TypeScript, nest-idempotency-pg/client only)`, () => {
  const cwd = join(HERE, CLIENT);

  it('installs no NestJS, TypeORM, pg, rxjs or reflect-metadata', async () => {
    const { stdout } = await npm(cwd, 'ls', '--all', '--parseable', '--omit=dev');
    const names = stdout
      .trim()
      .split('\n')
      .slice(1)
      .map((path) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
    assert.deepEqual(names, ['nest-idempotency-pg']);
  });

  for (const runtime of RUNTIMES) {
    it(
      `under ${runtime.name}: retries a 423, treats a 409 as a replay`,
      { skip: runtime.skip },
      async () => {
        const { stdout } = await run(runtime.exec, ['dist/main.js'], { cwd });
        assert.match(stdout, /^CLIENT OK/m);
      },
    );
  }
});
