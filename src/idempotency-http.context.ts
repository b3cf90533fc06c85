// HTTP routes: the key comes from a header, the fingerprint from the request, and the
// stored result is the response exactly as the adapter wrote it (captured at the Node
// ServerResponse under Express and Fastify alike). Replays and problems are rendered by
// IdempotencyExceptionFilter, which @Idempotent() binds to the route.
import { StreamableFile, type CallHandler, type ExecutionContext } from '@nestjs/common';
import { from, map, mergeMap, tap, type Observable } from 'rxjs';
import { SAFE_METHODS } from './idempotency.constants.js';
import type { IdempotencyContextAdapter } from './idempotency-context.interface.js';
import type { IdempotencyEngine, IdempotentCall, Settlement } from './idempotency.engine.js';
import {
  IdempotencyUnsupportedResponseException,
  type IdempotencyException,
} from './idempotency.exceptions.js';
import { computeFingerprint } from './idempotency.fingerprint.js';
import { readIdempotencyKey } from './idempotency-key.js';
import type { ResolvedOptions } from './idempotency.options.js';
import {
  holdResponse,
  type CapturedResponse,
  type ReplacementResponse,
} from './idempotency-response.js';
import { IdempotentReplay } from './idempotency.replay.js';
import { assertStorableRoute } from './idempotency-route.js';
import type { ClaimedRecord, StoredResponse } from './idempotency-store.js';

/** What the route handler itself did, as opposed to what was finally written. */
class HandlerOutcome {
  private state: 'running' | 'failed' | 'answered' = 'running';
  private status?: number;

  answered(status: number): void {
    this.state = 'answered';
    this.status = status;
  }

  failed(): void {
    this.state = 'failed';
  }

  /**
   * Whether an error response may free the key: only when the handler itself threw or
   * answered with an error status. If it succeeded (or is still running) and something after
   * it failed, its side effects may have happened, so the key stays held until its lease
   * passes rather than letting a retry run them again.
   */
  get releasable(): boolean {
    return this.state === 'failed' || (this.state === 'answered' && !isSuccessStatus(this.status!));
  }
}

export class HttpIdempotencyContext implements IdempotencyContextAdapter {
  constructor(private readonly engine: IdempotencyEngine) {}

  applies(context: ExecutionContext): boolean {
    return !SAFE_METHODS.has(context.switchToHttp().getRequest().method);
  }

  readKey(context: ExecutionContext, options: ResolvedOptions): string | undefined {
    return readIdempotencyKey(context.switchToHttp().getRequest(), options.headerName);
  }

  prepare(context: ExecutionContext): void {
    assertStorableRoute(context);
  }

  scopeSubject(context: ExecutionContext): unknown {
    return context.switchToHttp().getRequest();
  }

  fingerprint(context: ExecutionContext): Buffer {
    const request = context.switchToHttp().getRequest();
    return computeFingerprint({
      method: request.method,
      url: request.originalUrl ?? request.url,
      body: request.body,
      rawBody: request.rawBody,
      contentType: request.headers['content-type'],
    });
  }

  replay(_context: ExecutionContext, response: StoredResponse, options: ResolvedOptions): never {
    // Rendered by IdempotencyExceptionFilter: Nest applies the route's own status after
    // interceptors run, so a replay's 409 can only be set on the way out through a filter.
    throw new IdempotentReplay(response, options.replayStatus);
  }

  run(
    context: ExecutionContext,
    call: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    const response = context.switchToHttp().getResponse();
    const raw = response.raw ?? response;
    const handled = call.options.transactional
      ? this.runInTransaction(raw, call, record, next)
      : this.runPlain(raw, call, record, next);
    return handled.pipe(
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

  /** Runs the handler; its response is stored or the key released once it is written. */
  private runPlain(
    raw: any,
    { options }: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    const handler = new HandlerOutcome();
    const stopRenewing = this.engine.keepLeaseAlive(record, options);
    holdResponse(raw, async (captured) => {
      stopRenewing();
      const problem = await this.engine.settle(record, settlementOf(captured, handler), options);
      return problem && problemResponse(problem);
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
    raw: any,
    { options }: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    return from(this.engine.begin(record, options)).pipe(
      mergeMap((transaction) => {
        const stopRenewing = this.engine.keepLeaseAlive(record, options);
        holdResponse(raw, async (captured) => {
          stopRenewing();
          const settlement: Settlement = isSuccessStatus(captured.status)
            ? { action: 'store', response: captured }
            : { action: 'release' };
          const problem = await this.engine.settle(record, settlement, options, transaction);
          return problem && problemResponse(problem);
        });
        return transaction.run(() => next.handle());
      }),
    );
  }

  reject(error: IdempotencyException): IdempotencyException {
    return error;
  }
}

function settlementOf(captured: CapturedResponse, handler: HandlerOutcome): Settlement {
  if (isSuccessStatus(captured.status)) return { action: 'store', response: captured };
  if (handler.releasable) return { action: 'release' };
  return {
    action: 'hold',
    reason: `answered ${captured.status} although its handler did not fail (or had not finished)`,
  };
}

function isSuccessStatus(status: number): boolean {
  return status >= 200 && status < 300;
}

function problemResponse(problem: IdempotencyException): ReplacementResponse {
  return {
    status: problem.getStatus(),
    headers: { ...problem.headers, 'content-type': 'application/problem+json' },
    body: JSON.stringify(problem.getProblem()),
  };
}
