// Makes GraphQL replays visible: a mutation field answered from a stored result is listed in
// the response's `extensions.idempotency.replayed`. GraphQL servers only let plugins touch
// the response, so the driver needs one line: `plugins: [idempotencyApolloPlugin()]` (Apollo)
// or `hooks: idempotencyMercuriusHooks()` (Mercurius). Typed without the drivers' types,
// which are optional peers.
import type { IdempotencyLog } from './idempotency.log.js';

/** One replayed mutation field, as listed in `extensions.idempotency.replayed`. */
export interface IdempotencyReplayedField {
  /** Response path of the field (its alias, if it has one). */
  path: Array<string | number>;
  /** The idempotency key it was replayed for. */
  key: string;
}

const REPLAYED = Symbol.for('nest-idempotency-pg:replayed');
const MARKING = Symbol.for('nest-idempotency-pg:marking');
let warned = false;

/** Notes a replayed field in the operation's GraphQL context. */
export function markReplayed(
  context: unknown,
  field: IdempotencyReplayedField,
  logger: Pick<IdempotencyLog, 'warn'>,
): void {
  if (!context || typeof context !== 'object') return;
  const holder = context as Record<symbol, unknown>;
  ((holder[REPLAYED] ??= []) as IdempotencyReplayedField[]).push(field);
  if (!holder[MARKING] && !warned) {
    warned = true;
    logger.warn(
      "A GraphQL mutation was answered from a stored result, but the response cannot say so: add idempotencyApolloPlugin() to the Apollo driver's `plugins`, or idempotencyMercuriusHooks() as the Mercurius driver's `hooks`.",
    );
  }
}

function replayedIn(context: unknown): IdempotencyReplayedField[] | undefined {
  return (context as Record<symbol, IdempotencyReplayedField[] | undefined> | undefined)?.[
    REPLAYED
  ];
}

function startMarking(context: unknown): void {
  if (context && typeof context === 'object') (context as Record<symbol, unknown>)[MARKING] = true;
}

function withReplays(extensions: Record<string, unknown> | undefined, context: unknown) {
  const replayed = replayedIn(context);
  return replayed ? { ...extensions, idempotency: { replayed } } : extensions;
}

/**
 * Apollo Server plugin that lists replayed mutation fields in `extensions.idempotency`.
 * @example GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true, plugins: [idempotencyApolloPlugin()] })
 */
export function idempotencyApolloPlugin() {
  return {
    async requestDidStart(requestContext: any) {
      startMarking(requestContext.contextValue);
      return {
        async willSendResponse({ contextValue, response }: any): Promise<void> {
          const body = response?.body;
          const result = body?.kind === 'single' ? body.singleResult : body?.initialResult;
          if (result && replayedIn(contextValue)) {
            result.extensions = withReplays(result.extensions, contextValue);
          }
        },
      };
    },
  };
}

/**
 * Mercurius hooks that list replayed mutation fields in `extensions.idempotency`.
 * @example GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true, hooks: idempotencyMercuriusHooks() })
 */
export function idempotencyMercuriusHooks() {
  return {
    async preExecution(_schema: any, _document: any, context: any): Promise<void> {
      startMarking(context);
    },
    async onResolution(execution: any, context: any): Promise<void> {
      if (replayedIn(context)) execution.extensions = withReplays(execution.extensions, context);
    },
  };
}
