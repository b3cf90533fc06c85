// GraphQL mutations (Apollo or Mercurius, code-first or schema-first). The key comes from the
// HTTP request behind the operation (the same header as HTTP routes) or a `key` resolver (a
// mutation argument); each mutation field has its own namespace, so one key can cover every
// field of a document. The stored result is the field's value as JSON, not the HTTP bytes of
// the document: a repeat resolves the field to it (and lists it in
// `extensions.idempotency.replayed`), and errors are GraphQL errors with `extensions.code`.
// Loaded on the first GraphQL call: @nestjs/graphql is an optional peer.
import { IntrinsicException, type CallHandler, type ExecutionContext } from '@nestjs/common';
import { GqlExecutionContext } from '@nestjs/graphql';
import type { GraphQLResolveInfo } from 'graphql';
import { map, of, type Observable } from 'rxjs';
import { jsonResponse, jsonValue, runAndSettle } from './idempotency-call.runner.js';
import type { IdempotencyContextAdapter } from './idempotency-context.interface.js';
import type { IdempotencyEngine, IdempotentCall } from './idempotency.engine.js';
import type { IdempotencyException } from './idempotency.exceptions.js';
import { computeCallFingerprint } from './idempotency.fingerprint.js';
import { markReplayed } from './idempotency-graphql.extensions.js';
import { readIdempotencyKey } from './idempotency-key.js';
import type { ResolvedOptions } from './idempotency.options.js';
import type { ClaimedRecord, StoredResponse } from './idempotency-store.js';

/**
 * This module's outcome as a GraphQL error. Not a GraphQLError: the executor wraps it into
 * one and keeps its `extensions`; as an IntrinsicException, Nest does not log it as a fault.
 */
export class IdempotencyGraphqlError extends IntrinsicException {
  readonly extensions: { code: string; retryAfterSeconds?: number };

  constructor(error: IdempotencyException) {
    const { detail, code } = error.getProblem();
    super(detail);
    const retryAfter = error.headers['Retry-After'];
    this.extensions = retryAfter ? { code, retryAfterSeconds: Number(retryAfter) } : { code };
  }
}

export class GraphqlIdempotencyContext implements IdempotencyContextAdapter {
  readonly runsToCompletion = true;

  constructor(private readonly engine: IdempotencyEngine) {}

  /** Top-level mutation fields only: queries are safe, and nested fields are part of one. */
  applies(context: ExecutionContext): boolean {
    const info = infoOf(context);
    return info?.operation?.operation === 'mutation' && info.path?.prev === undefined;
  }

  readKey(context: ExecutionContext, options: ResolvedOptions): string | undefined {
    const request = requestOf(context);
    return request ? readIdempotencyKey(request, options.headerName) : undefined;
  }

  /** The HTTP request, as for HTTP routes: auth guards set `request.user` on it. */
  scopeSubject(context: ExecutionContext): unknown {
    return requestOf(context) ?? {};
  }

  namespace(context: ExecutionContext): string {
    return `graphql:${fieldOf(infoOf(context)!)}`;
  }

  fingerprint(context: ExecutionContext): Buffer {
    const gql = GqlExecutionContext.create(context);
    return computeCallFingerprint('graphql', fieldOf(gql.getInfo()), gql.getArgs());
  }

  replay(
    context: ExecutionContext,
    response: StoredResponse,
    _options: ResolvedOptions,
    { key }: IdempotentCall,
  ): Observable<unknown> {
    const gql = GqlExecutionContext.create(context);
    markReplayed(
      gql.getContext(),
      { path: pathOf(gql.getInfo<GraphQLResolveInfo>()), key },
      this.engine.events.log,
    );
    return of(jsonValue(response));
  }

  run(
    _context: ExecutionContext,
    call: IdempotentCall,
    record: ClaimedRecord,
    next: CallHandler,
  ): Observable<unknown> {
    // graphql-js treats a returned Error as a thrown one (a field error): the resolver
    // failed, so its key is released rather than the error stored as the field's value.
    const failing: CallHandler = {
      handle: () =>
        next.handle().pipe(
          map((value) => {
            if (value instanceof Error) throw value;
            return value;
          }),
        ),
    };
    // GraphQL takes the last value a resolver emits; that is what is stored.
    return runAndSettle(this.engine, call, record, failing, (values) =>
      jsonResponse(values[values.length - 1]),
    ).pipe(map((values) => values[values.length - 1]));
  }

  reject(error: IdempotencyException): IdempotencyGraphqlError {
    return new IdempotencyGraphqlError(error);
  }
}

function infoOf(context: ExecutionContext): GraphQLResolveInfo | undefined {
  return GqlExecutionContext.create(context).getInfo<GraphQLResolveInfo>();
}

function fieldOf(info: GraphQLResolveInfo): string {
  return `${info.parentType.name}.${info.fieldName}`;
}

function pathOf(info: GraphQLResolveInfo): Array<string | number> {
  const path: Array<string | number> = [];
  for (let at: GraphQLResolveInfo['path'] | undefined = info.path; at; at = at.prev) {
    path.unshift(at.key);
  }
  return path;
}

/** The HTTP request behind the operation: Apollo and Nest's drivers put it at `req`. */
function requestOf(context: ExecutionContext): any {
  const gqlContext = GqlExecutionContext.create(context).getContext();
  return gqlContext?.req ?? gqlContext?.request ?? gqlContext?.reply?.request;
}
