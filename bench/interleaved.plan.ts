// Which targets the interleaved section measures in which scenario, and what it hands the
// renderer. (The plain route has no replays or storms of its own: it is the same handler
// without idempotency, measured beside the others as the reference.)
import type { CellSet } from './cells.js';
import type { ScenarioId, Target } from './load.js';
import type { RoundTrips } from './round-trips.js';
import type { BenchSettings } from './settings.js';

// The peer on memory and on a logged table, and this module with asynchronous commits, only run
// new keys, to keep a full run near 15 minutes: new keys are where the store's cost shows, and
// where durability makes a difference (a replay writes nothing, so it commits nothing to flush).
export const LINE_UP: Record<ScenarioId, string[]> = {
  new: [
    'plain',
    'module',
    'moduleAsync',
    'moduleUnbatched',
    'limit',
    'peerMemory',
    'peerPostgres',
    'peerPostgresLogged',
  ],
  replay: ['plain', 'module', 'moduleUnbatched', 'limit', 'peerPostgres'],
  storm: ['module', 'limit', 'peerPostgres'],
};

export interface InterleavedData {
  cells: CellSet;
  targets: Target[];
  roundTrips: Record<'module' | 'peerPostgres', RoundTrips>;
  settings: BenchSettings;
}
