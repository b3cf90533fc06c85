// Issue 12, GraphQL: idempotent mutations over real HTTP under Apollo (Express) and
// Mercurius (Fastify). A repeat resolves the field to its stored value and says so in
// `extensions.idempotency`; in flight, reuse and bad keys are GraphQL errors with
// `extensions.code`; `transactional: true` commits the resolver's writes with the record.
import { randomUUID } from 'node:crypto';
import { idempotencyKeyHash } from '../../src/index.js';
import { EventLog } from '../support/events.js';
import {
  createGraphqlApp,
  GRAPHQL_DRIVERS,
  sql,
  type GraphqlTestApp,
} from '../support/graphql-app.js';
import type { TestResponse } from '../support/http.js';
import { waitForRecord } from '../support/test-app.js';

const BOOK = `mutation Book($input: BookInput!) { book(input: $input) { id product run } }`;
const withKey = (key: string): Array<[string, string]> => [['x-idempotency-key', key]];

/** The GraphQL error of a response that failed at one field. */
function expectGraphqlError(response: TestResponse, code: string) {
  expect({ status: response.status, body: response.text }).toMatchObject({ status: 200 });
  expect(response.json.data).toBeNull();
  expect(response.json.errors).toHaveLength(1);
  const [error] = response.json.errors;
  expect(error.extensions).toMatchObject({ code });
  expect(typeof error.message).toBe('string');
  return error;
}

describe.each(GRAPHQL_DRIVERS)('GraphQL mutations under %s', (driver) => {
  let t: GraphqlTestApp;

  beforeAll(async () => {
    t = await createGraphqlApp(driver);
  }, 30_000);
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  it('runs a new key once; a repeat returns the stored field value, marked as a replay', async () => {
    const key = randomUUID();
    const input = { product: 'kibble' };
    const first = await t.gql(BOOK, { input }, withKey(key));
    expect(first.status).toBe(200);
    expect(first.json.errors).toBeUndefined();
    expect(first.json.data.book).toMatchObject({ product: 'kibble', run: 1 });
    expect(first.json.extensions?.idempotency).toBeUndefined();

    // Same key, same input; another selection and variable order do not matter.
    const again = await t.gql(
      `mutation { book(input: { product: "kibble" }) { run id } }`,
      {},
      withKey(key),
    );
    expect(again.json.errors).toBeUndefined();
    expect(again.json.data.book).toEqual({ id: first.json.data.book.id, run: 1 });
    expect(again.json.extensions).toEqual({
      idempotency: { replayed: [{ path: ['book'], key }] },
    });
    expect(t.runs.count('book')).toBe(1);
  });

  it('reports the claim, completion and replay as events of the graphql context', async () => {
    const log = new EventLog();
    try {
      const key = randomUUID();
      const hash = idempotencyKeyHash('graphql:Mutation.book|', key);
      const first = await t.gql(BOOK, { input: { product: 'events' } }, withKey(key));
      expect(first.json.data.book).toMatchObject({ product: 'events', run: 1 });
      const again = await t.gql(BOOK, { input: { product: 'events' } }, withKey(key));
      expect(again.json.data.book).toEqual(first.json.data.book);
      expect(t.runs.count('book')).toBe(1);
      expect(log.typesFor(hash)).toEqual(['claimed', 'completed', 'replayed']);
      const call = {
        context: 'graphql',
        handler: 'BookingsResolver.book',
        scope: 'graphql:Mutation.book|',
        keyHash: hash,
      };
      expect(log.of('claimed', hash)[0]).toEqual({
        type: 'claimed',
        ...call,
        claimMs: expect.any(Number),
        waitedMs: 0,
      });
      expect(log.of('completed', hash)[0]).toMatchObject({ ...call, status: 200 });
      expect(log.of('replayed', hash)[0]).toMatchObject({ ...call, status: 200 });
      expect(JSON.stringify(log.events)).not.toContain(key);
    } finally {
      log.close();
    }
  });

  it('stores the field value as JSON under the mutation field namespace, not the HTTP document', async () => {
    const key = randomUUID();
    const first = await t.gql(BOOK, { input: { product: 'litter' } }, [
      ...withKey(key),
      ['x-user', 'u1'],
    ]);
    const [record] = await sql(
      `SELECT scope, state, response_status, response_headers, response_body FROM "${t.tableName}" WHERE idempotency_key = $1`,
      [key],
    );
    expect(record).toMatchObject({
      scope: 'graphql:Mutation.book|user:u1',
      state: 'completed',
      response_status: 200,
      response_headers: { 'content-type': 'application/json' },
    });
    expect(JSON.parse(record.response_body.toString())).toEqual(first.json.data.book);
    // Another principal with the same key is another scope: it runs.
    const other = await t.gql(BOOK, { input: { product: 'litter' } }, [
      ...withKey(key),
      ['x-user', 'u2'],
    ]);
    expect(other.json.data.book.id).not.toBe(first.json.data.book.id);
    expect(t.runs.count('book')).toBe(2);
  });

  it('the same key with other arguments is a GraphQL error idempotency_key_reused', async () => {
    const key = randomUUID();
    await t.gql(BOOK, { input: { product: 'a' } }, withKey(key));
    const reused = await t.gql(BOOK, { input: { product: 'b' } }, withKey(key));
    const error = expectGraphqlError(reused, 'idempotency_key_reused');
    expect(error.path).toEqual(['book']);
    expect(t.runs.count('book')).toBe(1);
  });

  it('a duplicate while the first runs is a GraphQL error idempotency_request_in_flight with a retry hint', async () => {
    const key = randomUUID();
    const slow = t.gql(BOOK, { input: { product: 'slow', delayMs: 1_500 } }, withKey(key));
    await waitForRecord(t.tableName, key, 'in_progress');
    const duplicate = await t.gql(
      BOOK,
      { input: { product: 'slow', delayMs: 1_500 } },
      withKey(key),
    );
    const error = expectGraphqlError(duplicate, 'idempotency_request_in_flight');
    expect(error.extensions.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect((await slow).json.data.book).toMatchObject({ product: 'slow', run: 1 });
    expect(t.runs.count('book')).toBe(1);
  });

  it('a key from a mutation argument, through the `key` resolver', async () => {
    const query = `mutation ($id: String!, $input: BookInput!) { bookByRequestId(requestId: $id, input: $input) { id run } }`;
    const requestId = randomUUID();
    const first = await t.gql(query, { id: requestId, input: { product: 'p' } });
    const again = await t.gql(query, { id: requestId, input: { product: 'p' } });
    expect(again.json.data.bookByRequestId).toEqual(first.json.data.bookByRequestId);
    expect(again.json.extensions.idempotency.replayed).toEqual([
      { path: ['bookByRequestId'], key: requestId },
    ]);
    const invalid = await t.gql(query, { id: 'k'.repeat(256), input: { product: 'p' } });
    expect(expectGraphqlError(invalid, 'idempotency_key_invalid').message).toMatch(/255/);
    expect(t.runs.count('bookByRequestId')).toBe(1);
  });

  it('a malformed header key and a missing required key are GraphQL errors; nothing runs', async () => {
    const bad = await t.gql(BOOK, { input: { product: 'x' } }, withKey('k'.repeat(256)));
    expectGraphqlError(bad, 'idempotency_key_invalid');
    const required = `mutation { bookRequired(input: { product: "x" }) { id } }`;
    expectGraphqlError(await t.gql(required), 'idempotency_key_missing');
    // Without a key, an optional one runs untracked, every time.
    await t.gql(BOOK, { input: { product: 'x' } });
    await t.gql(BOOK, { input: { product: 'x' } });
    expect(t.runs.count('book')).toBe(2);
    expect(t.runs.count('bookRequired')).toBe(0);
  });

  it('a resolver that throws frees the key: the retry runs again', async () => {
    const key = randomUUID();
    const failed = await t.gql(BOOK, { input: { product: 'f', fail: true } }, withKey(key));
    expect(failed.json.errors[0].message).toBe('failed once');
    const retried = await t.gql(BOOK, { input: { product: 'f', fail: true } }, withKey(key));
    expect(retried.json.errors).toBeUndefined();
    expect(retried.json.data.book.run).toBe(2);
    expect(retried.json.extensions?.idempotency).toBeUndefined();
    expect(t.runs.count('book')).toBe(2);
  });

  it('one key covers each mutation field of a document; a repeat of the document replays both', async () => {
    const key = randomUUID();
    const document = `mutation { book(input: { product: "a" }) { id } cancel(input: { product: "a" }) { id } }`;
    const first = await t.gql(document, {}, withKey(key));
    expect(first.json.errors).toBeUndefined();
    const again = await t.gql(document, {}, withKey(key));
    expect(again.json.data).toEqual(first.json.data);
    expect(again.json.extensions.idempotency.replayed).toEqual([
      { path: ['book'], key },
      { path: ['cancel'], key },
    ]);
    expect([t.runs.count('book'), t.runs.count('cancel')]).toEqual([1, 1]);
  });

  it('queries on an @Idempotent() resolver are not tracked', async () => {
    const key = randomUUID();
    for (let i = 0; i < 2; i++) {
      const response = await t.gql(`{ runsOf(name: "x") }`, {}, withKey(key));
      expect(response.json.errors).toBeUndefined();
    }
    expect(t.runs.count('query:x')).toBe(2);
    expect(await sql(`SELECT 1 FROM "${t.tableName}" WHERE idempotency_key = $1`, [key])).toEqual(
      [],
    );
  });

  it('transactional: the resolver’s insert commits with the record, or rolls back with a failure', async () => {
    const query = `mutation ($input: BookInput!) { bookInTransaction(input: $input) { id run } }`;
    const key = randomUUID();
    const failed = await t.gql(query, { input: { product: 'tx', fail: true } }, withKey(key));
    expect(failed.json.errors[0].message).toBe('failed after inserting');
    const count = async () =>
      (await sql(`SELECT count(*)::int AS n FROM "${t.bookingsTable}" WHERE product = 'tx'`))[0].n;
    expect(await count()).toBe(0);
    const first = await t.gql(query, { input: { product: 'tx' } }, withKey(key));
    const again = await t.gql(query, { input: { product: 'tx' } }, withKey(key));
    expect(again.json.data).toEqual(first.json.data);
    expect(await count()).toBe(1);
    expect(t.runs.count('bookInTransaction')).toBe(2);
  });
});
