// Renders bench/REPORT.md and bench/throughput.svg from one run's numbers.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { PgbenchResult } from './ceiling.js';
import {
  REPLAY_KEYS,
  STORM,
  type Outcome,
  type RunResult,
  type Scenario,
  type ScenarioId,
  type Target,
} from './load.js';
import { PEER_DIR, ROOT } from './processes.js';
import type { ProfileSummary } from './profile.js';

export interface TargetResult {
  target: Target;
  runs: RunResult[];
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  handlerRuns: number;
  distinctKeys: number;
  outcomes: Record<Outcome, number>;
  queriesPerRequest: number;
  appCpuMs: number;
  dbCpuMs?: number;
}

interface RoundTrips {
  newKey: number;
  replay: number;
  inFlight: number;
  inFlightStatuses: number[];
}

interface CeilingSummary {
  runs: PgbenchResult[];
  tps: number;
  p50: number;
  p99: number;
  failed: number;
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGb: number;
  kernel: string;
  node: string;
  postgres: string;
  postgresSettings: string;
  database: string;
  pgbench: string;
  versions: Record<string, string>;
  commit: string;
}

export interface BenchData {
  date: string;
  elapsedSeconds: number;
  settings: {
    seconds: number;
    runs: number;
    warmupSeconds: number;
    connections: number;
    poolSize: number;
  };
  machine: Machine;
  loadAverage: { before: number[]; after: number[] };
  scenarios: Record<ScenarioId, Scenario>;
  results: Record<ScenarioId, TargetResult[]>;
  roundTrips: { module: RoundTrips; peerPostgres: RoundTrips };
  ceiling: {
    newKey: CeilingSummary;
    replay: CeilingSummary;
    newKeyNoFlush: CeilingSummary;
    scripts: { newKey: string; replay: string };
  };
  profiles?: Record<'new' | 'replay', { profile: ProfileSummary; run: RunResult }>;
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

/** The module's source state, taken when the apps start (they load src/ then). */
export function sourceState(): string {
  const dirty = git(['status', '--porcelain', '--', 'src', 'migrations']) !== '';
  return `${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ' + uncommitted changes in src/ (measured as on disk when the run started)' : ''}`;
}

export async function collectMachine(
  url: string,
  source: string,
  commit: string,
  pgbench?: string,
): Promise<Machine> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let postgres: string;
  let postgresSettings: string;
  try {
    postgres = (await client.query('SELECT version()')).rows[0].version;
    const settings = await client.query(
      `SELECT name, setting, unit FROM pg_settings
        WHERE name IN ('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections', 'wal_level')
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
  return {
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memoryGb: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    postgres,
    postgresSettings,
    database: `${source} (${url.replace(/\/\/[^@/]*@/, '//')})`,
    pgbench: pgbench ?? 'not found',
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
}

const fmt = (value: number, digits = 0) =>
  Number.isFinite(value)
    ? value.toLocaleString('en-US', {
        maximumFractionDigits: digits,
        minimumFractionDigits: digits,
      })
    : 'n/a';
const ratio = (a: number, b: number) => (b > 0 ? a / b : NaN);
const x = (value: number) => (Number.isFinite(value) ? `${value.toFixed(2)}x` : 'n/a');
const pct = (value: number) => `${(value * 100).toFixed(1)}%`;

function pick(data: BenchData, scenario: ScenarioId, id: string): TargetResult | undefined {
  return data.results[scenario].find((result) => result.target.id === id);
}

function scenarioTable(data: BenchData, id: ScenarioId): string {
  const rows = data.results[id];
  const storm = id === 'storm';
  const header = [
    '| target | req/s (median) | p50 ms | p99 ms | requests | errors | handler ran | outcomes (ran / replayed / in flight / other) | app CPU ms/req | Postgres CPU ms/req |' +
      (storm ? ' distinct keys | runs = keys? |' : ''),
    '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|' + (storm ? '---:|---|' : ''),
  ];
  const lines = rows.map((row) => {
    const o = row.outcomes;
    const perRun = row.runs.map((run) => run.handlerRuns === run.distinctKeys);
    const cells = [
      row.target.label,
      fmt(row.rps),
      fmt(row.p50, 1),
      fmt(row.p99, 1),
      fmt(row.requests),
      fmt(row.errors),
      fmt(row.handlerRuns),
      `${fmt(o.ran)} / ${fmt(o.replayed)} / ${fmt(o.inFlight)} / ${fmt(o.other)}`,
      fmt(row.appCpuMs, 2),
      row.dbCpuMs === undefined ? '–' : fmt(row.dbCpuMs, 2),
    ];
    if (storm) {
      cells.push(
        fmt(row.distinctKeys),
        perRun.every(Boolean)
          ? 'yes, every run'
          : `no (${row.runs.map((run) => `${run.handlerRuns}/${run.distinctKeys}`).join(', ')})`,
      );
    }
    return `| ${cells.join(' | ')} |`;
  });
  return [...header, ...lines].join('\n');
}

interface Check {
  target: string;
  measured: string;
  met: boolean;
}

export function checks(data: BenchData): Check[] {
  const moduleNew = pick(data, 'new', 'module')!;
  const moduleReplay = pick(data, 'replay', 'module')!;
  const plain = pick(data, 'plain', 'module')!;
  const peerPgNew = pick(data, 'new', 'peerPostgres')!;
  const storm = pick(data, 'storm', 'module')!;
  const rt = data.roundTrips.module;
  return [
    {
      target: 'new keys >= 3x the peer on Postgres',
      measured: x(ratio(moduleNew.rps, peerPgNew.rps)),
      met: ratio(moduleNew.rps, peerPgNew.rps) >= 3,
    },
    {
      target: 'new keys >= 0.5x the plain route',
      measured: x(ratio(moduleNew.rps, plain.rps)),
      met: ratio(moduleNew.rps, plain.rps) >= 0.5,
    },
    {
      target: 'replays >= 0.8x the plain route',
      measured: x(ratio(moduleReplay.rps, plain.rps)),
      met: ratio(moduleReplay.rps, plain.rps) >= 0.8,
    },
    {
      target: '2 SQL round trips for a new key',
      measured: fmt(rt.newKey, 2),
      met: rt.newKey === 2,
    },
    { target: '1 SQL round trip for a replay', measured: fmt(rt.replay, 2), met: rt.replay === 1 },
    {
      target: 'storm: handler runs = distinct keys (every run)',
      measured: `${fmt(storm.handlerRuns)} runs / ${fmt(storm.distinctKeys)} keys`,
      met: storm.runs.every((run) => run.handlerRuns === run.distinctKeys),
    },
  ];
}

function profileSection(
  name: string,
  { profile, run }: { profile: ProfileSummary; run: RunResult },
): string {
  const areas = profile.byArea
    .slice(0, 10)
    .map((area) => `| ${area.area} | ${fmt(area.ms)} | ${pct(area.share)} |`)
    .join('\n');
  const hottest = profile.hottest
    .map(
      (fn) =>
        `| \`${fn.name}\` | ${fn.where ? `\`${fn.where}\`` : ''} | ${fn.area} | ${pct(fn.share)} |`,
    )
    .join('\n');
  return `#### ${name}

${fmt(run.requests)} requests (${fmt(run.rps)} req/s under the profiler), ${fmt(run.queries)} SQL statements.
Busy ${fmt(profile.busyMs)} ms of ${fmt(profile.totalMs)} ms sampled (the rest idle, waiting on
Postgres or the network). Code in \`src/\` and what it calls synchronously, socket writes aside: ${pct(profile.moduleInclusiveShare)} of busy time.
Socket writes alone (native \`writev\`/\`write*String\`): ${fmt(profile.socketWrites.toPostgresMs)} ms sending SQL to
Postgres (${fmt(profile.socketWrites.toPostgresMs / Math.max(1, run.queries), 3)} ms per statement) and
${fmt(profile.socketWrites.toHttpClientsMs)} ms sending HTTP responses (${fmt(profile.socketWrites.toHttpClientsMs / Math.max(1, run.requests), 3)} ms per response),
${pct((profile.socketWrites.toPostgresMs + profile.socketWrites.toHttpClientsMs) / profile.busyMs)} of busy time.

| self time by area | ms | share of busy |
|---|---:|---:|
${areas}

| hottest functions (self time) | where | area | share of busy |
|---|---|---|---:|
${hottest}
`;
}

export function renderReport(data: BenchData): string {
  const m = data.machine;
  const s = data.settings;
  const moduleOf = (id: ScenarioId) => pick(data, id, 'module')!;
  const plain = moduleOf('plain');
  const ceiling = data.ceiling;
  const ratioRows: string[] = [];
  for (const id of ['new', 'replay', 'storm'] as const) {
    const mine = moduleOf(id);
    const peerMemory = pick(data, id, 'peerMemory')!;
    const peerPostgres = pick(data, id, 'peerPostgres')!;
    const pgbench = id === 'new' ? ceiling.newKey.tps : id === 'replay' ? ceiling.replay.tps : NaN;
    ratioRows.push(
      `| ${data.scenarios[id].title} | ${fmt(mine.rps)} | ${id === 'storm' ? 'n/a (handler sleeps)' : x(ratio(mine.rps, plain.rps))} | ${x(ratio(mine.rps, peerMemory.rps))} | ${x(ratio(mine.rps, peerPostgres.rps))} | ${id === 'storm' ? 'n/a' : x(ratio(mine.rps, pgbench))} |`,
    );
  }
  const rt = data.roundTrips;
  const checkRows = checks(data)
    .map((check) => `| ${check.target} | ${check.measured} | ${check.met ? 'met' : '**missed**'} |`)
    .join('\n');
  const nest10 = pick(data, 'plain', 'nest10Plain');

  return `# Benchmark report

Generated by \`npm run bench\` (bench/run.ts) on ${data.date} in ${fmt(data.elapsedSeconds)} s.
Every number below comes from this one run; nothing is carried over from earlier runs.

## Machine and versions

| | |
|---|---|
| CPU | ${m.cpu}, ${m.cores} cores, ${m.memoryGb} GB RAM, Linux ${m.kernel} |
| Node | ${m.node} |
| Postgres | ${m.postgres} |
| Postgres settings | ${m.postgresSettings} |
| database | ${m.database} |
| pgbench | ${m.pgbench} |
${Object.entries(m.versions)
  .map(([name, version]) => `| ${name} | ${version} |`)
  .join('\n')}
| this module | commit ${m.commit} |

Everything (load generator, the apps, Postgres, pgbench) shares the same ${m.cores} cores over
loopback, and other work on the machine competes for them (load average ${data.loadAverage.before.map((v) => v.toFixed(1)).join(' / ')}
at the start, ${data.loadAverage.after.map((v) => v.toFixed(1)).join(' / ')} at the end, for 1 / 5 / 15 minutes).
Absolute numbers are low and noisy; the ratios between targets measured in alternation are the point.

## Method

- Two apps, each its own process, same handler (\`bench/handler.ts\`, mirrored in
  \`bench/peer/app.js\`): parse a small JSON body, answer \`201\` with a small JSON order.
  - **this module**: NestJS ${m.versions['@nestjs/core (module app)']} + express, \`IdempotencyModule.forRoot()\`
    with its own TypeORM DataSource, pool size ${s.poolSize}; \`POST /orders\` has \`@Idempotent()\`,
    \`POST /plain\` is the same handler without it.
  - **peer**: \`@node-idempotency/nestjs\` ${m.versions['@node-idempotency/nestjs']} on NestJS
    ${m.versions['@nestjs/core (peer app)']} + express, isolated in \`bench/peer/\` with its own
    node_modules, reading \`x-idempotency-key\`. Two processes: its memory storage, and Postgres
    through \`bench/peer/postgres-storage.js\`, a rewrite of upstream's
    \`storage-adapter-postgres\` (not published to npm) issuing the same SQL: an UNLOGGED table
    (upstream's default), \`INSERT … ON CONFLICT DO UPDATE … WHERE expired\` to claim, \`SELECT\`
    to read, upsert to store; pg Pool of ${s.poolSize}. For new keys, a third peer process runs the
    same adapter on a logged table, to separate the cost of durability from the rest.
- Load: autocannon's programmatic API from the harness process, ${s.connections} connections
  (storm: ${STORM.connections}), no pipelining, ${s.warmupSeconds} s warm-up per target and scenario, then
  ${s.runs} runs of ${s.seconds} s per target, the targets alternating run by run; the tables show the
  median run's req/s, p50 and p99 and totals over the ${s.runs} runs for requests, errors and handler runs.
- Outcomes are classified, not status codes: the module replays with \`409\` +
  \`Idempotent-Replayed: true\` and answers \`423\` in flight; the peer replays with the original
  status + \`Idempotent-Replayed: true\` and answers \`409\` in flight. An error is anything outside
  the scenario's expected outcomes, plus socket errors and timeouts.
- Handler runs: each app counts its handler invocations; the harness reads the counter before
  and after each run (it can exceed the answered requests by the few still in flight when
  autocannon stops a run).
- CPU per request: the app's \`process.cpuUsage()\` and the CPU time of the Postgres backends
  serving its pool (found by \`application_name\`, read from \`/proc/<pid>/stat\`, 10 ms ticks),
  divided by answered requests; median run.
- Replays: ${fmt(REPLAY_KEYS)} keys completed on each target first, then requested round-robin.
- Storm: ${STORM.connections} connections; keys come in waves of ${STORM.hotKeys} hot keys, a new wave every
  ${STORM.requestsPerWave} requests; the handler sleeps ${STORM.delayMs} ms. Every key's first request runs the handler,
  its duplicates see "in flight" until it completes, then replays.
- Round trips: each app wraps pg's \`Client#query\` (every statement of TypeORM's pool and of
  pg's Pool passes through it) and the harness sends requests one at a time: 20 new keys, the
  same 20 again (replays), and 10 duplicates of requests whose handler is still sleeping.
- Ceiling: pgbench (\`--protocol=prepared\`, ${s.connections} clients, 2 threads) runs the module's own
  statements, captured from \`PostgresIdempotencyStore\` through a recording executor: claim +
  complete for a new key (one pgbench transaction = one new key = 2 statements, each its own
  autocommit transaction, as in the app) and the claim of a completed key for a replay. Same
  database, same table, same client count, ${s.runs} x ${s.seconds} s after a warm-up, median reported.

## Results

### ${data.scenarios.plain.title}

${scenarioTable(data, 'plain')}

### ${data.scenarios.new.title}

${scenarioTable(data, 'new')}

pgbench ceiling (claim + complete): **${fmt(ceiling.newKey.tps)} new keys/s**, p50 ${fmt(ceiling.newKey.p50, 1)} ms, p99 ${fmt(ceiling.newKey.p99, 1)} ms, ${ceiling.newKey.failed} failed.
For reference, the same script with \`synchronous_commit=off\` (no wait for the WAL flush of
its two commits): ${fmt(ceiling.newKeyNoFlush.tps)} new keys/s, p50 ${fmt(ceiling.newKeyNoFlush.p50, 1)} ms.

### ${data.scenarios.replay.title}

${scenarioTable(data, 'replay')}

pgbench ceiling (claim of a completed key): **${fmt(ceiling.replay.tps)} replays/s**, p50 ${fmt(ceiling.replay.p50, 1)} ms, p99 ${fmt(ceiling.replay.p99, 1)} ms, ${ceiling.replay.failed} failed.

### ${data.scenarios.storm.title}

${scenarioTable(data, 'storm')}

"handler ran" must equal "distinct keys" for a correct library: more would be a duplicate run.
The peer's memory storage and this module should both hold it; see the table for the peer on
Postgres.

![throughput per scenario](throughput.svg)

## Ratios

| scenario | module req/s | module / plain route | module / peer (memory) | module / peer (Postgres) | module / pgbench ceiling |
|---|---:|---:|---:|---:|---:|
${ratioRows.join('\n')}
${(() => {
  const logged = pick(data, 'new', 'peerPostgresLogged');
  return logged
    ? `\nNew keys against the peer on a logged table (like-for-like durability, same SQL otherwise): ${fmt(logged.rps)} req/s, module / peer = ${x(ratio(moduleOf('new').rps, logged.rps))}.\n`
    : '';
})()}${nest10 ? `\nFor scale: the plain route on the peer's NestJS ${m.versions['@nestjs/core (peer app)']} app ran ${fmt(nest10.rps)} req/s against ${fmt(plain.rps)} req/s on NestJS ${m.versions['@nestjs/core (module app)']}.\n` : ''}
## SQL round trips per request (counted)

| request | this module | peer on Postgres | pgbench script |
|---|---:|---:|---:|
| new key | ${fmt(rt.module.newKey, 2)} | ${fmt(rt.peerPostgres.newKey, 2)} | 2 statements |
| replay | ${fmt(rt.module.replay, 2)} | ${fmt(rt.peerPostgres.replay, 2)} | 1 statement |
| duplicate while in flight | ${fmt(rt.module.inFlight, 2)} (status ${rt.module.inFlightStatuses.join(', ')}) | ${fmt(rt.peerPostgres.inFlight, 2)} (status ${rt.peerPostgres.inFlightStatuses.join(', ')}) | |

Under load, queries / requests: ${(['new', 'replay', 'storm'] as const)
    .map(
      (id) =>
        `${id}: ${fmt(moduleOf(id).queriesPerRequest, 2)} (module), ${fmt(pick(data, id, 'peerPostgres')!.queriesPerRequest, 2)} (peer on Postgres)`,
    )
    .join('; ')}.

## Targets

| target | measured | |
|---|---|---|
${checkRows}

${limitsSection(data)}
${
  data.profiles
    ? `## Where the module's time goes (node --cpu-prof)

After the measured runs, the module app was driven for one more ${s.seconds} s run per scenario
under V8's CPU profiler (the one behind \`node --cpu-prof\`, started and stopped through
\`node:inspector\` so that start-up is left out). Profiling slows the app; these runs are not in
the tables above. Self time only: time spent waiting on Postgres is idle here.

${profileSection('New keys', data.profiles.new)}
${profileSection('Replays', data.profiles.replay)}`
    : ''
}
## The pgbench scripts

<details><summary>new key (claim + complete)</summary>

\`\`\`sql
${data.ceiling.scripts.newKey.trim()}
\`\`\`
</details>

<details><summary>replay (claim of a completed key)</summary>

\`\`\`sql
${data.ceiling.scripts.replay.trim()}
\`\`\`
</details>
`;
}

/** What the numbers of this run say about the limits; every figure is from this run. */
function limitsSection(data: BenchData): string {
  const plain = pick(data, 'plain', 'module')!;
  const mine = (id: ScenarioId) => pick(data, id, 'module')!;
  const peerPg = (id: ScenarioId) => pick(data, id, 'peerPostgres')!;
  const c = data.settings.connections;
  const lines: string[] = [];
  const ceilingShare = ratio(data.ceiling.newKey.tps, plain.rps);
  lines.push(
    `- **New keys vs the plain route.** The database alone, running only the module's claim + complete with the same ${c} clients, did ${fmt(data.ceiling.newKey.tps)} new keys/s = ${x(ceilingShare)} the plain route's ${fmt(plain.rps)} req/s` +
      (ceilingShare < 0.5
        ? `, so on this machine "half the plain route" is out of reach for any implementation that makes a new key durable in two commits at ${c} connections: it would need the database to be faster than its own ceiling.`
        : '.') +
      ` The module reached ${x(ratio(mine('new').rps, data.ceiling.newKey.tps))} of that ceiling. Per request the app spent ${fmt(mine('new').appCpuMs, 2)} ms CPU (plain route: ${fmt(plain.appCpuMs, 2)} ms) and its Postgres backends ${mine('new').dbCpuMs === undefined ? 'n/a' : `${fmt(mine('new').dbCpuMs!, 2)} ms`}; with app, database and load generator on ${data.machine.cores} shared cores, the extra CPU and the two sequential commits (p50 ${fmt(mine('new').p50, 1)} ms vs ${fmt(plain.p50, 1)} ms) are the cost.`,
  );
  lines.push(
    `- **Commit flushes.** With \`synchronous_commit=off\` the same SQL ran at ${fmt(data.ceiling.newKeyNoFlush.tps)} new keys/s (${x(ratio(data.ceiling.newKeyNoFlush.tps, data.ceiling.newKey.tps))} the durable ceiling): that share of the new-key cost is waiting for the WAL flush of two commits per key.`,
  );
  lines.push(
    `- **Replays vs the plain route.** A replay is one statement (${fmt(data.roundTrips.module.replay, 2)} counted) and no handler; it ran at ${x(ratio(mine('replay').rps, plain.rps))} the plain route with ${fmt(mine('replay').appCpuMs, 2)} ms app CPU per request against ${fmt(plain.appCpuMs, 2)} ms, plus ${mine('replay').dbCpuMs === undefined ? 'n/a' : `${fmt(mine('replay').dbCpuMs!, 2)} ms`} in Postgres. The pgbench replay ceiling (${fmt(data.ceiling.replay.tps)}/s) is ${x(ratio(data.ceiling.replay.tps, plain.rps))} the plain route, so the database is not what holds replays back; the extra round trip's CPU on the shared cores is.`,
  );
  lines.push(
    `- **Against the peer on Postgres.** Same number of statements for a new key (${fmt(data.roundTrips.module.newKey, 2)} vs ${fmt(data.roundTrips.peerPostgres.newKey, 2)}), one fewer for a replay (${fmt(data.roundTrips.module.replay, 2)} vs ${fmt(data.roundTrips.peerPostgres.replay, 2)}) and for a duplicate in flight (${fmt(data.roundTrips.module.inFlight, 2)} vs ${fmt(data.roundTrips.peerPostgres.inFlight, 2)}). The peer's table is UNLOGGED (no WAL, lost on a crash) and stores the response as JSON text; the module's is logged. New keys: ${x(ratio(mine('new').rps, peerPg('new').rps))}, replays: ${x(ratio(mine('replay').rps, peerPg('replay').rps))}. App CPU per new key: ${fmt(mine('new').appCpuMs, 2)} ms vs the peer's ${fmt(peerPg('new').appCpuMs, 2)} ms; Postgres CPU: ${mine('new').dbCpuMs === undefined ? 'n/a' : fmt(mine('new').dbCpuMs!, 2)} ms vs ${peerPg('new').dbCpuMs === undefined ? 'n/a' : fmt(peerPg('new').dbCpuMs!, 2)} ms.${(() => {
      const logged = pick(data, 'new', 'peerPostgresLogged');
      return logged
        ? ` On a logged table, like the module's, the peer did ${fmt(logged.rps)} new keys/s (module / peer ${x(ratio(mine('new').rps, logged.rps))}; its Postgres CPU ${logged.dbCpuMs === undefined ? 'n/a' : fmt(logged.dbCpuMs, 2)} ms per key).`
        : '';
    })()} With two round trips per new key on both sides, a 3x gap on new keys is not there to be had on this setup. On replays and duplicates the module makes one round trip to the peer's two (replays ${x(ratio(mine('replay').rps, peerPg('replay').rps))}, storm ${x(ratio(mine('storm').rps, peerPg('storm').rps))} the peer's throughput).`,
  );
  if (data.profiles) {
    const p = data.profiles.new;
    lines.push(
      `- **Profile.** Under the profiler, socket writes were ${pct((p.profile.socketWrites.toPostgresMs + p.profile.socketWrites.toHttpClientsMs) / p.profile.busyMs)} of the app's busy CPU on new keys (${fmt(p.profile.socketWrites.toPostgresMs / Math.max(1, p.run.queries), 3)} ms per SQL statement sent, ${fmt(p.profile.socketWrites.toHttpClientsMs / Math.max(1, p.run.requests), 3)} ms per HTTP response), while code in \`src/\` and what it calls synchronously was ${pct(p.profile.moduleInclusiveShare)}. Each statement costs one socket write, so round trips, not the module's JavaScript, dominate its CPU.`,
    );
  }
  return `## What limits the module here

${lines.join('\n')}

What would move it (see bench/FINDINGS.md for the experiments behind these):

- fewer socket writes per request: batching the claims and completes of concurrent requests
  into one statement each (one write for many requests), since every statement costs a write;
- fewer commit flushes: group commit with more concurrent connections (\`commit_delay\`), or an
  opt-in \`synchronous_commit=off\` (faster, but a database crash could then forget a claim or a
  stored response and let a retry run the handler again);
- more cores, or Postgres on its own machine: app, database and load generator share ${data.machine.cores} cores here.
`;
}

const COLORS: Record<string, string> = {
  module: '#2b6cb0',
  peerMemory: '#9ae6b4',
  peerPostgres: '#38a169',
  peerPostgresLogged: '#276749',
  pgbench: '#a0aec0',
  nest10Plain: '#ed8936',
};

export function renderSvg(data: BenchData): string {
  const groups: { title: string; bars: { label: string; color: string; value: number }[] }[] = [];
  const bar = (result: TargetResult | undefined) =>
    result
      ? [
          {
            label: result.target.label,
            color: COLORS[result.target.id] ?? '#718096',
            value: result.rps,
          },
        ]
      : [];
  groups.push({
    title: 'plain route',
    bars: data.results.plain.map((result) => ({
      label: result.target.label,
      color: result.target.id === 'module' ? COLORS.module : COLORS.nest10Plain,
      value: result.rps,
    })),
  });
  for (const id of ['new', 'replay', 'storm'] as const) {
    const bars = [
      ...bar(pick(data, id, 'module')),
      ...bar(pick(data, id, 'peerMemory')),
      ...bar(pick(data, id, 'peerPostgres')),
      ...bar(pick(data, id, 'peerPostgresLogged')),
    ];
    if (id === 'new')
      bars.push({
        label: 'pgbench ceiling',
        color: COLORS.pgbench,
        value: data.ceiling.newKey.tps,
      });
    if (id === 'replay')
      bars.push({
        label: 'pgbench ceiling',
        color: COLORS.pgbench,
        value: data.ceiling.replay.tps,
      });
    groups.push({
      title: id === 'new' ? 'new keys' : id === 'replay' ? 'replays' : 'duplicate storm',
      bars,
    });
  }
  const barWidth = 34;
  const gap = 6;
  const groupGap = 40;
  const left = 70;
  const top = 50;
  const height = 300;
  const widthOf = (count: number) => count * barWidth + (count - 1) * gap;
  const totalWidth =
    left + groups.reduce((sum, group) => sum + widthOf(group.bars.length) + groupGap, 0) + 20;
  const max = Math.max(
    ...groups.flatMap((group) => group.bars.map((b) => b.value)).filter(Number.isFinite),
  );
  const scaleMax = niceCeil(max);
  const y = (value: number) => top + height - (value / scaleMax) * height;
  const parts: string[] = [];
  for (let i = 0; i <= 5; i++) {
    const value = (scaleMax / 5) * i;
    parts.push(
      `<line x1="${left - 5}" x2="${totalWidth - 10}" y1="${y(value)}" y2="${y(value)}" stroke="#e2e8f0"/>`,
      `<text x="${left - 10}" y="${y(value) + 4}" text-anchor="end" font-size="11">${fmt(value)}</text>`,
    );
  }
  let at = left + groupGap / 2;
  for (const group of groups) {
    group.bars.forEach((b, i) => {
      const bx = at + i * (barWidth + gap);
      const value = Number.isFinite(b.value) ? b.value : 0;
      parts.push(
        `<rect x="${bx}" y="${y(value)}" width="${barWidth}" height="${top + height - y(value)}" fill="${b.color}"><title>${escapeXml(b.label)}: ${fmt(value)} req/s</title></rect>`,
        `<text x="${bx + barWidth / 2}" y="${y(value) - 4}" text-anchor="middle" font-size="10">${fmt(value)}</text>`,
      );
    });
    parts.push(
      `<text x="${at + widthOf(group.bars.length) / 2}" y="${top + height + 18}" text-anchor="middle" font-size="12" font-weight="bold">${escapeXml(group.title)}</text>`,
    );
    at += widthOf(group.bars.length) + groupGap;
  }
  const legend = [
    ['this module', COLORS.module],
    ['peer, memory', COLORS.peerMemory],
    ['peer, Postgres', COLORS.peerPostgres],
    ['peer, Postgres, logged table', COLORS.peerPostgresLogged],
    ['pgbench ceiling (same SQL)', COLORS.pgbench],
    ['plain route, NestJS 10 (peer app)', COLORS.nest10Plain],
  ];
  let lx = left;
  const legendY = top + height + 42;
  for (const [label, color] of legend) {
    parts.push(
      `<rect x="${lx}" y="${legendY - 10}" width="12" height="12" fill="${color}"/>`,
      `<text x="${lx + 16}" y="${legendY}" font-size="11">${escapeXml(label)}</text>`,
    );
    lx += 22 + label.length * 6.2;
  }
  const width = Math.round(Math.max(totalWidth, lx + 10));
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${legendY + 20}" viewBox="0 0 ${width} ${legendY + 20}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${left}" y="22" font-size="15" font-weight="bold">Throughput per scenario (requests/s, median of ${data.settings.runs} runs)</text>
<text x="${left}" y="38" font-size="11" fill="#4a5568">${escapeXml(`${data.machine.cpu}, ${data.machine.cores} cores; ${data.date.slice(0, 10)}; storm handler sleeps ${STORM.delayMs} ms`)}</text>
${parts.join('\n')}
</svg>
`;
}

function niceCeil(value: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(value || 1));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!,
  );
}
