// HTTP routes: the key comes from a header, the fingerprint from the request, and the
// stored result is the response exactly as the adapter wrote it (captured at the Node
// ServerResponse under Express and Fastify alike). Replays and problems are rendered by
// IdempotencyExceptionFilter, which @Idempotent() binds to the route.
import { StreamableFile, type CallHandler, type ExecutionContext } from '@nestjs/common';
import { mergeMap, Observable, type Subscription } from 'rxjs';
import { ORIGINAL_STATUS_HEADER, SAFE_METHODS } from './idempotency.constants.js';
import type { IdempotencyContextAdapter } from './idempotency-context.interface.js';
import type { IdempotencyEngine, IdempotentCall } from './idempotency.engine.js';
import {
  IdempotencyUnsupportedResponseException,
  type IdempotencyException,
} from './idempotency.exceptions.js';
import { fingerprintHttpRequest } from './idempotency-http.fingerprint.js';
import { routeHasWildcard, withoutTrailingSlash } from './idempotency-http.path.js';
import { readIdempotencyKey } from './idempotency-key.js';
import type { ResolvedOptions } from './idempotency.options.js';
import {
  HandlerOutcome,
  isSuccessStatus,
  settlementOf,
  transactionalSettlementOf,
} from './idempotency-http.settlement.js';
import {
  holdResponse,
  type CapturedResponse,
  type ReplacementResponse,
  type Restatus,
} from './idempotency-response.js';
import { IdempotentReplay } from './idempotency.replay.js';
import { assertStorableRoute } from './idempotency-route.js';
import type { ClaimedRecord, StoredResponse } from './idempotency-store.js';

export class HttpIdempotencyContext implements IdempotencyContextAdapter {
  constructor(private readonly engine: IdempotencyEngine) {}

  applies(context: ExecutionContext): boolean {
    return !SAFE_METHODS.has(requestOf(context).method);
  }

  readKey(context: ExecutionContext, options: ResolvedOptions): string | undefined {
    return readIdempotencyKey(requestOf(context), options.headerName);
  }

  prepare(context: ExecutionContext): void {
    assertStorableRoute(context, this.engine.events.log);
  }

  watchCaller(context: ExecutionContext, gone: () => void): () => void {
    const response = context.getArgByIndex(1);
    const raw = response.raw ?? response;
    // A response that closes before it finished: the client hung up.
    const closed = () => {
      if (!raw.writableFinished) gone();
    };
    if (raw.destroyed) closed();
    raw.once('close', closed);
    return () => raw.off('close', closed);
  }

  scopeSubject(context: ExecutionContext): unknown {
    return requestOf(context);
  }

  fingerprint(context: ExecutionContext): Promise<Buffer> {
    const request = requestOf(context);
    return fingerprintHttpRequest(request, {
      target: routeHasWildcard(request) ? undefined : withoutTrailingSlash,
    });
  }

  replay(_context: ExecutionContext, response: StoredResponse, options: ResolvedOptions): never {
    // Rendered by IdempotencyExceptionFilter: Nest applies the route's own status after
    // interceptors run, so a replay's 409 can only be set on the way out through a filter.
    // A 409 only ever carries a success: a stored error (storeErrors) keeps its own status,
    // but for a 409 of its own, which goes out as it did the first time (see restatusOf).
    const status = isSuccessStatus(response.status)
      ? options.replayStatus
      : (restatusOf(response, options)?.restatus ?? 'original');
    throw new IdempotentReplay(response, status);
  }

  run(
    context: ExecutionContext,
    call: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    const response = context.getArgByIndex(1);
    const raw = response.raw ?? response;
    return call.options.transactional
      ? this.runInTransaction(raw, call, record, next)
      : this.runPlain(raw, call, record, next);
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
    holdResponse(raw, options.replayHeaders, async (captured) => {
      const settlement = settlementOf(captured, handler, options);
      if (!settlement) {
        // An error written while the handler still runs: sent at once, and the record
        // settled (released, stored or held) once the handler is done.
        void handler
          .finished()
          .then(() => {
            stopRenewing();
            return this.engine.settle(record, settlementOf(captured, handler, options)!, options);
          })
          .catch(() => undefined);
        return restatusOf(captured, options);
      }
      stopRenewing();
      const problem = await this.engine.settle(record, settlement, options);
      return problem ? problemResponse(problem) : restatusOf(captured, options);
    });
    return watch(next.handle(), handler, raw);
  }

  /** Runs the handler inside a transaction that commits only with the stored response. */
  private runInTransaction(
    raw: any,
    { options }: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    return this.engine.transactionFor(record, options).pipe(
      mergeMap((transaction) => {
        const handler = new HandlerOutcome();
        const stopRenewing = this.engine.keepLeaseAlive(record, options);
        holdResponse(raw, options.replayHeaders, async (captured) => {
          stopRenewing();
          const settlement = transactionalSettlementOf(captured, handler, options);
          if (settlement.action === 'release' && !handler.ended) {
            // Answered around a handler that may still run (an outer timeout's 408): a
            // ROLLBACK would let its next write commit outside the transaction.
            transaction.abort();
          } else if (settlement.discardWrites) {
            // A stored error keeps none of the handler's writes: roll them back, store it alone.
            await transaction.rollback(options.statementTimeoutMs).catch(() => undefined);
          }
          const problem = await this.engine.settle(
            record,
            settlement,
            options,
            settlement.discardWrites ? undefined : transaction,
          );
          return problem ? problemResponse(problem) : restatusOf(captured, options);
        });
        return watch(
          transaction.run(() => next.handle()),
          handler,
          raw,
        );
      }),
    );
  }

  reject(error: IdempotencyException): IdempotencyException {
    return error;
  }
}

/**
 * Follows the handler from inside every outer interceptor: an error response that the handler
 * did not produce (a timeout interceptor, a failing serializer) must not free the key. Refuses
 * a streamed result, which cannot be stored. One Observable rather than operators: this runs
 * on every request.
 */
function watch(
  handled: Observable<unknown>,
  handler: HandlerOutcome,
  raw: any,
): Observable<unknown> {
  return new Observable<unknown>((subscriber) => {
    let subscription: Subscription | undefined = undefined;
    subscription = handled.subscribe({
      next: (value) => {
        if (!(value instanceof StreamableFile)) return subscriber.next(value);
        // Torn down first, as an operator that throws does: the handler counts as abandoned.
        subscription?.unsubscribe();
        handler.abandoned();
        subscriber.error(
          new IdempotencyUnsupportedResponseException(
            'A streamed response (StreamableFile) cannot be stored for replay. Return the content instead, or remove @Idempotent() from this route.',
          ),
        );
      },
      error: (error: unknown) => {
        handler.failed();
        subscriber.error(error);
      },
      complete: () => {
        handler.answered(raw.statusCode);
        subscriber.complete();
      },
    });
    // Once the handler has finished this changes nothing; before, it was torn down.
    return () => {
      subscription?.unsubscribe();
      handler.abandoned();
    };
  });
}

/**
 * The request, as `switchToHttp().getRequest()` returns it: that call makes three closures
 * each time, and this context asks for the request several times per call.
 */
function requestOf(context: ExecutionContext): any {
  return context.getArgByIndex(0);
}

/** What a handler's own 409 goes out as under the published replay status. */
export const OWN_CONFLICT_STATUS = 422;

/**
 * Under the published replay status a 409 means a replayed success: the published client
 * treats every 409 as one. So a 409 of the handler's own (a ConflictException: the seat is
 * taken) goes out as 422, its body unchanged, with 409 in x-idempotency-original-status.
 */
function restatusOf(captured: CapturedResponse, options: ResolvedOptions): Restatus | undefined {
  if (captured.status !== 409 || options.replayStatus !== 409) return undefined;
  return { restatus: OWN_CONFLICT_STATUS, headers: { [ORIGINAL_STATUS_HEADER]: '409' } };
}

function problemResponse(problem: IdempotencyException): ReplacementResponse {
  return {
    status: problem.getStatus(),
    headers: { ...problem.headers, 'content-type': 'application/problem+json' },
    body: JSON.stringify(problem.getProblem()),
  };
}
