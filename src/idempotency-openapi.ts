// Documents every @Idempotent() HTTP route for @nestjs/swagger: the key header, the replay
// and the module's problem+json errors, next to the route's own success response.
//
// It writes swagger's own metadata (the `swagger/apiResponse` and `swagger/apiParameters`
// entries its @ApiResponse() and @ApiHeader() write, in the same shapes) and never imports
// swagger: an optional peer is loaded only where it is used, and swagger reads the metadata
// only when the application builds a document. Without swagger the entries are never read;
// writing them costs a walk over the controllers' methods at start-up.
//
// Why here and not in @Idempotent(): decorators apply bottom-up, so when @Idempotent() runs,
// the @HttpCode() or @Post() written above it have not yet, and the route's success status
// (which swagger stops documenting once a handler declares any response) is unknown. This
// provider runs while Nest builds the application (NestFactory.create), after every
// decorator and before the application calls SwaggerModule.createDocument().
import type { Provider, Type } from '@nestjs/common';
import { RequestMethod } from '@nestjs/common';
import { HTTP_CODE_METADATA, METHOD_METADATA } from '@nestjs/common/constants.js';
import { DiscoveryService, Reflector } from '@nestjs/core';
import { SAFE_METHODS } from './idempotency.constants.js';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.module-definition.js';
import type { IdempotencyModuleOptions } from './idempotency-options.interface.js';
import { resolveOptions, type ResolvedOptions } from './idempotency.options.js';
import {
  keyHeaderParameter,
  problemResponses,
  REPLAY_HEADERS,
  replayResponse,
} from './idempotency-openapi.responses.js';
import { IdempotencyLog } from './idempotency.log.js';
import { idempotentRoutes } from './idempotency-routes.js';

/** Injection token of the documenter (internal). */
export const IDEMPOTENCY_OPENAPI = Symbol('IDEMPOTENCY_OPENAPI');

/**
 * Swagger's metadata keys: `DECORATORS.API_RESPONSE` and `DECORATORS.API_PARAMETERS` of
 * @nestjs/swagger, the same in its versions 11 and 12 (test/openapi reads a document with 12,
 * the consumer matrix's Nest 11 app with 11).
 */
const API_RESPONSE = 'swagger/apiResponse';
const API_PARAMETERS = 'swagger/apiParameters';
/** Where swagger keeps an @ApiHeader() written on a controller class (every route's). */
const API_HEADERS = 'swagger/apiHeaders';

/** What the Swagger CLI plugin attaches to a controller class (its response types). */
const PLUGIN_METADATA_FACTORY = '_OPENAPI_METADATA_FACTORY';

type Responses = Record<string, Record<string, any>>;

/**
 * Each handler's swagger metadata as its own decorators left it: restored before documenting
 * again, so a second application in one process (tests) does not add everything twice.
 */
const originals = new WeakMap<object, { responses: unknown; parameters: unknown }>();

export const idempotencyOpenApiProvider: Provider = {
  provide: IDEMPOTENCY_OPENAPI,
  inject: [DiscoveryService, Reflector, IDEMPOTENCY_MODULE_OPTIONS],
  useFactory: (
    discovery: DiscoveryService,
    reflector: Reflector,
    options: IdempotencyModuleOptions,
  ): boolean => {
    // Documentation must not stop an application that would otherwise run.
    try {
      documentRoutes(discovery, reflector, options);
      return true;
    } catch (error) {
      new IdempotencyLog(options.logger).warn(
        `Could not document the @Idempotent() routes for OpenAPI (@nestjs/swagger): ${error instanceof Error ? error.message : String(error)}`,
      );
      return false;
    }
  },
};

function documentRoutes(
  discovery: DiscoveryService,
  reflector: Reflector,
  options: IdempotencyModuleOptions,
): void {
  for (const { controller, handler, name, method, options: route } of idempotentRoutes(
    discovery,
    reflector,
  )) {
    if (SAFE_METHODS.has(RequestMethod[method])) continue;
    documentRoute(handler, controller, name, resolveOptions(options, route));
  }
}

function documentRoute(
  handler: object,
  controller: Type,
  name: string,
  options: ResolvedOptions,
): void {
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
  const declared: Responses = { ...Reflect.getMetadata(API_RESPONSE, handler) };
  const added: Responses = {};

  // Swagger documents the default success (201 for POST, else 200, or @HttpCode's) only
  // while a handler declares no response at all: adding ours would drop it (as declaring
  // only an error response does). So a handler that declares no success (2xx) gets that
  // default, or what the CLI plugin inferred for it.
  const plugin = pluginResponse(controller, name);
  const defaultStatus = String(successStatusOf(handler, plugin));
  const successStatus =
    [defaultStatus, ...Object.keys(declared)].find(
      (status) => status in declared && /^2(\d\d|XX)$/.test(status),
    ) ?? defaultStatus;
  if (!(successStatus in declared)) {
    added[successStatus] = { description: '', ...normalized(plugin) };
  }
  const success = declared[successStatus] ?? added[successStatus];

  if (options.replayStatus === 409) {
    // The replay carries the stored success body: the success response's schema.
    const body = success ? pick(success, ['type', 'isArray', 'schema', 'content']) : {};
    added[409] = { ...body, ...replayResponse(options) };
  }
  Object.assign(added, problemResponses(options));
  // Swagger lays the controller's own @ApiResponse()s under the method's: a status the
  // controller declares stays as declared too (the success, found above, aside).
  const onClass: Responses = Reflect.getMetadata(API_RESPONSE, controller) ?? {};
  for (const status of Object.keys(onClass)) if (status !== successStatus) delete added[status];
  // A status the route declares itself stays as declared...
  const responses: Responses = { ...added, ...declared };
  if (options.replayStatus !== 409 && success) {
    // ...but for the replay headers its success response carries with replayStatus 'original'.
    responses[successStatus] = {
      ...success,
      description: [success.description, REPLAYED_TOO].filter(Boolean).join('\n\n'),
      headers: { ...success.headers, ...REPLAY_HEADERS },
    };
  }
  Reflect.defineMetadata(API_RESPONSE, responses, handler);

  if (!options.keyResolver) addHeaderParameter(handler, controller, options);
}

const REPLAYED_TOO = `Also a replay, marked by ${Object.keys(REPLAY_HEADERS).join(' and ')}.`;

/** The key header, unless the route documents a header of that name itself. */
function addHeaderParameter(handler: object, controller: Type, options: ResolvedOptions): void {
  const parameters: Array<Record<string, unknown>> =
    Reflect.getMetadata(API_PARAMETERS, handler) ?? [];
  const onClass: Array<Record<string, unknown>> =
    Reflect.getMetadata(API_HEADERS, controller) ?? [];
  const own = [...parameters, ...onClass].some(
    (parameter) =>
      parameter.in === 'header' &&
      String(parameter.name).toLowerCase() === options.headerName.toLowerCase(),
  );
  if (own) return;
  const parameter = { in: 'header', ...keyHeaderParameter(options) };
  Reflect.defineMetadata(API_PARAMETERS, [...parameters, parameter], handler);
}

/** The status Nest answers the handler's success with, as swagger computes its default. */
function successStatusOf(handler: object, plugin: Record<string, unknown>): number {
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
  // What the plugin knows beyond the operation's summary and tags is the response.
  return metadata ? omit(metadata, ['summary', 'deprecated', 'tags']) : {};
}

/** As @ApiResponse() stores it: no status, and `type: [X]` as `type: X, isArray: true`. */
function normalized(response: Record<string, unknown>): Record<string, unknown> {
  const entry = omit(response, ['status']);
  if (Array.isArray(entry.type)) return { ...entry, type: entry.type[0], isArray: true };
  return entry;
}

function omit(source: Record<string, unknown>, names: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(source).filter(([name]) => !names.includes(name)));
}

function pick(source: Record<string, unknown>, names: string[]): Record<string, unknown> {
  return Object.fromEntries(names.filter((name) => name in source).map((n) => [n, source[n]]));
}
