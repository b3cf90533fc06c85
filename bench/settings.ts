// The benchmark's knobs, read once from the environment.
//   BENCH_SECTIONS=interleaved,scale-out   run only these sections (default: all)
//   BENCH_ROUNDS=5          interleaved rounds per connection count (the report wants >= 5)
//   BENCH_SECONDS=3         length of one measured run
//   BENCH_CONNECTIONS=10,50 connection counts of the interleaved section
//   BENCH_TABLE_SIZES=0,100000,1000000   rows in the record table for the table-size section
//   BENCH_QUICK=1           smoke test: 2 rounds of 1 s, small tables, short profiles
//   BENCH_REPORT=path       where to write the report (default: bench/REPORT.md for a full
//                           run, bench/REPORT.partial.md otherwise); BENCH_JSON=path for raw data
//   BENCH_PROFILE_DIR=dir   keep the .cpuprofile files of the profile section
//   BENCH_NOTE=text         a line for the report's header (e.g. "measured on a shared machine")
//   DATABASE_URL            the database (default: the machine's Postgres, else embedded)
import { join } from 'node:path';

export interface BenchSettings {
  quick: boolean;
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  connections: number[];
  /** The higher connection count, used by sections that measure at one count only. */
  highConnections: number;
  tableSizes: number[];
  poolSize: number;
  /** Section ids to run; undefined means all. */
  sections?: string[];
  reportPath?: string;
  jsonPath?: string;
  profileDir?: string;
  note?: string;
}

const env = process.env;

function numbers(value: string | undefined, fallback: number[]): number[] {
  if (!value) return fallback;
  const parsed = value.split(',').map((part) => Number(part.trim().replace(/_/g, '')));
  if (parsed.some((n) => !Number.isFinite(n) || n < 0)) {
    throw new Error(`Expected a comma-separated list of numbers, got "${value}"`);
  }
  return parsed;
}

export function readSettings(): BenchSettings {
  const quick = env.BENCH_QUICK === '1';
  const connections = numbers(env.BENCH_CONNECTIONS, [10, 50]);
  return {
    quick,
    rounds: numbers(env.BENCH_ROUNDS, [quick ? 2 : 5])[0],
    seconds: numbers(env.BENCH_SECONDS, [quick ? 1 : 3])[0],
    warmupSeconds: quick ? 0.5 : 1,
    connections,
    highConnections: Math.max(...connections),
    tableSizes: numbers(env.BENCH_TABLE_SIZES, quick ? [0, 20_000] : [0, 100_000, 1_000_000]),
    poolSize: 10,
    sections: env.BENCH_SECTIONS?.split(',').map((id) => id.trim()),
    reportPath: env.BENCH_REPORT,
    jsonPath: env.BENCH_JSON,
    profileDir: env.BENCH_PROFILE_DIR,
    note: env.BENCH_NOTE,
  };
}

/** The committed report is only overwritten by a full run; anything less goes beside it. */
export function reportPathFor(settings: BenchSettings, root: string, complete: boolean): string {
  if (settings.reportPath) return settings.reportPath;
  return join(root, 'bench', complete ? 'REPORT.md' : 'REPORT.partial.md');
}
