// What the events cost (issue 13): new keys on the module with nobody listening, against the
// same app with a subscriber that does nothing (the module's side of an event: building and
// publishing it) and with the README's Prometheus recipe subscribed (every outcome counted
// and timed), in interleaved rounds. With BENCH_EVENTS_BASELINE=<another checkout of this repository>
// (e.g. a worktree of the commit before the events), that checkout's bench app runs beside
// them: the no-subscriber target must match it within the rounds' spread.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { appMicros } from './cells.js';
import { newKeys, measure, prime, type RunResult, type Target } from './load.js';
import { startApps, stopApps, type AppLaunch } from './processes.js';
import { describeRun, rotate } from './rounds.js';
import type { BenchSection } from './section.js';
import { fmt, fmtRatio, fmtSpread, spread } from './spread.js';

const CONNECTIONS = 10;

export const eventsSection: BenchSection = {
  id: 'events',
  title: 'What the events cost: new keys with and without a subscriber',
  estimateSeconds: (settings) => settings.rounds * 4 * (settings.seconds + 4) + 40,
  async run({ settings, database, cpu, log }) {
    const baseline = process.env.BENCH_EVENTS_BASELINE;
    if (baseline && !existsSync(join(baseline, 'bench', 'app.ts'))) {
      throw new Error(`BENCH_EVENTS_BASELINE=${baseline} has no bench/app.ts`);
    }
    const env = (name: string, extra: Record<string, string> = {}) => ({
      DATABASE_URL: database.url,
      TABLE_NAME: `bench_events_${name}`,
      APP_NAME: `bench-events-${name}`,
      PURGE: 'off',
      ...extra,
    });
    const launches: AppLaunch[] = [
      { name: 'no subscriber', kind: 'module', env: env('quiet') },
      { name: 'no-op subscriber', kind: 'module', env: env('noop', { EVENTS: 'noop' }) },
      { name: 'Prometheus recipe', kind: 'module', env: env('prom', { EVENTS: 'prometheus' }) },
      ...(baseline
        ? [{ name: 'baseline', kind: 'module' as const, env: env('base'), root: baseline }]
        : []),
    ];
    // Fresh tables: rows a previous run left would make one target's inserts costlier.
    const tables = launches.map((launch) => launch.env.TABLE_NAME);
    await dropTables(database.url, tables);
    const apps = await startApps(launches);
    try {
      const targets: Target[] = apps.map((app, i) => ({
        id: ['quiet', 'noop', 'prometheus', 'baseline'][i],
        label: launches[i].name,
        kind: 'module',
        app,
        path: '/orders',
        dbApplicationName: launches[i].env.APP_NAME,
      }));
      for (const target of targets) await prime(target);
      const runs = new Map<string, RunResult[]>(targets.map((t) => [t.id, []]));
      const scenario = newKeys(CONNECTIONS);
      for (let round = 0; round < settings.rounds; round++) {
        for (const target of rotate(targets, round)) {
          const tag = `events-${Date.now().toString(36)}-${round}`;
          const run = await measure(target, scenario, { tag, seconds: settings.seconds, cpu });
          if (run.errors > 0) throw new Error(`${target.label}: ${run.errors} errors`);
          runs.get(target.id)!.push(run);
          log(`events round ${round + 1}, ${target.label}: ${describeRun(run)}`);
        }
      }
      const rps = (id: string) => runs.get(id)!.map((run) => run.rps);
      const ratio = (id: string) =>
        spread(rps(id).map((value, round) => value / rps('quiet')[round]));
      const micros = (id: string) => spread(runs.get(id)!.map((run) => appMicros(run) ?? NaN));
      const rows = targets.map(
        (target) =>
          `| ${target.label} | ${fmtSpread(spread(rps(target.id)))} | ${target.id === 'quiet' ? '1' : fmtRatio(ratio(target.id))} | ${fmtSpread(micros(target.id))} |`,
      );
      const markdown = [
        `New keys, ${CONNECTIONS} connections, ${settings.rounds} interleaved rounds of ${settings.seconds} s`,
        'per target (median [min–max]; the ratio is taken round by round against "no subscriber").',
        '',
        '| target | req/s | / no subscriber | app CPU per request (µs) |',
        '|---|---:|---:|---:|',
        ...rows,
        '',
        `"no subscriber" is the module as shipped with nobody listening: it builds no event. ` +
          `"no-op subscriber" listens to events$ and does nothing; ` +
          `"Prometheus recipe" has the README's prom-client recipe subscribed to every event` +
          (baseline ? `; "baseline" is the bench app of ${baseline}.` : '.'),
        'On a shared machine the throughput moves with whatever else runs; the CPU the app ' +
          'spends per request is the steadier measure of what the events add.',
        `Median p99 latency: ${targets.map((t) => `${t.label} ${fmt(spread(runs.get(t.id)!.map((r) => r.p99)).median)} ms`).join(', ')}.`,
      ].join('\n');
      return { markdown, data: Object.fromEntries(runs) };
    } finally {
      await stopApps(apps);
      await dropTables(database.url, tables);
    }
  },
};

async function dropTables(url: string, tables: string[]): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    for (const table of tables) await client.query(`DROP TABLE IF EXISTS "${table}"`);
  } finally {
    await client.end();
  }
}
