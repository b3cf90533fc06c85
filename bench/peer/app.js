// The peer app: @node-idempotency/nestjs on NestJS 10 + express, running the same handler as
// bench/app.ts (see bench/handler.ts) on the same routes.
// STORAGE=memory | postgres (upstream's UNLOGGED table) | postgres-logged.
// Plain CommonJS with decorators applied by hand, so the folder needs no compiler.
'use strict';
require('reflect-metadata');
const pg = require('pg');

// Counts SQL round trips exactly as bench/app.ts does.
let queries = 0;
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (...args) {
  queries++;
  return clientQuery.apply(this, args);
};

const { Body, Controller, HttpCode, Module, Post } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { NodeIdempotencyModule, Idempotent } = require('@node-idempotency/nestjs');
const { BenchPostgresStorage } = require('./postgres-storage.js');

const storageKind = process.env.STORAGE ?? 'memory';
const port = Number(process.env.PORT);
const poolSize = Number(process.env.POOL_SIZE ?? 10);

const runs = { plain: 0, orders: 0 };
let nextId = 0;

async function handleOrder(body) {
  if (body.delayMs && body.delayMs > 0) {
    await new Promise((done) => setTimeout(done, body.delayMs));
  }
  return { id: ++nextId, sku: body.sku ?? null, qty: body.qty ?? 1, status: 'accepted' };
}

class OrdersController {
  plain(body) {
    runs.plain++;
    return handleOrder(body);
  }

  orders(body) {
    runs.orders++;
    return handleOrder(body);
  }
}

function statsSnapshot() {
  return { runs: { ...runs }, queries };
}

function decorateMethod(decorators, name, paramTypes) {
  const proto = OrdersController.prototype;
  Reflect.defineMetadata('design:paramtypes', paramTypes, proto, name);
  const descriptor = Object.getOwnPropertyDescriptor(proto, name);
  Object.defineProperty(proto, name, Reflect.decorate(decorators, proto, name, descriptor));
}
const bodyParam = (target, key) => Body()(target, key, 0);
decorateMethod([Post('plain'), HttpCode(201), bodyParam], 'plain', [Object]);
decorateMethod([Post('orders'), HttpCode(201), Idempotent(), bodyParam], 'orders', [Object]);
Reflect.decorate([Controller()], OrdersController);

async function main() {
  if (!port) throw new Error('bench/peer/app.js needs PORT');
  let adapter = 'memory';
  if (storageKind.startsWith('postgres')) {
    adapter = new BenchPostgresStorage({
      connectionString: process.env.DATABASE_URL,
      max: poolSize,
      logged: storageKind === 'postgres-logged',
    });
    await adapter.connect();
    await adapter.pool.query(`TRUNCATE ${adapter.tableId}`);
  }
  class BenchModule {}
  Reflect.decorate(
    [
      Module({
        imports: [
          NodeIdempotencyModule.forRootAsync({
            storage: { adapter },
            idempotencyKey: 'x-idempotency-key',
          }),
        ],
        controllers: [OrdersController],
      }),
    ],
    BenchModule,
  );
  const app = await NestFactory.create(BenchModule, { logger: ['error', 'warn'] });
  await app.listen(port, '127.0.0.1');
  process.on('message', (message) => {
    if (message.command === 'stats') process.send({ stats: statsSnapshot() });
    if (message.command === 'stop') app.close().finally(() => process.exit(0));
  });
  if (process.send) process.send({ ready: true });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
