// The handler both apps run (bench/peer/app.js mirrors it line for line in CommonJS):
// optionally waits `delayMs`, then answers 201 with a small JSON order.
export interface OrderBody {
  sku?: string;
  qty?: number;
  delayMs?: number;
}

const runs = { plain: 0, orders: 0 };
let nextId = 0;

export function countHandlerRun(route: keyof typeof runs): void {
  runs[route]++;
}

export async function handleOrder(body: OrderBody) {
  if (body.delayMs && body.delayMs > 0) {
    await new Promise((done) => setTimeout(done, body.delayMs));
  }
  return { id: ++nextId, sku: body.sku ?? null, qty: body.qty ?? 1, status: 'accepted' };
}

/** What the app reports to the harness over IPC (the harness reads CPU from /proc itself). */
export function statsSnapshot(queries: number) {
  return { runs: { ...runs }, queries };
}
