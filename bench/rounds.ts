// Small helpers the load sections share: the rotating order of a round, and the log line of a run.
import { appMicros, backendMicros, machineBusy } from './cells.js';
import type { RunResult } from './load.js';
import { fmt } from './spread.js';

/** `list` rotated left by `by`: round r starts with a different target than round r - 1. */
export function rotate<T>(list: T[], by: number): T[] {
  const k = by % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

export function describeRun(run: RunResult): string {
  const db = backendMicros(run);
  return [
    `${fmt(run.rps)} req/s`,
    `node ${fmt(appMicros(run))} µs`,
    ...(db === undefined ? [] : [`pg ${fmt(db)} µs`]),
    `busy ${fmt(100 * machineBusy(run))}%`,
    `errors ${run.errors}`,
    `runs ${run.handlerRuns}${run.distinctKeys ? `/${run.distinctKeys} keys` : ''}`,
  ].join(', ');
}
