// Bound to each @Idempotent() route by the decorator. Orchestrates one call: options ->
// key -> scope and fingerprint -> claim -> run or replay; the context adapter does what is
// particular to HTTP (or another context), the engine everything that touches the record.
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
import { catchError, from, mergeMap, throwError, type Observable } from 'rxjs';
import { IDEMPOTENT_ROUTE_OPTIONS } from './idempotency.constants.js';
import type { IdempotencyContextAdapter } from './idempotency-context.interface.js';
import { IdempotencyEngine, type IdempotentCall } from './idempotency.engine.js';
import { IdempotencyException, IdempotencyKeyMissingException } from './idempotency.exceptions.js';
import { HttpIdempotencyContext } from './idempotency-http.context.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type {
  IdempotencyModuleOptions,
  IdempotentRouteOptions,
} from './idempotency-options.interface.js';
import { resolveOptions, type ResolvedOptions } from './idempotency.options.js';

const MODULE_MISSING =
  '@Idempotent() is used, but IdempotencyModule is not imported. Import IdempotencyModule.forRoot() (or forRootAsync()) once, in the root module: it is global. In unit tests, import IdempotencyTestingModule from "nest-idempotency-pg/testing" instead.';

@Injectable()
export class IdempotencyInterceptor implements NestInterceptor, OnModuleInit {
  private readonly resolved = new WeakMap<object, ResolvedOptions | undefined>();
  /** Calls already tracked: @Idempotent() on both class and method binds this twice. */
  private readonly tracked = new WeakSet<object>();
  private readonly contexts: Partial<Record<string, IdempotencyContextAdapter>>;

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
    const adapter = this.contexts[context.getType()];
    if (!adapter) return next.handle();
    const args = context.getArgs();
    if (this.tracked.has(args) || !adapter.applies(context)) return next.handle();
    const options = this.optionsFor(context);
    if (!options) return next.handle();
    this.tracked.add(args);

    try {
      const key = adapter.readKey(context, options);
      if (key === undefined) {
        if (options.required) throw new IdempotencyKeyMissingException(options.headerName);
        return next.handle();
      }
      adapter.prepare?.(context);
      return from(this.describeCall(adapter, context, key, options)).pipe(
        mergeMap((call) =>
          from(this.engine!.admit(call)).pipe(
            mergeMap((admission) =>
              admission.outcome === 'replay'
                ? adapter.replay(context, admission.response, options)
                : adapter.run(context, call, admission.record, next),
            ),
          ),
        ),
        catchError((error: unknown) =>
          throwError(() =>
            error instanceof IdempotencyException ? adapter.reject(error, context) : error,
          ),
        ),
      );
    } catch (error) {
      throw error instanceof IdempotencyException ? adapter.reject(error, context) : error;
    }
  }

  private async describeCall(
    adapter: IdempotencyContextAdapter,
    context: ExecutionContext,
    key: string,
    options: ResolvedOptions,
  ): Promise<IdempotentCall> {
    const scope = await options.scope(adapter.scopeSubject(context), context);
    const fingerprint = await adapter.fingerprint(context);
    return { scope, key, fingerprint, options };
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
        ? resolveOptions(this.moduleOptions!, { ...onClass, ...onMethod })
        : undefined;
    this.resolved.set(handler, options);
    return options;
  }
}
