// forRootAsync with the DataSource an application already has from @nestjs/typeorm: the
// module uses it (transactions included) and leaves it open on shutdown.
// These tests use the default table names (`idempotency_records`, TypeORM's `migrations`),
// so they run in a schema of their own (search_path), dropped afterwards: nothing is left in
// the database, and nothing in `public` is touched.
import { Body, Controller, Module, Post } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { DataSource } from 'typeorm';
import {
  CreateIdempotencyRecords1764403200000,
  Idempotent,
  IdempotencyModule,
  IdempotencyTransaction,
} from '../../src/index.js';
import { IDEMPOTENCY_DATA_SOURCE } from '../../src/idempotency.providers.js';
import { send } from '../support/http.js';

const schema = `existing_ds_${randomBytes(4).toString('hex')}`;
/** The test database, with unqualified names resolving to this file's schema. */
const inSchema = {
  type: 'postgres' as const,
  url: process.env.DATABASE_URL,
  extra: { options: `-c search_path=${schema}` },
};

async function onDatabase(statement: string): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

beforeAll(() => onDatabase(`CREATE SCHEMA ${schema}`));
afterAll(() => onDatabase(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));

@Controller('payments')
class PaymentsController {
  constructor(private readonly tx: IdempotencyTransaction) {}

  @Post()
  @Idempotent({ transactional: true })
  async pay(@Body() body: { amount: number }) {
    const [row] = await this.tx.manager.query(
      'INSERT INTO payments_existing_ds (amount) VALUES ($1) RETURNING id',
      [body.amount],
    );
    return { paymentId: Number(row.id), inTransaction: this.tx.isActive };
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot({
      ...inSchema,
      migrations: [CreateIdempotencyRecords1764403200000],
      migrationsRun: true,
    }),
    IdempotencyModule.forRootAsync({
      inject: [DataSource],
      useFactory: (dataSource: DataSource) => ({ dataSource, purge: { enabled: false } }),
    }),
  ],
  controllers: [PaymentsController],
})
class AppModule {}

describe('IdempotencyModule.forRootAsync with an existing @nestjs/typeorm DataSource', () => {
  it("runs through the application's DataSource, its migrations list and its transactions", async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.listen(0, '127.0.0.1');
    const dataSource = app.get(DataSource);
    await dataSource.query(
      'CREATE TABLE IF NOT EXISTS payments_existing_ds (id bigserial PRIMARY KEY, amount int NOT NULL)',
    );
    try {
      const url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
      const key = randomUUID();
      const first = await send(url, '/payments', {
        headers: [['x-idempotency-key', key]],
        body: { amount: 42 },
      });
      expect(first.status).toBe(201);
      expect(first.json).toMatchObject({ inTransaction: true });
      const again = await send(url, '/payments', {
        headers: [['x-idempotency-key', key]],
        body: { amount: 42 },
      });
      expect(again.status).toBe(409);
      expect(again.body.equals(first.body)).toBe(true);
      const [{ n }] = await dataSource.query(
        'SELECT count(*)::int AS n FROM payments_existing_ds WHERE id = $1',
        [first.json.paymentId],
      );
      expect(n).toBe(1);
      const [{ state }] = await dataSource.query(
        'SELECT state FROM idempotency_records WHERE idempotency_key = $1',
        [key],
      );
      expect(state).toBe('completed');
      // Without a key the same handler writes through the application's own manager.
      const plain = await send(url, '/payments', { body: { amount: 1 } });
      expect(plain.json).toMatchObject({ inTransaction: false });
    } finally {
      await dataSource.query('DROP TABLE IF EXISTS payments_existing_ds');
      await app.close();
    }
  });

  it('never closes a DataSource it was given', async () => {
    const dataSource = await new DataSource(inSchema).initialize();
    try {
      const moduleRef = await Test.createTestingModule({
        imports: [
          IdempotencyModule.forRoot({ dataSource, runMigrations: true, purge: { enabled: false } }),
        ],
      }).compile();
      const app = moduleRef.createNestApplication({ logger: false });
      await app.init();
      await app.close();
      expect(dataSource.isInitialized).toBe(true);
    } finally {
      await dataSource.destroy();
    }
  });

  it('closes a DataSource it opened itself', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        IdempotencyModule.forRoot({
          connection: inSchema,
          runMigrations: true,
          purge: { enabled: false },
        }),
      ],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    const { dataSource } = app.get<{ dataSource: DataSource }>(IDEMPOTENCY_DATA_SOURCE);
    expect(dataSource.isInitialized).toBe(true);
    await app.close();
    expect(dataSource.isInitialized).toBe(false);
  });
});
