// The interleaved section's part of REPORT.md, and the issue targets it judges.
import { appMicros, backendMicros, statementsPerRequest, type CellQuery } from './cells.js';
import { cellTable, markdownTable, stormVerdict, type TableTarget } from './cell-table.js';
import { LINE_UP, type InterleavedData } from './interleaved.plan.js';
import { newKeys, replays, storm, STORM, REPLAY_KEYS, type ScenarioId } from './load.js';
import type { GoalResult } from './section.js';
import { fmt, fmtRatio, fmtSpread, spread } from './spread.js';

const SCENARIOS: ScenarioId[] = ['new', 'replay', 'storm'];
const TITLES: Record<ScenarioId, string> = {
  new: newKeys(0).title,
  replay: replays(0).title,
  storm: storm(0).title,
};
const REFERENCES: TableTarget[] = [
  { id: 'plain', label: 'plain' },
  { id: 'peerPostgres', label: 'peer on Postgres' },
  { id: 'limit', label: 'limit' },
  { id: 'moduleUnbatched', label: 'unbatched' },
];

export function renderInterleaved(data: InterleavedData): string {
  const { cells, settings, roundTrips } = data;
  const labels: TableTarget[] = data.targets.map((t) => ({ id: t.id, label: t.label }));
  const summaryRows: string[][] = [];
  for (const scenario of SCENARIOS) {
    for (const connections of settings.connections) {
      const q = (target: string): CellQuery => ({ connections, scenario, target });
      const mine = q('module');
      const counted =
        scenario === 'new'
          ? fmt(roundTrips.module.newKey, 2)
          : scenario === 'replay'
            ? fmt(roundTrips.module.replay, 2)
            : `${fmt(roundTrips.module.inFlight, 2)} per 423`;
      summaryRows.push([
        TITLES[scenario].replace(/ \(.*/, ''),
        String(connections),
        fmtSpread(cells.spreadOf(mine, (run) => run.rps)),
        scenario === 'storm' ? 'n/a' : fmtRatio(cells.ratio(mine, q('plain'))),
        fmtRatio(cells.ratio(mine, q('peerPostgres'))),
        fmtRatio(cells.ratio(mine, q('limit'))),
        scenario === 'storm' ? 'n/a' : fmtRatio(cells.ratio(mine, q('moduleUnbatched'))),
        fmt(cells.spreadOf(mine, appMicros).median),
        fmt(cells.spreadOf(mine, backendMicros).median),
        `${counted} (${fmt(cells.spreadOf(mine, statementsPerRequest).median, 2)} under load)`,
      ]);
    }
  }
  const summary = markdownTable(
    [
      'scenario',
      'connections',
      'req/s median [min–max]',
      '/ plain',
      '/ peer on Postgres',
      '/ limit',
      '/ batching off',
      'Node CPU µs/req',
      'Postgres CPU µs/req',
      'SQL round trips/req',
    ],
    summaryRows,
    1,
  );
  const details = SCENARIOS.map((scenario) =>
    settings.connections
      .map(
        (connections) =>
          `#### ${TITLES[scenario]}, ${connections} connections\n\n${cellTable(cells, {
            connections,
            scenario,
            targets: labels.filter((t) => LINE_UP[scenario].includes(t.id)),
            ratiosTo: REFERENCES.filter((r) => LINE_UP[scenario].includes(r.id)),
          })}`,
      )
      .join('\n\n'),
  ).join('\n\n');
  const rt = roundTrips;
  const durability = settings.connections
    .map((connections) => {
      const q = (target: string): CellQuery => ({ connections, scenario: 'new', target });
      const asynchronous = q('moduleAsync');
      return `${fmtRatio(cells.ratio(asynchronous, q('module')))} at ${connections} connections (Node ${fmt(cells.spreadOf(asynchronous, appMicros).median)} µs, Postgres ${fmt(cells.spreadOf(asynchronous, backendMicros).median)} µs per key)`;
    })
    .join(', ');
  return `This module, ${settings.rounds} rounds per connection count (${settings.connections.join(' and ')}), ${settings.seconds} s per run; ratios are
taken round by round (both sides measured in the same round) and shown as median [min–max].
"Node CPU" is the app process, "Postgres CPU" the backends serving its pool.

${summary}

**Durability.** New keys with \`durability: 'asynchronous'\` (claims and completions commit
without waiting for the WAL flush) against the default, same rounds: ${durability}.

### Every target

Targets in each round ran one after the other in an order rotated every round. Replays:
${fmt(REPLAY_KEYS)} keys completed beforehand on each target, requested round-robin. Storm: a new wave of
${STORM.hotKeys} hot keys every ${STORM.requestsPerWave} requests, the handler sleeps ${STORM.delayMs} ms; the first
request of each key runs it, duplicates see "in flight" (module: 423, peer: 409) or a replay.
CPU per request is the median over rounds; "rest of machine" is /proc/stat's busy time minus
every process listed, i.e. other work on the machine during the run. "errors" counts socket
errors, timeouts and unexpected outcomes over all rounds.

${details}

### SQL round trips per request (counted, one request at a time)

| request | this module | peer on Postgres |
|---|---:|---:|
| new key | ${fmt(rt.module.newKey, 2)} | ${fmt(rt.peerPostgres.newKey, 2)} |
| replay | ${fmt(rt.module.replay, 2)} | ${fmt(rt.peerPostgres.replay, 2)} |
| duplicate while in flight | ${fmt(rt.module.inFlight, 2)} (status ${rt.module.inFlightStatuses.join(', ')}) | ${fmt(rt.peerPostgres.inFlight, 2)} (status ${rt.peerPostgres.inFlightStatuses.join(', ')}) |
`;
}

/**
 * Judges a ratio's median against `at least`, saying in how many rounds it held, and, given
 * the same ratio for the in-memory limit target (the module with no SQL at all), whether any
 * store could meet it here.
 */
function ratioGoal(values: number[], atLeast: number, where: string, limit?: number[]) {
  const s = spread(values);
  const held = values.filter((value) => value >= atLeast).length;
  const ceiling = limit && spread(limit);
  const reach =
    ceiling && ceiling.count > 0
      ? ceiling.median < atLeast && s.median < atLeast
        ? `; beyond reach here: the limit target itself, with no SQL at all, is at ${fmtRatio(ceiling)}`
        : `; the limit target is at ${fmtRatio(ceiling)}`
      : '';
  return {
    measured: `${fmtRatio(s)} at ${where} (>= ${atLeast} in ${held}/${values.length} rounds)${reach}`,
    met: s.count > 0 && s.median >= atLeast,
  };
}

export function interleavedGoals(data: InterleavedData): GoalResult[] {
  const { cells, settings } = data;
  const goals: GoalResult[] = [];
  const q = (connections: number, scenario: ScenarioId, target: string): CellQuery => ({
    connections,
    scenario,
    target,
  });
  const has = (c: number) => settings.connections.includes(c);
  const newRatio = (c: number, ref: string, target = 'module') =>
    cells.ratios(q(c, 'new', target), q(c, 'new', ref));
  const peerGoal = (c: number, atLeast: number) =>
    ratioGoal(
      newRatio(c, 'peerPostgres'),
      atLeast,
      String(c),
      newRatio(c, 'peerPostgres', 'limit'),
    );
  if (has(50)) goals.push({ id: 'newVsPeer50', ...peerGoal(50, 2) });
  if (has(10)) goals.push({ id: 'newVsPeer10', ...peerGoal(10, 1.3) });
  if (has(50)) {
    goals.push({
      id: 'newVsPlain50',
      ...ratioGoal(newRatio(50, 'plain'), 0.5, '50', newRatio(50, 'plain', 'limit')),
    });
  }
  for (const c of settings.connections) {
    goals.push({ id: 'newVsLimit', ...ratioGoal(newRatio(c, 'limit'), 0.85, String(c)) });
    const replayRatio = (target: string) =>
      cells.ratios(q(c, 'replay', target), q(c, 'replay', 'plain'));
    goals.push({
      id: 'replayVsPlain',
      ...ratioGoal(replayRatio('module'), 0.8, String(c), replayRatio('limit')),
    });
    const cpu = cells.spreadOf(q(c, 'new', 'module'), appMicros);
    goals.push({
      id: 'nodeCpuNew',
      measured: `${fmtSpread(cpu)} µs at ${c}`,
      met: cpu.count > 0 && cpu.median <= 400,
    });
    const runs = [...cells.runs(q(c, 'storm', 'module')).values()];
    goals.push({
      id: 'stormRuns',
      measured: `${stormVerdict(runs)} at ${c}`,
      met: runs.length > 0 && runs.every((run) => run.handlerRuns === run.distinctKeys),
    });
  }
  return goals;
}
