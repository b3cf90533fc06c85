// Scale-out: the same load against one app process and against two (Node's cluster module,
// one port, connections handed out round-robin) sharing one database and one record table,
// interleaved round by round: the plain route (what two processes can do at all), new keys,
// and the storm, which must still run each key's handler once across both processes.
import pg from 'pg';
import { CellSet } from './cells.js';
import { describeRun, rotate } from './rounds.js';
import {
  measure,
  newKeys,
  prime,
  storm,
  type Scenario,
  type ScenarioId,
  type Target,
} from './load.js';
import { startApps, stopApps } from './processes.js';
import { renderScaleOut, scaleOutGoals } from './scale-out.render.js';
import type { BenchContext, BenchSection, SectionResult } from './section.js';
import type { BenchSettings } from './settings.js';

const TABLE = 'bench_idempotency_scale';
/** The plain route rides along with new keys: what 2 processes can do without the module. */
const GROUPS: [ScenarioId, string[]][] = [
  ['new', ['plain1', 'plain2', 'module1', 'module2']],
  ['storm', ['module1', 'module2']],
];
const CELLS_PER_ROUND = GROUPS.reduce((sum, [, ids]) => sum + ids.length, 0);
/** Scale-out runs fewer rounds than the interleaved section: it asks a coarser question. */
export const scaleRounds = (settings: BenchSettings) => Math.min(settings.rounds, 3);

export const scaleOutSection: BenchSection = {
  id: 'scale-out',
  title: 'Scale-out: 1 process vs 2 on one database',
  estimateSeconds: (s) =>
    20 + CELLS_PER_ROUND * (scaleRounds(s) * (s.seconds + 0.7) + s.warmupSeconds + 0.7),
  async run(context: BenchContext): Promise<SectionResult> {
    const { settings, database, log } = context;
    await dropTable(database.url);
    const env = (name: string) => ({
      DATABASE_URL: database.url,
      POOL_SIZE: String(settings.poolSize),
      TABLE_NAME: TABLE,
      APP_NAME: name,
    });
    const apps = await startApps([
      { name: 'module, 1 process', kind: 'module', env: env('bench-scale-1') },
      { name: 'module, 2 processes', kind: 'cluster', workers: 2, env: env('bench-scale-2') },
    ]);
    try {
      const [one, two] = apps;
      const targets: Record<string, Target> = {};
      for (const [n, app] of [
        [1, one],
        [2, two],
      ] as const) {
        targets[`plain${n}`] = {
          id: `plain${n}`,
          label: 'plain',
          kind: 'module',
          app,
          path: '/plain',
        };
        targets[`module${n}`] = {
          id: `module${n}`,
          label: 'module',
          kind: 'module',
          app,
          path: '/orders',
          dbApplicationName: `bench-scale-${n}`,
        };
      }
      // 20 requests at a time open 20 connections, which the cluster spreads over its workers.
      await prime(targets.module1);
      await prime(targets.module2);
      const connections = settings.highConnections;
      const plan: Partial<Record<ScenarioId, Scenario>> = {
        new: newKeys(connections),
        storm: storm(connections),
      };
      const cells = new CellSet();
      const tag = `scale-${Date.now().toString(36)}`;
      for (const [scenario, ids] of GROUPS) {
        for (const id of ids) {
          await measure(targets[id], plan[scenario]!, {
            tag: `${tag}-warm`,
            seconds: settings.warmupSeconds,
            cpu: context.cpu,
          });
        }
      }
      for (let round = 1; round <= scaleRounds(settings); round++) {
        for (const [scenario, ids] of GROUPS) {
          for (const id of rotate(ids, round - 1)) {
            const run = await measure(targets[id], plan[scenario]!, {
              tag: `${tag}-r${round}`,
              seconds: settings.seconds,
              cpu: context.cpu,
            });
            cells.add({ connections, round, scenario, target: id, run });
            log(`scale-out round ${round} ${scenario} ${id}: ${describeRun(run)}`);
          }
        }
      }
      const data = { cells, connections, rounds: scaleRounds(settings) };
      return { markdown: renderScaleOut(data), goals: scaleOutGoals(data), data: cells.cells };
    } finally {
      await stopApps(apps);
    }
  },
};

async function dropTable(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP TABLE IF EXISTS "${TABLE}"`);
  } finally {
    await client.end();
  }
}
