// The @Idempotent() routes of an application and their options, as the interceptor runs them:
// class and method options merged, the method's winning option by option. The interceptor
// reads one route's; the OpenAPI documenter and the filter order walk them all at start-up.
import type { Type } from '@nestjs/common';
import { METHOD_METADATA } from '@nestjs/common/constants.js';
import type { RequestMethod } from '@nestjs/common';
import { MetadataScanner, type DiscoveryService, type Reflector } from '@nestjs/core';
import { IDEMPOTENT_ROUTE_OPTIONS } from './idempotency.constants.js';
import type { IdempotentRouteOptions } from './idempotency-options.interface.js';

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type -- what Nest's getHandler() returns
type Handler = Function;

/** The route's @Idempotent() options, or undefined when neither it nor its class has any. */
export function idempotentOptionsOf(
  reflector: Reflector,
  handler: Handler,
  controller: Type,
): IdempotentRouteOptions | undefined {
  const [onMethod, onClass] = [handler, controller].map((target) =>
    reflector.get<IdempotentRouteOptions | undefined>(IDEMPOTENT_ROUTE_OPTIONS, target),
  );
  return onMethod || onClass ? { ...onClass, ...onMethod } : undefined;
}

export interface IdempotentRoute {
  controller: Type;
  handler: Handler;
  /** The handler's method name. */
  name: string;
  method: RequestMethod;
  options: IdempotentRouteOptions;
}

/** Every HTTP route of the application's controllers that carries @Idempotent() options. */
export function* idempotentRoutes(
  discovery: DiscoveryService,
  reflector: Reflector,
): Generator<IdempotentRoute> {
  const scanner = new MetadataScanner();
  for (const { metatype } of discovery.getControllers()) {
    if (typeof metatype !== 'function') continue;
    const controller = metatype as Type;
    for (const name of scanner.getAllMethodNames(controller.prototype)) {
      const handler = controller.prototype[name] as Handler;
      const method = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
      if (method === undefined) continue; // not a route (a message handler, a helper)
      const options = idempotentOptionsOf(reflector, handler, controller);
      if (options) yield { controller, handler, name, method, options };
    }
  }
}
