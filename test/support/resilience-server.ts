// A real application process for the resilience tests, started by processes.ts (compiled
// first; `node --import @swc-node/register/esm-register test/support/resilience-server.ts`
// runs it too, only slower to start).
// Every handler run inserts a row into RUNS_TABLE, so tests can count runs across processes.
// The delay comes from the `x-delay-ms` header, which is not part of the fingerprint, so
// requests with different delays are still the same request.
// Env: DATABASE_URL, IDEM_TABLE, RUNS_TABLE, ADAPTER (express|fastify), RETRY_AFTER_SECONDS,
// WAIT_IN_FLIGHT_MS (the /wait route's waitInFlightMs).
// Prints `READY <port>` once listening on 127.0.0.1.
import 'reflect-metadata';
import {
  Body,
  Controller,
  Headers,
  Inject,
  InternalServerErrorException,
  Module,
  Post,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Idempotent, IdempotencyModule } from '../../src/index.js';
import { LEASE_MS } from './resilience-constants.js';

const RUNS = Symbol('RUNS');
const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`resilience-server: ${name} is not set`);
  return value;
};
const runsTable = env('RUNS_TABLE');
if (!/^[a-z_][a-z0-9_]*$/.test(runsTable)) throw new Error('bad RUNS_TABLE');

@Controller()
class WorkController {
  constructor(@Inject(RUNS) private readonly pool: pg.Pool) {}

  private async run(route: string, key: string | undefined, delay: string | undefined) {
    await this.pool.query(`INSERT INTO ${runsTable} (key, pid, route) VALUES ($1, $2, $3)`, [
      key ?? '',
      process.pid,
      route,
    ]);
    const ms = Number(delay ?? 0);
    if (ms > 0) await sleep(ms);
    return { id: randomUUID(), pid: process.pid, route, key };
  }

  @Post('work')
  @Idempotent({ leaseMs: LEASE_MS.work })
  work(
    @Headers('x-idempotency-key') key: string,
    @Headers('x-delay-ms') delay: string,
    @Body() _body: unknown,
  ) {
    return this.run('work', key, delay);
  }

  /** Duplicates wait for the first; `x-fail: 1` makes the handler fail after its delay. */
  @Post('wait')
  @Idempotent({
    leaseMs: LEASE_MS.work,
    waitInFlightMs: Number(process.env.WAIT_IN_FLIGHT_MS ?? 0),
  })
  async wait(
    @Headers('x-idempotency-key') key: string,
    @Headers('x-delay-ms') delay: string,
    @Headers('x-fail') fail: string | undefined,
    @Body() _body: unknown,
  ) {
    const result = await this.run('wait', key, delay);
    if (fail) throw new InternalServerErrorException('failed on purpose');
    return result;
  }

  @Post('mid-lease')
  @Idempotent({ leaseMs: LEASE_MS.mid })
  mid(@Headers('x-idempotency-key') key: string, @Headers('x-delay-ms') delay: string) {
    return this.run('mid-lease', key, delay);
  }

  @Post('short-lease')
  @Idempotent({ leaseMs: LEASE_MS.short })
  short(@Headers('x-idempotency-key') key: string, @Headers('x-delay-ms') delay: string) {
    return this.run('short-lease', key, delay);
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      connection: env('DATABASE_URL'),
      tableName: env('IDEM_TABLE'),
      runMigrations: true,
      retryAfterSeconds: Number(process.env.RETRY_AFTER_SECONDS ?? 30),
      purge: { enabled: false },
    }),
  ],
  controllers: [WorkController],
  providers: [
    {
      provide: RUNS,
      useFactory: () => {
        const pool = new pg.Pool({ connectionString: env('DATABASE_URL'), max: 5 });
        // An idle client's backend terminated (a server restart) must not end the process:
        // the pool drops it and the next run's insert connects again.
        pool.on('error', () => undefined);
        return pool;
      },
    },
  ],
})
class ResilienceAppModule implements OnApplicationShutdown {
  constructor(@Inject(RUNS) private readonly pool: pg.Pool) {}
  async onApplicationShutdown(): Promise<void> {
    await this.pool.end();
  }
}

async function main(): Promise<void> {
  const logger = ['warn', 'error'] as ('warn' | 'error')[];
  // Only the adapter in use is imported: each costs a second or more of startup.
  const app =
    process.env.ADAPTER === 'fastify'
      ? await NestFactory.create(
          ResilienceAppModule,
          new (await import('@nestjs/platform-fastify')).FastifyAdapter(),
          { logger },
        )
      : await NestFactory.create(ResilienceAppModule, { logger });
  app.enableShutdownHooks();
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as { port: number };
  process.stdout.write(`READY ${address.port}\n`);
}

// The test runner holds our stdin: when it goes away (even killed), so do we, so no app
// process outlives a crashed test run.
process.stdin.on('end', () => process.exit(1));
process.stdin.on('error', () => process.exit(1));
process.stdin.resume();

main().catch((error: unknown) => {
  console.error('resilience-server failed to start:', error);
  process.exit(1);
});
