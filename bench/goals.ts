// The targets of issue 14, in the order the report lists them. Sections judge the ones their
// measurements cover; the report merges them (a target judged by two sections is met only if
// both say so) and marks the rest "not measured in this run".
import type { GoalResult } from './section.js';

export const GOALS = {
  newVsPeer50: 'new keys >= 2x the peer on Postgres at 50 connections',
  newVsPeer10: 'new keys >= 1.3x the peer on Postgres at 10 connections',
  newVsPlain50: 'new keys >= 0.5x the plain route at 50 connections',
  newVsLimit: 'new keys >= 0.85x the in-memory limit target (every connection count)',
  replayVsPlain: 'replays >= 0.8x the plain route (every connection count)',
  nodeCpuNew: 'Node CPU per new key <= 400 µs (every connection count)',
  stormRuns: 'storm: handler runs = distinct keys, every run',
  pgCpuFlat: 'Postgres CPU per key flat from an empty table to 1M rows',
} as const;

export type GoalId = keyof typeof GOALS;

export interface GoalRow {
  id: GoalId;
  target: string;
  measured: string;
  met?: boolean;
}

export function mergeGoals(results: GoalResult[]): GoalRow[] {
  return (Object.keys(GOALS) as GoalId[]).map((id) => {
    const mine = results.filter((result) => result.id === id);
    if (mine.length === 0) return { id, target: GOALS[id], measured: 'not measured in this run' };
    return {
      id,
      target: GOALS[id],
      measured: mine.map((result) => result.measured).join('; '),
      met: mine.every((result) => result.met),
    };
  });
}
