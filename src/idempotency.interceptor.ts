// Orchestrates one request: key -> fingerprint -> claim -> run or replay -> complete or
// release. SQL lives in the store, HTTP shaping in the filter and idempotency-response.ts.
import {
  Inject,
  Injectable,
  Logger,
  StreamableFile,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { RESPONSE_PASSTHROUGH_METADATA, ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum.js';
import { Reflector } from '@nestjs/core';
import { from, map, mergeMap, type Observable } from 'rxjs';
import { IDEMPOTENT_ROUTE_OPTIONS, SAFE_METHODS } from './idempotency.constants.js';
import {
  IdempotencyException,
  IdempotencyKeyMissingException,
  IdempotencyKeyReusedException,
  IdempotencyLeaseLostException,
  IdempotencyRequestInFlightException,
  IdempotencyStoreUnavailableException,
  IdempotencyUnsupportedResponseException,
} from './idempotency.exceptions.js';
import { computeFingerprint } from './idempotency.fingerprint.js';
import { readIdempotencyKey } from './idempotency-key.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type {
  IdempotencyModuleOptions,
  IdempotentRouteOptions,
} from './idempotency-options.interface.js';
import { resolveOptions, type ResolvedOptions } from './idempotency.options.js';
import {
  holdResponse,
  type CapturedResponse,
  type ReplacementResponse,
} from './idempotency-response.js';
import { IdempotentReplay } from './idempotency.replay.js';
import { IdempotencySettlements } from './idempotency.settlements.js';
import { IdempotencyStore, type ClaimedRecord } from './idempotency-store.js';
import { IDEMPOTENCY_DATA_SOURCE, type IdempotencyConnection } from './idempotency.providers.js';
import { OpenTransaction } from './idempotency.transaction.js';
import { PostgresIdempotencyStore } from './postgres-idempotency.store.js';

/** Set on a request once tracked, so @Idempotent() on both class and method runs once. */
const TRACKED = Symbol('idempotency.tracked');

@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  protected readonly logger = new Logger('Idempotency');
  private readonly resolved = new WeakMap<IdempotentRouteOptions, ResolvedOptions>();
  private readonly checkedRoutes = new WeakSet<object>();

  constructor(
    protected readonly reflector: Reflector,
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) protected readonly moduleOptions: IdempotencyModuleOptions,
    protected readonly store: IdempotencyStore,
    private readonly settlements: IdempotencySettlements,
    @Inject(IDEMPOTENCY_DATA_SOURCE) private readonly connection: IdempotencyConnection,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const request = context.switchToHttp().getRequest();
    if (SAFE_METHODS.has(request.method) || request[TRACKED]) return next.handle();
    const route = this.reflector.getAllAndOverride<IdempotentRouteOptions | undefined>(
      IDEMPOTENT_ROUTE_OPTIONS,
      [context.getHandler(), context.getClass()],
    );
    if (!route) return next.handle();
    request[TRACKED] = true;
    const options = this.optionsFor(route);

    const key = readIdempotencyKey(request, options.headerName);
    if (key === undefined) {
      if (options.required) throw new IdempotencyKeyMissingException(options.headerName);
      return next.handle();
    }
    this.assertStorable(context);

    const response = context.switchToHttp().getResponse();
    return from(this.claim(context, request, key, options)).pipe(
      mergeMap((record) =>
        options.transactional
          ? this.runInTransaction(record, response, options, next)
          : this.run(record, response, options, next),
      ),
      map((value) => {
        if (value instanceof StreamableFile) {
          throw new IdempotencyUnsupportedResponseException(
            'A streamed response (StreamableFile) cannot be stored for replay. Return the content instead, or remove @Idempotent() from this route.',
          );
        }
        return value;
      }),
    );
  }

  /** Runs the handler; its response is stored (2xx) or the key released once it is written. */
  private run(
    record: ClaimedRecord,
    response: any,
    options: ResolvedOptions,
    next: CallHandler,
  ): Observable<unknown> {
    holdResponse(response.raw ?? response, (captured) =>
      this.settlements.track(this.settle(record, captured, options)),
    );
    return next.handle();
  }

  /** Runs the handler inside a transaction that commits only with the stored response. */
  private runInTransaction(
    record: ClaimedRecord,
    response: any,
    options: ResolvedOptions,
    next: CallHandler,
  ): Observable<unknown> {
    return from(this.begin(record, options)).pipe(
      mergeMap((transaction) => {
        holdResponse(response.raw ?? response, (captured) =>
          this.settlements.track(this.settleTransaction(transaction, record, captured, options)),
        );
        return transaction.run(() => next.handle());
      }),
    );
  }

  private async begin(record: ClaimedRecord, options: ResolvedOptions): Promise<OpenTransaction> {
    if (!(this.store instanceof PostgresIdempotencyStore)) {
      await this.store.release(record).catch(() => undefined);
      throw new IdempotencyUnsupportedResponseException(
        'transactional: true needs the Postgres store, which shares a transaction with the handler.',
      );
    }
    try {
      return await OpenTransaction.begin(this.connection);
    } catch (error) {
      this.logger.error(`Could not open a transaction for key "${record.key}": ${describe(error)}`);
      await this.store.release(record).catch(() => undefined);
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
  }

  /** Claims the key or throws the outcome (replay, 423, 422, 503). */
  protected async claim(
    context: ExecutionContext,
    request: any,
    key: string,
    options: ResolvedOptions,
  ): Promise<ClaimedRecord> {
    const scope = await options.scope(request, context);
    const fingerprint = computeFingerprint({
      method: request.method,
      url: request.originalUrl ?? request.url,
      body: request.body,
      rawBody: request.rawBody,
      contentType: request.headers['content-type'],
    });
    let result;
    try {
      result = await this.store.claim({
        scope,
        key,
        fingerprint,
        leaseMs: options.leaseMs,
        retentionMs: options.retentionMs,
      });
    } catch (error) {
      this.logger.error(`Could not claim key "${key}": ${describe(error)}`);
      throw new IdempotencyStoreUnavailableException(options.retryAfterSeconds);
    }
    switch (result.outcome) {
      case 'claimed':
        return result.record;
      case 'completed':
        throw new IdempotentReplay(result.response, options.replayStatus);
      case 'mismatch':
        throw new IdempotencyKeyReusedException();
      case 'in_progress': {
        const leaseLeft = Math.ceil(result.leaseLeftMs / 1000);
        throw new IdempotencyRequestInFlightException(
          Math.max(1, Math.min(options.retryAfterSeconds, leaseLeft)),
        );
      }
    }
  }

  /**
   * Runs once the response is written: a 2xx is stored, anything else releases the key.
   * Returns a replacement when the stored result would differ from what is being sent.
   */
  protected async settle(
    record: ClaimedRecord,
    captured: CapturedResponse,
    options: ResolvedOptions,
  ): Promise<ReplacementResponse | undefined> {
    const succeeded = captured.status >= 200 && captured.status < 300;
    try {
      if (!succeeded) {
        if (!(await this.store.release(record))) this.warnLeaseLost(record, 'release');
        return undefined;
      }
      if (await this.store.complete(record, captured, options.retentionMs)) return undefined;
    } catch (error) {
      // The handler ran but its result could not be stored. The record stays claimed until
      // its lease passes, so no duplicate runs meanwhile; the client gets the real result.
      this.logger.error(
        `Could not ${succeeded ? 'store the response for' : 'release'} key "${record.key}" (scope "${record.scope}"): ${describe(error)}`,
      );
      return undefined;
    }
    this.warnLeaseLost(record, 'complete');
    return problemResponse(new IdempotencyLeaseLostException(options.retryAfterSeconds));
  }

  /**
   * Commits the handler's writes together with the stored response, or rolls both back.
   * Whatever cannot be committed is never sent as a success.
   */
  protected async settleTransaction(
    transaction: OpenTransaction,
    record: ClaimedRecord,
    captured: CapturedResponse,
    options: ResolvedOptions,
  ): Promise<ReplacementResponse | undefined> {
    const succeeded = captured.status >= 200 && captured.status < 300;
    let stored = false;
    try {
      if (succeeded) {
        stored = await (this.store as PostgresIdempotencyStore)
          .withExecutor(transaction.executor)
          .complete(record, captured, options.retentionMs);
      }
      if (stored) {
        await transaction.commit();
        return undefined;
      }
      await transaction.rollback();
    } catch (error) {
      this.logger.error(
        `Could not commit key "${record.key}" (scope "${record.scope}"); its writes were rolled back: ${describe(error)}`,
      );
      await transaction.rollback().catch(() => undefined);
      // If COMMIT itself failed midway, the record may be completed after all: release only
      // deletes a record that is still in progress, so it cannot undo a commit.
      await this.store.release(record).catch(() => undefined);
      return problemResponse(new IdempotencyStoreUnavailableException(options.retryAfterSeconds));
    }
    if (!succeeded) {
      await this.store.release(record).catch((error: unknown) => {
        this.logger.error(`Could not release key "${record.key}": ${describe(error)}`);
      });
      return undefined;
    }
    this.warnLeaseLost(record, 'commit');
    return problemResponse(new IdempotencyLeaseLostException(options.retryAfterSeconds));
  }

  private warnLeaseLost(record: ClaimedRecord, action: string): void {
    this.logger.warn(
      `Lease lost for key "${record.key}" (scope "${record.scope}"): another request took it over before this one could ${action}; its result was discarded. Raise leaseMs above the slowest handler run.`,
    );
  }

  private optionsFor(route: IdempotentRouteOptions): ResolvedOptions {
    let options = this.resolved.get(route);
    if (!options) {
      options = resolveOptions(this.moduleOptions, route);
      this.resolved.set(route, options);
    }
    return options;
  }

  /**
   * @Res() or @Next() without passthrough writes around Nest, so there is nothing to store.
   * Mirrors Nest's own check (RouterExecutionContext.isResponseHandled).
   */
  private assertStorable(context: ExecutionContext): void {
    const handler = context.getHandler();
    if (this.checkedRoutes.has(handler)) return;
    const controller = context.getClass();
    const args: Record<string, unknown> =
      Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, handler.name) ?? {};
    const takesResponse = Object.keys(args).some(
      (key) =>
        key.startsWith(`${RouteParamtypes.RESPONSE}:`) ||
        key.startsWith(`${RouteParamtypes.NEXT}:`),
    );
    const passthrough = Reflect.getMetadata(
      RESPONSE_PASSTHROUGH_METADATA,
      controller,
      handler.name,
    );
    if (takesResponse && !passthrough) {
      throw new IdempotencyUnsupportedResponseException(
        `${controller.name}.${handler.name} writes its response with @Res(), which cannot be stored for replay. Use @Res({ passthrough: true }) and return the body.`,
      );
    }
    this.checkedRoutes.add(handler);
  }
}

function problemResponse(problem: IdempotencyException): ReplacementResponse {
  return {
    status: problem.getStatus(),
    headers: { ...problem.headers, 'content-type': 'application/problem+json' },
    body: JSON.stringify(problem.getProblem()),
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
