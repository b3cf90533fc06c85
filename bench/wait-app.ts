// The app of bench/wait.ts, started as its own process; never part of the package. One
// NestJS 12 + express app on TABLE_NAME with the same handler behind two routes, /orders
// (waitInFlightMs 0) and /orders-wait (WAIT_MS), so the two are measured in one process on
// one pool; with OLD_TABLE_NAME, a second app in the same process on a table created by the
// first migration alone (no has_waiters column), listening on PORT2.
// Env: DATABASE_URL, PORT, TABLE_NAME, WAIT_MS, OLD_TABLE_NAME, PORT2, POOL_SIZE (10).
import 'reflect-metadata';
import { Body, Controller, Get, HttpCode, Module, Post, type DynamicModule } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { Idempotent, IdempotencyModule } from '../src/index.js';

const url = process.env.DATABASE_URL;
const port = Number(process.env.PORT);
if (!url || !port) throw new Error('bench/wait-app.ts needs DATABASE_URL and PORT');
const waitMs = Number(process.env.WAIT_MS ?? 5_000);

/** Handler runs by route, across both apps. */
const runs: Record<string, number> = {};
let nextId = 0;

async function order(route: string, body: { sku?: string; delayMs?: number }) {
  runs[route] = (runs[route] ?? 0) + 1;
  if (body.delayMs) await sleep(body.delayMs);
  return { id: `${process.pid}-${++nextId}`, sku: body.sku ?? null, status: 'accepted' };
}

@Controller()
class OrdersController {
  @Post('orders')
  @HttpCode(201)
  @Idempotent()
  orders(@Body() body: { sku?: string; delayMs?: number }) {
    return order('orders', body);
  }

  @Post('orders-wait')
  @HttpCode(201)
  @Idempotent({ waitInFlightMs: waitMs })
  ordersWait(@Body() body: { sku?: string; delayMs?: number }) {
    return order('orders-wait', body);
  }

  @Get('__stats')
  stats() {
    return { runs };
  }
}

@Module({})
class WaitBenchModule {
  static on(tableName: string, runMigrations: boolean): DynamicModule {
    return {
      module: WaitBenchModule,
      imports: [
        IdempotencyModule.forRoot({
          connection: {
            type: 'postgres',
            url,
            poolSize: Number(process.env.POOL_SIZE ?? 10),
            applicationName: 'bench-wait',
          },
          runMigrations,
          tableName,
          purge: { enabled: false },
        }),
      ],
      controllers: [OrdersController],
    };
  }
}

const apps = [
  await NestFactory.create(WaitBenchModule.on(process.env.TABLE_NAME ?? 'bench_wait', true), {
    logger: ['error', 'warn'],
  }),
];
await apps[0].listen(port, '127.0.0.1');
if (process.env.OLD_TABLE_NAME) {
  const old = await NestFactory.create(WaitBenchModule.on(process.env.OLD_TABLE_NAME, false), {
    logger: ['error', 'warn'],
  });
  await old.listen(Number(process.env.PORT2), '127.0.0.1');
  apps.push(old);
}
process.on('message', (message: { command?: string }) => {
  if (message?.command === 'stop') {
    void Promise.all(apps.map((app) => app.close())).finally(() => process.exit(0));
  }
});
process.send?.({ ready: true });
