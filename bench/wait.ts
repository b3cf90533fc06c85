// The waitInFlightMs section of the benchmark, standalone: `node --import
// @swc-node/register/esm-register bench/wait.ts` prints its markdown; run.ts can call
// runWaitBench(). It measures
// - new keys, no duplicates: throughput with the wait on against the wait off (two routes of
//   one app), and against a table without the has_waiters column (the statements as they
//   were before the wait existed; a second app in the same process), in interleaved rounds;
//   and that no completion sent a NOTIFY;
// - a duplicate storm with the wait on, the waiters spread over two processes: handler
//   runs (must equal distinct keys), statuses, the duplicates' latency and how long after
//   the first request's answer each duplicate got its own (the wake-up latency).
// Standalone knobs: BENCH_SECONDS (5), BENCH_ROUNDS (3), DATABASE_URL; as a section of
// `npm run bench` (waitSection) it takes the harness's rounds, seconds and database.
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort, startDatabase, type RunningDatabase } from '../scripts/embedded-postgres.js';
import { idempotencyRecordsDdl, PostgresIdempotencyStore } from '../src/index.js';
import type { BenchSection } from './section.js';

const CONNECTIONS = 10;
const WAIT_MS = 5_000;
const STORM = {
  keys: Number(process.env.BENCH_STORM_KEYS ?? 20),
  perKey: Number(process.env.BENCH_STORM_PER_KEY ?? 25),
  handlerMs: 200,
  rounds: 3,
};
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MACHINE_POSTGRES = 'postgres://postgres@127.0.0.1:5432/test';

export interface WaitBenchOptions {
  /** Postgres to run on; by default DATABASE_URL, else the machine's, else an embedded one. */
  database?: { url: string; source: string };
  /** Interleaved rounds of the new-key runs. @default BENCH_ROUNDS or 3 */
  rounds?: number;
  /** Seconds per new-key run. @default BENCH_SECONDS or 5 */
  seconds?: number;
  /** Seconds of warm-up per variant. @default 2 */
  warmupSeconds?: number;
  log?: (message: string) => void;
}

/** Settings of the run in progress. */
let settings: Required<Omit<WaitBenchOptions, 'database'>>;
const log = (message: string) => settings.log(message);

export const WAIT_BENCH_TITLE = 'Waiting for a request in flight (`waitInFlightMs`)';

interface App {
  label: string;
  url: string;
  /** The second app of the process (OLD_TABLE_NAME), if any. */
  url2?: string;
  child: ChildProcess;
}

/** A route of an app: where requests go and how its handler runs are counted. */
interface Target {
  app: App;
  url: string;
  route: 'orders' | 'orders-wait';
}

interface Variant {
  id: string;
  label: string;
  target: Target;
}

/** Runs the measurements; `markdown` starts below the section's heading (WAIT_BENCH_TITLE). */
export async function runWaitBench(
  options: WaitBenchOptions = {},
): Promise<{ markdown: string; data: unknown }> {
  settings = {
    rounds: options.rounds ?? Number(process.env.BENCH_ROUNDS ?? 3),
    seconds: options.seconds ?? Number(process.env.BENCH_SECONDS ?? 5),
    warmupSeconds: options.warmupSeconds ?? 2,
    log:
      options.log ??
      ((message) =>
        console.log(`[bench wait ${new Date().toISOString().slice(11, 19)}] ${message}`)),
  };
  const database = options.database
    ? { ...options.database, stop: async () => undefined }
    : await resolveDatabase();
  const suffix = randomUUID().slice(0, 8);
  const tables = { old: `bench_wait_old_${suffix}`, current: `bench_wait_${suffix}` };
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  const apps: App[] = [];
  try {
    // The "before" table: as the first migration alone creates it, no has_waiters column.
    for (const statement of idempotencyRecordsDdl(tables.old).up) await admin.query(statement);
    const [first, second] = await Promise.all([
      startApp('first', {
        DATABASE_URL: database.url,
        TABLE_NAME: tables.current,
        OLD_TABLE_NAME: tables.old,
        WAIT_MS: String(WAIT_MS),
      }),
      startApp('second', {
        DATABASE_URL: database.url,
        TABLE_NAME: tables.current,
        WAIT_MS: String(WAIT_MS),
      }),
    ]);
    apps.push(first, second);
    log('apps are up');
    const waitOn = (app: App): Target => ({ app, url: app.url, route: 'orders-wait' });
    const waitOff: Target = { app: first, url: first.url, route: 'orders' };
    const variants: Variant[] = [
      {
        id: 'before',
        label: 'table without `has_waiters` (statements as before the wait)',
        target: { app: first, url: first.url2!, route: 'orders' },
      },
      { id: 'off', label: '`waitInFlightMs: 0`', target: waitOff },
      { id: 'on', label: `\`waitInFlightMs: ${WAIT_MS}\``, target: waitOn(first) },
    ];
    const notifications = await countNotifications(database.url, [tables.old, tables.current]);
    const throughput =
      process.env.BENCH_WAIT_ONLY === 'storm' ? new Map() : await newKeyThroughput(variants);
    const notified = await notifications.stop();
    log('storm: warm-up round (not reported)');
    await duplicateStorm([waitOn(first), waitOn(second)], 1);
    const storm = await duplicateStorm([waitOn(first), waitOn(second)], STORM.rounds);
    // The same storm with the wait off, for scale: every duplicate answers 423 at once.
    const stormOff = await duplicateStorm([waitOff], 1);
    return {
      markdown: render(throughput, notified, storm, stormOff[0], database.source),
      data: {
        newKeys: [...throughput.entries()].map(([variant, runs]) => ({ id: variant.id, runs })),
        notified,
        storm,
        stormOff: stormOff[0],
      },
    };
  } finally {
    await Promise.all(apps.map(stopApp));
    for (const table of Object.values(tables)) await admin.query(`DROP TABLE IF EXISTS "${table}"`);
    await admin.end();
    await database.stop();
  }
}

// ---------------------------------------------------------------- new keys, no duplicates

interface ThroughputRun {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

async function newKeyThroughput(variants: Variant[]): Promise<Map<Variant, ThroughputRun[]>> {
  for (const variant of variants) {
    log(`new keys: warm-up ${variant.label}`);
    await newKeys(variant, settings.warmupSeconds, 'warm');
  }
  const results = new Map<Variant, ThroughputRun[]>(variants.map((variant) => [variant, []]));
  for (let round = 1; round <= settings.rounds; round++) {
    // Interleaved, and in a rotated order each round, so drift in the machine's load
    // spreads over all variants instead of favouring whichever ran first.
    const order = variants.map((_, i) => variants[(i + round - 1) % variants.length]);
    for (const variant of order) {
      const run = await newKeys(variant, settings.seconds, `r${round}`);
      results.get(variant)!.push(run);
      log(
        `new keys #${round} ${variant.label}: ${run.rps.toFixed(0)} req/s, p50 ${run.p50} ms, p99 ${run.p99} ms, errors ${run.errors}`,
      );
    }
  }
  return results;
}

async function newKeys(variant: Variant, seconds: number, tag: string): Promise<ThroughputRun> {
  let n = 0;
  let unexpected = 0;
  const result = await autocannon({
    url: variant.target.url,
    connections: CONNECTIONS,
    pipelining: 1,
    duration: seconds,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        path: `/${variant.target.route}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sku: 'bench-sku' }),
        setupRequest: (req) => ({
          ...req,
          headers: { ...req.headers, 'x-idempotency-key': `new-${variant.id}-${tag}-${n++}` },
        }),
        onResponse: (status) => {
          if (status !== 201) unexpected++;
        },
      },
    ],
  });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts + unexpected,
  };
}

/** Counts NOTIFYs on the tables' channels while the new-key runs go. */
async function countNotifications(url: string, tables: string[]) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let count = 0;
  client.on('notification', () => count++);
  const unused = { query: () => Promise.reject(new Error('not used')) };
  for (const table of tables) {
    const channel = new PostgresIdempotencyStore(unused, table).notificationChannel;
    await client.query(`LISTEN "${channel}"`);
  }
  return {
    async stop(): Promise<number> {
      await new Promise((resolve) => setTimeout(resolve, 200));
      await client.end();
      return count;
    },
  };
}

// ---------------------------------------------------------------- duplicate storm

interface StormRound {
  requests: number;
  statuses: Record<number, number>;
  handlerRuns: number;
  distinctKeys: number;
  /** Latency of every duplicate (a request that did not run the handler), ms. */
  duplicateLatencies: number[];
  /** For each duplicate answered with the replay: its answer minus the first's answer, ms. */
  wakeLatencies: number[];
  /** The same, for the duplicates served by the other process than the first's. */
  crossProcessWakeLatencies: number[];
  elapsedMs: number;
}

async function duplicateStorm(targets: Target[], count: number): Promise<StormRound[]> {
  const rounds: StormRound[] = [];
  // A connection per request: reusing idle keep-alive sockets across rounds races the
  // server closing them.
  const agent = new Agent({ keepAlive: false, maxSockets: 1_000 });
  try {
    for (let round = 1; round <= count; round++) {
      const runsBefore = await Promise.all(targets.map(handlerRuns));
      const tag = randomUUID().slice(0, 8);
      const body = JSON.stringify({ sku: 'storm', delayMs: STORM.handlerMs });
      const started = Date.now();
      const answers = await Promise.all(
        Array.from({ length: STORM.keys * STORM.perKey }, (_, i) => {
          const key = `storm-${tag}-${i % STORM.keys}`;
          const target = targets[Math.floor(i / STORM.keys) % targets.length];
          const sent = performance.now();
          return post(agent, target, key, body).then((answer) => ({
            ...answer,
            key,
            app: target.app,
            latency: performance.now() - sent,
            at: performance.now(),
          }));
        }),
      );
      const elapsedMs = Date.now() - started;
      const runsAfter = await Promise.all(targets.map(handlerRuns));
      const statuses: Record<number, number> = {};
      for (const { status } of answers) statuses[status] = (statuses[status] ?? 0) + 1;
      const firsts = new Map(answers.filter((a) => a.status === 201).map((a) => [a.key, a]));
      const duplicates = answers.filter((a) => a.status !== 201);
      const replays = duplicates.filter((a) => a.status === 409 && firsts.has(a.key));
      const wake = (a: (typeof replays)[number]) => a.at - firsts.get(a.key)!.at;
      const result: StormRound = {
        requests: answers.length,
        statuses,
        handlerRuns: runsAfter.reduce((sum, n, i) => sum + n - runsBefore[i], 0),
        distinctKeys: new Set(answers.map((a) => a.key)).size,
        duplicateLatencies: duplicates.map((a) => a.latency),
        wakeLatencies: replays.map(wake),
        crossProcessWakeLatencies: replays
          .filter((a) => a.app !== firsts.get(a.key)!.app)
          .map(wake),
        elapsedMs,
      };
      rounds.push(result);
      log(
        `storm #${round}: ${JSON.stringify(statuses)}, handler runs ${result.handlerRuns} for ${result.distinctKeys} keys, duplicate p99 ${percentile(result.duplicateLatencies, 99).toFixed(0)} ms, wake p50 ${percentile(result.wakeLatencies, 50).toFixed(1)} ms / p99 ${percentile(result.wakeLatencies, 99).toFixed(1)} ms`,
      );
    }
  } finally {
    agent.destroy();
  }
  return rounds;
}

function post(
  agent: Agent,
  target: Target,
  key: string,
  body: string,
): Promise<{ status: number }> {
  const url = new URL(`/${target.route}`, target.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'x-idempotency-key': key,
        },
        timeout: 30_000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

async function handlerRuns(target: Target): Promise<number> {
  const response = await fetch(`${target.app.url}/__stats`);
  return ((await response.json()) as { runs: Record<string, number> }).runs[target.route] ?? 0;
}

// ---------------------------------------------------------------- report

function render(
  throughput: Map<Variant, ThroughputRun[]>,
  notified: number,
  storm: StormRound[],
  stormOff: StormRound,
  database: string,
): string {
  const median = (values: number[]) => percentile(values, 50);
  const rows = [...throughput.entries()].map(([variant, runs]) => ({
    variant,
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    all: runs.map((r) => r.rps.toFixed(0)).join(', '),
    errors: runs.reduce((sum, r) => sum + r.errors, 0),
  }));
  const base = rows.find((row) => row.variant.id === 'off')?.rps ?? NaN;
  const lines = [
    `Database: ${database}. ${CONNECTIONS} connections, ${settings.seconds} s per run, ${settings.rounds} interleaved rounds (order rotated each round), medians.`,
    '',
    '**New keys, no duplicates** (nobody waits: the cost of the wait being possible)',
    '',
    '| | req/s (median) | / wait off | p50 ms | p99 ms | runs (req/s) | errors |',
    '|---|---:|---:|---:|---:|---|---:|',
    ...rows.map(
      (row) =>
        `| ${row.variant.label} | ${row.rps.toFixed(0)} | ${(row.rps / base).toFixed(2)}x | ${row.p50} | ${row.p99} | ${row.all} | ${row.errors} |`,
    ),
    '',
    `NOTIFYs sent during those runs: **${notified}** (a completion notifies only when a duplicate waits for it).`,
    '',
    `**Duplicate storm, wait on** (${STORM.keys} keys x ${STORM.perKey} requests at once, spread over two processes on one table, after a warm-up round, handler ${STORM.handlerMs} ms, \`waitInFlightMs: ${WAIT_MS}\`)`,
    '',
    '| round | statuses | handler runs / distinct keys | duplicates p50 / p99 ms | wake after the first answered p50 / p99 ms | same, other process p50 / p99 ms | elapsed ms |',
    '|---:|---|---:|---:|---:|---:|---:|',
    ...storm.map(
      (round, i) =>
        `| ${i + 1} | ${Object.entries(round.statuses)
          .map(([status, count]) => `${count} x ${status}`)
          .join(
            ', ',
          )} | ${round.handlerRuns} / ${round.distinctKeys} | ${percentile(round.duplicateLatencies, 50).toFixed(0)} / ${percentile(round.duplicateLatencies, 99).toFixed(0)} | ${percentile(round.wakeLatencies, 50).toFixed(1)} / ${percentile(round.wakeLatencies, 99).toFixed(1)} | ${percentile(round.crossProcessWakeLatencies, 50).toFixed(1)} / ${percentile(round.crossProcessWakeLatencies, 99).toFixed(1)} | ${round.elapsedMs} |`,
    ),
    '',
    `For scale, the same storm on one process with the wait off (\`/orders\`): ${Object.entries(
      stormOff.statuses,
    )
      .map(([status, count]) => `${count} x ${status}`)
      .join(
        ', ',
      )}, handler runs ${stormOff.handlerRuns} / ${stormOff.distinctKeys} keys, the duplicates' (423s') p50 / p99 ${percentile(stormOff.duplicateLatencies, 50).toFixed(0)} / ${percentile(stormOff.duplicateLatencies, 99).toFixed(0)} ms.`,
    '',
    "A duplicate's latency includes the first request's handler time it waited for; \"wake\" is how long after the first request's answer reached the client the duplicate's answer did (negative: the duplicate's came first, since the first is answered only after its response is stored, as are its waiters).",
    '',
  ];
  return lines.join('\n');
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

// ---------------------------------------------------------------- processes and database

async function resolveDatabase(): Promise<RunningDatabase & { source: string }> {
  if (process.env.DATABASE_URL) {
    return { ...(await startDatabase()), source: 'DATABASE_URL' };
  }
  const client = new pg.Client({
    connectionString: MACHINE_POSTGRES,
    connectionTimeoutMillis: 2_000,
  });
  try {
    await client.connect();
    return { url: MACHINE_POSTGRES, stop: async () => undefined, source: 'machine Postgres' };
  } catch {
    return { ...(await startDatabase()), source: 'embedded Postgres' };
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function startApp(label: string, env: Record<string, string>): Promise<App> {
  const port = await freePort();
  const port2 = env.OLD_TABLE_NAME ? await freePort() : undefined;
  const child = spawn(
    process.execPath,
    ['--import', '@swc-node/register/esm-register', 'bench/wait-app.ts'],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        ...env,
        PORT: String(port),
        PORT2: String(port2 ?? ''),
        NODE_ENV: 'production',
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  );
  await new Promise<void>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`${label} did not start in 90 s`)), 90_000);
    child.once('exit', (code) => fail(new Error(`${label} exited with ${code} while starting`)));
    child.on('message', (message: { ready?: boolean }) => {
      if (message?.ready) {
        clearTimeout(timer);
        done();
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    label,
    url: `http://127.0.0.1:${port}`,
    url2: port2 ? `http://127.0.0.1:${port2}` : undefined,
    child,
  };
}

function stopApp(app: App): Promise<void> {
  return new Promise((done) => {
    if (app.child.exitCode !== null) return done();
    const timer = setTimeout(() => app.child.kill('SIGKILL'), 10_000);
    app.child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    app.child.send({ command: 'stop' });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  runWaitBench().then(
    ({ markdown }) => {
      console.log(`\n## ${WAIT_BENCH_TITLE}\n\n${markdown}`);
      process.exit(0);
    },
    (error: unknown) => {
      console.error('bench/wait.ts failed:', error);
      process.exit(1);
    },
  );
}

/** The section for `npm run bench` (bench/run.ts lists its sections). */
export const waitSection: BenchSection = {
  id: 'wait',
  title: WAIT_BENCH_TITLE,
  estimateSeconds: (bench) => 3 * (2 + bench.rounds * bench.seconds) + 40,
  run: ({ settings: bench, database, log: benchLog }) =>
    runWaitBench({
      database,
      rounds: bench.rounds,
      seconds: bench.seconds,
      warmupSeconds: bench.warmupSeconds,
      log: (message) => benchLog(`wait: ${message}`),
    }),
};
