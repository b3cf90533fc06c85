// Reports every outcome three ways, each only when someone listens: on its
// `node:diagnostics_channel` channel (APM and tracing tools, or any code), on `events$` (Nest
// code that injects IdempotencyEvents) and as one debug line. With no subscriber and debug
// off, `wants()` is false and the callers build no event at all.
import { Inject, Injectable, Optional } from '@nestjs/common';
import { Subject, type Observable } from 'rxjs';
import {
  IDEMPOTENCY_EVENT_TYPES,
  idempotencyChannels,
  type IdempotencyEvent,
  type IdempotencyEventType,
} from './idempotency.events.js';
import { IdempotencyLog } from './idempotency.log.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';

/**
 * The module's events, for metrics and alerts: inject it and subscribe to `events$`. Each
 * event is also published on the channel `IDEMPOTENCY_CHANNELS[event.type]`.
 * @example events.events$.pipe(filter((e) => e.type === 'replayed')).subscribe(() => replays.inc())
 */
@Injectable()
export class IdempotencyEvents {
  private readonly subject = new Subject<IdempotencyEvent>();
  /** Every event of this application's module, as it happens. */
  readonly events$: Observable<IdempotencyEvent> = this.subject.asObservable();
  /** @internal The module's log (the `logger` option). */
  readonly log: IdempotencyLog;

  constructor(
    @Optional()
    @Inject(IDEMPOTENCY_MODULE_OPTIONS)
    options?: Pick<IdempotencyModuleOptions, 'logger'>,
  ) {
    this.log = new IdempotencyLog(options?.logger);
  }

  /** Whether any event goes anywhere (facts are then kept from a claim for later events). */
  get active(): boolean {
    if (this.subject.observed || this.log.debugEnabled) return true;
    for (const type of IDEMPOTENCY_EVENT_TYPES) {
      if (idempotencyChannels[type].hasSubscribers) return true;
    }
    return false;
  }

  /** Whether an event of this type goes anywhere: build it only then. */
  wants(type: IdempotencyEventType): boolean {
    return (
      idempotencyChannels[type].hasSubscribers || this.subject.observed || this.log.debugEnabled
    );
  }

  /** @internal Publishes an event; callers check wants() first. */
  emit(event: IdempotencyEvent): void {
    const diagnostics = idempotencyChannels[event.type];
    if (diagnostics.hasSubscribers) diagnostics.publish(event);
    if (this.subject.observed) this.subject.next(event);
    if (this.log.debugEnabled) this.log.debug(describeEvent(event));
  }
}

/** The event as one log line: its type, then its fields (the error as its message). */
export function describeEvent(event: IdempotencyEvent): string {
  const fields = Object.entries(event)
    .filter(([name, value]) => name !== 'type' && value !== undefined)
    .map(([name, value]) => {
      if (value instanceof Error) return `${name}=${JSON.stringify(value.message)}`;
      if (typeof value === 'number') return `${name}=${Math.round(value * 10) / 10}`;
      return `${name}=${typeof value === 'string' && /^\S+$/.test(value) ? value : JSON.stringify(value)}`;
    });
  return `${event.type} ${fields.join(' ')}`;
}
