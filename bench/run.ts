// `npm run bench`: the module, the peer (@node-idempotency/nestjs on memory and on Postgres)
// and pgbench's ceiling, side by side in one run; writes bench/REPORT.md and
// bench/throughput.svg. Knobs: BENCH_SECONDS (5), BENCH_RUNS (3), BENCH_CONNECTIONS (10),
// BENCH_PROFILE=0 to skip the CPU profiles (BENCH_PROFILE_DIR=dir keeps the .cpuprofile files),
// DATABASE_URL to pick the database.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import {
  buildScripts,
  pgbenchVersion,
  preparePgbenchReplays,
  runPgbench,
  type PgbenchResult,
} from './ceiling.js';
import {
  countRoundTrips,
  measure,
  prepareReplays,
  scenarios,
  type RunResult,
  type Scenario,
  type ScenarioId,
  type Target,
} from './load.js';
import {
  ask,
  ensurePeerInstalled,
  resolveDatabase,
  startApp,
  ROOT,
  type AppProcess,
} from './processes.js';
import { BackendCpuProbe } from './cpu.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import {
  collectMachine,
  sourceState,
  renderReport,
  renderSvg,
  type BenchData,
  type TargetResult,
} from './report.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const WARMUP_SECONDS = 2;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const POOL_SIZE = 10;
const TABLE = 'bench_idempotency_records';
const PEER_SCHEMA = 'bench_node_idempotency';
const PROFILE = process.env.BENCH_PROFILE !== '0';

const log = (message: string) =>
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function aggregate(target: Target, runs: RunResult[]): TargetResult {
  const sum = (pick: (run: RunResult) => number) =>
    runs.reduce((total, run) => total + pick(run), 0);
  return {
    target,
    runs,
    rps: median(runs.map((run) => run.rps)),
    p50: median(runs.map((run) => run.p50)),
    p99: median(runs.map((run) => run.p99)),
    requests: sum((run) => run.requests),
    errors: sum((run) => run.errors),
    handlerRuns: sum((run) => run.handlerRuns),
    distinctKeys: sum((run) => run.distinctKeys),
    outcomes: {
      ran: sum((run) => run.outcomes.ran),
      replayed: sum((run) => run.outcomes.replayed),
      inFlight: sum((run) => run.outcomes.inFlight),
      other: sum((run) => run.outcomes.other),
    },
    queriesPerRequest:
      sum((run) => run.queries) /
      Math.max(
        1,
        sum((run) => run.requests),
      ),
    appCpuMs: median(runs.map((run) => run.appCpuMs)),
    dbCpuMs: runs.every((run) => run.dbCpuMs !== undefined)
      ? median(runs.map((run) => run.dbCpuMs!))
      : undefined,
  };
}

/** Warm-up on every target, then RUNS rounds that alternate between the targets. */
async function runScenario(
  scenario: Scenario,
  targets: Target[],
  probe: BackendCpuProbe,
): Promise<TargetResult[]> {
  for (const target of targets) {
    log(`${scenario.id}: warm-up ${target.label}`);
    await measure(target, scenario, WARMUP_SECONDS, 'warm');
  }
  const results = new Map<Target, RunResult[]>(targets.map((target) => [target, []]));
  for (let round = 1; round <= RUNS; round++) {
    for (const target of targets) {
      const run = await measure(target, scenario, SECONDS, `r${round}`, probe);
      results.get(target)!.push(run);
      log(
        `${scenario.id} #${round} ${target.label}: ${run.rps.toFixed(0)} req/s, p50 ${run.p50} ms, p99 ${run.p99} ms, errors ${run.errors}, handler runs ${run.handlerRuns}, app CPU ${run.appCpuMs.toFixed(2)} ms/req, db CPU ${run.dbCpuMs?.toFixed(2) ?? 'n/a'} ms/req`,
      );
    }
  }
  return targets.map((target) => aggregate(target, results.get(target)!));
}

async function resetTables(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP TABLE IF EXISTS "${TABLE}"`);
    await client.query(`DROP SCHEMA IF EXISTS "${PEER_SCHEMA}" CASCADE`);
    await client.query(`DROP SCHEMA IF EXISTS "${PEER_SCHEMA}_logged" CASCADE`);
  } finally {
    await client.end();
  }
}

/** A CPU profile of the running module app over one run of `scenario`. */
async function profileModule(
  app: AppProcess,
  target: Target,
  scenario: Scenario,
): Promise<{ profile: ProfileSummary; run: RunResult }> {
  const keep = process.env.BENCH_PROFILE_DIR;
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'idem-profile-'));
  const file = join(dir, `module-${scenario.id}.cpuprofile`);
  try {
    await ask(app, { command: 'profile-start' }, 'profiling');
    const run = await measure(target, scenario, SECONDS, `prof-${Date.now()}`);
    await ask(app, { command: 'profile-stop', file }, 'profiled');
    return { profile: summarizeProfile(file), run };
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const loadBefore = loadavg();
  const commit = sourceState();
  const database = await resolveDatabase();
  log(`database: ${database.source}`);
  const apps: AppProcess[] = [];
  const probe = new BackendCpuProbe(database.url);
  await probe.connect();
  try {
    await ensurePeerInstalled();
    await resetTables(database.url);
    const env = { DATABASE_URL: database.url, POOL_SIZE: String(POOL_SIZE) };
    const moduleApp = await startApp({
      name: 'module',
      kind: 'module',
      env: { ...env, TABLE_NAME: TABLE },
    });
    apps.push(moduleApp);
    const peerMemoryApp = await startApp({
      name: 'peer (memory)',
      kind: 'peer',
      env: { ...env, STORAGE: 'memory' },
    });
    apps.push(peerMemoryApp);
    const peerPostgresApp = await startApp({
      name: 'peer (Postgres)',
      kind: 'peer',
      env: { ...env, STORAGE: 'postgres' },
    });
    apps.push(peerPostgresApp);
    const peerLoggedApp = await startApp({
      name: 'peer (Postgres, logged table)',
      kind: 'peer',
      env: { ...env, STORAGE: 'postgres-logged' },
    });
    apps.push(peerLoggedApp);
    log('apps are up');

    const module: Target = {
      id: 'module',
      label: 'this module',
      kind: 'module',
      url: moduleApp.url,
      dbApplicationName: 'bench-module',
    };
    const peerMemory: Target = {
      id: 'peerMemory',
      label: 'peer, memory',
      kind: 'peer',
      url: peerMemoryApp.url,
    };
    const peerPostgres: Target = {
      id: 'peerPostgres',
      label: 'peer, Postgres',
      kind: 'peer',
      url: peerPostgresApp.url,
      dbApplicationName: 'bench-peer',
    };
    const peerLogged: Target = {
      id: 'peerPostgresLogged',
      label: 'peer, Postgres, logged table',
      kind: 'peer',
      url: peerLoggedApp.url,
      dbApplicationName: 'bench-peer-logged',
    };
    const nest10Plain: Target = {
      id: 'nest10Plain',
      label: 'plain route, NestJS 10 (peer app)',
      kind: 'peer',
      url: peerMemoryApp.url,
    };
    const nest12Plain: Target = {
      id: 'module',
      label: 'plain route, NestJS 12 (module app)',
      kind: 'module',
      url: moduleApp.url,
    };
    const all = [module, peerMemory, peerPostgres];
    const plan = scenarios(CONNECTIONS);

    const results = {} as Record<ScenarioId, TargetResult[]>;
    results.plain = await runScenario(plan.plain, [nest12Plain, nest10Plain], probe);
    // The logged-table peer only where it differs: new keys are the only scenario that writes much.
    results.new = await runScenario(plan.new, [...all, peerLogged], probe);
    log('replay: completing keys on every target');
    for (const target of all) await prepareReplays(target);
    results.replay = await runScenario(plan.replay, all, probe);
    results.storm = await runScenario(plan.storm, all, probe);

    log('round trips per request');
    const roundTrips = {
      module: await countRoundTrips(module),
      peerPostgres: await countRoundTrips(peerPostgres),
    };

    let profiles: BenchData['profiles'];
    if (PROFILE) {
      log('CPU profiles of the module app (new keys, replays)');
      profiles = {
        new: await profileModule(moduleApp, module, plan.new),
        replay: await profileModule(moduleApp, module, plan.replay),
      };
    }
    for (const app of apps.splice(0)) await app.stop();

    log('pgbench ceiling');
    const scripts = await buildScripts(TABLE);
    await preparePgbenchReplays(database.url, TABLE);
    // newKeyNoFlush: the same new-key script with synchronous_commit=off, for reference only:
    // how much of the ceiling is waiting for the WAL flush of the two commits.
    const ceilingRuns: Record<'newKey' | 'replay' | 'newKeyNoFlush', PgbenchResult[]> = {
      newKey: [],
      replay: [],
      newKeyNoFlush: [],
    };
    const scriptOf = {
      newKey: scripts.newKey,
      replay: scripts.replay,
      newKeyNoFlush: scripts.newKey,
    };
    const optionsOf = {
      newKey: undefined,
      replay: undefined,
      newKeyNoFlush: '-c synchronous_commit=off',
    };
    let runTag = 1;
    await runPgbench(database.url, scripts.newKey, CONNECTIONS, WARMUP_SECONDS, runTag++);
    await runPgbench(database.url, scripts.replay, CONNECTIONS, WARMUP_SECONDS, runTag++);
    for (let round = 1; round <= RUNS; round++) {
      for (const kind of ['newKey', 'replay', 'newKeyNoFlush'] as const) {
        const result = await runPgbench(
          database.url,
          scriptOf[kind],
          CONNECTIONS,
          SECONDS,
          runTag++,
          optionsOf[kind],
        );
        ceilingRuns[kind].push(result);
        log(
          `pgbench ${kind} #${round}: ${result.tps.toFixed(0)} tps, p50 ${result.p50} ms, p99 ${result.p99} ms`,
        );
      }
    }

    const data: BenchData = {
      date: new Date().toISOString(),
      elapsedSeconds: (Date.now() - started) / 1000,
      settings: {
        seconds: SECONDS,
        runs: RUNS,
        warmupSeconds: WARMUP_SECONDS,
        connections: CONNECTIONS,
        poolSize: POOL_SIZE,
      },
      machine: await collectMachine(database.url, database.source, commit, await pgbenchVersion()),
      loadAverage: { before: loadBefore, after: loadavg() },
      scenarios: plan,
      results,
      roundTrips,
      ceiling: {
        newKey: summarizePgbench(ceilingRuns.newKey),
        replay: summarizePgbench(ceilingRuns.replay),
        newKeyNoFlush: summarizePgbench(ceilingRuns.newKeyNoFlush),
        scripts,
      },
      profiles,
    };
    writeFileSync(join(ROOT, 'bench', 'REPORT.md'), renderReport(data));
    writeFileSync(join(ROOT, 'bench', 'throughput.svg'), renderSvg(data));
    log(`wrote bench/REPORT.md and bench/throughput.svg in ${data.elapsedSeconds.toFixed(0)} s`);
  } finally {
    for (const app of apps) await app.stop();
    await probe.end();
    await database.stop();
  }
}

function summarizePgbench(runs: PgbenchResult[]) {
  return {
    runs,
    tps: median(runs.map((run) => run.tps)),
    p50: median(runs.map((run) => run.p50)),
    p99: median(runs.map((run) => run.p99)),
    failed: runs.reduce((sum, run) => sum + run.failed, 0),
  };
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
