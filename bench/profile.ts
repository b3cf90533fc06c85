// Summarises a V8 .cpuprofile (from node --cpu-prof): self time by package and the hottest
// functions, so the report can say what limits the app.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  /** Busy time (everything but idle), ms. */
  busyMs: number;
  byArea: { area: string; ms: number; share: number }[];
  hottest: { name: string; where: string; area: string; ms: number; share: number }[];
  /** Inclusive time of the module's own code (src/), socket writes aside, share of busy time. */
  moduleInclusiveShare: number;
  /** Self time of socket writes (writev/writeUtf8String/...), split by who wrote. */
  socketWrites: { toPostgresMs: number; toHttpClientsMs: number; otherMs: number };
}

const SOCKET_WRITES = new Set(['writev', 'writeBuffer', 'writeUtf8String', 'writeLatin1String']);

function areaOf(url: string, functionName: string): string {
  if (!url) {
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(program)') return 'V8/native (program)';
    return 'native';
  }
  if (url.startsWith('node:')) return 'node core (http, net, streams, crypto)';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules !== -1) {
    const rest = url.slice(modules + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.includes('/src/') || url.includes('/migrations/')) return 'this module (src/)';
  if (url.includes('/bench/')) return 'bench app + handler';
  return 'other';
}

export function summarizeProfile(file: string, top = 12): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) =>
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000),
  );

  const areas = new Map<string, number>();
  const functions = new Map<string, { name: string; where: string; area: string; ms: number }>();
  let total = 0;
  let idle = 0;
  let moduleInclusive = 0;
  const socketWrites = { toPostgresMs: 0, toHttpClientsMs: 0, otherMs: 0 };
  const writer = (id: number): keyof typeof socketWrites => {
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const url = byId.get(at)!.callFrame.url;
      if (/\/node_modules\/pg(-protocol|-pool)?\//.test(url)) return 'toPostgresMs';
      if (url === 'node:_http_outgoing' || url === 'node:_http_server') return 'toHttpClientsMs';
    }
    return 'otherMs';
  };
  for (const [id, ms] of self) {
    const { callFrame } = byId.get(id)!;
    const area = areaOf(callFrame.url, callFrame.functionName);
    total += ms;
    if (area === '(idle)') {
      idle += ms;
      continue;
    }
    areas.set(area, (areas.get(area) ?? 0) + ms);
    if (!callFrame.url && SOCKET_WRITES.has(callFrame.functionName)) socketWrites[writer(id)] += ms;
    const where = callFrame.url
      ? `${callFrame.url.replace(/^.*\/(node_modules|src|bench)\//, '$1/')}:${callFrame.lineNumber + 1}`
      : '';
    const name = callFrame.functionName || '(anonymous)';
    const fnKey = `${name}@${where}`;
    const entry = functions.get(fnKey) ?? { name, where, area, ms: 0 };
    entry.ms += ms;
    functions.set(fnKey, entry);
    if (!callFrame.url && SOCKET_WRITES.has(callFrame.functionName)) continue;
    // Inclusive time of src/ (socket writes aside): a sample counts once if any frame on its
    // stack is in src/.
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      if (areaOf(byId.get(at)!.callFrame.url, '') === 'this module (src/)') {
        moduleInclusive += ms;
        break;
      }
    }
  }
  const busy = total - idle;
  return {
    totalMs: total,
    busyMs: busy,
    byArea: [...areas]
      .map(([area, ms]) => ({ area, ms, share: ms / busy }))
      .sort((a, b) => b.ms - a.ms),
    hottest: [...functions.values()]
      .sort((a, b) => b.ms - a.ms)
      .slice(0, top)
      .map((entry) => ({ ...entry, share: entry.ms / busy })),
    moduleInclusiveShare: moduleInclusive / busy,
    socketWrites,
  };
}
