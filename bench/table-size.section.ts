// Does a key cost Postgres the same on a full table as on an empty one? The record table is
// filled step by step (BENCH_TABLE_SIZES, default 0, 100k, 1M rows) and at each size the module
// runs new keys, then replays of the keys it just created (a retry comes soon after the first
// attempt), for a few rounds. Reported per size: throughput and CPU per key in Node, in the
// Postgres backends and in Postgres's background processes.
import { CellSet } from './cells.js';
import { describeRun } from './rounds.js';
import { measure, newKeys, prime, replays, type Target } from './load.js';
import { startApps, stopApps } from './processes.js';
import type { BenchContext, BenchSection, SectionResult } from './section.js';
import type { BenchSettings } from './settings.js';
import { TableFiller, type TableState } from './table-fill.js';
import { renderTableSize, tableSizeGoals } from './table-size.render.js';

const TABLE = 'bench_idempotency_sized';
const APP_NAME = 'bench-sized';
export const sizeRounds = (settings: BenchSettings) => Math.min(settings.rounds, 3);
/** Rows per second the fill manages on a slow shared machine, for the estimate only. */
const FILL_ROWS_PER_SECOND = 40_000;

export interface SizeStep {
  size: number;
  fillSeconds: number;
  before: TableState;
}

export const tableSizeSection: BenchSection = {
  id: 'table-size',
  title: 'Postgres CPU per key, empty table to 1M rows',
  estimateSeconds: (s) =>
    10 +
    s.tableSizes.length * (2 * sizeRounds(s) * (s.seconds + 0.9) + 2 * (s.warmupSeconds + 0.9)) +
    Math.max(...s.tableSizes) / FILL_ROWS_PER_SECOND,
  async run(context: BenchContext): Promise<SectionResult> {
    const { settings, database, log } = context;
    const filler = new TableFiller(database.url, TABLE);
    await filler.reset();
    const [app] = await startApps([
      {
        name: 'module (sized table)',
        kind: 'module',
        env: {
          DATABASE_URL: database.url,
          POOL_SIZE: String(settings.poolSize),
          TABLE_NAME: TABLE,
          APP_NAME,
          // The fill's expired rows stay put: a purge mid-measurement would be its own load.
          PURGE: 'off',
        },
      },
    ]);
    try {
      const target: Target = {
        id: 'module',
        label: 'this module',
        kind: 'module',
        app,
        path: '/orders',
        dbApplicationName: APP_NAME,
      };
      await prime(target);
      const connections = settings.highConnections;
      const cells = new CellSet();
      const steps: SizeStep[] = [];
      const tag = `sized-${Date.now().toString(36)}`;
      const sizes = [...settings.tableSizes].sort((a, b) => a - b);
      for (const size of sizes) {
        const fillStart = Date.now();
        log(`table-size: filling ${TABLE} to ${size.toLocaleString('en-US')} rows`);
        await filler.fillTo(size);
        const step = {
          size,
          fillSeconds: (Date.now() - fillStart) / 1000,
          before: await filler.state(),
        };
        steps.push(step);
        const options = { cpu: context.cpu, collectRanKeys: true };
        const warm = await measure(target, newKeys(connections), {
          ...options,
          tag: `${tag}-${size}-warm`,
          seconds: settings.warmupSeconds,
        });
        await measure(target, replays(connections, warm.ranKeys), {
          ...options,
          tag: `${tag}-${size}-warm`,
          seconds: settings.warmupSeconds,
        });
        for (let round = 1; round <= sizeRounds(settings); round++) {
          const fresh = await measure(target, newKeys(connections), {
            ...options,
            tag: `${tag}-${size}-r${round}`,
            seconds: settings.seconds,
          });
          const again = await measure(target, replays(connections, fresh.ranKeys), {
            ...options,
            tag: `${tag}-${size}-r${round}`,
            seconds: settings.seconds,
          });
          for (const [scenario, run] of [
            ['new', fresh],
            ['replay', again],
          ] as const) {
            delete run.ranKeys; // thousands of keys: not worth keeping in the raw data
            cells.add({ connections, round, scenario, target: `rows-${size}`, run });
            log(`table-size ${size} round ${round} ${scenario}: ${describeRun(run)}`);
          }
        }
      }
      const data = { cells, steps, connections, rounds: sizeRounds(settings) };
      return { markdown: renderTableSize(data), goals: tableSizeGoals(data), data };
    } finally {
      await stopApps([app]);
      await filler.drop();
    }
  },
};
