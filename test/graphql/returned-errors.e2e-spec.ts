// A GraphQL resolver may fail by returning an Error instead of throwing it: graphql-js
// treats both the same way (a field error). The README promises for a failing resolver: its
// error unchanged, the key released, a retry runs again. A returned Error must not be stored
// as the field's value (a replay would then answer the failure's JSON, and never run again).
import { Module, type INestApplication } from '@nestjs/common';
import { Args, Field, Mutation, ObjectType, Query, Resolver } from '@nestjs/graphql';
import { Test } from '@nestjs/testing';
import { GraphQLError } from 'graphql';
import { randomUUID } from 'node:crypto';
import { Idempotent } from '../../src/index.js';
import { GRAPHQL_DRIVERS, graphqlModuleFor, sql } from '../support/graphql-app.js';
import { send } from '../support/http.js';
import { createAdapterApp, listenOnLoopback, testIdempotencyModule } from '../support/nest-app.js';
import { RunCounter, uniqueTableName } from '../support/test-app.js';

@ObjectType()
class Charge {
  @Field()
  id!: string;
}

@Resolver(() => Charge)
class ChargesResolver {
  constructor(private readonly runs: RunCounter) {}

  @Query(() => String)
  ping(): string {
    return 'pong';
  }

  /** Declines the first attempt by returning the error, as graphql-js allows. */
  @Mutation(() => Charge)
  @Idempotent()
  charge(@Args('orderId') orderId: string): Charge | GraphQLError {
    this.runs.hit(orderId);
    if (this.runs.count(orderId) === 1) {
      return new GraphQLError('card declined', { extensions: { code: 'CARD_DECLINED' } });
    }
    return { id: `charge-${orderId}-${this.runs.count(orderId)}` };
  }
}

describe.each(GRAPHQL_DRIVERS)('a resolver returning an Error, under %s', (driver) => {
  const tableName = uniqueTableName('idem_gql_err');
  let app: INestApplication;
  let url: string;
  let runs: RunCounter;

  beforeAll(async () => {
    const graphql = graphqlModuleFor(driver);
    @Module({
      imports: [testIdempotencyModule(tableName), graphql],
      providers: [ChargesResolver, RunCounter],
    })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    app = createAdapterApp(moduleRef, driver === 'mercurius' ? 'fastify' : 'express');
    url = await listenOnLoopback(app);
    runs = app.get(RunCounter);
  }, 30_000);
  afterAll(async () => {
    await app?.close();
    await sql(`DROP TABLE IF EXISTS "${tableName}"`);
  });

  it('is the field error, the key is released, and the retry runs the resolver again', async () => {
    const key = randomUUID();
    const orderId = randomUUID();
    const charge = () =>
      send(url, '/graphql', {
        body: { query: `mutation { charge(orderId: "${orderId}") { id } }` },
        headers: [['x-idempotency-key', key]],
      });
    const first = await charge();
    expect(first.json.data).toBeNull();
    expect(first.json.errors?.[0]).toMatchObject({
      message: 'card declined',
      extensions: { code: 'CARD_DECLINED' },
    });

    const retry = await charge();
    expect(retry.json.errors).toBeUndefined();
    expect(retry.json.data).toEqual({ charge: { id: `charge-${orderId}-2` } });
    expect(runs.count(orderId)).toBe(2);
  });
});
