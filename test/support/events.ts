// Collects the module's events from their diagnostics channels, as an APM tool would.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  IDEMPOTENCY_CHANNELS,
  IDEMPOTENCY_EVENT_TYPES,
  type IdempotencyEvent,
  type IdempotencyEventOf,
  type IdempotencyEventType,
} from '../../src/index.js';
import { waitFor } from './processes.js';

export class EventLog {
  readonly events: IdempotencyEvent[] = [];
  private readonly listener = (message: unknown) => this.events.push(message as IdempotencyEvent);

  constructor() {
    for (const type of IDEMPOTENCY_EVENT_TYPES)
      subscribe(IDEMPOTENCY_CHANNELS[type], this.listener);
  }

  /** The events of one type, optionally about one key. */
  of<T extends IdempotencyEventType>(type: T, keyHash?: string): Array<IdempotencyEventOf<T>> {
    return this.events.filter(
      (event): event is IdempotencyEventOf<T> =>
        event.type === type && (keyHash === undefined || event.keyHash === keyHash),
    );
  }

  /** The types of the events about one key, in order. */
  typesFor(keyHash: string): IdempotencyEventType[] {
    return this.events.filter((event) => event.keyHash === keyHash).map((event) => event.type);
  }

  /** Waits until `count` events of `type` (about `keyHash`) arrived; settlements come after the answer. */
  async wait<T extends IdempotencyEventType>(
    type: T,
    keyHash?: string,
    count = 1,
  ): Promise<Array<IdempotencyEventOf<T>>> {
    await waitFor(`${count} ${type} event(s)`, () => this.of(type, keyHash).length >= count, 5_000);
    return this.of(type, keyHash);
  }

  clear(): void {
    this.events.length = 0;
  }

  close(): void {
    for (const type of IDEMPOTENCY_EVENT_TYPES) {
      unsubscribe(IDEMPOTENCY_CHANNELS[type], this.listener);
    }
  }
}

/** A Nest LoggerService that keeps what it is given. */
export class LinesLogger {
  readonly lines: Array<{ level: string; message: string; context: unknown }> = [];
  private keep(level: string) {
    // Nest's convention: the context is the last argument (error() may pass a stack before it).
    return (message: unknown, ...rest: unknown[]) =>
      this.lines.push({ level, message: String(message), context: rest.at(-1) });
  }
  log = this.keep('log');
  error = this.keep('error');
  warn = this.keep('warn');
  debug = this.keep('debug');
  verbose = this.keep('verbose');
  at(level: string): string[] {
    return this.lines.filter((line) => line.level === level).map((line) => line.message);
  }
}
