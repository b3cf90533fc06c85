// An app-wide timeout interceptor as applications write one: answers 408 after 300 ms, here
// only for requests carrying `x-short-timeout` so one controller can test both cases. Bound
// to a controller class, it runs outside the route's idempotency interceptor.
import {
  Injectable,
  RequestTimeoutException,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { catchError, throwError, timeout, TimeoutError, type Observable } from 'rxjs';

@Injectable()
export class ShortTimeout implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, unknown> }>();
    if (!request.headers['x-short-timeout']) return next.handle();
    return next.handle().pipe(
      timeout(300),
      catchError((error: unknown) =>
        throwError(() => (error instanceof TimeoutError ? new RequestTimeoutException() : error)),
      ),
    );
  }
}
