// The app of bench/wait.ts: one @Idempotent() route whose waitInFlightMs comes from the
// environment, on NestJS 12 + express, started as its own process. Never part of the package.
// Env: DATABASE_URL, PORT, TABLE_NAME, WAIT_MS (0), RUN_MIGRATIONS (1; 0 keeps a table
// created by the first migration alone), POOL_SIZE (10), APP_NAME (application_name).
import 'reflect-metadata';
import { Body, Controller, Get, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { Idempotent, IdempotencyModule } from '../src/index.js';

const url = process.env.DATABASE_URL;
const port = Number(process.env.PORT);
if (!url || !port) throw new Error('bench/wait-app.ts needs DATABASE_URL and PORT');
const waitMs = Number(process.env.WAIT_MS ?? 0);

let runs = 0;
let nextId = 0;

@Controller()
class OrdersController {
  @Post('orders')
  @HttpCode(201)
  @Idempotent({ waitInFlightMs: waitMs })
  async orders(@Body() body: { sku?: string; delayMs?: number }) {
    runs++;
    if (body.delayMs) await sleep(body.delayMs);
    return { id: `${process.pid}-${++nextId}`, sku: body.sku ?? null, status: 'accepted' };
  }

  @Get('__stats')
  stats() {
    return { runs };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      connection: {
        type: 'postgres',
        url,
        poolSize: Number(process.env.POOL_SIZE ?? 10),
        applicationName: process.env.APP_NAME ?? 'bench-wait',
      },
      runMigrations: process.env.RUN_MIGRATIONS !== '0',
      tableName: process.env.TABLE_NAME ?? 'bench_wait_records',
      purge: { enabled: false },
    }),
  ],
  controllers: [OrdersController],
})
class WaitBenchModule {}

const app = await NestFactory.create(WaitBenchModule, { logger: ['error', 'warn'] });
await app.listen(port, '127.0.0.1');
process.on('message', (message: { command?: string }) => {
  if (message?.command === 'stop') void app.close().finally(() => process.exit(0));
});
process.send?.({ ready: true });
