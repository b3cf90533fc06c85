// The database's own ceiling: pgbench running the module's own statements (bench/ceiling.ts
// captures them from PostgresIdempotencyStore) with as many clients as the HTTP load has
// connections, no HTTP and no Node at all. New key = claim + complete, replay = claim of a
// completed key; once more with synchronous_commit=off to show what the WAL flush costs.
import { markdownTable } from './cell-table.js';
import {
  buildScripts,
  pgbenchVersion,
  preparePgbenchReplays,
  runPgbench,
  type PgbenchResult,
} from './ceiling.js';
import type { BenchContext, BenchSection, SectionResult } from './section.js';
import { fmt, fmtSpread, spread } from './spread.js';
import { TableFiller } from './table-fill.js';

const TABLE = 'bench_idempotency_pgbench';
const KINDS = {
  newKey: { label: 'new key (claim + complete)', options: undefined },
  replay: { label: 'replay (claim of a completed key)', options: undefined },
  newKeyNoFlush: { label: 'new key, synchronous_commit=off', options: '-c synchronous_commit=off' },
} as const;
type Kind = keyof typeof KINDS;
const rounds = (r: number) => Math.min(r, 2);
/**
 * Every pgbench run opens its clients afresh (50 took ~2 s to connect on the loaded 2-core
 * machine) and prepares its statements on each, so a run shorter than this measures mostly
 * that, however warm the table is; no separate warm-up run helps.
 */
const seconds = (s: number) => Math.max(5, Math.round(s));

export const pgbenchSection: BenchSection = {
  id: 'pgbench',
  title: 'The database alone (pgbench, same SQL)',
  estimateSeconds: (s) =>
    s.connections.length * 3 * rounds(s.rounds) * (seconds(s.seconds) + 0.5) + 10,
  async run(context: BenchContext): Promise<SectionResult> {
    const { settings, database, log } = context;
    const version = await pgbenchVersion();
    if (!version) throw new Error('pgbench is not installed (apt-get install postgresql-client)');
    await new TableFiller(database.url, TABLE).reset();
    const scripts = await buildScripts(TABLE);
    await preparePgbenchReplays(database.url, TABLE);
    const results: {
      connections: number;
      kind: Kind;
      run: PgbenchResult;
      backendMicros?: number;
    }[] = [];
    let runTag = 1;
    for (const connections of settings.connections) {
      const script = (kind: Kind) => (kind === 'replay' ? scripts.replay : scripts.newKey);
      for (let round = 1; round <= rounds(settings.rounds); round++) {
        for (const kind of Object.keys(KINDS) as Kind[]) {
          const before = await context.cpu.exitedBackendsMs();
          const run = await runPgbench(
            database.url,
            script(kind),
            connections,
            seconds(settings.seconds),
            runTag++,
            KINDS[kind].options,
          );
          // pgbench's backends exit with it; give the postmaster a moment to reap them.
          await new Promise((done) => setTimeout(done, 200));
          const after = await context.cpu.exitedBackendsMs();
          const backendMicros =
            before === undefined || after === undefined
              ? undefined
              : ((after - before) * 1000) / Math.max(1, run.transactions);
          results.push({ connections, kind, run, backendMicros });
          log(
            `pgbench c${connections} ${kind} #${round}: ${fmt(run.tps)} tps, Postgres ${fmt(backendMicros)} µs/tx`,
          );
        }
      }
    }
    const rows = settings.connections.flatMap((connections) =>
      (Object.keys(KINDS) as Kind[]).map((kind) => {
        const mine = results.filter((r) => r.connections === connections && r.kind === kind);
        return [
          KINDS[kind].label,
          String(connections),
          fmtSpread(spread(mine.map((r) => r.run.tps))),
          fmt(spread(mine.map((r) => r.run.p50)).median, 1),
          fmt(spread(mine.map((r) => r.run.p99)).median, 1),
          fmt(
            spread(mine.flatMap((r) => (r.backendMicros === undefined ? [] : [r.backendMicros])))
              .median,
          ),
          fmt(mine.reduce((sum, r) => sum + r.run.failed, 0)),
        ];
      }),
    );
    const table = markdownTable(
      [
        'script',
        'clients',
        'transactions/s median [min–max]',
        'p50 ms',
        'p99 ms',
        'Postgres backends µs/tx (approx.)',
        'failed',
      ],
      rows,
      1,
    );
    return {
      markdown: `${version}, \`--protocol=prepared\`, one transaction = one key; ${rounds(settings.rounds)} rounds of ${seconds(settings.seconds)} s, on a table of its own.
Each statement is its own autocommit transaction, as in the app. Postgres CPU per transaction
is approximate: pgbench's backends exit with it, so it is the CPU of every backend that exited
during the run (read from the postmaster's reaped-children time), other clients' included, and
each client's connection start-up.

${table}

<details><summary>The scripts</summary>

\`\`\`sql
-- new key
${scripts.newKey.trim()}

-- replay
${scripts.replay.trim()}
\`\`\`
</details>
`,
      data: results,
    };
  },
};
