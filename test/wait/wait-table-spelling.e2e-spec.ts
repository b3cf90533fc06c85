// One table, two spellings: one instance configured with `tableName: 'public.<t>'`, another
// with `'<t>'` (the same table through search_path). A duplicate waiting on one
// (`waitInFlightMs`) must be woken by the other's completion, not left to its one-second
// poll: the notification channel follows the table, not how it is spelled. Lower-case and
// mixed-case (quoted) names, waiters on either spelling, under Express and Fastify.
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import { idempotencyRecordsDdl } from '../../migrations/1764403200000-CreateIdempotencyRecords.js';
import { idempotencyWaitersDdl } from '../../migrations/1795910400000-AddIdempotencyWaiters.js';
import { PostgresIdempotencyStore } from '../../src/index.js';
import { send, type TestResponse } from '../support/http.js';
import { expectReplayOf } from '../support/problem.js';
import { waitFor } from '../support/processes.js';
import {
  ADAPTERS,
  dropTable,
  uniqueTableName,
  waitForRecord,
  type AdapterName,
} from '../support/test-app.js';
import { startWaitApp, type WaitApp } from './wait-app.js';

/** Far longer than the test: a waiter answered with a replay was woken, not timed out. */
const WAIT_MS = 8_000;
/**
 * A woken waiter answers within milliseconds; one left to its poll answers about a second
 * after it began waiting (WAIT_POLL_MS). The first completes right after the waiter is
 * listening, so a missed notification shows up as ~900 ms here.
 */
const WOKEN_WITHIN_MS = 400;

interface Timed {
  response: TestResponse;
  at: number;
}

const post = (app: WaitApp, key: string): Promise<Timed> =>
  send(app.url, '/gated', {
    headers: [['x-idempotency-key', key]],
    body: { seats: 1 },
  }).then((response) => ({ response, at: Date.now() }));

async function waitForWaiter(tableName: string, key: string): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    await waitFor(`a waiter on ${key}`, async () => {
      const { rows } = await client.query(
        `SELECT 1 FROM "${tableName}" WHERE idempotency_key = $1 AND has_waiters`,
        [key],
      );
      return rows.length > 0;
    });
  } finally {
    await client.end();
  }
}

describe.each(
  ADAPTERS.flatMap((adapter) => [
    [adapter, 'lower-case', uniqueTableName('idem_spell')],
    [adapter, 'mixed-case', uniqueTableName('Idem_Spell')],
  ]) as Array<[AdapterName, string, string]>,
)('one table spelled two ways under %s (%s)', (adapter, nameCase, table) => {
  let qualified: WaitApp, bare: WaitApp;

  beforeAll(async () => {
    // The bare spelling creates the table; the qualified one finds it.
    bare = await startWaitApp(adapter, { tableName: table, waitInFlightMs: WAIT_MS });
    qualified = await startWaitApp(adapter, {
      tableName: `public.${table}`,
      waitInFlightMs: WAIT_MS,
    });
  });
  afterAll(async () => {
    await Promise.all([bare?.stop(), qualified?.stop()]);
    await dropTable(table);
  });

  it.each([
    ['the bare name', 'the schema-qualified name'],
    ['the schema-qualified name', 'the bare name'],
  ])(
    'a waiter configured with %s is woken by a completion through %s',
    async (waiterSpelling) => {
      const [waiter, other] =
        waiterSpelling === 'the bare name' ? [bare, qualified] : [qualified, bare];
      const key = randomUUID();
      const running = post(other, key);
      await waitForRecord(table, key, 'in_progress');
      const waiting = post(waiter, key);
      // Marked as waited for only once its instance listens: complete right then.
      await waitForWaiter(table, key);
      other.runs.open(key);
      const original = await running;
      const duplicate = await waiting;
      expect(original.response.status).toBe(201);
      expectReplayOf(duplicate.response, original.response);
      expect(other.runs.of(key) + waiter.runs.of(key)).toBe(1);
      console.log(
        `${adapter}, ${nameCase}: waiter answered ${duplicate.at - original.at} ms after the first completed`,
      );
      expect(duplicate.at - original.at).toBeLessThan(WOKEN_WITHIN_MS);
    },
    20_000,
  );
});

describe('the notification channel follows the table, not its spelling', () => {
  const schema = uniqueTableName('idem_schema');
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
  // Unqualified names resolve in `schema` first on this pool.
  const schemaFirst = new pg.Pool({
    connectionString: process.env.DATABASE_URL,
    max: 2,
    options: `-c search_path=${schema},public`,
  });
  const lower = uniqueTableName('idem_chan');
  const mixed = uniqueTableName('Idem_Chan');
  const elsewhere = uniqueTableName('idem_chan');

  /** The channel a store settles on, once it has looked its table up (its first release). */
  async function channelOf(on: pg.Pool, tableName: string): Promise<string> {
    const store = new PostgresIdempotencyStore(on, tableName);
    await store.release({ scope: '', key: randomUUID(), token: '1' });
    return store.notificationChannel;
  }

  beforeAll(async () => {
    await pool.query(`CREATE SCHEMA "${schema}"`);
    for (const name of [lower, mixed, `${schema}.${elsewhere}`]) {
      for (const ddl of [idempotencyRecordsDdl, idempotencyWaitersDdl]) {
        for (const statement of ddl(name).up) await pool.query(statement);
      }
    }
  });
  afterAll(async () => {
    await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
    for (const name of [lower, mixed]) await pool.query(`DROP TABLE "${name}"`);
    await Promise.all([pool.end(), schemaFirst.end()]);
  });

  it('is the one a table in public always had, spelled bare or qualified', async () => {
    for (const name of [lower, mixed]) {
      // idem_<SHA-1 of the bare name>_settled, as before: the common spelling keeps its channel.
      const before = `idem_${createHash('sha1').update(name).digest('hex').slice(0, 8)}_settled`;
      expect(await channelOf(pool, name)).toBe(before);
      expect(await channelOf(pool, `public.${name}`)).toBe(before);
    }
  });

  it('is one per table: names are case-sensitive, as the module quotes them', async () => {
    expect(await channelOf(pool, lower)).not.toBe(await channelOf(pool, mixed));
  });

  it('is the same for a table outside public, reached through search_path or qualified', async () => {
    const qualified = await channelOf(pool, `${schema}.${elsewhere}`);
    expect(await channelOf(schemaFirst, elsewhere)).toBe(qualified);
    expect(qualified).not.toBe(await channelOf(pool, lower));
  });
});
