// Builds an app around the given controllers, under Express or Fastify, on the real Postgres
// from globalSetup, with its own table; the log lines the app writes are kept for assertions.
// For test files that bring their own routes (test-app.ts holds the contract's).
import type { INestApplication, LoggerService, Provider, Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import fastifyCompress from '@fastify/compress';
import { type NestFastifyApplication } from '@nestjs/platform-fastify';
import compression from 'compression';
import { type IdempotencyModuleOptions } from '../../src/index.js';
import { dropTable, RunCounter, uniqueTableName, type AdapterName } from './test-app.js';
import { createAdapterApp, listenOnLoopback, testIdempotencyModule } from './nest-app.js';

/** Keeps what the app logs, by level. */
export class LogCapture implements LoggerService {
  readonly lines: Array<{ level: string; message: string }> = [];
  log(message: unknown): void {
    this.lines.push({ level: 'log', message: String(message) });
  }
  error(message: unknown): void {
    this.lines.push({ level: 'error', message: String(message) });
  }
  warn(message: unknown): void {
    this.lines.push({ level: 'warn', message: String(message) });
  }
  debug(): void {}
  verbose(): void {}
  /** Messages at `level` that contain `text`. */
  find(level: string, text: string): string[] {
    return this.lines
      .filter((line) => line.level === level && line.message.includes(text))
      .map((line) => line.message);
  }
}

export interface RouteApp {
  app: INestApplication;
  url: string;
  runs: RunCounter;
  logs: LogCapture;
  tableName: string;
  close(): Promise<void>;
}

export interface RouteAppOptions {
  controllers: Type[];
  providers?: Provider[];
  module?: Partial<IdempotencyModuleOptions>;
  /** Compress every response (express `compression`, `@fastify/compress`). */
  compress?: boolean;
}

export async function createRouteApp(
  adapter: AdapterName,
  options: RouteAppOptions,
): Promise<RouteApp> {
  const tableName = options.module?.tableName ?? uniqueTableName();
  const moduleRef = await Test.createTestingModule({
    imports: [testIdempotencyModule(tableName, options.module)],
    controllers: options.controllers,
    providers: [RunCounter, ...(options.providers ?? [])],
  }).compile();
  const logs = new LogCapture();
  const app = createAdapterApp(moduleRef, adapter, logs);
  if (options.compress && adapter === 'fastify') {
    await (app as NestFastifyApplication).register(fastifyCompress, { threshold: 0 });
  } else if (options.compress) {
    app.use(compression({ threshold: 0 }));
  }
  const url = await listenOnLoopback(app);
  return {
    app,
    url,
    runs: app.get(RunCounter),
    logs,
    tableName,
    async close() {
      await app.close();
      await dropTable(tableName);
    },
  };
}
