// One measured run is a cell: (connections, round, scenario, target). Sections collect cells
// and read them back as series over rounds: a target's req/s, CPU per request, and ratios
// between two targets taken round by round (both measured in the same round, seconds apart,
// so the machine's load drifts between rounds rather than between the two sides of a ratio).
import type { CpuSplit } from './cpu.js';
import type { RunResult, ScenarioId } from './load.js';
import { spread, type Spread } from './spread.js';

export interface Cell {
  connections: number;
  round: number;
  scenario: ScenarioId;
  target: string;
  run: RunResult;
}

export interface CellQuery {
  connections: number;
  scenario: ScenarioId;
  target: string;
}

export class CellSet {
  readonly cells: Cell[] = [];

  add(cell: Cell): void {
    this.cells.push(cell);
  }

  /** The runs of one target in one scenario, by round. */
  runs(query: CellQuery): Map<number, RunResult> {
    const byRound = new Map<number, RunResult>();
    for (const cell of this.cells) {
      if (
        cell.connections === query.connections &&
        cell.scenario === query.scenario &&
        cell.target === query.target
      ) {
        byRound.set(cell.round, cell.run);
      }
    }
    return byRound;
  }

  has(query: CellQuery): boolean {
    return this.runs(query).size > 0;
  }

  /** A value of each run, median and min–max over rounds. */
  spreadOf(query: CellQuery, value: (run: RunResult) => number | undefined): Spread {
    return spread(
      [...this.runs(query).values()].map(value).filter((v): v is number => v !== undefined),
    );
  }

  /** Per-round values of a / b, both taken from the same round. */
  ratios(
    a: CellQuery,
    b: CellQuery,
    value: (run: RunResult) => number = (run) => run.rps,
  ): number[] {
    const right = this.runs(b);
    const values: number[] = [];
    for (const [round, run] of this.runs(a)) {
      const other = right.get(round);
      if (other && value(other) > 0) values.push(value(run) / value(other));
    }
    return values;
  }

  ratio(a: CellQuery, b: CellQuery, value?: (run: RunResult) => number): Spread {
    return spread(this.ratios(a, b, value));
  }
}

/** CPU microseconds per answered request of one consumer in one run. */
export function perRequest(pick: (cpu: CpuSplit) => number | undefined) {
  return (run: RunResult): number | undefined => {
    const ms = pick(run.cpu);
    return ms === undefined ? undefined : (ms * 1000) / Math.max(1, run.requests);
  };
}

export const appMicros = perRequest((cpu) => cpu.appMs);
export const backendMicros = perRequest((cpu) => cpu.backendsMs);
export const pgAuxMicros = perRequest((cpu) => cpu.pgAuxMs);
export const loadgenMicros = perRequest((cpu) => cpu.loadgenMs);
export const otherMicros = perRequest((cpu) => cpu.otherMs);
/** Share of the machine's cores that were busy while the load ran. */
export const machineBusy = (run: RunResult): number =>
  run.cpu.machineMs / Math.max(1, run.cpu.wallMs * run.cpu.cores);
/** SQL statements per request, counted in the app (over every request sent: all had finished). */
export const statementsPerRequest = (run: RunResult): number => run.queries / Math.max(1, run.sent);
