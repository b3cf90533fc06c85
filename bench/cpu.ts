// Where the machine's CPU went during one measured run, split by process:
// - the app (every pid of it: one process, or a cluster's primary and workers),
// - the Postgres backends serving its pool (found by application_name in pg_stat_activity),
// - Postgres's own background processes (WAL writer, checkpointer, autovacuum...),
// - the load generator (this harness process: autocannon runs here),
// - and everything else on the machine: /proc/stat's busy total minus all of the above.
// Process times come from /proc/<pid>/stat, machine time from /proc/stat, both in clock
// ticks (10 ms); Postgres numbers only when Postgres runs on this machine.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import pg from 'pg';

const TICK_MS = 10;

export interface CpuSample {
  wallMs: number;
  appMs: number;
  backendsMs?: Map<number, number>;
  pgAuxMs?: Map<number, number>;
  loadgenMs: number;
  machineMs: number;
}

/** CPU ms spent between two samples, by consumer. */
export interface CpuSplit {
  wallMs: number;
  cores: number;
  appMs: number;
  /** Undefined when Postgres is not local (its processes cannot be read). */
  backendsMs?: number;
  pgAuxMs?: number;
  loadgenMs: number;
  /** Busy CPU of the whole machine (all cores), ms. */
  machineMs: number;
  /** machineMs minus every consumer above: other work on the machine meanwhile. */
  otherMs: number;
}

export class CpuMeter {
  private readonly client: pg.Client;

  constructor(url: string) {
    this.client = new pg.Client({ connectionString: url, application_name: 'bench-probe' });
  }

  async connect(): Promise<void> {
    await this.client.connect();
  }

  async end(): Promise<void> {
    await this.client.end();
  }

  /**
   * CPU ms of every Postgres backend that has exited so far: the kernel adds a child's time to
   * its parent's cutime/cstime when the parent reaps it, and the postmaster reaps backends.
   * For clients that connect and leave within the window (pgbench), where pg_stat_activity
   * never sees them at both ends. Other clients that leave meanwhile are counted too.
   */
  async exitedBackendsMs(): Promise<number | undefined> {
    const { rows } = await this.client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const postmaster = parentPid(rows[0].pid);
    return postmaster === undefined ? undefined : reapedChildrenMs(postmaster);
  }

  async sample(appPids: number[], dbApplicationName?: string): Promise<CpuSample> {
    const { rows } = await this.client.query<{ pid: number; backend_type: string; app: string }>(
      `SELECT pid, backend_type, application_name AS app FROM pg_stat_activity
        WHERE backend_type <> 'client backend' OR application_name = $1`,
      [dbApplicationName ?? ''],
    );
    // No application_name: the app has no Postgres connections, so nothing to count ('–').
    const backends = dbApplicationName
      ? postgresTimes(rows.filter((row) => row.backend_type === 'client backend'))
      : undefined;
    const aux = postgresTimes(rows.filter((row) => row.backend_type !== 'client backend'));
    // The cheap reads last, so the window they bound holds as little of the above as possible.
    const appMs = appPids.reduce((sum, pid) => sum + (processMs(pid) ?? 0), 0);
    const own = process.cpuUsage();
    return {
      wallMs: performance.now(),
      appMs,
      backendsMs: backends,
      pgAuxMs: aux,
      loadgenMs: (own.user + own.system) / 1000,
      machineMs: machineBusyMs(),
    };
  }
}

export function cpuBetween(before: CpuSample, after: CpuSample): CpuSplit {
  const backendsMs = mapDelta(before.backendsMs, after.backendsMs);
  const pgAuxMs = mapDelta(before.pgAuxMs, after.pgAuxMs);
  const appMs = after.appMs - before.appMs;
  const loadgenMs = after.loadgenMs - before.loadgenMs;
  const machineMs = after.machineMs - before.machineMs;
  return {
    wallMs: after.wallMs - before.wallMs,
    cores: cpus().length,
    appMs,
    backendsMs,
    pgAuxMs,
    loadgenMs,
    machineMs,
    otherMs: machineMs - appMs - (backendsMs ?? 0) - (pgAuxMs ?? 0) - loadgenMs,
  };
}

/** CPU ms by pid, or undefined when a pid is not a readable local postgres process. */
function postgresTimes(rows: { pid: number }[]): Map<number, number> | undefined {
  const times = new Map<number, number>();
  for (const { pid } of rows) {
    const ms = processMs(pid, 'postgres');
    if (ms === undefined) return undefined;
    times.set(pid, ms);
  }
  return times;
}

/** A process's user + system CPU ms so far, all threads; undefined if gone or unreadable. */
export function processMs(pid: number, expectedName?: string): number | undefined {
  return statMs(`/proc/${pid}/stat`, expectedName);
}

/** The CPU ms of a process's main thread (the event loop's), without GC and pool threads. */
export function mainThreadMs(pid: number): number | undefined {
  return statMs(`/proc/${pid}/task/${pid}/stat`);
}

function statMs(path: string, expectedName?: string): number | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    const close = stat.lastIndexOf(')');
    if (expectedName && stat.slice(stat.indexOf('(') + 1, close) !== expectedName) return undefined;
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    const fields = stat.slice(close + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return undefined;
  }
}

function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

function parentPid(pid: number): number | undefined {
  const fields = statFields(pid);
  return fields ? Number(fields[1]) : undefined;
}

function reapedChildrenMs(pid: number): number | undefined {
  const fields = statFields(pid);
  return fields ? (Number(fields[13]) + Number(fields[14])) * TICK_MS : undefined;
}

/** Busy CPU ms of all cores since boot: user, nice, system, irq, softirq (not idle, iowait, steal). */
function machineBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  const [user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq) * TICK_MS;
}

/** CPU ms between two samples; a process that appeared in between counts from zero. */
function mapDelta(
  before: Map<number, number> | undefined,
  after: Map<number, number> | undefined,
): number | undefined {
  if (!before || !after) return undefined;
  let total = 0;
  for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0);
  return total;
}
