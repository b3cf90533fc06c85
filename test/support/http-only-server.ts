// Child-process entry that proves an HTTP-only app needs none of the optional peers: it
// makes every import of @nestjs/graphql, graphql, @nestjs/microservices, the GraphQL
// drivers and @nestjs/swagger fail (printing `BLOCKED <name> FROM <importer>`; Nest's core probes for
// @nestjs/microservices itself, and copes), then starts an app with an @Idempotent() route.
// Prints `READY <port>`.
import { register } from 'node:module';

const blocker = `
const PEERS = ['@nestjs/graphql', 'graphql', '@nestjs/microservices', '@nestjs/apollo', '@nestjs/mercurius', '@nestjs/swagger'];
export async function resolve(specifier, context, next) {
  const peer = PEERS.find((name) => specifier === name || specifier.startsWith(name + '/'));
  if (peer) {
    process.stdout.write('BLOCKED ' + specifier + ' FROM ' + context.parentURL + '\\n');
    throw new Error('optional peer ' + specifier + ' is not installed');
  }
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(blocker)}`);

const { startHttpOnlyApp } = await import('./http-only-app.js');
const port = await startHttpOnlyApp();
process.stdout.write(`READY ${port}\n`);
process.stdin.on('end', () => process.exit(1));
process.stdin.on('error', () => process.exit(1));
process.stdin.resume();
