// What the report says about where it ran: hardware, versions, Postgres settings, source state.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { PEER_DIR, ROOT } from './processes.js';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGb: number;
  kernel: string;
  node: string;
  postgres: string;
  postgresSettings: string;
  database: string;
  versions: Record<string, string>;
  commit: string;
}

function packageVersion(dir: string, name: string): string {
  try {
    return JSON.parse(readFileSync(join(dir, 'node_modules', name, 'package.json'), 'utf8'))
      .version;
  } catch {
    return '?';
  }
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

/** The module's source state, taken when the run starts (the apps load src/ then). */
export function sourceState(): string {
  const dirty = git(['status', '--porcelain', '--', 'src', 'migrations']) !== '';
  return `${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ' + uncommitted changes in src/ (measured as on disk when the run started)' : ''}`;
}

export async function collectMachine(url: string, source: string, commit: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let postgres: string;
  let postgresSettings: string;
  try {
    postgres = (await client.query('SELECT version()')).rows[0].version;
    const settings = await client.query(
      `SELECT name, setting, unit FROM pg_settings
        WHERE name IN ('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections',
                       'wal_level', 'commit_delay', 'max_wal_size')
        ORDER BY name`,
    );
    postgresSettings = settings.rows
      .map(
        (row: { name: string; setting: string; unit: string | null }) =>
          `${row.name}=${row.setting}${row.unit ?? ''}`,
      )
      .join(', ');
  } finally {
    await client.end();
  }
  const machine: Machine = {
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memoryGb: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    postgres,
    postgresSettings,
    database: `${source} (${url.replace(/\/\/[^@/]*@/, '//')})`,
    versions: {
      '@nestjs/core (module app)': packageVersion(ROOT, '@nestjs/core'),
      '@nestjs/core (peer app)': packageVersion(PEER_DIR, '@nestjs/core'),
      '@node-idempotency/nestjs': packageVersion(PEER_DIR, '@node-idempotency/nestjs'),
      '@node-idempotency/core': packageVersion(PEER_DIR, '@node-idempotency/core'),
      typeorm: packageVersion(ROOT, 'typeorm'),
      'pg (module app)': packageVersion(ROOT, 'pg'),
      'pg (peer app)': packageVersion(PEER_DIR, 'pg'),
      autocannon: packageVersion(ROOT, 'autocannon'),
    },
    commit,
  };
  return machine;
}
