// CPU time per request, on both sides of the wire: the app process (process.cpuUsage, read
// through /__stats) and the Postgres backends serving its pool (found by application_name in
// pg_stat_activity, read from /proc/<pid>/stat; only when Postgres runs on this machine).
import { readFileSync } from 'node:fs';
import pg from 'pg';

const TICKS_PER_SECOND = 100;

export class BackendCpuProbe {
  private readonly client: pg.Client;

  constructor(url: string) {
    this.client = new pg.Client({ connectionString: url });
  }

  async connect(): Promise<void> {
    await this.client.connect();
  }

  async end(): Promise<void> {
    await this.client.end();
  }

  /** CPU ms used so far by each backend of `applicationName`, by pid. */
  async sample(applicationName: string): Promise<Map<number, number> | undefined> {
    const { rows } = await this.client.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE application_name = $1',
      [applicationName],
    );
    const usage = new Map<number, number>();
    for (const { pid } of rows) {
      try {
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        usage.set(pid, ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND);
      } catch {
        return undefined; // Postgres is not local (or not readable): no numbers rather than wrong ones
      }
    }
    return usage;
  }
}

/** CPU ms between two samples; a backend that appeared in between counts from zero. */
export function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0);
  return total;
}
