// GraphQL and message support load their packages on their first call: an HTTP-only app runs
// (and replays) in a process where @nestjs/graphql, graphql and @nestjs/microservices cannot
// be imported at all, nor @nestjs/swagger (the module documents routes for it without
// importing it).
import { randomUUID } from 'node:crypto';
import { send } from '../support/http.js';
import { CHILD_START_MS, startAppProcess, stopAll } from '../support/processes.js';
import { dropTable, uniqueTableName } from '../support/test-app.js';

const idemTable = uniqueTableName('idem_peers');

afterAll(async () => {
  await stopAll();
  await dropTable(idemTable);
});

it(
  'an HTTP-only app never imports the optional peers',
  async () => {
    const app = await startAppProcess({
      entry: 'test/support/http-only-server.ts',
      idemTable,
      runsTable: 'unused',
    });
    const key = randomUUID();
    const post = () =>
      send(app.url, '/charges', { headers: [['x-idempotency-key', key]], body: { amount: 1 } });
    const first = await post();
    expect({ status: first.status, body: first.text }).toMatchObject({ status: 201 });
    const again = await post();
    expect(again.status).toBe(409);
    expect(again.text).toBe(first.text);
    // Nest's core probes for @nestjs/microservices by itself; this module never tries.
    const blocked = app.output().match(/^BLOCKED .*$/gm) ?? [];
    expect(blocked.filter((line) => !line.includes('/node_modules/@nestjs/'))).toEqual([]);
    await app.stop();
  },
  CHILD_START_MS + 30_000,
);
