// Builds the application every contract test runs against, under Express or Fastify, on
// the real Postgres from globalSetup. Each app gets its own table so test files can run in
// parallel.
import {
  Body,
  Controller,
  Header,
  HttpCode,
  Param,
  Post,
  Put,
  Get,
  Req,
  type INestApplication,
  type CanActivate,
  type ExecutionContext,
  Injectable,
  UseGuards,
  BadRequestException,
  Patch,
  Res,
  StreamableFile,
  RequestTimeoutException,
  UseInterceptors,
  type CallHandler,
  type NestInterceptor,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { catchError, map, throwError, timeout, TimeoutError, type Observable } from 'rxjs';
import fastifyCompress from '@fastify/compress';
import { type NestFastifyApplication } from '@nestjs/platform-fastify';
import compression from 'compression';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { waitFor } from './processes.js';
import { Idempotent, type IdempotencyModuleOptions } from '../../src/index.js';
import {
  createAdapterApp,
  listenOnLoopback,
  testIdempotencyModule,
  type AdapterName,
} from './nest-app.js';

export type { AdapterName };
export const ADAPTERS: AdapterName[] = ['express', 'fastify'];

/** How many times each handler ran, by route name. */
export class RunCounter {
  private readonly counts = new Map<string, number>();
  hit(name: string): void {
    this.counts.set(name, this.count(name) + 1);
  }
  count(name: string): number {
    return this.counts.get(name) ?? 0;
  }
  reset(): void {
    this.counts.clear();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sets request.user from an `x-user` header, as a Passport guard would. */
@Injectable()
class HeaderUserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest();
    const user = request.headers['x-user'];
    if (typeof user === 'string') request.user = { id: user };
    return true;
  }
}

interface BookingBody {
  product?: string;
  delayMs?: number;
  [field: string]: unknown;
}

@Controller()
@UseGuards(HeaderUserGuard)
class BookingsController {
  constructor(private readonly runs: RunCounter) {}

  @Post('x/partners/:partnerId/bookings')
  @Idempotent()
  async book(@Param('partnerId') partnerId: string, @Body() body: BookingBody) {
    this.runs.hit('book');
    if (body?.delayMs) await sleep(body.delayMs);
    return {
      id: randomUUID(),
      partnerId,
      product: body?.product ?? null,
      run: this.runs.count('book'),
    };
  }

  /** Same path, other method: a key used for the POST must not replay here. */
  @Put('x/partners/:partnerId/bookings')
  @Idempotent()
  rebook(@Param('partnerId') partnerId: string) {
    this.runs.hit('rebook');
    return { partnerId, method: 'PUT' };
  }

  @Post('stream')
  @Idempotent()
  stream() {
    this.runs.hit('stream');
    return new StreamableFile(Buffer.from('streamed'));
  }

  @Post('writes-itself')
  @Idempotent()
  writesItself(
    @Res() response: { status(code: number): { json(body: unknown): void }; code?: unknown },
  ) {
    this.runs.hit('writes-itself');
    return { ignored: true, response: typeof response };
  }

  @Post('passthrough')
  @Idempotent()
  passthrough(@Res({ passthrough: true }) response: any) {
    this.runs.hit('passthrough');
    // Fastify's reply has header(), Express's response has setHeader().
    if (typeof response.header === 'function') response.header('Location', '/x/passthrough/1');
    else response.setHeader('Location', '/x/passthrough/1');
    return { run: this.runs.count('passthrough') };
  }

  @Post('required')
  @Idempotent({ required: true })
  required(@Body() body: BookingBody) {
    this.runs.hit('required');
    return { ok: true, body };
  }

  @Post('fails-once')
  @Idempotent()
  failsOnce() {
    this.runs.hit('fails-once');
    if (this.runs.count('fails-once') === 1) throw new Error('boom');
    return { attempt: this.runs.count('fails-once') };
  }

  @Post('rejects-once')
  @Idempotent()
  rejectsOnce() {
    this.runs.hit('rejects-once');
    if (this.runs.count('rejects-once') === 1) throw new BadRequestException('not yet');
    return { attempt: this.runs.count('rejects-once') };
  }

  @Post('text')
  @Idempotent()
  @Header('Content-Type', 'text/plain; charset=utf-8')
  text() {
    this.runs.hit('text');
    return `plain text, run ${this.runs.count('text')}`;
  }

  @Post('created')
  @Idempotent()
  @HttpCode(202)
  @Header('Location', '/x/jobs/42')
  accepted() {
    this.runs.hit('created');
    return { queued: true };
  }

  @Post('renewed-lease')
  @Idempotent({ leaseMs: 600, renewLease: true })
  async renewedLease() {
    this.runs.hit('renewed-lease');
    await sleep(2_000);
    return { run: this.runs.count('renewed-lease') };
  }

  @Post('short-retention')
  @Idempotent({ retentionMs: 1_000 })
  shortRetention() {
    this.runs.hit('short-retention');
    return { run: this.runs.count('short-retention') };
  }

  @Post('original-status')
  @Idempotent({ replayStatus: 'original' })
  originalStatus() {
    this.runs.hit('original-status');
    return { run: this.runs.count('original-status') };
  }

  @Get('read')
  @Idempotent()
  read() {
    this.runs.hit('read');
    return { run: this.runs.count('read') };
  }

  @Post('untracked')
  untracked() {
    this.runs.hit('untracked');
    return { run: this.runs.count('untracked') };
  }
}

/**
 * Nest's documented timeout pattern: answers 408 while the handler may still be running.
 * 500 ms leaves a loaded machine time to claim the key before the timeout; the slow handler
 * below takes three times that, so it is still running when the 408 goes out.
 */
export const GUARDED_TIMEOUT_MS = 500;
export const GUARDED_SLOW_HANDLER_MS = 1_500;

@Injectable()
export class TimeoutInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      timeout(GUARDED_TIMEOUT_MS),
      catchError((error: unknown) =>
        throwError(() => (error instanceof TimeoutError ? new RequestTimeoutException() : error)),
      ),
    );
  }
}

/** A serializer-style interceptor that fails after the handler succeeded. */
@Injectable()
class FailingSerializerInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      map((value: any) => {
        if (value?.unserializable) throw new Error('serializer failed');
        return value;
      }),
    );
  }
}

/** Outer interceptors that turn a handler's success into an error response. */
@Controller('guarded')
@UseInterceptors(TimeoutInterceptor, FailingSerializerInterceptor)
class GuardedController {
  constructor(private readonly runs: RunCounter) {}

  @Post('slow')
  @Idempotent()
  async slow() {
    this.runs.hit('guarded-slow');
    await sleep(GUARDED_SLOW_HANDLER_MS);
    return { done: true };
  }

  @Post('unserializable')
  @Idempotent()
  unserializable() {
    this.runs.hit('guarded-unserializable');
    return { unserializable: true };
  }
}

/** @Idempotent() on a class covers its unsafe routes and skips safe ones. */
@Controller('orders')
@Idempotent({ replayStatus: 'original' })
class OrdersController {
  constructor(private readonly runs: RunCounter) {}

  @Put(':id')
  put(@Param('id') id: string, @Req() request: { method: string }) {
    this.runs.hit('orders-put');
    return { id, method: request.method, run: this.runs.count('orders-put') };
  }

  @Patch(':id')
  @Idempotent({ required: true })
  patch(@Param('id') id: string) {
    this.runs.hit('orders-patch');
    return { id, run: this.runs.count('orders-patch') };
  }

  @Get(':id')
  get(@Param('id') id: string) {
    this.runs.hit('orders-get');
    return { id, run: this.runs.count('orders-get') };
  }
}

export interface TestApp {
  app: INestApplication;
  url: string;
  runs: RunCounter;
  tableName: string;
  close(): Promise<void>;
}

export function uniqueTableName(prefix = 'idem'): string {
  return `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
}

export interface TestAppSetup {
  /** Compress every response (express `compression`, `@fastify/compress`). */
  compress?: boolean;
}

export async function createTestApp(
  adapter: AdapterName,
  options: Partial<IdempotencyModuleOptions> = {},
  setup: TestAppSetup = {},
): Promise<TestApp> {
  const tableName = options.tableName ?? uniqueTableName();
  const moduleRef = await Test.createTestingModule({
    imports: [testIdempotencyModule(tableName, options)],
    controllers: [BookingsController, OrdersController, GuardedController],
    providers: [RunCounter],
  }).compile();
  const app = createAdapterApp(moduleRef, adapter);
  app.enableShutdownHooks();
  if (setup.compress && adapter === 'fastify') {
    await (app as NestFastifyApplication).register(fastifyCompress, { threshold: 0 });
  } else if (setup.compress) {
    app.use(compression({ threshold: 0 }));
  }
  const url = await listenOnLoopback(app);
  return {
    app,
    url,
    runs: app.get(RunCounter),
    tableName,
    async close() {
      await app.close();
      await dropTable(tableName);
    },
  };
}

export async function dropTable(tableName: string): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    await client.query(`DROP TABLE IF EXISTS "${tableName}"`);
  } finally {
    await client.end();
  }
}

/**
 * Drops a test's schema on a connection of its own. Call it after the app is closed: a DROP
 * SCHEMA ... CASCADE beside the app's own sessions (its purge sweep, its listener, a batch)
 * can deadlock with them (seen in CI: "deadlock detected" in an afterAll).
 */
export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}

/** Waits until the key's record is in `state`: a claim happened, whatever the machine's load. */
export async function waitForRecord(
  tableName: string,
  key: string,
  state: 'in_progress' | 'completed',
  timeoutMs = 10_000,
): Promise<void> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    await waitFor(
      `record ${key} to reach ${state}`,
      async () =>
        (
          await client.query(
            `SELECT 1 FROM "${tableName}" WHERE idempotency_key = $1 AND state = $2`,
            [key, state],
          )
        ).rows.length > 0,
      timeoutMs,
    );
  } finally {
    await client.end();
  }
}

export { sleep };
