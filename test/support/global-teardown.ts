import type { RunningDatabase } from '../../scripts/embedded-postgres';

export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __IDEMPOTENCY_DB__?: RunningDatabase }).__IDEMPOTENCY_DB__?.stop();
}
