// Message handlers on any Nest transport, in a hybrid app or a standalone microservice:
// `@MessagePattern` (request/response) and `@EventPattern` (events). The key comes from a
// message header (where the transport has headers) or a `key` resolver (a message field, the
// transport's message id); each handler has its own namespace, so two consumers of one event
// each process it once. A repeat message gets the stored reply; a repeat event is
// acknowledged without running the handler. Errors are RpcExceptions carrying the `code`.
// Loaded on the first message: @nestjs/microservices is an optional peer.
import type { CallHandler, ExecutionContext } from '@nestjs/common';
import { RmqContext, RpcException } from '@nestjs/microservices';
import { PATTERN_HANDLER_METADATA } from '@nestjs/microservices/constants.js';
import { catchError, from, mergeMap, of, tap, throwError, type Observable } from 'rxjs';
import { jsonResponse, jsonValue, runAndSettle } from './idempotency-call.runner.js';
import type { IdempotencyContextAdapter } from './idempotency-context.interface.js';
import type { IdempotencyEngine, IdempotentCall } from './idempotency.engine.js';
import type { IdempotencyException } from './idempotency.exceptions.js';
import { computeCallFingerprint } from './idempotency.fingerprint.js';
import { checkResolvedKey } from './idempotency-key.js';
import { messageHeader, patternOf } from './idempotency-rpc.messages.js';
import type { ResolvedOptions } from './idempotency.options.js';
import type { ClaimedRecord, StoredResponse } from './idempotency-store.js';

/** `PatternHandler.EVENT`, which the package does not export. */
const EVENT_HANDLER = 2;

/** What an event stores: that it was processed. Its handler's return value goes nowhere. */
const PROCESSED: StoredResponse = { status: 200, headers: {}, body: Buffer.alloc(0) };

/** Outcomes after which the same message may succeed later: redeliver it. */
const RETRYABLE_STATUSES = new Set([423, 503]);

type MessageOutcome = 'ack' | 'requeue' | 'reject';

/** Of several handlers' outcomes for one message, the one it gets: redelivery wins. */
const OUTCOME_RANK: Record<MessageOutcome, number> = { ack: 0, reject: 1, requeue: 2 };

/** The calls of one RabbitMQ message (one per handler of an event) still to settle. */
interface PendingMessage {
  calls: number;
  outcome: MessageOutcome;
  requeueAfterMs: number;
}

export class RpcIdempotencyContext implements IdempotencyContextAdapter {
  private warnedAcknowledge = false;
  /**
   * With `acknowledge: true`, the messages whose calls have not all settled: every handler
   * of an event gets the same message, and a message acknowledged twice is a channel error
   * (the broker closes the channel and redelivers everything unacknowledged on it).
   */
  private readonly pending = new WeakMap<object, PendingMessage>();
  private readonly sent = new WeakSet<object>();

  readonly runsToCompletion = true;

  constructor(private readonly engine: IdempotencyEngine) {}

  private get logger() {
    return this.engine.events.log;
  }

  applies(): boolean {
    return true;
  }

  /** Counts the calls of a message that will settle it (see settleMessage). */
  started(context: ExecutionContext, options: ResolvedOptions): void {
    if (!options.acknowledge) return;
    const rmq = context.switchToRpc().getContext();
    if (!(rmq instanceof RmqContext)) return;
    const message = rmq.getMessage();
    const pending = this.pending.get(message);
    if (pending) pending.calls++;
    else this.pending.set(message, { calls: 1, outcome: 'ack', requeueAfterMs: 0 });
  }

  /** A message without a key still gets settled: the handler is the only one that ran. */
  untracked(
    context: ExecutionContext,
    options: ResolvedOptions,
    handled: Observable<unknown>,
  ): Observable<unknown> {
    if (!options.acknowledge) return handled;
    let settled = false;
    const settle = (outcome: MessageOutcome) => {
      if (settled) return;
      settled = true;
      this.settleMessage(context, options, outcome);
    };
    return handled.pipe(
      tap({
        complete: () => settle('ack'),
        error: () => settle('requeue'),
        unsubscribe: () => settle('requeue'),
      }),
    );
  }

  /**
   * A key or scope resolver (or another step before the claim) threw: the message's key
   * cannot be known, as for an invalid key, so it is rejected (dead-lettered where the
   * queue has a dead-letter exchange) rather than redelivered to fail again.
   */
  aborted(_error: unknown, context: ExecutionContext, options: ResolvedOptions): void {
    this.settleMessage(context, options, 'reject');
  }

  readKey(context: ExecutionContext, options: ResolvedOptions): string | undefined {
    const value = messageHeader(context.switchToRpc().getContext(), options.headerName);
    return checkResolvedKey(value, `the "${options.headerName}" message header`);
  }

  keySource(options: ResolvedOptions): string {
    return `the "${options.headerName}" message header`;
  }

  /** The message: a scope resolver reads the tenant or principal it carries. */
  scopeSubject(context: ExecutionContext): unknown {
    return context.switchToRpc().getData() ?? {};
  }

  namespace(context: ExecutionContext): string {
    return `rpc:${context.getClass().name}.${context.getHandler().name}`;
  }

  fingerprint(context: ExecutionContext): Buffer {
    const rpc = context.switchToRpc();
    return computeCallFingerprint('rpc', patternOf(rpc.getContext(), context), rpc.getData());
  }

  replay(
    context: ExecutionContext,
    response: StoredResponse,
    options: ResolvedOptions,
  ): Observable<unknown> {
    this.settleMessage(context, options, 'ack');
    if (isEvent(context)) return of(undefined);
    return from((jsonValue(response) as unknown[] | undefined) ?? []);
  }

  run(
    context: ExecutionContext,
    call: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    const event = isEvent(context);
    return runAndSettle(this.engine, call, record, next, (values) =>
      event ? PROCESSED : jsonResponse(values),
    ).pipe(
      tap(() => this.settleMessage(context, call.options, 'ack')),
      catchError((error: unknown) => {
        // The handler failed and its key is free again: let the broker deliver it again.
        if (!isIdempotencyProblem(error)) this.settleMessage(context, call.options, 'requeue');
        return throwError(() => error);
      }),
      mergeMap((values) => (event ? of(undefined) : from(values))),
    );
  }

  reject(
    error: IdempotencyException,
    context: ExecutionContext,
    options: ResolvedOptions,
  ): RpcException {
    const { code, detail, status } = error.getProblem();
    this.settleMessage(context, options, RETRYABLE_STATUSES.has(status) ? 'requeue' : 'reject');
    const retryAfter = error.headers['Retry-After'];
    return new RpcException({
      status: 'error',
      code,
      message: detail,
      ...(retryAfter ? { retryAfterSeconds: Number(retryAfter) } : {}),
    });
  }

  /**
   * With `acknowledge: true`, settles a RabbitMQ message by hand: ack once its outcome is
   * final; requeue (after `retryAfterSeconds`, so a message in flight elsewhere does not spin)
   * when it may succeed later; reject without requeue when it never can (a reused or invalid
   * key), which dead-letters it where the queue has a dead-letter exchange.
   */
  private settleMessage(
    context: ExecutionContext,
    options: ResolvedOptions,
    outcome: MessageOutcome,
  ): void {
    if (!options.acknowledge) return;
    const rmq = context.switchToRpc().getContext();
    if (!(rmq instanceof RmqContext)) {
      if (!this.warnedAcknowledge) {
        this.warnedAcknowledge = true;
        this.logger.warn(
          '`acknowledge: true` only applies to RabbitMQ (noAck: false); this transport acknowledges by itself.',
        );
      }
      return;
    }
    const channel = rmq.getChannelRef();
    const message = rmq.getMessage();
    let requeueAfterMs = options.retryAfterSeconds * 1000;
    const pending = this.pending.get(message);
    if (pending) {
      // Settled once, when the last of its handlers is done, with the outcome that wins.
      if (OUTCOME_RANK[outcome] > OUTCOME_RANK[pending.outcome]) pending.outcome = outcome;
      if (outcome === 'requeue') {
        pending.requeueAfterMs = Math.max(pending.requeueAfterMs, requeueAfterMs);
      }
      if (--pending.calls > 0) return;
      this.pending.delete(message);
      outcome = pending.outcome;
      requeueAfterMs = pending.requeueAfterMs;
    }
    if (this.sent.has(message)) {
      this.logger.warn(
        `A message was already settled by another handler, so it could not ${outcome} it too.`,
      );
      return;
    }
    this.sent.add(message);
    const send = () => {
      try {
        if (outcome === 'ack') channel.ack(message);
        else channel.nack(message, false, outcome === 'requeue');
      } catch (error) {
        // The channel closed meanwhile: the broker redelivers the message by itself.
        this.logger.warn(`Could not ${outcome} a message: ${(error as Error).message}`);
      }
    };
    if (outcome === 'requeue') setTimeout(send, requeueAfterMs).unref();
    else send();
  }
}

function isEvent(context: ExecutionContext): boolean {
  return Reflect.getMetadata(PATTERN_HANDLER_METADATA, context.getHandler()) === EVENT_HANDLER;
}

function isIdempotencyProblem(error: unknown): boolean {
  return typeof (error as IdempotencyException)?.getProblem === 'function';
}
