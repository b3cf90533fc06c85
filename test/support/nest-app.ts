// What every test app does the same way: the module on the test database with its own
// table, the app under Express or Fastify, listening on loopback with a URL that names it.
import type { INestApplication, LoggerService } from '@nestjs/common';
import type { TestingModule } from '@nestjs/testing';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { IdempotencyModule, type IdempotencyModuleOptions } from '../../src/index.js';

export type AdapterName = 'express' | 'fastify';

/** IdempotencyModule on DATABASE_URL with the table migrated; no purge unless asked for. */
export function testIdempotencyModule(
  tableName: string,
  options: Partial<IdempotencyModuleOptions> = {},
) {
  return IdempotencyModule.forRoot({
    connection: process.env.DATABASE_URL,
    runMigrations: true,
    purge: { enabled: false },
    ...options,
    tableName,
  } as IdempotencyModuleOptions);
}

/** The compiled module as an app under the adapter; logs off unless a logger is given. */
export function createAdapterApp(
  moduleRef: TestingModule,
  adapter: AdapterName,
  logger: LoggerService | false = false,
): INestApplication {
  return adapter === 'fastify'
    ? moduleRef.createNestApplication(new FastifyAdapter(), { logger })
    : moduleRef.createNestApplication({ logger });
}

/** Listens on a free loopback port and returns the app's URL with 127.0.0.1 in it. */
export async function listenOnLoopback(app: INestApplication): Promise<string> {
  await app.listen(0, '127.0.0.1');
  return (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
}
