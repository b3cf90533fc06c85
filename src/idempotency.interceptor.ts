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
import { Reflector } from '@nestjs/core';
import { from, map, mergeMap, tap, type Observable } from 'rxjs';
import { IDEMPOTENT_ROUTE_OPTIONS, SAFE_METHODS } from './idempotency.constants.js';
import {
  IdempotencyKeyMissingException,
  IdempotencyKeyReusedException,
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
import { holdResponse } from './idempotency-response.js';
import { IdempotentReplay } from './idempotency.replay.js';
import { assertStorableRoute } from './idempotency-route.js';
import { keepLeaseAlive } from './idempotency.lease.js';
import { HandlerOutcome, IdempotencySettler } from './idempotency.settler.js';
import { IdempotencyStore, type ClaimedRecord } from './idempotency-store.js';

/** Set on a request once tracked, so @Idempotent() on both class and method runs once. */
const TRACKED = Symbol('idempotency.tracked');

@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  protected readonly logger = new Logger('Idempotency');
  private readonly resolved = new WeakMap<object, ResolvedOptions | undefined>();

  constructor(
    protected readonly reflector: Reflector,
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) protected readonly moduleOptions: IdempotencyModuleOptions,
    protected readonly store: IdempotencyStore,
    protected readonly settler: IdempotencySettler,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const request = context.switchToHttp().getRequest();
    if (SAFE_METHODS.has(request.method) || request[TRACKED]) return next.handle();
    const options = this.optionsFor(context);
    if (!options) return next.handle();
    request[TRACKED] = true;

    const key = readIdempotencyKey(request, options.headerName);
    if (key === undefined) {
      if (options.required) throw new IdempotencyKeyMissingException(options.headerName);
      return next.handle();
    }
    assertStorableRoute(context);

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
    const raw = response.raw ?? response;
    const handler = new HandlerOutcome();
    const stopRenewing = this.renewLease(record, options);
    holdResponse(raw, (captured) => {
      stopRenewing();
      return this.settler.settle(record, captured, options, handler);
    });
    // Watched here, inside every outer interceptor: an error response that the handler did
    // not produce (a timeout interceptor, a failing serializer) must not free the key.
    return next.handle().pipe(
      tap({
        complete: () => handler.answered(raw.statusCode),
        error: () => handler.failed(),
      }),
    );
  }

  /** Runs the handler inside a transaction that commits only with the stored response. */
  private runInTransaction(
    record: ClaimedRecord,
    response: any,
    options: ResolvedOptions,
    next: CallHandler,
  ): Observable<unknown> {
    return from(this.settler.begin(record, options)).pipe(
      mergeMap((transaction) => {
        const stopRenewing = this.renewLease(record, options);
        holdResponse(response.raw ?? response, (captured) => {
          stopRenewing();
          return this.settler.settleTransaction(transaction, record, captured, options);
        });
        return transaction.run(() => next.handle());
      }),
    );
  }

  private renewLease(record: ClaimedRecord, options: ResolvedOptions): () => void {
    return options.renewLease
      ? keepLeaseAlive(this.store, record, options.leaseMs, this.logger)
      : () => undefined;
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

  /** The route's options: module, then controller, then method, merged once per route. */
  private optionsFor(context: ExecutionContext): ResolvedOptions | undefined {
    const handler = context.getHandler();
    if (this.resolved.has(handler)) return this.resolved.get(handler);
    const [onMethod, onClass] = [handler, context.getClass()].map((target) =>
      this.reflector.get<IdempotentRouteOptions | undefined>(IDEMPOTENT_ROUTE_OPTIONS, target),
    );
    const options =
      onMethod || onClass
        ? resolveOptions(this.moduleOptions, { ...onClass, ...onMethod })
        : undefined;
    this.resolved.set(handler, options);
    return options;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
