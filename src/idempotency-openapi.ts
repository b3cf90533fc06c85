// Documents every @Idempotent() HTTP route for @nestjs/swagger, when that optional peer is
// installed: the key header, the replay and the module's problem+json errors, next to the
// route's own success response.
//
// Why here and not in @Idempotent(): decorators apply bottom-up, so when @Idempotent() runs,
// the @HttpCode() or @Post() written above it have not yet, and the route's success status is
// unknown; and a decorator runs at import time, where the package may not load an optional
// peer (the CommonJS build has no import.meta to resolve one with). This provider runs while
// Nest builds the application (NestFactory.create), after every decorator and before the
// application calls SwaggerModule.createDocument(), and loads swagger with a dynamic import
// that both builds support. Without swagger, that import fails once and nothing else runs.
import type { Provider, Type } from '@nestjs/common';
import { Logger, RequestMethod } from '@nestjs/common';
import { HTTP_CODE_METADATA, METHOD_METADATA } from '@nestjs/common/constants.js';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { IDEMPOTENT_ROUTE_OPTIONS, SAFE_METHODS } from './idempotency.constants.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type {
  IdempotencyModuleOptions,
  IdempotentRouteOptions,
} from './idempotency-options.interface.js';
import { resolveOptions, type ResolvedOptions } from './idempotency.options.js';
import {
  keyHeaderParameter,
  problemResponses,
  REPLAY_HEADERS,
  replayResponse,
  type OpenApiResponse,
} from './idempotency-openapi.responses.js';

/** Injection token of the documenter (internal): resolves to whether swagger was found. */
export const IDEMPOTENCY_OPENAPI = Symbol('IDEMPOTENCY_OPENAPI');

/** The part of @nestjs/swagger used here: the same in its versions 11 and 12. */
interface Swagger {
  ApiResponse(options: Record<string, unknown>): MethodDecorator;
  ApiHeader(options: Record<string, unknown>): MethodDecorator;
  DECORATORS: { API_RESPONSE: string; API_PARAMETERS: string };
}

/** What the Swagger CLI plugin attaches to a controller class (its response types). */
const PLUGIN_METADATA_FACTORY = '_OPENAPI_METADATA_FACTORY';

/**
 * Each handler's swagger metadata as its own decorators left it: restored before documenting
 * again, so a second application in one process (tests) does not add everything twice.
 */
const originals = new WeakMap<object, { responses: unknown; parameters: unknown }>();

export const idempotencyOpenApiProvider: Provider = {
  provide: IDEMPOTENCY_OPENAPI,
  inject: [DiscoveryService, Reflector, IDEMPOTENCY_MODULE_OPTIONS],
  useFactory: async (
    discovery: DiscoveryService,
    reflector: Reflector,
    options: IdempotencyModuleOptions,
  ): Promise<boolean> => {
    const swagger = await loadSwagger();
    if (!swagger) return false;
    // Documentation must not stop an application that would otherwise run.
    try {
      documentRoutes(swagger, discovery, reflector, options);
    } catch (error) {
      new Logger('Idempotency').warn(
        `Could not document the @Idempotent() routes for OpenAPI (@nestjs/swagger): ${error instanceof Error ? error.message : String(error)}`,
      );
      return false;
    }
    return true;
  },
};

function documentRoutes(
  swagger: Swagger,
  discovery: DiscoveryService,
  reflector: Reflector,
  options: IdempotencyModuleOptions,
): void {
  const scanner = new MetadataScanner();
  for (const { metatype } of discovery.getControllers()) {
    if (typeof metatype !== 'function') continue;
    const prototype = (metatype as Type).prototype;
    for (const name of scanner.getAllMethodNames(prototype)) {
      const handler = prototype[name];
      const method = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
      if (method === undefined || SAFE_METHODS.has(RequestMethod[method])) continue;
      const route = reflector.getAllAndOverride<IdempotentRouteOptions | undefined>(
        IDEMPOTENT_ROUTE_OPTIONS,
        [handler, metatype],
      );
      if (!route) continue;
      documentRoute(swagger, metatype as Type, name, resolveOptions(options, route));
    }
  }
}

async function loadSwagger(): Promise<Swagger | undefined> {
  try {
    // A variable specifier: TypeScript must not type it against a package it does not need.
    const specifier = '@nestjs/swagger';
    return (await import(specifier)) as Swagger;
  } catch {
    return undefined;
  }
}

function documentRoute(
  swagger: Swagger,
  controller: Type,
  name: string,
  options: ResolvedOptions,
): void {
  const prototype = controller.prototype;
  const descriptor = Object.getOwnPropertyDescriptor(prototype, name) ?? {
    value: prototype[name],
  };
  const handler = descriptor.value as object;
  const { API_RESPONSE, API_PARAMETERS } = swagger.DECORATORS;
  const saved = originals.get(handler);
  if (saved) {
    Reflect.defineMetadata(API_RESPONSE, saved.responses, handler);
    Reflect.defineMetadata(API_PARAMETERS, saved.parameters, handler);
  } else {
    originals.set(handler, {
      responses: Reflect.getMetadata(API_RESPONSE, handler),
      parameters: Reflect.getMetadata(API_PARAMETERS, handler),
    });
  }
  const apply = (decorator: MethodDecorator) => decorator(prototype, name, descriptor);

  // Swagger documents the default success (201 for POST, else 200, or @HttpCode's) only
  // while a handler has no response of its own: adding ours would drop it. So a handler
  // without declared responses gets that default first, or what the CLI plugin inferred.
  const declared = Reflect.getMetadata(API_RESPONSE, handler) as Record<string, any> | undefined;
  const successStatus = successStatusOf(handler, controller, name);
  if (!declared || Object.keys(declared).length === 0) {
    apply(
      swagger.ApiResponse({
        description: '',
        ...pluginResponse(controller, name),
        status: successStatus,
      }),
    );
  }
  const success = (Reflect.getMetadata(API_RESPONSE, handler) as Record<string, any>)[
    String(successStatus)
  ];

  if (!options.keyResolver) apply(swagger.ApiHeader(keyHeaderParameter(options)));
  if (options.replayStatus === 409) {
    // The replay carries the stored success body: the success response's schema.
    const body = success ? pick(success, ['type', 'isArray', 'schema', 'content']) : {};
    apply(swagger.ApiResponse({ ...body, ...replayResponse(options), status: 409 }));
  } else if (success) {
    apply(
      swagger.ApiResponse({
        status: successStatus,
        description: `Also a replay, marked by ${Object.keys(REPLAY_HEADERS).join(' and ')}.`,
        headers: { ...success.headers, ...REPLAY_HEADERS },
      }),
    );
  }
  for (const [status, response] of Object.entries(problemResponses(options))) {
    apply(swagger.ApiResponse({ ...(response satisfies OpenApiResponse), status: Number(status) }));
  }
}

/** The status Nest answers the handler's success with, as swagger computes its default. */
function successStatusOf(handler: object, controller: Type, name: string): number {
  const plugin = pluginResponse(controller, name);
  if (typeof plugin.status === 'number') return plugin.status;
  const code = Reflect.getMetadata(HTTP_CODE_METADATA, handler) as number | undefined;
  if (code) return code;
  return Reflect.getMetadata(METHOD_METADATA, handler) === RequestMethod.POST ? 201 : 200;
}

/** The response the Swagger CLI plugin inferred for the handler, if it ran. */
function pluginResponse(controller: Type, name: string): Record<string, unknown> {
  const factory = (controller as unknown as Record<string, unknown>)[PLUGIN_METADATA_FACTORY];
  if (typeof factory !== 'function') return {};
  const metadata = (factory as () => Record<string, Record<string, unknown> | undefined>)()[name];
  if (!metadata) return {};
  // What the plugin knows beyond the operation's summary and tags is the response.
  return omit(metadata, ['summary', 'deprecated', 'tags']);
}

function omit(source: Record<string, unknown>, names: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(source).filter(([name]) => !names.includes(name)));
}

function pick(source: Record<string, unknown>, names: string[]): Record<string, unknown> {
  return Object.fromEntries(names.filter((name) => name in source).map((n) => [n, source[n]]));
}
