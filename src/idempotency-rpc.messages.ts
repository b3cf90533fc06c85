// What the message handler context reads from each Nest transport's context: the pattern a
// message came in on, and its headers (RabbitMQ, NATS, Kafka, MQTT 5, and Nest 12's packet
// metadata on Redis and TCP). Loaded with the message context only.
import type { ExecutionContext } from '@nestjs/common';
import { KafkaContext, MqttContext, NatsContext, RmqContext } from '@nestjs/microservices';
import { PATTERN_METADATA } from '@nestjs/microservices/constants.js';

/**
 * The pattern the message came in on (a wildcard subscription covers several), else the
 * patterns the handler declares.
 */
export function patternOf(transport: any, context: ExecutionContext): string {
  for (const getter of ['getPattern', 'getChannel', 'getSubject', 'getTopic']) {
    if (typeof transport?.[getter] === 'function') return String(transport[getter]());
  }
  return JSON.stringify(Reflect.getMetadata(PATTERN_METADATA, context.getHandler()) ?? []);
}

/** A header of the message, on the transports that carry headers. */
export function messageHeader(transport: unknown, name: string): unknown {
  if (transport instanceof RmqContext) {
    return findHeader(transport.getMessage()?.properties?.headers, name);
  }
  if (transport instanceof NatsContext) {
    // NATS header names are case-sensitive; HTTP's (and this module's) are not.
    const headers = transport.getHeaders();
    for (const key of headers?.keys() ?? []) {
      if (key.toLowerCase() === name) return headers.get(key);
    }
    return undefined;
  }
  if (transport instanceof KafkaContext) {
    const value = findHeader(transport.getMessage()?.headers, name);
    return Buffer.isBuffer(value) ? value.toString('utf8') : value;
  }
  if (transport instanceof MqttContext) {
    return findHeader(transport.getPacket()?.properties?.userProperties, name);
  }
  // Redis and TCP (Nest 12): metadata set by the client's dispatch hook.
  const metadata = (transport as { getMetadata?: () => unknown })?.getMetadata?.();
  return findHeader(metadata, name);
}

function findHeader(headers: unknown, name: string): unknown {
  if (!headers || typeof headers !== 'object') return undefined;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) return value;
  }
  return undefined;
}
