// Issue 14: `durability: 'asynchronous'` makes the module's own claims and completions commit
// without waiting for the WAL flush, and nothing else: the outcomes are the same, and a
// `transactional` route's commit (its handler's writes and the stored response) still waits.
// What a commit waited for is read off Postgres itself: pg_stat_wal counts the WAL fsyncs.
// That count is the whole server's, so these tests run on a Postgres of their own.
import {
  Body,
  Controller,
  Module,
  Post,
  type DynamicModule,
  type INestApplication,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import pg from 'pg';
import { startEmbeddedPostgres, type RunningDatabase } from '../../scripts/embedded-postgres.js';
import {
  Idempotent,
  IdempotencyModule,
  IdempotencyTransaction,
  PostgresIdempotencyStore,
  idempotencyRecordsDdl,
  type IdempotencyDurability,
} from '../../src/index.js';
import { send } from '../support/http.js';
import { createAdapterApp, listenOnLoopback } from '../support/nest-app.js';
import { ADAPTERS, RunCounter, sleep, type AdapterName } from '../support/test-app.js';

const KEYS = 40;
const TRANSFERS = 'durability_transfers';

let database: RunningDatabase;
let db: pg.Client;
beforeAll(async () => {
  database = await startEmbeddedPostgres();
  db = new pg.Client(database.url);
  await db.connect();
  await db.query(`CREATE TABLE ${TRANSFERS} (id bigserial PRIMARY KEY, amount int NOT NULL)`);
  // initdb and a first start: seconds alone, over a minute on a loaded 2-CPU machine.
}, 180_000);
afterAll(async () => {
  await db?.end();
  await database?.stop();
});

function durabilityModule(durability: IdempotencyDurability | undefined): DynamicModule {
  const runs = new RunCounter();
  @Controller()
  class PaymentsController {
    constructor(private readonly tx: IdempotencyTransaction) {}

    @Post('bookings')
    @Idempotent()
    book(@Body() body: { product: string }) {
      runs.hit('bookings');
      return { booked: body.product, run: runs.count('bookings') };
    }

    @Post('transfers')
    @Idempotent({ transactional: true })
    async transfer(@Body() body: { amount: number }) {
      runs.hit('transfers');
      const [row] = await this.tx.manager.query(
        `INSERT INTO ${TRANSFERS} (amount) VALUES ($1) RETURNING id`,
        [body.amount],
      );
      return { transfer: Number(row.id), amount: body.amount };
    }
  }
  @Module({})
  class DurabilityTestModule {}
  return {
    module: DurabilityTestModule,
    imports: [
      IdempotencyModule.forRoot({
        connection: database.url,
        runMigrations: true,
        purge: { enabled: false },
        ...(durability && { durability }),
      }),
    ],
    controllers: [PaymentsController],
    providers: [{ provide: RunCounter, useValue: runs }],
  };
}

interface Running {
  app: INestApplication;
  url: string;
  runs: RunCounter;
}

async function start(
  adapter: AdapterName,
  durability: IdempotencyDurability | undefined,
): Promise<Running> {
  const definition = durabilityModule(durability);
  const moduleRef = await Test.createTestingModule({ imports: [definition] }).compile();
  const app = createAdapterApp(moduleRef, adapter);
  const url = await listenOnLoopback(app);
  return { app, url, runs: moduleRef.get(RunCounter) };
}

/**
 * WAL fsyncs that client backends made so far, i.e. commits that waited for their flush
 * (pg_stat_io, Postgres 18: the embedded Postgres these tests start). Asynchronous commits
 * leave the flush to the WAL writer, which is not counted: that count is 0 however long the
 * run takes, where the synchronous one is about one per commit.
 */
async function walSyncs(): Promise<number> {
  await db.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await db.query(
    `SELECT coalesce(sum(fsyncs), 0)::int AS n FROM pg_stat_io
      WHERE object = 'wal' AND backend_type = 'client backend'`,
  );
  return rows[0].n;
}

/**
 * Client backends' WAL fsyncs during `run`. A backend reports its counts when it goes idle
 * (at most once a second) and when it exits: the app is closed before the count is read, and
 * before `run` its backends are left idle long enough to have reported starting up.
 */
async function fsyncsDuring(running: Running, run: () => Promise<void>): Promise<number> {
  await sleep(1_500);
  const before = await walSyncs();
  await run();
  await running.app.close();
  await sleep(500);
  return (await walSyncs()) - before;
}

const withKey = (key: string): Array<[string, string]> => [['x-idempotency-key', key]];

/** KEYS new keys one after the other (so no two commits share a flush), each replayed once. */
async function newKeys(running: Running, path: string, prefix: string): Promise<void> {
  for (let i = 0; i < KEYS; i++) {
    const body = path === '/bookings' ? { product: `p${i}` } : { amount: i + 1 };
    const first = await send(running.url, path, { body, headers: withKey(`${prefix}-${i}`) });
    expect(first.status).toBe(201);
    const again = await send(running.url, path, { body, headers: withKey(`${prefix}-${i}`) });
    expect(again.status).toBe(409);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toEqual(first.body);
  }
}

describe.each(ADAPTERS)("durability: 'asynchronous' under %s", (adapter) => {
  it('answers as the synchronous default does: 201, then the stored bytes with 409', async () => {
    const running = await start(adapter, 'asynchronous');
    try {
      const key = `async-outcomes-${adapter}`;
      const first = await send(running.url, '/bookings', {
        body: { product: 'room' },
        headers: withKey(key),
      });
      expect(first.status).toBe(201);
      expect(first.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(first.body.toString())).toEqual({ booked: 'room', run: 1 });
      const replay = await send(running.url, '/bookings', {
        body: { product: 'room' },
        headers: withKey(key),
      });
      expect(replay.status).toBe(409);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.headers['content-type']).toBe(first.headers['content-type']);
      expect(replay.body.equals(first.body)).toBe(true);
      const other = await send(running.url, '/bookings', {
        body: { product: 'suite' },
        headers: withKey(key),
      });
      expect(other.status).toBe(422);
      expect(other.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(running.runs.count('bookings')).toBe(1);
    } finally {
      await running.app.close();
    }
  });

  it('commits claims and completions without waiting for the WAL flush; the default waits', async () => {
    const synchronous = await start(adapter, undefined);
    const waited = await fsyncsDuring(synchronous, () =>
      newKeys(synchronous, '/bookings', `sync-${adapter}`),
    );
    expect(synchronous.runs.count('bookings')).toBe(KEYS);
    const asynchronous = await start(adapter, 'asynchronous');
    const relaxed = await fsyncsDuring(asynchronous, () =>
      newKeys(asynchronous, '/bookings', `async-${adapter}`),
    );
    expect(asynchronous.runs.count('bookings')).toBe(KEYS);
    // Synchronous: a flush per commit, two commits per key (claim, completion). Asynchronous:
    // the WAL writer flushes in the background (a stray one may still fall to a backend: 1 of
    // 80 seen).
    expect(waited).toBeGreaterThanOrEqual(KEYS);
    expect(relaxed).toBeLessThanOrEqual(KEYS / 20);
  }, 60_000);

  it("keeps a transactional route's commit synchronous", async () => {
    const running = await start(adapter, 'asynchronous');
    const { rows: before } = await db.query(`SELECT count(*)::int AS n FROM ${TRANSFERS}`);
    const flushes = await fsyncsDuring(running, () =>
      newKeys(running, '/transfers', `tx-${adapter}`),
    );
    // Each transfer's commit (its row and the stored response) waited for its flush; its
    // claim, outside the transaction, did not (synchronous, that would be 2 per key).
    expect(flushes).toBeGreaterThanOrEqual(KEYS);
    expect(flushes).toBeLessThan(KEYS * 1.5);
    expect(running.runs.count('transfers')).toBe(KEYS);
    const { rows: after } = await db.query(`SELECT count(*)::int AS n FROM ${TRANSFERS}`);
    expect(after[0].n - before[0].n).toBe(KEYS);
  }, 60_000);
});

describe("PostgresIdempotencyStore with durability: 'asynchronous'", () => {
  it('batches claims and completions that commit without waiting for the WAL flush', async () => {
    const table = 'durability_batched';
    for (const statement of idempotencyRecordsDdl(table).up) await db.query(statement);
    const pool = new pg.Pool({ connectionString: database.url, max: 4 });
    const store = new PostgresIdempotencyStore(pool, table, { durability: 'asynchronous' });
    const request = (key: string) => ({
      scope: '',
      key,
      fingerprint: Buffer.alloc(32, 7),
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    const body = (key: string) => Buffer.from(`{"key":"${key}"}`);
    const flushes = await (async () => {
      await sleep(1_500);
      const before = await walSyncs();
      // 16 callers at once on a pool of 4: calls queue, and leave in batches.
      await Promise.all(
        Array.from({ length: 16 }, async (_, caller) => {
          for (let i = 0; i < 10; i++) {
            const key = `batched-${caller}-${i}`;
            const claimed = await store.claim(request(key));
            if (claimed.outcome !== 'claimed') throw new Error(`${key}: ${claimed.outcome}`);
            const response = { status: 201, headers: {}, body: body(key) };
            expect(await store.complete(claimed.record, response, 60_000)).toBe(true);
          }
        }),
      );
      await pool.end();
      await sleep(500);
      return (await walSyncs()) - before;
    })();
    expect(store.batchers!.claim.counters.batches).toBeGreaterThan(0);
    expect(store.batchers!.complete.counters.batches).toBeGreaterThan(0);
    // 160 keys, 320 rows written. Synchronous, each statement's commit flushes (26 to 38 times
    // here, batches sharing flushes); asynchronous, about none.
    expect(flushes).toBeLessThanOrEqual(2);
    const { rows } = await db.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE response_body = convert_to('{"key":"' || idempotency_key || '"}', 'UTF8'))::int AS stored FROM ${table} WHERE state = 'completed'`,
    );
    expect(rows[0]).toEqual({ n: 160, stored: 160 });
  }, 60_000);
});

describe('durability option', () => {
  it('names its valid values when given another, at start-up', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        IdempotencyModule.forRoot({
          connection: database.url,
          durability: 'fast' as IdempotencyDurability,
        }),
      ],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    try {
      await expect(app.init()).rejects.toThrow(
        `Idempotency option durability must be 'synchronous' or 'asynchronous', got "fast".`,
      );
    } finally {
      await app.close().catch(() => undefined);
    }
  });

  it('is a module option, refused on a route', () => {
    expect(() => Idempotent({ durability: 'asynchronous' } as never)).toThrow(
      'Idempotency option durability applies to the whole module',
    );
  });
});
