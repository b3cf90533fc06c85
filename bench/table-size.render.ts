// The table-size section's part of REPORT.md, and its verdict on "flat from 0 to 1M rows".
import { appMicros, backendMicros, pgAuxMicros, type CellQuery, type CellSet } from './cells.js';
import { markdownTable } from './cell-table.js';
import type { ScenarioId } from './load.js';
import type { GoalResult } from './section.js';
import { fmt, fmtSpread } from './spread.js';
import type { SizeStep } from './table-size.section.js';

export interface TableSizeData {
  cells: CellSet;
  steps: SizeStep[];
  connections: number;
  rounds: number;
}

/** Postgres CPU per key may grow this much from the smallest table to the largest and count as flat. */
const FLAT_WITHIN = 1.25;

const query = (data: TableSizeData, size: number, scenario: ScenarioId): CellQuery => ({
  connections: data.connections,
  scenario,
  target: `rows-${size}`,
});

export function renderTableSize(data: TableSizeData): string {
  const rows = data.steps.map((step) => {
    const fresh = query(data, step.size, 'new');
    const again = query(data, step.size, 'replay');
    const median = (q: CellQuery, pick: typeof appMicros) =>
      fmt(data.cells.spreadOf(q, pick).median);
    return [
      fmt(step.size),
      fmt(step.before.rows),
      fmt(step.before.bytes / 2 ** 20),
      fmt(step.fillSeconds),
      fmtSpread(data.cells.spreadOf(fresh, (run) => run.rps)),
      median(fresh, backendMicros),
      median(fresh, pgAuxMicros),
      median(fresh, appMicros),
      fmtSpread(data.cells.spreadOf(again, (run) => run.rps)),
      median(again, backendMicros),
      median(again, appMicros),
    ];
  });
  const table = markdownTable(
    [
      'fill rows',
      'rows at start',
      'table + indexes MB',
      'fill s',
      'new keys req/s',
      'Postgres backends µs/new key',
      'Postgres background µs/new key',
      'Node µs/new key',
      'replays req/s',
      'Postgres backends µs/replay',
      'Node µs/replay',
    ],
    rows,
    0,
  );
  return `The module on its own table, filled by \`bench/table-fill.ts\` with one
\`INSERT ... SELECT generate_series\` per step (85% completed and live, 14% completed and
expired but not purged, 1% in flight with a dead lease; then \`VACUUM ANALYZE\` and a
checkpoint), ${data.rounds} rounds per size at ${data.connections} connections: new keys, then replays of the keys
that run just created. "rows at start" includes the keys earlier steps created. The purge is
off in this app so that it cannot start mid-measurement.

${table}

${flatness(data)
  .map((line) => `- ${line.measured}: ${line.met ? 'flat' : '**not flat**'}`)
  .join('\n')}
(flat: the largest table costs at most ${FLAT_WITHIN}x the Postgres backend CPU per key of the smallest).
`;
}

function flatness(data: TableSizeData): GoalResult[] {
  if (data.steps.length < 2) return [];
  const first = data.steps[0].size;
  const last = data.steps[data.steps.length - 1].size;
  return (['new', 'replay'] as const).map((scenario) => {
    const from = data.cells.spreadOf(query(data, first, scenario), backendMicros).median;
    const to = data.cells.spreadOf(query(data, last, scenario), backendMicros).median;
    const growth = to / from;
    return {
      id: 'pgCpuFlat' as const,
      measured: `${scenario === 'new' ? 'new key' : 'replay'} ${fmt(from)} → ${fmt(to)} µs (${growth.toFixed(2)}x) from ${fmt(first)} to ${fmt(last)} fill rows`,
      met: Number.isFinite(growth) && growth <= FLAT_WITHIN,
    };
  });
}

export function tableSizeGoals(data: TableSizeData): GoalResult[] {
  return flatness(data);
}
