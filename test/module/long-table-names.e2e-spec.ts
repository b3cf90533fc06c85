// Table names up to the 63 bytes Postgres allows: the expiry index `<table>_expires_at_idx`
// would pass 63 bytes past a 48-character name, and Postgres cuts it to 63 bytes. A
// 63-character table's index would then be named like the table itself, and a table named
// like another's cut index name would meet it: CREATE ... IF NOT EXISTS skips either in
// silence (no expiry index, so the purge scans; or no table at all). Every name that fits
// keeps its index name, so existing deployments find their index; an index created under a
// cut name by an earlier version is kept, not doubled. Under Express and Fastify.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { idempotencyRecordsDdl } from '../../migrations/1764403200000-CreateIdempotencyRecords.js';
import { send } from '../support/http.js';
import { expectReplayOf } from '../support/problem.js';
import { ADAPTERS, dropTable, type AdapterName } from '../support/test-app.js';
import { idempotencyTableNames } from '../../src/idempotency-table.js';
import { startWaitApp, type WaitApp } from '../wait/wait-app.js';

/** A unique table name of exactly `length` characters. */
const nameOf = (length: number, prefix = 'idem_long') =>
  `${prefix}_${randomUUID().replaceAll('-', '')}`.padEnd(length, 'x').slice(0, length);

const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });

/** The indexes on `table` whose first column is expires_at, by name. */
async function expiryIndexesOf(table: string): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `SELECT c.relname AS name
       FROM pg_index AS i
       JOIN pg_class AS c ON c.oid = i.indexrelid
       JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = to_regclass($1) AND a.attname = 'expires_at'`,
    [`"${table}"`],
  );
  return rows.map((row) => row.name);
}

async function relkindOf(name: string): Promise<string | undefined> {
  const { rows } = await db.query<{ relkind: string }>(
    `SELECT relkind FROM pg_class WHERE oid = to_regclass($1)`,
    [`"${name}"`],
  );
  return rows[0]?.relkind;
}

/** A new key runs the handler once (201); the same request again is its replay. */
async function expectIdempotent(app: WaitApp): Promise<void> {
  const key = randomUUID();
  const request = { headers: [['x-idempotency-key', key]] as Array<[string, string]>, body: {} };
  const first = await send(app.url, '/slow', request);
  expect({ status: first.status, body: first.text }).toMatchObject({ status: 201 });
  expectReplayOf(await send(app.url, '/slow', request), first);
  expect(app.runs.of(key)).toBe(1);
}

afterAll(() => db.end());

describe('expiry index names', () => {
  it('stay as they were for every table name up to 48 characters', () => {
    expect(idempotencyTableNames().expiryIndex).toBe('"idempotency_records_expires_at_idx"');
    const name = nameOf(48);
    expect(idempotencyTableNames(`app.${name}`).qualifiedExpiryIndex).toBe(
      `"app"."${name}_expires_at_idx"`,
    );
  });

  it('fit in 63 bytes and differ for longer names, even ones Postgres would cut alike', () => {
    const long = nameOf(50);
    const names = [long, `${long}_expires_at_i`, nameOf(62), nameOf(63)];
    const indexes = names.map((name) => idempotencyTableNames(name).expiryIndex.slice(1, -1));
    for (const index of indexes) expect(Buffer.byteLength(index)).toBeLessThanOrEqual(63);
    expect(new Set([...indexes, ...names]).size).toBe(names.length * 2);
  });
});

describe.each(ADAPTERS)('long table names under %s', (adapter: AdapterName) => {
  const apps: WaitApp[] = [];
  const tables: string[] = [];
  const start = async (tableName: string) => {
    tables.push(tableName);
    const app = await startWaitApp(adapter, { tableName });
    apps.push(app);
    return app;
  };

  afterAll(async () => {
    await Promise.all(apps.map((app) => app.stop()));
    for (const table of tables) await dropTable(table);
  });

  it('a 63-character name gets its table, its expiry index and its constraints', async () => {
    const table = nameOf(63);
    const app = await start(table);
    await expectIdempotent(app);
    expect(await expiryIndexesOf(table)).toHaveLength(1);
    // Its check and primary key. Postgres 18 also catalogues NOT NULL constraints (contype
    // 'n'; 13 to 17 do not), so those are left out of the count.
    const { rows } = await db.query<{ contype: string }>(
      `SELECT contype FROM pg_constraint
        WHERE conrelid = to_regclass($1) AND contype <> 'n' ORDER BY contype`,
      [`"${table}"`],
    );
    expect(rows.map((row) => row.contype)).toEqual(['c', 'p']);
  });

  it("a table named like another's cut index name is created, and both keep their index", async () => {
    const one = nameOf(50);
    // What Postgres makes of `${one}_expires_at_idx`: its first 63 bytes.
    const two = `${one}_expires_at_idx`.slice(0, 63);
    const first = await start(one);
    const second = await start(two);
    expect(await relkindOf(two)).toBe('r');
    await expectIdempotent(first);
    await expectIdempotent(second);
    expect(await expiryIndexesOf(one)).toHaveLength(1);
    expect(await expiryIndexesOf(two)).toHaveLength(1);
  });

  it('an index an earlier version made under a cut name is kept, not doubled', async () => {
    const table = nameOf(55);
    tables.push(table);
    // The first migration as earlier versions ran it: Postgres cuts the index name.
    await db.query(idempotencyRecordsDdl(table).up[0]);
    await db.query(`CREATE INDEX "${table}_expires_at_idx" ON "${table}" (expires_at)`);
    const before = await expiryIndexesOf(table);
    expect(before).toEqual([`${table}_expires_at_idx`.slice(0, 63)]);
    // runMigrations then adds has_waiters, and finds the index there.
    const app = await start(table);
    await expectIdempotent(app);
    expect(await expiryIndexesOf(table)).toEqual(before);
  });
});
