// Answers that must say what is wrong: a scope resolver that fails (500 with its own code and
// a log line, not a 503 "store unavailable" or a bare 500), a key header that Node may have
// dropped among too many headers (400, not an untracked run), and options that cannot work
// (refused at start-up, with the valid names). Under Express and Fastify.
import { Controller, Post, type Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { Idempotent, IdempotencyModule } from '../../src/index.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, dropTable, RunCounter, uniqueTableName } from '../support/test-app.js';

@Controller('scoped')
class ScopedController {
  constructor(private readonly runs: RunCounter) {}

  @Post('undefined')
  @Idempotent({ scope: (request) => request.headers['x-partner'] })
  returnsUndefined() {
    this.runs.hit('undefined');
    return { ran: true };
  }

  @Post('throws')
  @Idempotent({
    scope: () => {
      throw new Error('no partner on this request');
    },
  })
  throws() {
    this.runs.hit('throws');
    return { ran: true };
  }

  @Post('number')
  @Idempotent({ scope: (() => 42) as unknown as () => string })
  returnsNumber() {
    this.runs.hit('number');
    return { ran: true };
  }

  /** The tenant named in the body: any string JSON can carry, NUL and lone surrogates too. */
  @Post('body')
  @Idempotent({ scope: (request) => `tenant:${request.body?.tenant}` })
  bodyScope() {
    this.runs.hit('body');
    return { run: this.runs.count('body') };
  }

  @Post('async')
  @Idempotent({ scope: async (request) => `partner:${request.headers['x-partner'] ?? ''}` })
  asyncScope() {
    this.runs.hit('async');
    return { run: this.runs.count('async') };
  }
}

@Controller('headers')
class ManyHeadersController {
  constructor(private readonly runs: RunCounter) {}

  @Post()
  @Idempotent()
  book() {
    this.runs.hit('book');
    return { run: this.runs.count('book') };
  }
}

const filler = (count: number): Array<[string, string]> =>
  Array.from({ length: count }, () => ['x-filler', '1'] as [string, string]);

describe.each(ADAPTERS)('misleading answers under %s', (adapter) => {
  let t: RouteApp;
  let db: pg.Client;
  const post = (path: string, headers: Array<[string, string]>) =>
    send(t.url, path, { headers, body: {} });

  beforeAll(async () => {
    t = await createRouteApp(adapter, {
      controllers: [ScopedController, ManyHeadersController] as Type[],
    });
    db = new pg.Client(process.env.DATABASE_URL);
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    await t?.close();
  });
  beforeEach(() => t.runs.reset());

  const recordsFor = async (key: string) =>
    Number(
      (await db.query(`SELECT count(*) FROM "${t.tableName}" WHERE idempotency_key = $1`, [key]))
        .rows[0].count,
    );

  describe('a scope resolver that fails', () => {
    it.each([
      { route: 'undefined', what: 'returns undefined', logged: 'returned undefined' },
      { route: 'throws', what: 'throws', logged: 'threw, so the request was refused' },
      { route: 'number', what: 'returns a number', logged: 'returned number' },
    ])(
      'answers 500 idempotency_scope_unresolved when it $what, logs why, runs nothing',
      async ({ route, logged }) => {
        const key = randomUUID();
        const res = await post(`/scoped/${route}`, [['x-idempotency-key', key]]);
        expectProblem(res, 500, 'idempotency_scope_unresolved');
        expect(res.headers['retry-after']).toBeUndefined();
        expect(t.logs.find('error', logged).join('\n')).toContain('ScopedController');
        expect(t.runs.count(route)).toBe(0);
        expect(await recordsFor(key)).toBe(0);
      },
    );

    // Postgres text holds neither: NUL fails the claim (it was answered 503 "store
    // unavailable, retry", forever), and a lone surrogate is stored as U+FFFD, so two tenants
    // became one scope and one replayed the other's response.
    it.each([
      { what: 'a NUL character', tenant: '"a\\u0000b"', logged: 'with a NUL character' },
      { what: 'a lone surrogate', tenant: '"t\\ud800"', logged: 'with a lone UTF-16 surrogate' },
    ])(
      'answers 500 idempotency_scope_unresolved when it returns $what, logs why, runs nothing',
      async ({ tenant, logged }) => {
        const key = randomUUID();
        const res = await send(t.url, '/scoped/body', {
          headers: [['x-idempotency-key', key]],
          body: `{"tenant":${tenant},"seats":2}`,
        });
        expectProblem(res, 500, 'idempotency_scope_unresolved');
        expect(res.headers['retry-after']).toBeUndefined();
        expect(t.logs.find('error', logged).join('\n')).toContain('ScopedController.bodyScope');
        expect(t.runs.count('body')).toBe(0);
        expect(await recordsFor(key)).toBe(0);
      },
    );

    it('keeps scopes apart that differ only in unpaired surrogates, and takes any other text', async () => {
      const key = randomUUID();
      const book = (tenant: string) =>
        send(t.url, '/scoped/body', {
          headers: [['x-idempotency-key', key]],
          body: `{"tenant":${tenant},"seats":2}`,
        });
      // Both were stored as "t\uFFFD": the second tenant met the first one's record (422 here,
      // as the bodies differ; a replay of its response where they do not).
      const first = await book('"t\\ud800"');
      const second = await book('"t\\udbff"');
      expect([first.status, second.status]).toEqual([500, 500]);
      // Well-formed text of any script is stored as it is, each tenant apart.
      const answers = [];
      for (const tenant of ['"t\u00e9"', '"t\ud83d\ude00"', '"t\ud83d\ude01"', '"t\u00e9"']) {
        answers.push((await book(tenant)).status);
      }
      expect(answers).toEqual([201, 201, 201, 409]);
      expect(t.runs.count('body')).toBe(3);
    });

    it('leaves requests without a key alone', async () => {
      expect((await post('/scoped/throws', [])).status).toBe(201);
      expect(t.runs.count('throws')).toBe(1);
    });

    it('uses what an async resolver resolves to', async () => {
      const key = randomUUID();
      const headers: Array<[string, string]> = [
        ['x-idempotency-key', key],
        ['x-partner', 'p1'],
      ];
      const first = await post('/scoped/async', headers);
      const again = await post('/scoped/async', headers);
      const otherPartner = await post('/scoped/async', [
        ['x-idempotency-key', key],
        ['x-partner', 'p2'],
      ]);
      expect([first.status, again.status, otherPartner.status]).toEqual([201, 409, 201]);
      expect(t.runs.count('async')).toBe(2);
    });
  });

  describe('a key among more headers than Node reads (maxHeadersCount)', () => {
    it('answers 400 for a repeated key that Node would drop unseen', async () => {
      const res = await post('/headers', [
        ['x-idempotency-key', 'one'],
        ...filler(1_100),
        ['x-idempotency-key', 'two'],
      ]);
      expectProblem(res, 400, 'idempotency_key_invalid');
      expect(res.json.detail).toContain('maxHeadersCount');
      expect(t.runs.count('book')).toBe(0);
    });

    it('answers 400 rather than running untracked when the only key comes too late', async () => {
      const res = await post('/headers', [...filler(1_100), ['x-idempotency-key', randomUUID()]]);
      expectProblem(res, 400, 'idempotency_key_invalid');
      expect(t.runs.count('book')).toBe(0);
    });

    it('still reads a key among fewer headers, and still sees it repeated', async () => {
      const key = randomUUID();
      const headers: Array<[string, string]> = [...filler(900), ['x-idempotency-key', key]];
      expect((await post('/headers', headers)).status).toBe(201);
      expect((await post('/headers', headers)).status).toBe(409);
      const repeated = await post('/headers', [
        ['x-idempotency-key', key],
        ...filler(900),
        ['x-idempotency-key', key],
      ]);
      expectProblem(repeated, 400, 'idempotency_key_invalid');
      expect(t.runs.count('book')).toBe(1);
    });
  });
});

describe('module options that cannot work are refused at start-up', () => {
  @Controller('plain')
  class PlainController {
    @Post()
    @Idempotent()
    plain() {
      return {};
    }
  }

  async function start(options: Record<string, unknown>, async = false): Promise<void> {
    const tableName = uniqueTableName();
    const all = {
      connection: process.env.DATABASE_URL,
      tableName,
      runMigrations: true,
      purge: { enabled: false },
      ...options,
    };
    const moduleRef = await Test.createTestingModule({
      imports: [
        async
          ? IdempotencyModule.forRootAsync({ useFactory: async () => all })
          : IdempotencyModule.forRoot(all),
      ],
      controllers: [PlainController],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    try {
      await app.init();
    } finally {
      await app.close().catch(() => undefined);
      await dropTable(tableName);
    }
  }

  it('names an unknown option and lists the valid ones', async () => {
    await expect(start({ requierd: true })).rejects.toThrow(
      /Unknown idempotency option "requierd" in IdempotencyModule\.forRoot\(\)\. Valid options: required, .*tableName/,
    );
  });

  it('checks what a forRootAsync() factory returns the same way', async () => {
    await expect(start({ requierd: true }, true)).rejects.toThrow(
      /Unknown idempotency option "requierd"/,
    );
  });

  it('names an unknown purge option', async () => {
    await expect(start({ purge: { enabeld: false } })).rejects.toThrow(
      /Unknown purge option "enabeld".*Valid purge options: enabled, intervalMs/,
    );
  });

  it('refuses a fractional retryAfterSeconds: Retry-After is whole seconds', async () => {
    await expect(start({ retryAfterSeconds: 1.5 })).rejects.toThrow(
      /retryAfterSeconds must be a positive whole number of seconds.*got 1\.5/,
    );
  });

  it('refuses a purge.batchSize that is not a whole number', async () => {
    await expect(start({ purge: { batchSize: 2.5 } })).rejects.toThrow(
      /purge\.batchSize must be a whole number, got 2\.5/,
    );
  });

  it('refuses a namespace Postgres cannot store as it is (NUL, a lone surrogate)', async () => {
    await expect(start({ namespace: 'orders\u0000' })).rejects.toThrow(
      /namespace must not contain NUL or a lone UTF-16 surrogate/,
    );
    await expect(start({ namespace: 'orders\ud800' })).rejects.toThrow(
      /namespace must not contain NUL or a lone UTF-16 surrogate/,
    );
  });

  it('accepts isGlobal, which forRoot() takes beside the options', async () => {
    await expect(start({ isGlobal: true })).resolves.toBeUndefined();
  });
});
