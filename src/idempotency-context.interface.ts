// What each kind of handler (HTTP route, GraphQL resolver, message handler) supplies to the
// engine: where its key comes from, what makes two calls "the same", how the handler runs
// and how the outcomes look in that context. Adding a context adds one of these; the engine
// does not change.
import type { CallHandler, ExecutionContext } from '@nestjs/common';
import type { Observable } from 'rxjs';
import type { IdempotentCall } from './idempotency.engine.js';
import type { IdempotencyException } from './idempotency.exceptions.js';
import type { ResolvedOptions } from './idempotency.options.js';
import type { ClaimedRecord, StoredResponse } from './idempotency-store.js';

export interface IdempotencyContextAdapter {
  /**
   * Whether each call must run to its end even when its caller unsubscribes. Nest does that
   * to the other handlers of an event when one fails; a claimed record must still be settled
   * (HTTP settles on the response write instead, whatever the observable does).
   */
  readonly runsToCompletion?: boolean;
  /** Whether `@Idempotent()` tracks this call at all (HTTP: never GET, HEAD or OPTIONS). */
  applies(context: ExecutionContext): boolean;
  /**
   * The key from its default place (a header), `undefined` when none was sent; throws
   * IdempotencyKeyInvalidException. Not called when the route has a `key` resolver.
   */
  readKey(context: ExecutionContext, options: ResolvedOptions): string | undefined;
  /** Where readKey looks, for the "key missing" error, when that is not the request header. */
  keySource?(options: ResolvedOptions): string;
  /**
   * The records this handler shares keys with, unless the route sets `namespace`; empty (as
   * for HTTP routes) leaves the scope as it is.
   */
  namespace?(context: ExecutionContext): string;
  /** A call this module tracks begins (before its key is read). */
  started?(context: ExecutionContext, options: ResolvedOptions): void;
  /** The call runs as if the module were absent (no key, none required): wraps it. */
  untracked?(
    context: ExecutionContext,
    options: ResolvedOptions,
    handled: Observable<unknown>,
  ): Observable<unknown>;
  /** The call failed before its claim with an error that is not this module's. */
  aborted?(error: unknown, context: ExecutionContext, options: ResolvedOptions): void;
  /** Checks, before anything is claimed, that the call's result can be stored. */
  prepare?(context: ExecutionContext): void;
  /**
   * Calls `gone` if the caller goes away before it is answered (HTTP: its connection
   * closes), so a duplicate waiting for it stops waiting; returns the function that stops
   * watching.
   */
  watchCaller?(context: ExecutionContext, gone: () => void): () => void;
  /** The first argument given to `scope` resolvers. */
  scopeSubject(context: ExecutionContext): unknown;
  /** SHA-256 of the operation; throws an IdempotencyException when it cannot be computed. */
  fingerprint(context: ExecutionContext): Buffer | Promise<Buffer>;
  /** Answers with a stored result. */
  replay(
    context: ExecutionContext,
    response: StoredResponse,
    options: ResolvedOptions,
    call: IdempotentCall,
  ): Observable<unknown>;
  /** Runs the handler for a claimed record and settles the record through the engine. */
  run(
    context: ExecutionContext,
    call: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown>;
  /** This module's error as the context's own (HTTP: as it is; elsewhere the context's type). */
  reject(error: IdempotencyException, context: ExecutionContext, options: ResolvedOptions): unknown;
}
