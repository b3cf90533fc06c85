// The application the waitInFlightMs tests run against (Express or Fastify, in-process, on
// the real Postgres from globalSetup): slow handlers whose runs are counted per key, a
// handler that fails on request, a transactional one, and a route that never waits.
import {
  Body,
  Controller,
  Headers,
  HttpCode,
  Injectable,
  InternalServerErrorException,
  Post,
  RequestTimeoutException,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
  UseInterceptors,
  type INestApplication,
} from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Idempotent,
  IdempotencyTransaction,
  type IdempotencyModuleOptions,
} from '../../src/index.js';
import { catchError, throwError, timeout, TimeoutError, type Observable } from 'rxjs';
import { dropTable, uniqueTableName, type AdapterName } from '../support/test-app.js';
import { createAdapterApp, listenOnLoopback, testIdempotencyModule } from '../support/nest-app.js';

/** Handler runs per idempotency key, and gates that hold /gated handlers until opened. */
@Injectable()
export class Runs {
  private readonly byKey = new Map<string, number>();
  private readonly gates = new Map<string, { opened: Promise<void>; open(): void }>();
  hit(key: string): number {
    const n = (this.byKey.get(key) ?? 0) + 1;
    this.byKey.set(key, n);
    return n;
  }
  of(key: string): number {
    return this.byKey.get(key) ?? 0;
  }
  private gate(key: string) {
    let gate = this.gates.get(key);
    if (!gate) {
      let open!: () => void;
      const opened = new Promise<void>((resolve) => (open = resolve));
      this.gates.set(key, (gate = { opened, open }));
    }
    return gate;
  }
  /** Resolves once the test opens the gate of `key`. */
  passed(key: string): Promise<void> {
    return this.gate(key).opened;
  }
  /** Lets the /gated handler of `key` finish, whatever the machine's load. */
  open(key: string): void {
    this.gate(key).open();
  }
}

export interface SlowBody {
  delayMs?: number;
  [field: string]: unknown;
}

/** Routes whose wait is set on the route, to test route over module. */
export const SHORT_WAIT_MS = 600;

@Controller()
class WaitController {
  constructor(
    private readonly runs: Runs,
    private readonly tx: IdempotencyTransaction,
  ) {}

  private async work(key: string, body: SlowBody, fail: string | undefined) {
    const run = this.runs.hit(key);
    if (body.delayMs) await sleep(body.delayMs);
    // x-fail is not part of the fingerprint: the same request can fail once, then succeed.
    if (fail) throw new InternalServerErrorException(`failed on purpose (run ${run})`);
    return { id: randomUUID(), key, run };
  }

  @Post('slow')
  @Idempotent()
  slow(
    @Headers('x-idempotency-key') key: string,
    @Headers('x-fail') fail: string | undefined,
    @Body() body: SlowBody,
  ) {
    return this.work(key, body, fail);
  }

  /** Runs until the test calls runs.open(key): "still running" without guessing a delay. */
  @Post('gated')
  @Idempotent()
  async gated(@Headers('x-idempotency-key') key: string, @Body() body: SlowBody) {
    const result = await this.work(key, body, undefined);
    await this.runs.passed(key);
    return result;
  }

  @Post('short-wait')
  @Idempotent({ waitInFlightMs: SHORT_WAIT_MS })
  shortWait(@Headers('x-idempotency-key') key: string, @Body() body: SlowBody) {
    return this.work(key, body, undefined);
  }

  @Post('no-wait')
  @Idempotent({ waitInFlightMs: 0 })
  noWait(@Headers('x-idempotency-key') key: string, @Body() body: SlowBody) {
    return this.work(key, body, undefined);
  }

  @Post('tx')
  @HttpCode(200)
  @Idempotent({ transactional: true })
  async transactional(@Headers('x-idempotency-key') key: string, @Body() body: SlowBody) {
    const [{ now }] = await this.tx.manager.query('SELECT now()::text AS now');
    return { ...(await this.work(key, body, undefined)), now };
  }
}

/**
 * How long /timed routes run before their own timeout answers 408. Long enough that, on a
 * loaded machine, the duplicates of a test have claimed and started waiting before it fires
 * (at 500 ms they sometimes had not, and the test never saw them wait).
 */
export const TIMED_ROUTE_MS = 2_000;

/** An app's own timeout interceptor, as applications write one. */
@Injectable()
class RouteTimeout implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      timeout(TIMED_ROUTE_MS),
      catchError((error: unknown) =>
        throwError(() => (error instanceof TimeoutError ? new RequestTimeoutException() : error)),
      ),
    );
  }
}

/** A route whose own timeout (an outer interceptor) answers 408 while it runs or waits. */
@Controller('timed')
@UseInterceptors(RouteTimeout)
class TimedController {
  constructor(private readonly runs: Runs) {}

  @Post('gated')
  @Idempotent()
  async gated(@Headers('x-idempotency-key') key: string) {
    this.runs.hit(key);
    await this.runs.passed(key);
    return { key };
  }
}

export interface WaitApp {
  app: INestApplication;
  url: string;
  runs: Runs;
  tableName: string;
  /** Closes the app (as on shutdown), keeping its table. */
  stop(): Promise<void>;
  /** Closes the app if still open, and drops its table unless the caller named it. */
  close(): Promise<void>;
}

export async function startWaitApp(
  adapter: AdapterName,
  options: Partial<IdempotencyModuleOptions> = {},
): Promise<WaitApp> {
  const tableName = options.tableName ?? uniqueTableName('idem_wait');
  const moduleRef = await Test.createTestingModule({
    imports: [testIdempotencyModule(tableName, { retryAfterSeconds: 2, ...options })],
    controllers: [WaitController, TimedController],
    providers: [Runs],
  }).compile();
  const app = createAdapterApp(moduleRef, adapter);
  const url = await listenOnLoopback(app);
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= app.close());
  return {
    app,
    url,
    runs: app.get(Runs),
    tableName,
    stop,
    async close() {
      await stop();
      if (!options.tableName) await dropTable(tableName);
    },
  };
}
