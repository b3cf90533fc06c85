// A logger that throws (a full disk, a closed log transport) costs log lines, never requests:
// the call it describes answers as usual and its key is settled.
import { Controller, Post, type LoggerService } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { send } from '../support/http.js';
import { expectProblem } from '../support/problem.js';
import { createRouteApp, type RouteApp } from '../support/route-app.js';
import { ADAPTERS, RunCounter } from '../support/test-app.js';

const broken = (): never => {
  throw new Error('the log transport is closed');
};
const throwingLogger: LoggerService = {
  log: broken,
  error: broken,
  warn: broken,
  debug: broken,
  verbose: broken,
};

@Controller('logged')
class LoggedController {
  constructor(private readonly runs: RunCounter) {}

  @Post()
  @Idempotent()
  book() {
    this.runs.hit('logged');
    return { run: this.runs.count('logged') };
  }
}

describe.each(ADAPTERS)('a logger that throws (%s)', (adapter) => {
  let t: RouteApp;
  beforeAll(async () => {
    t = await createRouteApp(adapter, {
      controllers: [LoggedController],
      module: { logger: throwingLogger },
    });
  });
  afterAll(() => t?.close());

  const post = (key: string, body: object) =>
    send(t.url, '/logged', { headers: [['x-idempotency-key', key]], body });

  it('answers, stores and replays as usual', async () => {
    const key = randomUUID();
    const first = await post(key, {});
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body.toString())).toEqual({ run: 1 });
    const replay = await post(key, {});
    expect(replay.status).toBe(409);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expectProblem(await post(key, { other: true }), 422, 'idempotency_key_reused');
    expect(t.runs.count('logged')).toBe(1);
  });
});
