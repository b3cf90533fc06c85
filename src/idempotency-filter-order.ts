// Puts this module's exception filter first on every @Idempotent() route. Replays and the
// module's own answers (422, 423, 503...) travel from the interceptor as exceptions, and Nest
// tries a route's filters method first, then class, each list last-bound first: a catch-all
// filter bound after @Idempotent() (written above it, or on the method while @Idempotent()
// is on the class) would otherwise render them as its own 500. The module's filter catches
// only its own two types, so putting it first takes nothing from the application's filters.
// Runs when the module's providers are created, before Nest registers the routes.
import type { Provider } from '@nestjs/common';
import { EXCEPTION_FILTERS_METADATA } from '@nestjs/common/constants.js';
import { DiscoveryService, Reflector } from '@nestjs/core';
import { IdempotencyExceptionFilter } from './idempotency-exception.filter.js';
import { idempotentRoutes } from './idempotency-routes.js';

export const IDEMPOTENCY_FILTER_ORDER = Symbol('IDEMPOTENCY_FILTER_ORDER');

export const idempotencyFilterOrderProvider: Provider = {
  provide: IDEMPOTENCY_FILTER_ORDER,
  inject: [DiscoveryService, Reflector],
  useFactory: (discovery: DiscoveryService, reflector: Reflector): number =>
    putFilterFirst(discovery, reflector),
};

/** Returns how many routes it changed. */
function putFilterFirst(discovery: DiscoveryService, reflector: Reflector): number {
  let changed = 0;
  for (const { controller, handler } of idempotentRoutes(discovery, reflector)) {
    const onMethod: unknown[] = Reflect.getMetadata(EXCEPTION_FILTERS_METADATA, handler) ?? [];
    const onClass: unknown[] = Reflect.getMetadata(EXCEPTION_FILTERS_METADATA, controller) ?? [];
    // The order Nest tries them in.
    const tried = [...onMethod].reverse().concat([...onClass].reverse());
    if (tried[0] === IdempotencyExceptionFilter) continue;
    const others = onMethod.filter((filter) => filter !== IdempotencyExceptionFilter);
    Reflect.defineMetadata(
      EXCEPTION_FILTERS_METADATA,
      [...others, IdempotencyExceptionFilter],
      handler,
    );
    changed++;
  }
  return changed;
}
