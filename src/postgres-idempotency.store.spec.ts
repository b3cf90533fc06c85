import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';

const executor = { query: async () => ({ rows: [], rowCount: 0 }) };

describe('PostgresIdempotencyStore statements', () => {
  it('refuses an empty table name even after a store on the default table was built', () => {
    new PostgresIdempotencyStore(executor);
    new PostgresIdempotencyStore(executor, undefined, { durability: 'asynchronous' });
    expect(() => new PostgresIdempotencyStore(executor, '')).toThrow(/table name/i);
    expect(
      () => new PostgresIdempotencyStore(executor, '', { durability: 'asynchronous' }),
    ).toThrow(/table name/i);
  });
});
