// Runs a handler whose result is a value, not an HTTP response (a GraphQL resolver, a message
// handler), for a claimed record: waits for everything it emits, settles the record (stores
// the encoded result, or frees the key when the handler failed) and only then lets the
// result out, so no caller sees a result that was not stored, or not committed.
import type { CallHandler } from '@nestjs/common';
import { catchError, defer, from, mergeMap, toArray, type Observable } from 'rxjs';
import {
  describe,
  type IdempotencyEngine,
  type IdempotentCall,
  type Settlement,
} from './idempotency.engine.js';
import { IdempotencyUnsupportedResponseException } from './idempotency.exceptions.js';
import type { ClaimedRecord, StoredResponse } from './idempotency-store.js';

/** Emits the handler's values once they are stored; errors with the handler's error. */
export function runAndSettle(
  engine: IdempotencyEngine,
  { options }: IdempotentCall,
  record: ClaimedRecord,
  next: CallHandler,
  encode: (values: unknown[]) => StoredResponse,
): Observable<unknown[]> {
  return defer(() =>
    options.transactional ? engine.transactionFor(record, options) : from([undefined]),
  ).pipe(
    mergeMap((transaction) => {
      const stopRenewing = engine.keepLeaseAlive(record, options);
      let settled = false;
      const settle = async (settlement: Settlement) => {
        settled = true;
        stopRenewing();
        const problem = await engine.settle(record, settlement, options, transaction);
        if (problem) throw problem;
      };
      // Inside the transaction's async context, so IdempotencyTransaction.manager finds it.
      const handled = transaction ? transaction.run(() => next.handle()) : next.handle();
      return handled.pipe(
        toArray(),
        mergeMap(async (values) => {
          let response: StoredResponse;
          try {
            response = encode(values);
          } catch (error) {
            // The handler ran: without a transaction its effects stay, so the key is held.
            await settle({
              action: 'hold',
              reason: `returned a result that cannot be stored as JSON (${describe(error)})`,
            });
            throw new IdempotencyUnsupportedResponseException(
              `The handler's result cannot be stored for replay as JSON: ${describe(error)}. Return plain data.`,
            );
          }
          await settle({ action: 'store', response });
          return values;
        }),
        catchError((error: unknown) =>
          from(
            (async () => {
              if (!settled) await settle({ action: 'release' });
              throw error;
            })(),
          ),
        ),
      );
    }),
  );
}

/** A result stored as JSON (GraphQL field values, message replies). */
export function jsonResponse(value: unknown): StoredResponse {
  return {
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify(value ?? null)),
  };
}

/** The value of a result stored by jsonResponse (`undefined` for an empty body). */
export function jsonValue(response: StoredResponse): unknown {
  return response.body.length === 0 ? undefined : JSON.parse(response.body.toString('utf8'));
}
