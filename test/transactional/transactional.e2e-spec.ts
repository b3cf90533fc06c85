// Issue 5: with `transactional: true` the handler's writes and the stored response commit
// together or not at all — sequential and concurrent duplicates, failures, a lost lease, a
// failing response write, and a process killed before commit.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { idempotencyRecordsDdl } from '../../src/index.js';
import { parallel, send } from '../support/http.js';
import { compiledEntry } from '../support/processes.js';
import { ADAPTERS, sleep, uniqueTableName, waitForRecord } from '../support/test-app.js';
import { bookingsDdl, startTransactionalApp } from '../support/transactional-app.js';

const SERVER = 'test/support/transactional-server.ts';
const withKey = (key: string): Array<[string, string]> => [['x-idempotency-key', key]];

let db: pg.Client;
beforeAll(async () => {
  db = new pg.Client(process.env.DATABASE_URL);
  await db.connect();
});
afterAll(async () => {
  await db?.end();
});

async function createTables(): Promise<{ tableName: string; bookingsTable: string }> {
  const tableName = uniqueTableName('idem_tx');
  const bookingsTable = `${tableName}_bookings`;
  for (const statement of idempotencyRecordsDdl(tableName).up) await db.query(statement);
  for (const statement of bookingsDdl(tableName, bookingsTable)) await db.query(statement);
  return { tableName, bookingsTable };
}

async function dropTables({
  tableName,
  bookingsTable,
}: {
  tableName: string;
  bookingsTable: string;
}) {
  await db.query(`DROP TABLE IF EXISTS "${bookingsTable}"`);
  await db.query(`DROP FUNCTION IF EXISTS "${bookingsTable}_fail"() CASCADE`);
  for (const statement of idempotencyRecordsDdl(tableName).down) await db.query(statement);
}

async function bookings(bookingsTable: string, product?: string): Promise<number> {
  const { rows } = await db.query(
    `SELECT count(*)::int AS n FROM "${bookingsTable}" ${product ? 'WHERE product = $1' : ''}`,
    product ? [product] : [],
  );
  return rows[0].n;
}

describe.each(ADAPTERS)('transactional idempotency under %s', (adapter) => {
  let tables: { tableName: string; bookingsTable: string };
  let app: Awaited<ReturnType<typeof startTransactionalApp>>;

  beforeAll(async () => {
    tables = await createTables();
    app = await startTransactionalApp({ adapter, ...tables });
  });
  afterAll(async () => {
    await app?.app.close();
    if (tables) await dropTables(tables);
  });

  it('N sequential duplicates write one booking and replay it', async () => {
    const key = randomUUID();
    const product = `seq-${key}`;
    const first = await send(app.url, '/bookings', { headers: withKey(key), body: { product } });
    expect(first.status).toBe(201);
    for (let i = 0; i < 5; i++) {
      const replay = await send(app.url, '/bookings', { headers: withKey(key), body: { product } });
      expect(replay.status).toBe(409);
      expect(replay.body.equals(first.body)).toBe(true);
      expect(replay.headers['idempotent-replayed']).toBe('true');
    }
    expect(await bookings(tables.bookingsTable, product)).toBe(1);
  });

  it('N concurrent duplicates write one booking', async () => {
    const key = randomUUID();
    const product = `par-${key}`;
    const responses = await parallel(15, () =>
      send(app.url, '/bookings', { headers: withKey(key), body: { product, delayMs: 300 } }),
    );
    const created = responses.filter((r) => r.status === 201);
    expect(created).toHaveLength(1);
    for (const res of responses) {
      expect([201, 409, 423]).toContain(res.status);
      if (res.status === 409) expect(res.body.equals(created[0].body)).toBe(true);
    }
    expect(await bookings(tables.bookingsTable, product)).toBe(1);
    const replay = await send(app.url, '/bookings', {
      headers: withKey(key),
      body: { product, delayMs: 300 },
    });
    expect(replay.status).toBe(409);
    expect(replay.body.equals(created[0].body)).toBe(true);
  });

  it('a handler that throws after inserting leaves no booking and releases the key', async () => {
    const key = randomUUID();
    const product = `throws-${key}`;
    const failed = await send(app.url, '/bookings', {
      headers: withKey(key),
      body: { product, throwAfterInsert: true },
    });
    expect(failed.status).toBe(500);
    expect(await bookings(tables.bookingsTable, product)).toBe(0);
    // The key is free again, but a retry must be the same request: same body.
    const retry = await send(app.url, '/bookings', {
      headers: withKey(key),
      body: { product, throwAfterInsert: true },
    });
    expect(retry.status).toBe(500);
    expect(await bookings(tables.bookingsTable, product)).toBe(0);
    const { rows } = await db.query(
      `SELECT count(*)::int AS n FROM "${tables.tableName}" WHERE idempotency_key = $1`,
      [key],
    );
    expect(rows[0].n).toBe(0);
  });

  it('a failing response write rolls the booking back and tells the client', async () => {
    const key = randomUUID();
    const product = `fault-${key}`;
    const res = await send(app.url, '/bookings', {
      headers: withKey(key),
      body: { product, failResponseWrite: true },
    });
    expect(res.status).toBe(503);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.json).toMatchObject({ code: 'idempotency_store_unavailable' });
    expect(res.headers['retry-after']).toBe('1');
    expect(await bookings(tables.bookingsTable, product)).toBe(0);
    const { rows } = await db.query(
      `SELECT count(*)::int AS n FROM "${tables.tableName}" WHERE idempotency_key = $1`,
      [key],
    );
    expect(rows[0].n).toBe(0);
  });
});

describe('transactional idempotency across instances', () => {
  let tables: { tableName: string; bookingsTable: string };
  beforeEach(async () => {
    tables = await createTables();
  });
  afterEach(async () => {
    await dropTables(tables);
  });

  it("rolls back a late finisher's booking after another instance took the key over", async () => {
    const a = await startTransactionalApp({ adapter: 'express', ...tables, leaseMs: 700 });
    const b = await startTransactionalApp({ adapter: 'fastify', ...tables, leaseMs: 700 });
    try {
      const key = randomUUID();
      const body = { product: 'late', delayMs: 2_000 };
      const slow = send(a.url, '/bookings', { headers: withKey(key), body });
      await waitForRecord(tables.tableName, key, 'in_progress');
      await sleep(1_000); // A's lease has passed, its handler still runs
      const winner = await send(b.url, '/bookings', { headers: withKey(key), body: { ...body } });
      // B also sleeps 2 s, with a fresh lease of its own; A finishes first and is fenced off.
      const loser = await slow;
      expect(loser.status).toBe(503);
      expect(loser.json).toMatchObject({ code: 'idempotency_lease_lost' });
      expect(winner.status).toBe(201);
      expect(await bookings(tables.bookingsTable)).toBe(1);
      const replay = await send(a.url, '/bookings', { headers: withKey(key), body });
      expect(replay.status).toBe(409);
      expect(replay.body.equals(winner.body)).toBe(true);
    } finally {
      await a.app.close();
      await b.app.close();
    }
  }, 20_000);

  it('a process killed after inserting but before commit leaves no booking; after the lease a retry books once', async () => {
    const leaseMs = 3_000; // long enough that the 423 check lands inside it on a loaded machine
    const child = await spawnServer(tables, leaseMs, await compiledEntry(SERVER));
    const peer = await startTransactionalApp({ adapter: 'express', ...tables, leaseMs });
    try {
      const key = randomUUID();
      const body = { product: 'crash', delayMs: 1_000 };
      const doomed = send(child.url, '/bookings', { headers: withKey(key), body }).catch(
        (error: Error) => error,
      );
      await child.inserted;
      const killedAt = Date.now();
      child.process.kill('SIGKILL');
      expect(String(await doomed)).toMatch(/socket hang up|ECONNRESET/);
      await sleep(300); // Postgres notices the dropped connection and aborts its transaction
      expect(await bookings(tables.bookingsTable)).toBe(0);

      const locked = await send(peer.url, '/bookings', { headers: withKey(key), body });
      expect(locked.status).toBe(423);
      expect(locked.json).toMatchObject({ code: 'idempotency_request_in_flight' });
      expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(Number(locked.headers['retry-after'])).toBeLessThanOrEqual(Math.ceil(leaseMs / 1000));

      await sleep(Math.max(0, killedAt + leaseMs + 200 - Date.now()));
      const retry = await send(peer.url, '/bookings', { headers: withKey(key), body });
      expect(retry.status).toBe(201);
      expect(await bookings(tables.bookingsTable)).toBe(1);
      const replay = await send(peer.url, '/bookings', { headers: withKey(key), body });
      expect(replay.status).toBe(409);
      expect(replay.body.equals(retry.body)).toBe(true);
      expect(await bookings(tables.bookingsTable)).toBe(1);
    } finally {
      child.process.kill('SIGKILL');
      await peer.app.close();
    }
  }, 90_000);
});

interface Server {
  process: ChildProcess;
  url: string;
  inserted: Promise<void>;
}

function spawnServer(
  tables: { tableName: string; bookingsTable: string },
  leaseMs: number,
  entry: string,
): Promise<Server> {
  // Compiled first (see compiledEntry): loading the TypeScript at start-up can take longer
  // than the start timeout on a loaded machine.
  const child = spawn(process.execPath, ['--enable-source-maps', entry], {
    env: {
      ...process.env,
      TABLE_NAME: tables.tableName,
      BOOKINGS_TABLE: tables.bookingsTable,
      LEASE_MS: String(leaseMs),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  let markInserted: () => void;
  const inserted = new Promise<void>((resolve) => (markInserted = resolve));
  return new Promise((resolve, reject) => {
    // Generous, and the child dies with the attempt: loading the TypeScript through swc-node
    // takes over 10 s on a loaded 2-core machine, and an orphan would keep Jest from exiting.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('child server did not start'));
    }, 45_000);
    child.once('exit', (code) => reject(new Error(`child server exited with ${code}`)));
    lines.on('line', (line) => {
      if (line.startsWith('READY ')) {
        clearTimeout(timer);
        resolve({
          process: child,
          url: `http://127.0.0.1:${line.slice(6)}`,

          inserted,
        });
      } else if (line === 'INSERTED') {
        markInserted();
      }
    });
  });
}
