// The operator's view of the records: look a key up, and invalidate it (let it run again).
// Injectable wherever IdempotencyModule is imported: an admin controller, a CLI command, a
// support tool. It works on the same store as the routes, so the same rules hold.
import { Inject, Injectable, Optional } from '@nestjs/common';
import { DEFAULT_STATEMENT_TIMEOUT_MS } from './idempotency.constants.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import {
  IdempotencyStore,
  type IdempotencyRecordInfo,
  type InvalidateResult,
} from './idempotency-store.js';
import { IdempotencyEvents } from './idempotency-events.service.js';
import { idempotencyKeyHash } from './idempotency.events.js';

/** Which record: the key, and whose it is (see the README, "Operating it"). */
export interface IdempotencyKeyRef {
  /** The key as the client sent it. */
  key: string;
  /**
   * The owner, as the route's `scope` resolver returns it for the client's requests. With
   * the default resolver: `user:<request.user.id>` (else `user:<request.user.sub>`), or `''`
   * when requests carry no user.
   * @default ''
   * @example { key: 'db55f986-c30c-4883-ac4f-0d2cfada6d3f', scope: 'user:ACME01' }
   */
  scope?: string;
  /**
   * The handler's namespace: none for HTTP routes; `graphql:<Type>.<field>` for a GraphQL
   * mutation, `rpc:<Class>.<method>` for a message handler, or the `namespace` option when
   * the handler sets one.
   * @default '' (HTTP routes)
   * @example { key: 'evt-1', namespace: 'rpc:ConfirmationSender.send' }
   */
  namespace?: string;
}

export interface InvalidateKeyOptions {
  /**
   * Also delete a record that is still in progress. Only once its owning process is known
   * to be dead (a crash, confirmed): if it is still running, the next request with the key
   * runs the handler a second time, and the first one's result is discarded (503
   * `idempotency_lease_lost` to its client). Without it, an in-progress record is refused.
   * @default false
   * @example keys.invalidate({ key, scope }, { inProgress: true })
   */
  inProgress?: boolean;
}

@Injectable()
export class IdempotencyKeys {
  constructor(
    private readonly store: IdempotencyStore,
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) private readonly options: IdempotencyModuleOptions,
    @Optional() private readonly events: IdempotencyEvents = new IdempotencyEvents(options),
  ) {}

  /** The record of the key, expired or not, or `null` when there is none. */
  async lookup(ref: IdempotencyKeyRef): Promise<IdempotencyRecordInfo | null> {
    const info = await this.store.inspect(storedScope(ref), keyOf(ref), this.call());
    return info ?? null;
  }

  /**
   * Deletes the key's record so that the next request with it runs the handler again: a
   * completed record always, one in progress only with `inProgress: true`. Says what it did
   * (`deleted`, `missing`, or `refused` for a record in progress).
   */
  async invalidate(
    ref: IdempotencyKeyRef,
    options: InvalidateKeyOptions = {},
  ): Promise<InvalidateResult> {
    const scope = storedScope(ref);
    const key = keyOf(ref);
    const result = await this.store.invalidate(scope, key, {
      inProgress: options.inProgress === true,
      ...this.call(),
    });
    if (result.outcome === 'deleted') {
      // Worth a line in the log: the next request with this key runs the handler again.
      this.events.log.warn(
        `Invalidated key ${idempotencyKeyHash(scope, key)} (scope "${scope}"), which was ${result.state === 'completed' ? 'completed' : 'in progress'}: the next request with it runs the handler again.`,
      );
    }
    return result;
  }

  private call() {
    return { timeoutMs: this.options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS };
  }
}

/** As the interceptor stores it: HTTP routes keep the bare scope, others `namespace|scope`. */
function storedScope({ scope = '', namespace = '' }: IdempotencyKeyRef): string {
  if (typeof scope !== 'string' || typeof namespace !== 'string') {
    throw new TypeError('IdempotencyKeys: scope and namespace must be strings.');
  }
  return namespace === '' ? scope : `${namespace}|${scope}`;
}

function keyOf({ key }: IdempotencyKeyRef): string {
  if (typeof key !== 'string' || key === '') {
    throw new TypeError('IdempotencyKeys: key must be a non-empty string.');
  }
  return key;
}
