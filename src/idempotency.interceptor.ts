// Bound to each @Idempotent() route by the decorator. Orchestrates one call: options ->
// key -> scope and fingerprint -> claim -> run or replay; the context adapter does what is
// particular to HTTP (or another context), the engine everything that touches the record.
//
// The GraphQL and message contexts are loaded on their first call: they import
// @nestjs/graphql and @nestjs/microservices, optional peers that an HTTP-only app need not
// have installed.
//
// Route-bound rather than global (APP_INTERCEPTOR) on purpose: it then runs inside the
// route's other interceptors, so it can tell the handler's own failure (which frees the key)
// from an outer interceptor's (a timeout answering 408 while the handler still runs, which
// must not).
import {
  Inject,
  Injectable,
  Optional,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
  type OnModuleInit,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { defer, from, lastValueFrom, mergeMap, Observable, toArray } from 'rxjs';
import type { IdempotencyContextAdapter } from './idempotency-context.interface.js';
import { IdempotencyEngine, type IdempotentCall } from './idempotency.engine.js';
import { IdempotencyException, IdempotencyKeyMissingException } from './idempotency.exceptions.js';
import { HttpIdempotencyContext } from './idempotency-http.context.js';
import { checkResolvedKey } from './idempotency-key.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import { resolveOptions, type ResolvedOptions } from './idempotency.options.js';
import { resolveScope } from './idempotency-scope.js';
import { idempotentOptionsOf } from './idempotency-routes.js';

type ContextLoader = (engine: IdempotencyEngine) => Promise<IdempotencyContextAdapter>;

/** Contexts other than HTTP, by `ExecutionContext.getType()`; other types pass through. */
const LAZY_CONTEXTS: Partial<Record<string, ContextLoader>> = {
  graphql: async (engine) =>
    new (await import('./idempotency-graphql.context.js')).GraphqlIdempotencyContext(engine),
  rpc: async (engine) =>
    new (await import('./idempotency-rpc.context.js')).RpcIdempotencyContext(engine),
};

const MODULE_MISSING =
  '@Idempotent() is used, but IdempotencyModule is not imported. Import IdempotencyModule.forRoot() (or forRootAsync()) once, in the root module: it is global. In unit tests, import IdempotencyTestingModule from "nest-idempotency-pg/testing" instead.';

const KEY_RESOLVER = 'read by the `key` option';

/**
 * Calls already tracked, by their arguments (one array per call, shared by every interceptor
 * of its chain). Module-wide, not per instance: @Idempotent() on both class and method binds
 * an interceptor twice, and two instances (the interceptor also bound globally, or two module
 * registrations) must not both hold one response (the second hold would hide the first).
 */
const tracked = new WeakSet<object>();

@Injectable()
export class IdempotencyInterceptor implements NestInterceptor, OnModuleInit {
  private readonly resolved = new WeakMap<object, ResolvedOptions | undefined>();
  private readonly contexts: Partial<Record<string, IdempotencyContextAdapter>>;
  private readonly loading = new Map<string, Promise<IdempotencyContextAdapter>>();

  constructor(
    protected readonly reflector: Reflector,
    @Optional()
    @Inject(IDEMPOTENCY_MODULE_OPTIONS)
    protected readonly moduleOptions?: IdempotencyModuleOptions,
    @Optional() protected readonly engine?: IdempotencyEngine,
  ) {
    this.contexts = engine ? { http: new HttpIdempotencyContext(engine) } : {};
  }

  /** Fails at start-up, with the fix, when the module that runs the records is missing. */
  onModuleInit(): void {
    if (!this.engine || !this.moduleOptions) throw new Error(MODULE_MISSING);
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (!this.engine) throw new Error(MODULE_MISSING);
    const type = context.getType();
    const adapter = this.contexts[type];
    if (adapter) return this.track(adapter, context, next);
    const load = LAZY_CONTEXTS[type];
    if (!load) return next.handle();
    let loading = this.loading.get(type);
    if (!loading) {
      loading = load(this.engine).then((loaded) => (this.contexts[type] = loaded));
      this.loading.set(type, loading);
    }
    return from(loading).pipe(mergeMap((loaded) => this.track(loaded, context, next)));
  }

  private track(
    adapter: IdempotencyContextAdapter,
    context: ExecutionContext,
    next: CallHandler,
  ): Observable<unknown> {
    const args = context.getArgs();
    if (tracked.has(args) || !adapter.applies(context)) return next.handle();
    const options = this.optionsFor(context);
    if (!options) return next.handle();
    tracked.add(args);
    adapter.started?.(context, options);

    try {
      const key = options.keyResolver
        ? checkResolvedKey(options.keyResolver(context), KEY_RESOLVER)
        : adapter.readKey(context, options);
      if (key === undefined) {
        if (options.required) {
          const source = options.keyResolver ? KEY_RESOLVER : adapter.keySource?.(options);
          throw new IdempotencyKeyMissingException(options.headerName, source);
        }
        const handled = next.handle();
        return adapter.untracked ? adapter.untracked(context, options, handled) : handled;
      }
      adapter.prepare?.(context);
      const described = this.describeCall(adapter, context, key, options).catch((error) => {
        this.rejected(error, context);
        if (!(error instanceof IdempotencyException)) adapter.aborted?.(error, context, options);
        throw error;
      });
      const handled = this.admitted(adapter, context, described, options, next);
      return adapter.runsToCompletion ? toCompletion(handled) : handled;
    } catch (error) {
      this.rejected(error, context);
      if (error instanceof IdempotencyException) throw adapter.reject(error, context, options);
      adapter.aborted?.(error, context, options);
      throw error;
    }
  }

  /** Reports a call refused before its claim (a missing or invalid key, an unresolved scope...). */
  private rejected(error: unknown, context: ExecutionContext): void {
    const events = this.engine!.events;
    if (!(error instanceof IdempotencyException) || !events.wants('rejected')) return;
    events.emit({
      type: 'rejected',
      context: context.getType(),
      handler: `${context.getClass().name}.${context.getHandler().name}`,
      code: error.code,
      status: error.getStatus(),
    });
  }

  /**
   * Claims the key once the call is described, then replays or runs the handler. One
   * Observable rather than a chain of operators: this runs on every request, and each operator
   * is a subscriber more to make. As `from(promise)` would, it goes no further once the caller
   * has unsubscribed.
   */
  private admitted(
    adapter: IdempotencyContextAdapter,
    context: ExecutionContext,
    described: Promise<IdempotentCall>,
    options: ResolvedOptions,
    next: CallHandler,
  ): Observable<unknown> {
    return new Observable<unknown>((subscriber) => {
      // A call that may wait stops waiting once its caller leaves: its connection closes, or
      // it unsubscribes (an outer timeout has answered).
      let left: (() => void) | undefined;
      const watchCaller =
        options.waitInFlightMs > 0
          ? (gone: () => void) => {
              if (subscriber.closed) gone();
              left = gone;
              const stop = adapter.watchCaller?.(context, gone);
              return () => {
                left = undefined;
                stop?.();
              };
            }
          : undefined;
      if (watchCaller) subscriber.add(() => left?.());
      const fail = (error: unknown) =>
        subscriber.error(
          error instanceof IdempotencyException ? adapter.reject(error, context, options) : error,
        );
      described.then((call) => {
        if (subscriber.closed) return;
        this.engine!.admit(watchCaller ? { ...call, watchCaller } : call).then((admission) => {
          if (subscriber.closed) {
            // Claimed for a caller that is gone (an outer timeout): nothing ran, free the key.
            if (admission.outcome === 'claimed')
              void this.engine!.abandon(admission.record, options);
            return;
          }
          try {
            const outcome =
              admission.outcome === 'replay'
                ? adapter.replay(context, admission.response, options, call)
                : adapter.run(context, call, admission.record, next);
            // Added to the subscriber, so that unsubscribing from it tears the handler down.
            subscriber.add(
              outcome.subscribe({
                next: (value) => subscriber.next(value),
                error: fail,
                complete: () => subscriber.complete(),
              }),
            );
          } catch (error) {
            fail(error);
          }
        }, fail);
      }, fail);
    });
  }

  private async describeCall(
    adapter: IdempotencyContextAdapter,
    context: ExecutionContext,
    key: string,
    options: ResolvedOptions,
  ): Promise<IdempotentCall> {
    const owner = await resolveScope(
      options.scope,
      adapter.scopeSubject(context),
      context,
      this.engine!.events.log,
    );
    const namespace = options.namespace ?? adapter.namespace?.(context) ?? '';
    // HTTP routes have no namespace, so their records keep the scope they always had.
    const scope = namespace === '' ? owner : `${namespace}|${owner}`;
    const fingerprint = await adapter.fingerprint(context);
    return { scope, key, fingerprint, options, context };
  }

  /** The route's options: module, then controller, then method, merged once per route. */
  private optionsFor(context: ExecutionContext): ResolvedOptions | undefined {
    const handler = context.getHandler();
    if (this.resolved.has(handler)) return this.resolved.get(handler);
    const route = idempotentOptionsOf(this.reflector, handler, context.getClass());
    const options = route ? resolveOptions(this.moduleOptions!, route) : undefined;
    this.resolved.set(handler, options);
    return options;
  }
}

/**
 * Subscribes to `source` on its own and replays what it emitted, so that a caller that
 * unsubscribes early cannot stop it between the claim and the settlement.
 */
function toCompletion<T>(source: Observable<T>): Observable<T> {
  return defer(() => from(lastValueFrom(source.pipe(toArray())))).pipe(
    mergeMap((values) => from(values)),
  );
}
