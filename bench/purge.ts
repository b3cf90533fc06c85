// Purge throughput: how many expired rows per second the module's sweep deletes from a table
// of at least 1M expired rows, per batch size, and what that gives as sustained capacity for
// a sweep interval and time box. A section of the bench report (purgeSection, for run.ts's
// list; runPurgeBench does the work), and runnable alone: `npm run bench:purge` prints it.
// Knobs: BENCH_PURGE_ROWS (1,000,000 expired rows), BENCH_PURGE_SECONDS (3: time box of the
// sweep measured per batch size), DATABASE_URL to pick the database.
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { DataSource } from 'typeorm';
import { IdempotencyStore, PostgresIdempotencyStore, idempotencyRecordsDdl } from '../src/index.js';
import {
  DEFAULT_PURGE_BATCH_SIZE,
  DEFAULT_PURGE_INTERVAL_MS,
  DEFAULT_PURGE_TIME_BOX_MS,
  sweepExpired,
} from '../src/idempotency.purge.js';
import { resolveDatabase } from './processes.js';
import type { BenchContext, BenchSection } from './section.js';

const ROWS = Number(process.env.BENCH_PURGE_ROWS ?? 1_000_000);
const SECONDS = Number(process.env.BENCH_PURGE_SECONDS ?? 3);
const BATCH_SIZES = [1_000, DEFAULT_PURGE_BATCH_SIZE, 10_000, 20_000];
/** The sweep before the time box: at most 100 batches of 1,000 rows every 5 minutes. */
const OLD = { batchSize: 1_000, maxBatches: 100, intervalMs: 5 * 60_000 };
/** One instance's sustained rate of new keys on the bench machine (issue 10.9). */
const NEW_KEYS_PER_SECOND = 1_000;

interface Measured {
  batchSize: number;
  rowsBefore: number;
  deleted: number;
  seconds: number;
  rowsPerSecond: number;
  batchP50Ms: number;
  batchMaxMs: number;
}

const logAlone = (message: string) =>
  console.log(`[purge bench ${new Date().toISOString().slice(11, 19)}] ${message}`);

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

/** The store, timing every batch statement. */
function timed(store: IdempotencyStore, latencies: number[]): IdempotencyStore {
  return Object.assign(Object.create(store) as IdempotencyStore, {
    purgeExpired: async (...args: Parameters<IdempotencyStore['purgeExpired']>) => {
      const started = performance.now();
      const deleted = await store.purgeExpired(...args);
      latencies.push(performance.now() - started);
      return deleted;
    },
  });
}

/**
 * Adds `rows` completed records whose retention passed, shaped like real ones (a short JSON
 * response, a content-type header), spread over 1,000 scopes; numbered on from `first`, each
 * later one expiring later (all in the past).
 */
async function seed(
  dataSource: DataSource,
  table: string,
  first: number,
  rows: number,
): Promise<void> {
  const last = first + rows - 1;
  for (let from = first; from <= last; from += 250_000) {
    const to = Math.min(last, from + 249_999);
    await dataSource.query(
      `INSERT INTO "${table}" (scope, idempotency_key, fingerprint, state, fencing_token,
                               locked_until, response_status, response_headers, response_body,
                               created_at, completed_at, expires_at)
       SELECT 'user:' || (g % 1000), md5(g::text), sha256(g::text::bytea), 'completed',
              (random() * 1e15)::bigint, NULL, 201,
              '{"content-type":"application/json; charset=utf-8"}'::jsonb,
              convert_to('{"id":' || g || ',"sku":"bench-sku","qty":2,"status":"accepted"}', 'UTF8'),
              now() - interval '3 days', now() - interval '3 days',
              now() - interval '1 day' + (interval '1 millisecond' * g)
         FROM generate_series($1::int, $2::int) AS g`,
      [from, to],
    );
  }
}

async function count(dataSource: DataSource, table: string): Promise<number> {
  const [{ n }] = await dataSource.query(`SELECT count(*)::int AS n FROM "${table}"`);
  return n;
}

/**
 * Measures the purge and returns the report's section (below its `##` heading). Runs on the
 * bench's database when given one, else finds one as the bench does.
 */
export async function runPurgeBench(
  context: Partial<Pick<BenchContext, 'database' | 'log'>> = {},
): Promise<{ markdown: string }> {
  const log = context.log ?? logAlone;
  const db = context.database
    ? { ...context.database, stop: async () => undefined }
    : await resolveDatabase();
  const table = `bench_purge_${randomBytes(4).toString('hex')}`;
  const dataSource = await new DataSource({
    type: 'postgres',
    url: db.url,
    poolSize: 2,
  }).initialize();
  const measured: Measured[] = [];
  let oldSweep: { deleted: number; seconds: number } | undefined;
  try {
    for (const statement of idempotencyRecordsDdl(table).up) await dataSource.query(statement);
    log(`seeding ${ROWS.toLocaleString('en-US')} expired records into ${table}`);
    let seeded = 0;
    /** Brings the table back to ROWS expired records, without the dead rows of the last run. */
    const topUp = async () => {
      const missing = ROWS - (await count(dataSource, table));
      await seed(dataSource, table, seeded + 1, missing);
      seeded += missing;
      await dataSource.query(`VACUUM ANALYZE "${table}"`);
    };
    const store = PostgresIdempotencyStore.fromDataSource(dataSource, table);

    for (const batchSize of BATCH_SIZES) {
      await topUp();
      const rowsBefore = await count(dataSource, table);
      const latencies: number[] = [];
      const sweep = await sweepExpired(timed(store, latencies), {
        batchSize,
        timeBoxMs: SECONDS * 1000,
        statementTimeoutMs: 60_000,
      });
      const seconds = sweep.elapsedMs / 1000;
      measured.push({
        batchSize,
        rowsBefore,
        deleted: sweep.deleted,
        seconds,
        rowsPerSecond: sweep.deleted / seconds,
        batchP50Ms: percentile(latencies, 50),
        batchMaxMs: Math.max(...latencies),
      });
      log(`batch ${batchSize}: ${sweep.deleted} rows in ${seconds.toFixed(1)} s`);
    }

    await topUp();
    const started = performance.now();
    const old = await sweepExpired(store, {
      batchSize: OLD.batchSize,
      maxBatches: OLD.maxBatches,
      timeBoxMs: Infinity,
      statementTimeoutMs: 60_000,
    });
    oldSweep = { deleted: old.deleted, seconds: (performance.now() - started) / 1000 };
    log(`old sweep: ${old.deleted} rows in ${oldSweep.seconds.toFixed(1)} s`);
  } finally {
    await dataSource.query(`DROP TABLE IF EXISTS "${table}"`).catch(() => undefined);
    await dataSource.destroy();
    await db.stop();
  }
  return { markdown: render(measured, oldSweep!, db.source) };
}

function render(
  measured: Measured[],
  oldSweep: { deleted: number; seconds: number },
  source: string,
): string {
  const n = (value: number) => Math.round(value).toLocaleString('en-US');
  const byDefault = measured.find((m) => m.batchSize === DEFAULT_PURGE_BATCH_SIZE)!;
  const capacity = (rowsPerSecond: number) =>
    (rowsPerSecond * DEFAULT_PURGE_TIME_BOX_MS) / DEFAULT_PURGE_INTERVAL_MS;
  const oldCapacity = (OLD.batchSize * OLD.maxBatches) / (OLD.intervalMs / 1000);
  const lines = [
    `A table of ${n(ROWS)} expired records (${source}), topped up and vacuumed before each sweep; one sweep per batch size, time-boxed to ${SECONDS} s. Rows/s is what one sweep deletes while it runs.`,
    '',
    '| batch size | rows in table | deleted | seconds | rows/s | batch p50 | batch max |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...measured.map(
      (m) =>
        `| ${n(m.batchSize)}${m.batchSize === DEFAULT_PURGE_BATCH_SIZE ? ' (default)' : ''} | ${n(m.rowsBefore)} | ${n(m.deleted)} | ${m.seconds.toFixed(1)} | ${n(m.rowsPerSecond)} | ${m.batchP50Ms.toFixed(0)} ms | ${m.batchMaxMs.toFixed(0)} ms |`,
    ),
    '',
    `Sustained capacity = rows/s x timeBoxMs / intervalMs. It must exceed the peak rate of new keys (one instance here sustains about ${n(NEW_KEYS_PER_SECOND)} new keys/s).`,
    '',
    '| sweep | per sweep | capacity |',
    '|---|---|---:|',
    `| before: ${n(OLD.maxBatches)} batches of ${n(OLD.batchSize)} every ${OLD.intervalMs / 60_000} min | ${n(oldSweep.deleted)} rows in ${oldSweep.seconds.toFixed(1)} s, then it stopped | ${n(oldCapacity)} rows/s |`,
    `| now (defaults): batches of ${n(DEFAULT_PURGE_BATCH_SIZE)} while full, time box ${DEFAULT_PURGE_TIME_BOX_MS / 1000} s, every ${DEFAULT_PURGE_INTERVAL_MS / 1000} s | up to ${n(byDefault.rowsPerSecond * (DEFAULT_PURGE_TIME_BOX_MS / 1000))} rows | ${n(capacity(byDefault.rowsPerSecond))} rows/s |`,
    '',
  ];
  return lines.join('\n');
}

export const purgeSection: BenchSection = {
  id: 'purge',
  title: 'Purge throughput',
  // Seeding 1M rows (~35 s here), then a top-up and a sweep per batch size.
  estimateSeconds: () => (ROWS / 1_000_000) * 35 * 2 + BATCH_SIZES.length * (SECONDS + 10),
  run: (context) => runPurgeBench(context),
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { markdown } = await runPurgeBench();
  console.log(`\n## ${purgeSection.title}\n\n${markdown}`);
}
