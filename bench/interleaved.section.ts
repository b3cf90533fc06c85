// The fair comparison: every target measured in every round, round after round, at each
// connection count, so each ratio compares two runs taken seconds apart. Within a round the
// targets of a scenario run one after the other, in an order that rotates from round to round
// so no target always runs first (or right after the heaviest one).
// Targets: the plain route (same app and handler, no idempotency), this module on Postgres
// (with its defaults, with `durability: 'asynchronous'` and with batching off), the limit (this module on the bench-only in-memory store), and the peer
// @node-idempotency/nestjs on memory, on Postgres (UNLOGGED, its default) and, for new keys,
// on a logged table.
import pg from 'pg';
import { CellSet } from './cells.js';
import { LINE_UP, type InterleavedData } from './interleaved.plan.js';
import { renderInterleaved, interleavedGoals } from './interleaved.render.js';
import {
  measure,
  newKeys,
  prepareReplays,
  replays,
  storm,
  type Scenario,
  type ScenarioId,
  type Target,
} from './load.js';
import { ensurePeerInstalled, startApps, stopApps, type AppProcess } from './processes.js';
import { countRoundTrips } from './round-trips.js';
import type { BenchContext, BenchSection, SectionResult } from './section.js';
import { describeRun, rotate } from './rounds.js';

export const MODULE_TABLE = 'bench_idempotency_records';
const PEER_SCHEMAS = ['bench_node_idempotency', 'bench_node_idempotency_logged'];

const CELLS_PER_ROUND = Object.values(LINE_UP).reduce((sum, ids) => sum + ids.length, 0);
/** Per run beyond its measured seconds: stats, CPU samples, settling. */
const OVERHEAD_SECONDS = 0.7;
/** Starting seven apps and completing the replay keys. */
const START_SECONDS = 30;

export const interleavedSection: BenchSection = {
  id: 'interleaved',
  title: 'Interleaved comparison',
  estimateSeconds: (s) =>
    START_SECONDS +
    CELLS_PER_ROUND *
      (s.connections.length * s.rounds * (s.seconds + OVERHEAD_SECONDS) +
        s.warmupSeconds +
        OVERHEAD_SECONDS),
  async run(context: BenchContext): Promise<SectionResult> {
    const { settings, database, log } = context;
    await ensurePeerInstalled();
    await resetTables(database.url);
    const base = { DATABASE_URL: database.url, POOL_SIZE: String(settings.poolSize) };
    const apps = await startApps([
      {
        name: 'module',
        kind: 'module',
        env: { ...base, TABLE_NAME: MODULE_TABLE, APP_NAME: 'bench-module' },
      },
      {
        name: 'module, asynchronous',
        kind: 'module',
        env: {
          ...base,
          TABLE_NAME: `${MODULE_TABLE}_async`,
          APP_NAME: 'bench-module-async',
          DURABILITY: 'asynchronous',
        },
      },
      {
        name: 'module, unbatched',
        kind: 'module',
        env: {
          ...base,
          TABLE_NAME: `${MODULE_TABLE}_unbatched`,
          APP_NAME: 'bench-module-unbatched',
          BATCHING: 'off',
        },
      },
      { name: 'limit', kind: 'module', env: { ...base, STORE: 'memory' } },
      { name: 'peer (memory)', kind: 'peer', env: { ...base, STORAGE: 'memory' } },
      { name: 'peer (Postgres)', kind: 'peer', env: { ...base, STORAGE: 'postgres' } },
      { name: 'peer (logged)', kind: 'peer', env: { ...base, STORAGE: 'postgres-logged' } },
    ]);
    try {
      const targets = buildTargets(apps);
      const byId = new Map(targets.map((target) => [target.id, target]));
      log('apps are up; completing the replay keys on every target');
      for (const id of LINE_UP.replay.filter((id) => id !== 'plain')) {
        await prepareReplays(byId.get(id)!);
      }
      const cells = new CellSet();
      const tag = Date.now().toString(36);
      for (const connections of settings.connections) {
        const plan: Record<ScenarioId, Scenario> = {
          new: newKeys(connections),
          replay: replays(connections),
          storm: storm(connections),
        };
        // Once per app is enough: JIT and pools are as warm at 50 connections as after 10.
        if (connections === settings.connections[0]) {
          log(`warm-up, ${settings.warmupSeconds} s per target and scenario`);
          for (const [scenario, ids] of Object.entries(LINE_UP) as [ScenarioId, string[]][]) {
            for (const id of ids) {
              await measure(byId.get(id)!, plan[scenario], {
                tag: `${tag}-warm`,
                seconds: settings.warmupSeconds,
                cpu: context.cpu,
              });
            }
          }
        }
        for (let round = 1; round <= settings.rounds; round++) {
          for (const [scenario, ids] of Object.entries(LINE_UP) as [ScenarioId, string[]][]) {
            for (const id of rotate(ids, round - 1)) {
              const run = await measure(byId.get(id)!, plan[scenario], {
                tag: `${tag}-c${connections}r${round}`,
                seconds: settings.seconds,
                cpu: context.cpu,
              });
              cells.add({ connections, round, scenario, target: id, run });
              log(`c${connections} round ${round} ${scenario} ${id}: ${describeRun(run)}`);
            }
          }
        }
      }
      log('round trips per request, one request at a time');
      const roundTrips = {
        module: await countRoundTrips(byId.get('module')!),
        peerPostgres: await countRoundTrips(byId.get('peerPostgres')!),
      };
      const data: InterleavedData = { cells, targets, roundTrips, settings };
      return {
        markdown: renderInterleaved(data),
        goals: interleavedGoals(data),
        data: { cells: cells.cells, roundTrips },
      };
    } finally {
      await stopApps(apps);
    }
  },
};

function buildTargets(apps: AppProcess[]): Target[] {
  const [module, asynchronous, unbatched, limit, peerMemory, peerPostgres, peerLogged] = apps;
  return [
    { id: 'plain', label: 'plain route', kind: 'module', app: module, path: '/plain' },
    {
      id: 'module',
      label: 'this module',
      kind: 'module',
      app: module,
      path: '/orders',
      dbApplicationName: 'bench-module',
    },
    {
      id: 'moduleAsync',
      label: "this module, durability: 'asynchronous'",
      kind: 'module',
      app: asynchronous,
      path: '/orders',
      dbApplicationName: 'bench-module-async',
    },
    {
      id: 'moduleUnbatched',
      label: 'this module, batching off',
      kind: 'module',
      app: unbatched,
      path: '/orders',
      dbApplicationName: 'bench-module-unbatched',
    },
    { id: 'limit', label: 'limit (in-memory store)', kind: 'module', app: limit, path: '/orders' },
    { id: 'peerMemory', label: 'peer, memory', kind: 'peer', app: peerMemory, path: '/orders' },
    {
      id: 'peerPostgres',
      label: 'peer, Postgres',
      kind: 'peer',
      app: peerPostgres,
      path: '/orders',
      dbApplicationName: 'bench-peer',
    },
    {
      id: 'peerPostgresLogged',
      label: 'peer, Postgres, logged table',
      kind: 'peer',
      app: peerLogged,
      path: '/orders',
      dbApplicationName: 'bench-peer-logged',
    },
  ];
}

async function resetTables(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP TABLE IF EXISTS "${MODULE_TABLE}"`);
    await client.query(`DROP TABLE IF EXISTS "${MODULE_TABLE}_unbatched"`);
    await client.query(`DROP TABLE IF EXISTS "${MODULE_TABLE}_async"`);
    for (const schema of PEER_SCHEMAS) {
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  } finally {
    await client.end();
  }
}
