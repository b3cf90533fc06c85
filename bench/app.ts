// The benchmark's app for this module: one handler behind a plain route and an @Idempotent()
// route, on NestJS 12 + express. Started by run.ts as its own process; never part of the package.
import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { Body, Controller, Get, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import pg from 'pg';
import { Idempotent, IdempotencyModule } from '../src/index.js';
import { countHandlerRun, handleOrder, statsSnapshot, type OrderBody } from './handler.js';

// Every SQL round trip passes through pg's Client#query (TypeORM's pool included), so
// counting calls here counts round trips without trusting the store's comments.
let queries = 0;
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  queries++;
  return (clientQuery as (...a: unknown[]) => unknown).apply(this, args);
} as typeof pg.Client.prototype.query;

const url = process.env.DATABASE_URL;
const port = Number(process.env.PORT);
const poolSize = Number(process.env.POOL_SIZE ?? 10);
const tableName = process.env.TABLE_NAME ?? 'bench_idempotency_records';
if (!url || !port) throw new Error('bench/app.ts needs DATABASE_URL and PORT');

@Controller()
class OrdersController {
  @Post('plain')
  @HttpCode(201)
  plain(@Body() body: OrderBody) {
    countHandlerRun('plain');
    return handleOrder(body);
  }

  @Post('orders')
  @HttpCode(201)
  @Idempotent()
  orders(@Body() body: OrderBody) {
    countHandlerRun('orders');
    return handleOrder(body);
  }

  @Get('__stats')
  stats() {
    return statsSnapshot(queries);
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      connection: { type: 'postgres', url, poolSize, applicationName: 'bench-module' },
      runMigrations: true,
      tableName,
    }),
  ],
  controllers: [OrdersController],
})
class BenchModule {}

const app = await NestFactory.create(BenchModule, { logger: ['error', 'warn'] });
await app.listen(port, '127.0.0.1');
// run.ts drives the app over IPC: stop, and a CPU profile of a window of its choosing (the
// V8 profiler that --cpu-prof uses, minus the start-up, which would dominate a short run).
const profiler = new Session();
process.on('message', (message: { command: string; file?: string }) => {
  if (message.command === 'stop') void app.close().finally(() => process.exit(0));
  if (message.command === 'profile-start') {
    void (async () => {
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
      process.send?.({ profiling: true });
    })();
  }
  if (message.command === 'profile-stop') {
    void (async () => {
      const { profile } = await profiler.post('Profiler.stop');
      writeFileSync(message.file!, JSON.stringify(profile));
      profiler.disconnect();
      process.send?.({ profiled: message.file });
    })();
  }
});
process.send?.({ ready: true });
