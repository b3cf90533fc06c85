// The database's own ceiling: pgbench running the module's own claim + complete statements
// (a new key) and its claim statement on a completed key (a replay). The scripts are built
// from the SQL that PostgresIdempotencyStore actually sends, captured through a recording
// executor, so they follow the core when it changes.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { computeFingerprint, PostgresIdempotencyStore, type SqlStatement } from '../src/index.js';
import { BODY } from './load.js';

const exec = promisify(execFile);
const KEY = '\u0000bench-key\u0000';
const TOKEN = '\u0000bench-token\u0000';
const DEFAULT_LEASE_MS = 60_000;
const DEFAULT_RETENTION_MS = 48 * 60 * 60 * 1000;
/** What the module stores for one bench response (status, headers, body of handleOrder). */
const STORED = {
  status: 201,
  headers: { 'content-type': 'application/json; charset=utf-8' },
  body: Buffer.from(JSON.stringify({ id: 1, sku: 'bench-sku', qty: 2, status: 'accepted' })),
};

/** The statements the store sends for one new key, with the values it binds. */
export async function captureStatements(tableName: string) {
  const sent: SqlStatement[] = [];
  const store = new PostgresIdempotencyStore(
    {
      query: async (statement) => {
        // The store asks once per table whether it has has_waiters (the app's table does):
        // not a statement of the request, so not part of the script.
        if (statement.name.endsWith('_probe_waiters')) {
          return { rows: [{ present: true }], rowCount: 1 };
        }
        sent.push(statement);
        return { rows: [{ outcome: 'claimed', token: TOKEN }], rowCount: 1 };
      },
    },
    tableName,
  );
  const fingerprint = computeFingerprint({
    method: 'POST',
    url: '/orders',
    body: JSON.parse(BODY),
    contentType: 'application/json',
  });
  const claim = await store.claim({
    scope: '',
    key: KEY,
    fingerprint,
    leaseMs: DEFAULT_LEASE_MS,
    retentionMs: DEFAULT_RETENTION_MS,
  });
  if (claim.outcome !== 'claimed') throw new Error('capture: the store did not claim');
  await store.complete(claim.record, STORED, DEFAULT_RETENTION_MS);
  if (sent.length !== 2) throw new Error(`capture: expected 2 statements, saw ${sent.length}`);
  return { claim: sent[0], complete: sent[1] };
}

/** Replaces $n by a SQL literal of the bound value, or by a pgbench variable for key/token. */
function toPgbench(statement: SqlStatement, keyExpression: string): string {
  const text = statement.text.replace(/\$(\d+)/g, (_, index: string) => {
    const value = statement.values[Number(index) - 1];
    if (value === KEY) return keyExpression;
    if (value === TOKEN) return ':c_token';
    if (Buffer.isBuffer(value)) return `'\\x${value.toString('hex')}'`;
    if (typeof value === 'number') return String(value);
    return `'${String(value).replaceAll("'", "''")}'`;
  });
  return text.trim().replace(/\s*\n\s*/g, '\n');
}

export interface CeilingScripts {
  newKey: string;
  replay: string;
}

export async function buildScripts(tableName: string): Promise<CeilingScripts> {
  const { claim, complete } = await captureStatements(tableName);
  const newKeyExpr = `('pgb-' || :run::text || '-' || :client_id::text || '-' || :n::text)`;
  const replayExpr = `('pgb-replay-' || :i::text)`;
  return {
    newKey: [
      '\\set n :n + 1',
      `${toPgbench(claim, newKeyExpr)} \\gset c_`,
      `${toPgbench(complete, newKeyExpr)};`,
      '',
    ].join('\n'),
    replay: [
      `\\set i random(0, ${PGBENCH_REPLAY_KEYS - 1})`,
      `${toPgbench(claim, replayExpr)};`,
      '',
    ].join('\n'),
  };
}

export const PGBENCH_REPLAY_KEYS = 2000;

/** Completes the keys the replay script reads, through the store itself. */
export async function preparePgbenchReplays(url: string, tableName: string): Promise<void> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  try {
    const store = new PostgresIdempotencyStore(pool, tableName);
    const fingerprint = computeFingerprint({
      method: 'POST',
      url: '/orders',
      body: JSON.parse(BODY),
      contentType: 'application/json',
    });
    let next = 0;
    const worker = async () => {
      while (next < PGBENCH_REPLAY_KEYS) {
        const key = `pgb-replay-${next++}`;
        const claim = await store.claim({
          scope: '',
          key,
          fingerprint,
          leaseMs: DEFAULT_LEASE_MS,
          retentionMs: DEFAULT_RETENTION_MS,
        });
        if (claim.outcome === 'claimed') {
          await store.complete(claim.record, STORED, DEFAULT_RETENTION_MS);
        }
      }
    };
    await Promise.all(Array.from({ length: 10 }, worker));
  } finally {
    await pool.end();
  }
}

export interface PgbenchResult {
  tps: number;
  p50: number;
  p99: number;
  transactions: number;
  failed: number;
}

export async function pgbenchVersion(): Promise<string | undefined> {
  try {
    return (await exec('pgbench', ['--version'])).stdout.trim();
  } catch {
    return undefined;
  }
}

/** One pgbench run of `script` with `clients` clients for `seconds`, latency from its log. */
export async function runPgbench(
  url: string,
  script: string,
  clients: number,
  seconds: number,
  run: number,
  /** Server settings for pgbench's sessions, as PGOPTIONS (e.g. `-c synchronous_commit=off`). */
  pgOptions?: string,
): Promise<PgbenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'idem-pgbench-'));
  try {
    const file = join(dir, 'script.sql');
    writeFileSync(file, script);
    const args = [
      '--no-vacuum',
      '--protocol=prepared',
      `--client=${clients}`,
      `--jobs=${Math.min(clients, 2)}`,
      `--time=${Math.max(1, Math.round(seconds))}`,
      `--file=${file}`,
      `--define=run=${run}`,
      '--define=n=0',
      '--log',
      `--log-prefix=${join(dir, 'log')}`,
      url,
    ];
    const { stdout } = await exec('pgbench', args, {
      cwd: dir,
      env: pgOptions ? { ...process.env, PGOPTIONS: pgOptions } : process.env,
      timeout: (seconds + 30) * 1000,
      maxBuffer: 10 * 1024 * 1024,
    });
    const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1]);
    const transactions = Number(
      /number of transactions actually processed: (\d+)/.exec(stdout)?.[1],
    );
    const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
    const latencies: number[] = [];
    for (const name of readdirSync(dir).filter((entry) => entry.startsWith('log'))) {
      for (const line of readFileSync(join(dir, name), 'utf8').split('\n')) {
        const fields = line.split(' ');
        if (fields.length >= 3) latencies.push(Number(fields[2]) / 1000);
      }
    }
    latencies.sort((a, b) => a - b);
    const at = (q: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
    return { tps, p50: at(0.5), p99: at(0.99), transactions, failed };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
