// `store`: the module runs on an IdempotencyStore the application gives instead of a
// DataSource. Here that store is the Postgres one on a plain pg Pool (no TypeORM at all).
import { Controller, Post } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  Idempotent,
  IdempotencyModule,
  IdempotencyTransaction,
  PostgresIdempotencyStore,
  idempotencyRecordsDdl,
} from '../../src/index.js';
import { send } from '../support/http.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

let runs = 0;

@Controller('charges')
class ChargesController {
  @Post()
  @Idempotent()
  charge() {
    runs++;
    return { run: runs };
  }
}

describe('IdempotencyModule.forRoot({ store })', () => {
  const tableName = uniqueTableName('custom_store');
  let pool: pg.Pool;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
    for (const statement of idempotencyRecordsDdl(tableName).up) await pool.query(statement);
  });
  afterAll(async () => {
    await pool.end();
    await dropTable(tableName);
  });

  it('claims, stores and replays through the given store', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        IdempotencyModule.forRoot({
          store: new PostgresIdempotencyStore(pool, tableName),
          purge: { enabled: false },
        }),
      ],
      controllers: [ChargesController],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    try {
      const url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
      const headers: Array<[string, string]> = [['x-idempotency-key', randomUUID()]];
      const first = await send(url, '/charges', { headers, body: {} });
      const again = await send(url, '/charges', { headers, body: {} });
      expect(first.status).toBe(201);
      expect(again.status).toBe(409);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.equals(first.body)).toBe(true);
      expect(runs).toBe(1);
      // The transaction helper needs Postgres through the module: it says so.
      expect(() => app.get(IdempotencyTransaction).manager).toThrow(/not a custom `store`/);
    } finally {
      await app.close();
    }
  });

  it.each([
    [
      {},
      /got none \(`connection: process.env.DATABASE_URL` is undefined while DATABASE_URL is unset\)/,
    ],
    [{ connection: 'postgres://x', store: {} as PostgresIdempotencyStore }, /connection and store/],
  ])('refuses at start-up unless exactly one source is given (%#)', async (options, message) => {
    await expect(
      Test.createTestingModule({ imports: [IdempotencyModule.forRoot(options)] }).compile(),
    ).rejects.toThrow(message);
  });

  it('says who could not connect, and where, without the password', async () => {
    // A closed loopback port: refused at once.
    const connection = 'postgres://app:s3cret@127.0.0.1:1/orders';
    const started = Test.createTestingModule({
      imports: [IdempotencyModule.forRoot({ connection })],
    }).compile();
    await expect(started).rejects.toThrow(
      /^IdempotencyModule: could not connect to Postgres with its `connection` option \(postgres:\/\/app:\*\*\*@127\.0\.0\.1:1\/orders\): .*ECONNREFUSED/,
    );
    await expect(started).rejects.not.toThrow(/s3cret/);
  });
});
