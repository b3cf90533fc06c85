// SQL round trips per request, counted by the app's wrapper around pg's Client#query while
// requests run one at a time: a new key, a replay, and a duplicate of a request still in flight.
import { BODY, post, type Target } from './load.js';

export interface RoundTrips {
  newKey: number;
  replay: number;
  inFlight: number;
  inFlightStatuses: number[];
}

export async function countRoundTrips(target: Target, samples = 20): Promise<RoundTrips> {
  const tag = `rt-${Date.now()}`;
  const perRequest = async (send: () => Promise<unknown>, count: number) => {
    const before = (await target.app.stats()).queries;
    for (let i = 0; i < count; i++) await send();
    return ((await target.app.stats()).queries - before) / count;
  };
  let i = 0;
  const newKey = await perRequest(() => post(target, `${tag}-${i++}`, BODY), samples);
  let j = 0;
  const replay = await perRequest(() => post(target, `${tag}-${j++}`, BODY), samples);

  // Hold some keys in flight (the handler sleeps 1.5 s), then send their duplicates one by one.
  const held = 10;
  const slow = JSON.stringify({ sku: 'bench-sku', qty: 2, delayMs: 1500 });
  const holds = Array.from({ length: held }, (_, k) => post(target, `${tag}-hold-${k}`, slow));
  await new Promise((done) => setTimeout(done, 300));
  let k = 0;
  const statuses: number[] = [];
  const inFlight = await perRequest(async () => {
    const response = await post(target, `${tag}-hold-${k++}`, slow);
    statuses.push(response.status);
  }, held);
  await Promise.all(holds);
  return { newKey, replay, inFlight, inFlightStatuses: [...new Set(statuses)] };
}
