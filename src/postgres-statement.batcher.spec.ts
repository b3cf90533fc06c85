// The batcher's own bookkeeping, on an executor that answers from memory: how many
// statements are out at once when batches fail and their rows run again alone.
import type { SqlStatement } from './postgres-idempotency.store.js';
import { StatementBatcher, type BatchedStatement } from './postgres-statement.batcher.js';

/** A deadlock as pg reports it: a server error of severity ERROR, nothing applied. */
function deadlock(): Error {
  return Object.assign(new Error('deadlock detected'), { code: '40P01', severity: 'ERROR' });
}

describe('StatementBatcher', () => {
  it('runs the rows of failed batches again within maxInFlight', async () => {
    let out = 0;
    let peak = 0;
    const executor = {
      async query(statement: SqlStatement) {
        out++;
        peak = Math.max(peak, out);
        try {
          await new Promise((resolve) => setTimeout(resolve, 2));
          if (statement.name === 'batch') throw deadlock();
          return { rows: [{ value: statement.values[0] }], rowCount: 1 };
        } finally {
          out--;
        }
      },
    };
    const statement: BatchedStatement = {
      single: { name: 'single', text: 'SELECT $1' },
      batch: (rows) => ({ name: 'batch', text: 'SELECT unnest($1)', values: [rows] }),
      split: (result, count) => Array.from({ length: count }, () => result),
      identity: (row) => String(row[0]),
    };
    const batcher = new StatementBatcher(executor, statement, { maxInFlight: 2, maxRows: 64 });
    const results = await Promise.all(
      Array.from({ length: 130 }, (_, i) => batcher.query([i], 10_000)),
    );
    // Every caller gets its own row's answer from the single statement.
    expect(results.map((result) => result.rows[0].value)).toEqual(
      Array.from({ length: 130 }, (_, i) => i),
    );
    expect(batcher.counters.retriedRows).toBeGreaterThan(100);
    expect(peak).toBeLessThanOrEqual(2);
  });
});
