// An app whose handler writes a booking row through IdempotencyTransaction, for the
// exactly-once tests. Also runnable as a child process (see transactional-server.ts).
import {
  Body,
  Controller,
  Injectable,
  Module,
  Post,
  type DynamicModule,
  type INestApplication,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import {
  Idempotent,
  IdempotencyModule,
  IdempotencyTransaction,
  type IdempotencyModuleOptions,
} from '../../src/index.js';
import type { AdapterName } from './test-app.js';
import { listenOnLoopback } from './nest-app.js';

export interface TransactionalAppOptions {
  adapter: AdapterName;
  tableName: string;
  bookingsTable: string;
  leaseMs?: number;
  connection?: IdempotencyModuleOptions['connection'];
  /** More module options (they win over the ones above). */
  moduleOptions?: Partial<IdempotencyModuleOptions>;
  /** Called once the booking row is written (inside the open transaction). */
  onInserted?: () => void;
}

interface BookBody {
  product: string;
  delayMs?: number;
  /** Throw after inserting. */
  throwAfterInsert?: boolean;
  /** Make the statement that stores the response fail (see the trigger in the tests). */
  failResponseWrite?: boolean;
}

export const HOOKS = Symbol('hooks');

@Injectable()
export class RunLog {
  runs = 0;
}

export function bookingsController(options: TransactionalAppOptions) {
  @Controller('bookings')
  class BookingsController {
    constructor(
      readonly tx: IdempotencyTransaction,
      readonly log: RunLog,
    ) {}

    @Post()
    @Idempotent({ transactional: true, leaseMs: options.leaseMs })
    async book(@Body() body: BookBody) {
      this.log.runs++;
      const [row] = await this.tx.manager.query(
        `INSERT INTO "${options.bookingsTable}" (product, pid) VALUES ($1, $2) RETURNING id`,
        [body.product, process.pid],
      );
      options.onInserted?.();
      if (body.failResponseWrite)
        await this.tx.manager.query(`SET LOCAL app.fail_response_write = 'on'`);
      if (body.delayMs) await new Promise((resolve) => setTimeout(resolve, body.delayMs));
      if (body.throwAfterInsert) throw new Error('failed after inserting');
      return { bookingId: Number(row.id), product: body.product, pid: process.pid };
    }
  }
  return BookingsController;
}

export function transactionalModule(options: TransactionalAppOptions): DynamicModule {
  @Module({})
  class TransactionalAppModule {}
  return {
    module: TransactionalAppModule,
    imports: [
      IdempotencyModule.forRoot({
        connection: options.connection ?? process.env.DATABASE_URL,
        tableName: options.tableName,
        runMigrations: true,
        purge: { enabled: false },
        ...options.moduleOptions,
      }),
    ],
    controllers: [bookingsController(options)],
    providers: [RunLog],
  };
}

export async function startTransactionalApp(
  options: TransactionalAppOptions,
): Promise<{ app: INestApplication; url: string }> {
  const module = transactionalModule(options);
  const app =
    options.adapter === 'fastify'
      ? await NestFactory.create(module, new FastifyAdapter(), { logger: false })
      : await NestFactory.create(module, { logger: false });
  const url = await listenOnLoopback(app);
  return { app, url };
}

/** Creates the bookings table and the trigger that fails a response write on request. */
export function bookingsDdl(tableName: string, bookingsTable: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS "${bookingsTable}" (id bigserial PRIMARY KEY, product text NOT NULL, pid int NOT NULL)`,
    `CREATE OR REPLACE FUNCTION "${bookingsTable}_fail"() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF current_setting('app.fail_response_write', true) = 'on' THEN
         RAISE EXCEPTION 'injected failure while storing the response';
       END IF;
       RETURN NEW;
     END $$`,
    `CREATE OR REPLACE TRIGGER "${bookingsTable}_fail" BEFORE UPDATE ON "${tableName}"
       FOR EACH ROW WHEN (NEW.state = 'completed') EXECUTE FUNCTION "${bookingsTable}_fail"()`,
  ];
}
