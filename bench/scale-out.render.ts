// The scale-out section's part of REPORT.md: 1 process vs 2, and what bounds the second.
import { cpus } from 'node:os';
import { appMicros, backendMicros, machineBusy, type CellQuery, type CellSet } from './cells.js';
import { markdownTable, stormVerdict } from './cell-table.js';
import type { RunResult, ScenarioId } from './load.js';
import type { GoalResult } from './section.js';
import { fmt, fmtRatio, fmtSpread } from './spread.js';

export interface ScaleOutData {
  cells: CellSet;
  connections: number;
  rounds: number;
}

const ROWS: [ScenarioId, string, string][] = [
  ['new', 'plain', 'plain route'],
  ['new', 'module', 'new keys'],
  ['storm', 'module', 'duplicate storm'],
];

const pct = (value: number) => `${fmt(value * 100)}%`;

/** How the second process's handler runs split between the workers, e.g. "51% / 49%". */
function workerSplit(runs: RunResult[]): string {
  const totals: number[] = [];
  for (const run of runs) {
    run.workerRuns?.forEach((count, i) => (totals[i] = (totals[i] ?? 0) + count));
  }
  const sum = totals.reduce((a, b) => a + b, 0);
  return sum > 0 ? totals.map((count) => pct(count / sum)).join(' / ') : '–';
}

/** Each consumer's share of the machine's capacity while the load ran (median over rounds). */
function capacityShares(cells: CellSet, query: CellQuery) {
  const share = (pick: (run: RunResult) => number | undefined) =>
    cells.spreadOf(query, (run) => {
      const ms = pick(run);
      return ms === undefined ? undefined : ms / (run.cpu.wallMs * run.cpu.cores);
    }).median;
  return {
    busy: cells.spreadOf(query, machineBusy).median,
    app: share((run) => run.cpu.appMs),
    backends: share((run) => run.cpu.backendsMs),
    pgAux: share((run) => run.cpu.pgAuxMs),
    loadgen: share((run) => run.cpu.loadgenMs),
    other: share((run) => run.cpu.otherMs),
  };
}

export function renderScaleOut(data: ScaleOutData): string {
  const { cells, connections } = data;
  const q = (scenario: ScenarioId, target: string): CellQuery => ({
    connections,
    scenario,
    target,
  });
  const rows = ROWS.map(([scenario, target, label]) => {
    const one = q(scenario, `${target}1`);
    const two = q(scenario, `${target}2`);
    const both = (pick: (run: RunResult) => number | undefined) =>
      `${fmt(cells.spreadOf(one, pick).median)} → ${fmt(cells.spreadOf(two, pick).median)}`;
    return [
      label,
      fmtSpread(cells.spreadOf(one, (run) => run.rps)),
      fmtSpread(cells.spreadOf(two, (run) => run.rps)),
      fmtRatio(cells.ratio(two, one)),
      workerSplit([...cells.runs(two).values()]),
      both(appMicros),
      target === 'plain' ? '–' : both(backendMicros),
      `${pct(cells.spreadOf(one, machineBusy).median)} → ${pct(cells.spreadOf(two, machineBusy).median)}`,
      scenario === 'storm' ? stormVerdict([...cells.runs(two).values()]) : '',
    ];
  });
  const table = markdownTable(
    [
      '',
      '1 process req/s',
      '2 processes req/s',
      '2 / 1',
      'handler runs per worker',
      'Node µs/req (1 → 2)',
      'Postgres µs/req (1 → 2)',
      'machine busy (1 → 2)',
      'storm: runs = keys (2 processes)',
    ],
    rows,
    1,
  );
  const s = capacityShares(cells, q('new', 'module2'));
  const saturated = s.busy >= 0.9;
  const crowded = s.other >= 0.25;
  return `${data.rounds} rounds of both setups at ${connections} connections, interleaved; the 2-process app is
\`bench/cluster.ts\` (Node's cluster module: one port, the primary hands connections to the
workers round-robin), each worker with its own pool of the same size, all on one record table.
The storm's duplicates reach both workers, so it checks that one table keeps two processes
from running a key twice. "Node µs/req" sums every process of the app (the cluster's primary included).

${table}

**What bounds it.** With 2 processes on new keys the machine was ${pct(s.busy)} busy: the app
processes took ${pct(s.app)} of its ${cpus().length} cores, the Postgres backends ${pct(s.backends)} and Postgres's
background processes ${pct(s.pgAux)}, the load generator ${pct(s.loadgen)}, other work ${pct(s.other)}.
${
  crowded
    ? `Other work on the machine took ${pct(s.other)} of it during these runs, so this comparison mostly measures the neighbours: rerun on a quiet machine before reading the 2 / 1 column.`
    : saturated
      ? 'The cores are saturated: a second process can only take CPU from Postgres and the load generator, which share the same cores, so throughput here is bound by the core count, not by the module. On separate machines (app, database, load) the same test would show how far it scales.'
      : 'The cores are not saturated, so the bound is elsewhere: waiting on Postgres (commit flushes, locks) or the load generator; compare the per-process CPU above.'
}
`;
}

export function scaleOutGoals(data: ScaleOutData): GoalResult[] {
  const runs = [
    ...data.cells
      .runs({ connections: data.connections, scenario: 'storm', target: 'module2' })
      .values(),
  ];
  return [
    {
      id: 'stormRuns',
      measured: `${stormVerdict(runs)} with 2 processes at ${data.connections}`,
      met: runs.length > 0 && runs.every((run) => run.handlerRuns === run.distinctKeys),
    },
  ];
}
