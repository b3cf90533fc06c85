// Where the module app's own CPU goes: one run of new keys and one of replays under V8's CPU
// profiler (the one behind `node --cpu-prof`, started and stopped over IPC so that start-up is
// left out), summarised by bench/profile.ts. Profiling slows the app; these runs are not in
// the other sections' numbers.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import {
  measure,
  newKeys,
  prepareReplays,
  replays,
  type RunResult,
  type Scenario,
  type Target,
} from './load.js';
import { mainThreadMs } from './cpu.js';
import { ask, startApps, stopApps } from './processes.js';
import { summarizeProfile, type ProfileSummary } from './profile.js';
import type { BenchContext, BenchSection, SectionResult } from './section.js';
import { fmt } from './spread.js';

const TABLE = 'bench_idempotency_profile';
const pct = (value: number) => `${(value * 100).toFixed(1)}%`;

export const profileSection: BenchSection = {
  id: 'profile',
  title: "Where the module app's CPU goes (V8 profiler)",
  estimateSeconds: (s) => 15 + 2 * (s.seconds + s.warmupSeconds + 2),
  async run(context: BenchContext): Promise<SectionResult> {
    const { settings, database } = context;
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    await client.query(`DROP TABLE IF EXISTS "${TABLE}"`).finally(() => client.end());
    const [app] = await startApps([
      {
        name: 'module (profiled)',
        kind: 'module',
        env: {
          DATABASE_URL: database.url,
          POOL_SIZE: String(settings.poolSize),
          TABLE_NAME: TABLE,
          APP_NAME: 'bench-profiled',
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
      };
      await prepareReplays(target);
      const connections = settings.highConnections;
      const profiles: {
        name: string;
        profile: ProfileSummary;
        run: RunResult;
        threadMs: number;
      }[] = [];
      for (const [name, scenario] of [
        ['New keys', newKeys(connections)],
        ['Replays', replays(connections)],
      ] as [string, Scenario][]) {
        const tag = `prof-${Date.now().toString(36)}`;
        await measure(target, scenario, {
          tag: `${tag}-warm`,
          seconds: settings.warmupSeconds,
          cpu: context.cpu,
        });
        const dir = settings.profileDir ?? mkdtempSync(join(tmpdir(), 'idem-profile-'));
        const file = join(dir, `module-${scenario.id}.cpuprofile`);
        try {
          await ask(app.child, { command: 'profile-start' }, 'profiling');
          const threadBefore = mainThreadMs(app.pids[0]) ?? NaN;
          const run = await measure(target, scenario, {
            tag,
            seconds: settings.seconds,
            cpu: context.cpu,
          });
          const threadMs = (mainThreadMs(app.pids[0]) ?? NaN) - threadBefore;
          await ask(app.child, { command: 'profile-stop', file }, 'profiled');
          profiles.push({ name, profile: summarizeProfile(file), run, threadMs });
        } finally {
          if (!settings.profileDir) rmSync(dir, { recursive: true, force: true });
        }
      }
      return {
        markdown: `At ${connections} connections, ${settings.seconds} s per scenario. Self time only: time spent waiting on Postgres is idle here. The profiler samples wall time, so shares are of sampled time, not of CPU.\n\n${profiles.map(renderProfile).join('\n')}`,
        data: profiles.map(({ name, profile }) => ({ name, profile })),
      };
    } finally {
      await stopApps([app]);
    }
  },
};

function renderProfile({
  name,
  profile,
  run,
  threadMs,
}: {
  name: string;
  profile: ProfileSummary;
  run: RunResult;
  /** CPU of the app's main thread over the measured run (about the profiled window). */
  threadMs: number;
}): string {
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
  const writes = profile.socketWrites;
  // V8 samples wall time: while the thread waits for a core (a Postgres backend it woke, or
  // the load generator, runs instead), the time lands on the function that was running. The
  // main thread's own CPU over (about) the same window says how much of "busy" that is.
  const preempted = profile.busyMs - threadMs;
  return `### ${name}

${fmt(run.requests)} requests (${fmt(run.rps)} req/s under the profiler), ${fmt(run.queries)} SQL statements.
Busy ${fmt(profile.busyMs)} ms of ${fmt(profile.totalMs)} ms sampled (the rest idle). CPU over the measured run: the
main thread ${fmt(threadMs)} ms, the whole process (GC and other threads too) ${fmt(run.cpu.appMs)} ms${preempted > 0 ? `; so about ${fmt(preempted)} ms of "busy" is time the main thread waited for a core, counted against whatever it was running` : ''}. Code in \`src/\` and
what it calls synchronously, socket writes aside: ${pct(profile.moduleInclusiveShare)} of busy time. Socket writes
(native \`writev\`/\`write*String\`): ${fmt(writes.toPostgresMs)} ms sending SQL (${fmt((writes.toPostgresMs * 1000) / Math.max(1, run.queries))} µs per
statement), ${fmt(writes.toHttpClientsMs)} ms sending HTTP responses (${fmt((writes.toHttpClientsMs * 1000) / Math.max(1, run.requests))} µs per response).

| self time by area | ms | share of busy |
|---|---:|---:|
${areas}

| hottest functions (self time) | where | area | share of busy |
|---|---|---|---:|
${hottest}
`;
}
