// What a section of the benchmark is: one self-contained measurement (it starts and stops its
// own apps) that returns the markdown for the report and the issue targets it can judge.
// run.ts holds the list of sections; adding one is one entry there.
import type { CpuMeter } from './cpu.js';
import type { GoalId } from './goals.js';
import type { BenchSettings } from './settings.js';

export interface BenchContext {
  settings: BenchSettings;
  database: { url: string; source: string };
  cpu: CpuMeter;
  log(message: string): void;
}

/** One issue target as judged by a section's measurements. */
export interface GoalResult {
  id: GoalId;
  measured: string;
  met: boolean;
}

export interface SectionResult {
  /** The section's part of REPORT.md, starting below its `##` heading. */
  markdown: string;
  goals?: GoalResult[];
  /** Raw numbers, written to BENCH_JSON when set. */
  data?: unknown;
}

export interface BenchSection {
  id: string;
  title: string;
  /** Rough duration with these settings, to print the plan before starting. */
  estimateSeconds?(settings: BenchSettings): number;
  run(context: BenchContext): Promise<SectionResult>;
}
