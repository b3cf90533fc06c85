// The per-target table every load section prints: throughput with its spread over rounds,
// ratios to reference targets taken round by round, and where the CPU went per request.
import {
  appMicros,
  backendMicros,
  loadgenMicros,
  machineBusy,
  otherMicros,
  pgAuxMicros,
  statementsPerRequest,
  type CellSet,
} from './cells.js';
import type { ScenarioId } from './load.js';
import { fmt, fmtRatio, fmtSpread } from './spread.js';

export interface TableTarget {
  id: string;
  label: string;
}

export interface TableOptions {
  connections: number;
  scenario: ScenarioId;
  targets: TableTarget[];
  /** Ratio columns: this target's req/s over the reference's, round by round. */
  ratiosTo: TableTarget[];
}

export function cellTable(cells: CellSet, options: TableOptions): string {
  const { connections, scenario } = options;
  const storm = scenario === 'storm';
  const present = options.targets.filter((t) => cells.has({ connections, scenario, target: t.id }));
  const refs = options.ratiosTo.filter((r) => cells.has({ connections, scenario, target: r.id }));
  const header = [
    'target',
    'req/s median [min–max]',
    ...refs.map((ref) => `/ ${ref.label}`),
    'Node µs/req',
    'Postgres backends µs/req',
    'Postgres background µs/req',
    'load generator µs/req',
    'rest of machine µs/req',
    'machine busy',
    'SQL statements/req',
    'p99 ms',
    'errors',
    ...(storm ? ['handler runs = distinct keys?'] : []),
  ];
  const rows = present.map((target) => {
    const query = { connections, scenario, target: target.id };
    const runs = [...cells.runs(query).values()];
    const cell = (pick: Parameters<CellSet['spreadOf']>[1], digits = 0) =>
      fmt(cells.spreadOf(query, pick).median, digits);
    const row = [
      target.label,
      fmtSpread(cells.spreadOf(query, (run) => run.rps)),
      ...refs.map((ref) =>
        ref.id === target.id
          ? '1'
          : fmtRatio(cells.ratio(query, { connections, scenario, target: ref.id })),
      ),
      cell(appMicros),
      cell(backendMicros),
      cell(pgAuxMicros),
      cell(loadgenMicros),
      cell(otherMicros),
      `${fmt(cells.spreadOf(query, machineBusy).median * 100)}%`,
      cell(statementsPerRequest, 2),
      cell((run) => run.p99, 1),
      fmt(runs.reduce((sum, run) => sum + run.errors, 0)),
    ];
    if (storm) row.push(stormVerdict(runs));
    return row;
  });
  return markdownTable(header, rows, 1);
}

/** "yes (5/5 runs)" or the runs that broke it as handler runs / distinct keys. */
export function stormVerdict(runs: { handlerRuns: number; distinctKeys: number }[]): string {
  const bad = runs.filter((run) => run.handlerRuns !== run.distinctKeys);
  if (bad.length === 0) return `yes (${runs.length}/${runs.length} runs)`;
  return `**no**: ${bad.map((run) => `${run.handlerRuns} runs for ${run.distinctKeys} keys`).join(', ')}`;
}

/** A markdown table; columns from `numericFrom` on are right-aligned. */
export function markdownTable(header: string[], rows: string[][], numericFrom: number): string {
  const align = header.map((_, i) => (i >= numericFrom ? '---:' : '---'));
  return [header, align, ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}
