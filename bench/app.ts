// The benchmark's app for this module: one handler behind a plain route and an @Idempotent()
// route, on NestJS 12 + express. Started by the harness as its own process (or as a cluster
// worker by bench/cluster.ts); never part of the package.
//   STORE=postgres (default): the module's Postgres store on its own DataSource.
//   STORE=memory: the bench-only in-memory store, the limit target (no SQL at all).
//   TABLE_NAME, APP_NAME (application_name of its connections), POOL_SIZE, PURGE=off.
//   DURABILITY=asynchronous: the module's `durability` option (claims and completions commit
//   without waiting for the WAL flush), to measure it against the default.
//   EVENTS=prometheus: the README's prom-client recipe subscribed to the module's events;
//   EVENTS=noop: a subscriber that does nothing (what the module's side of an event costs).
import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { Body, Controller, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import pg from 'pg';
import { Idempotent, IdempotencyModule, type IdempotencyModuleOptions } from '../src/index.js';
import { countHandlerRun, handleOrder, statsSnapshot, type OrderBody } from './handler.js';
import { MemoryIdempotencyStore } from './memory-idempotency.store.js';

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
const applicationName = process.env.APP_NAME ?? 'bench-module';
const inMemory = process.env.STORE === 'memory';
if ((!url && !inMemory) || !port) throw new Error('bench/app.ts needs DATABASE_URL and PORT');

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
}

const purge = { enabled: process.env.PURGE !== 'off' };
const options: IdempotencyModuleOptions = inMemory
  ? { store: new MemoryIdempotencyStore(), purge }
  : {
      connection: {
        type: 'postgres',
        url,
        poolSize,
        applicationName,
        // A busy server's pool stays open; pg's default closes idle connections after 10 s,
        // which between two interleaved runs would make every run pay for reconnecting.
        extra: { idleTimeoutMillis: 0 },
      },
      runMigrations: true,
      tableName,
      purge,
      // BATCHING=off: one statement per call, to measure what batching changes.
      batching: process.env.BATCHING !== 'off',
      ...(process.env.DURABILITY === 'asynchronous' && { durability: 'asynchronous' }),
    };

@Module({ imports: [IdempotencyModule.forRoot(options)], controllers: [OrdersController] })
class BenchModule {}

const app = await NestFactory.create(BenchModule, { logger: ['error', 'warn'] });
if (process.env.EVENTS === 'prometheus') {
  // Loaded only here: the other targets must not even import prom-client.
  const { recordIdempotencyMetrics } = await import('../example/metrics/idempotency-prometheus.js');
  const { IdempotencyEvents } = await import('../src/index.js');
  recordIdempotencyMetrics(app.get(IdempotencyEvents));
} else if (process.env.EVENTS === 'noop') {
  const { IdempotencyEvents } = await import('../src/index.js');
  app.get(IdempotencyEvents).events$.subscribe(() => undefined);
}
await app.listen(port, '127.0.0.1');
// The harness drives the app over IPC: stats, stop, and a CPU profile of a window of its
// choosing (the V8 profiler that --cpu-prof uses, minus the start-up, which would dominate).
const profiler = new Session();
process.on('message', (message: { command: string; file?: string }) => {
  if (message.command === 'stats') process.send?.({ stats: statsSnapshot(queries) });
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
