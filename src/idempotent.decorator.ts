// @Idempotent(): on a method it tracks that route; on a controller, its unsafe routes.
import { applyDecorators, SetMetadata, UseFilters, UseInterceptors } from '@nestjs/common';
import { IDEMPOTENT_ROUTE_OPTIONS } from './idempotency.constants.js';
import { IdempotencyExceptionFilter } from './idempotency-exception.filter.js';
import { IdempotencyInterceptor } from './idempotency.interceptor.js';
import type { IdempotentRouteOptions } from './idempotency-options.interface.js';
import { assertValidOptions } from './idempotency.options.js';

/**
 * Makes a route safe to retry with an idempotency key. Options override the module's.
 * @example
 * @Post('instant_booking')
 * @Idempotent({ required: true })
 * book(@Body() body: BookingDto) {}
 */
export function Idempotent(options: IdempotentRouteOptions = {}): ClassDecorator & MethodDecorator {
  assertValidOptions(options, 'route');
  return applyDecorators(
    SetMetadata(IDEMPOTENT_ROUTE_OPTIONS, options),
    UseInterceptors(IdempotencyInterceptor),
    UseFilters(IdempotencyExceptionFilter),
  );
}
