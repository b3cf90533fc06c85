// Resolves the partner from `Authorization: Bearer <token>` and sets `request.user`, which is
// what IdempotencyModule's default scope reads: every partner gets its own key space.
import {
  ForbiddenException,
  Injectable,
  UnauthorizedException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';

/**
 * The example's partners and their API tokens. A real app would look tokens up in its
 * database or verify a JWT; the shape of `request.user` is what matters here.
 */
export const DEMO_PARTNERS: Readonly<Record<string, string>> = {
  'demo-token-acme': 'ACME01',
  'demo-token-globex': 'GLOBEX02',
};

/** The authenticated principal, as the guard leaves it on the request. */
export interface PartnerPrincipal {
  id: string;
}

@Injectable()
export class PartnerAuthGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest();
    const header: unknown = request.headers.authorization;
    const token = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header)?.[1] : undefined;
    const partnerId = token ? DEMO_PARTNERS[token] : undefined;
    if (!partnerId)
      throw new UnauthorizedException('Send "Authorization: Bearer <partner token>".');
    // A partner may only act on its own path: otherwise partner A could book (and read
    // replays) under partner B's id.
    const pathPartner = request.params?.partnerId;
    if (pathPartner !== undefined && pathPartner !== partnerId) {
      throw new ForbiddenException(
        `This token belongs to partner ${partnerId}, not ${pathPartner}.`,
      );
    }
    request.user = { id: partnerId } satisfies PartnerPrincipal;
    return true;
  }
}
