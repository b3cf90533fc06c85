// Starts test/support/resilience-server.ts as real child processes and counts handler runs
// in a per-test table of the same Postgres. Every child is killed by stopAll() (afterAll).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transform } from '@swc/core';
import pg from 'pg';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ENTRY = 'test/support/resilience-server.ts';

const compiled = new Map<string, Promise<string>>();

/**
 * Compiles the child's entry and every relative import it reaches (src/, migrations/) to
 * plain ESM under node_modules/.cache, once per test worker. Loading the TypeScript through
 * `--import @swc-node/register/esm-register` costs each child several seconds of startup
 * (tens of seconds on a loaded 2-CPU machine); compiled, a child starts in about the time
 * Nest and TypeORM take to import. Same SWC settings as .swcrc (decorator metadata on).
 */
export function compiledEntry(entry = ENTRY): Promise<string> {
  let done = compiled.get(entry);
  if (done) return done;
  done = (async () => {
    const cache = join(ROOT, 'node_modules', '.cache', 'nest-idempotency-resilience');
    const out = join(cache, `tmp-${randomUUID()}`);
    mkdirSync(out, { recursive: true });
    const sources = new Map<string, string>();
    // node_modules is a package boundary: declare ESM again for the compiled files.
    writeFileSync(join(out, 'package.json'), '{ "type": "module" }\n');
    const seen = new Set<string>();
    const visit = async (file: string): Promise<void> => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(file, 'utf8');
      const { code } = await transform(source, {
        filename: file,
        swcrc: false,
        sourceMaps: 'inline',
        jsc: {
          target: 'es2022',
          parser: { syntax: 'typescript', decorators: true },
          transform: { legacyDecorator: true, decoratorMetadata: true },
          keepClassNames: true,
        },
        module: { type: 'es6' },
      });
      const target = join(out, relative(ROOT, file)).replace(/\.ts$/, '.js');
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, code);
      sources.set(file, source);
      // Static imports and dynamic import('./...') alike (the lazily loaded contexts).
      const imports = [...code.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)\.js['"]/g)];
      await Promise.all(imports.map(([, spec]) => visit(resolve(dirname(file), `${spec}.ts`))));
    };
    await visit(join(ROOT, entry));
    // One folder per version of the sources, shared by workers and runs; a worker that
    // loses the race to create it just uses the winner's identical copy.
    const hash = createHash('sha256');
    for (const file of [...sources.keys()].sort()) hash.update(`${file}\0${sources.get(file)}\0`);
    const final = join(cache, hash.digest('hex').slice(0, 16));
    try {
      renameSync(out, final);
    } catch {
      rmSync(out, { recursive: true, force: true });
    }
    return join(final, entry.replace(/\.ts$/, '.js'));
  })();
  compiled.set(entry, done);
  return done;
}

export interface AppProcess {
  url: string;
  pid: number;
  adapter: 'express' | 'fastify';
  /** Milliseconds from spawn to READY. */
  startupMs: number;
  /** Everything the child printed (stdout and stderr), for log assertions. */
  output(): string;
  /** SIGKILL, no shutdown hooks; resolves once the process is gone. */
  kill9(): Promise<void>;
  /** SIGTERM (graceful), SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const children = new Set<ChildProcess>();

/**
 * How long a child may take to print READY (the default of startAppProcess). Importing Nest
 * and TypeORM takes seconds, and tens of seconds when three children start at once on a
 * loaded 2-CPU machine (45 s was exceeded there): no test measures it, so it is generous.
 * Hooks that start children allow this plus their own work.
 */
export const CHILD_START_MS = 120_000;

export interface StartOptions {
  idemTable: string;
  runsTable: string;
  /**
   * Another child entry than the resilience server (a path from the repository root; it
   * must print `READY <port>` too); its settings come from `env`.
   */
  entry?: string;
  /** More environment for the child. */
  env?: Record<string, string>;
  adapter?: 'express' | 'fastify';
  retryAfterSeconds?: number;
  /** waitInFlightMs of the /wait route. */
  waitInFlightMs?: number;
  startTimeoutMs?: number;
}

export async function startAppProcess(options: StartOptions): Promise<AppProcess> {
  const adapter = options.adapter ?? 'express';
  const entry = await compiledEntry(options.entry);
  const child = spawn(process.execPath, ['--enable-source-maps', entry], {
    cwd: ROOT,
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      DATABASE_URL: process.env.DATABASE_URL,
      IDEM_TABLE: options.idemTable,
      RUNS_TABLE: options.runsTable,
      ADAPTER: adapter,
      RETRY_AFTER_SECONDS: String(options.retryAfterSeconds ?? 30),
      WAIT_IN_FLIGHT_MS: String(options.waitInFlightMs ?? 0),
      ...options.env,
    },
    // stdin stays open for the child's lifetime: the child exits when it closes.
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => {
      children.delete(child);
      resolve();
    });
  });
  let output = '';
  let readyMs = 0;
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const kill = async (signal: NodeJS.Signals, graceMs: number) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((done, reject) => {
    const timeout = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not start in time:\n${output}`));
    }, options.startTimeoutMs ?? CHILD_START_MS);
    const early = (code: number | null, signal: string | null) => {
      clearTimeout(timeout);
      reject(new Error(`child exited before READY (${code ?? signal}):\n${output}`));
    };
    child.once('exit', early);
    const started = Date.now();
    child.stdout!.on('data', (chunk: Buffer) => {
      const before = output;
      output += chunk.toString();
      const match = /^READY (\d+)$/m.exec(output.slice(Math.max(0, before.length - 20)));
      if (!match) return;
      clearTimeout(timeout);
      child.off('exit', early);
      readyMs = Date.now() - started;
      done({
        url: `http://127.0.0.1:${match[1]}`,
        pid: child.pid!,
        adapter,
        startupMs: readyMs,
        output: () => output,
        kill9: () => kill('SIGKILL', 0),
        stop: (graceMs = 5_000) => kill('SIGTERM', graceMs),
      });
    });
  });
}

/** Kills every child still running (for afterAll; safe to call twice). */
export async function stopAll(): Promise<void> {
  await Promise.all(
    [...children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
  children.clear();
}

/** SQL on the test database through one short-lived pool. */
export class Db {
  readonly pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });

  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]) {
    return this.pool.query<R>(text, values);
  }

  async createRunsTable(name: string): Promise<void> {
    await this.query(
      `CREATE TABLE ${name} (key text NOT NULL, pid int NOT NULL, route text NOT NULL,
                             at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    );
  }

  /** Handler runs per key. */
  async runsByKey(runsTable: string): Promise<Map<string, number>> {
    const { rows } = await this.query<{ key: string; n: string }>(
      `SELECT key, count(*) AS n FROM ${runsTable} GROUP BY key`,
    );
    return new Map(rows.map((row) => [row.key, Number(row.n)]));
  }

  async runs(runsTable: string, key: string): Promise<Array<{ pid: number; at: Date }>> {
    const { rows } = await this.query(
      `SELECT pid, at FROM ${runsTable} WHERE key = $1 ORDER BY at`,
      [key],
    );
    return rows;
  }

  /** Drops plain tables (runs tables); idempotency tables go through dropTable(). */
  async dropTables(...names: string[]): Promise<void> {
    for (const name of names) await this.query(`DROP TABLE IF EXISTS "${name}"`);
  }

  end(): Promise<void> {
    return this.pool.end();
  }
}

/** Polls `check` every 25 ms until it returns true, or throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
