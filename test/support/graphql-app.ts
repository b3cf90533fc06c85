// A code-first GraphQL app with idempotent mutations, served over real HTTP by Apollo (on
// Express) or Mercurius (on Fastify), on the real Postgres: each app its own tables.
import { Injectable, UseGuards, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import {
  Args,
  Field,
  GqlExecutionContext,
  GraphQLModule,
  InputType,
  Int,
  Mutation,
  ObjectType,
  Query,
  Resolver,
} from '@nestjs/graphql';
import { Test } from '@nestjs/testing';
import type { INestApplication } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  Idempotent,
  IdempotencyTransaction,
  idempotencyApolloPlugin,
  idempotencyMercuriusHooks,
} from '../../src/index.js';
import { send, type TestResponse } from './http.js';
import { RunCounter, sleep, uniqueTableName } from './test-app.js';
import { createAdapterApp, listenOnLoopback, testIdempotencyModule } from './nest-app.js';

export type GraphqlDriverName = 'apollo' | 'mercurius';
export const GRAPHQL_DRIVERS: GraphqlDriverName[] = ['apollo', 'mercurius'];

@ObjectType()
class Booking {
  @Field()
  id!: string;

  @Field()
  product!: string;

  @Field(() => Int)
  run!: number;

  @Field({ nullable: true })
  owner?: string;
}

@InputType()
class BookInput {
  @Field()
  product!: string;

  @Field(() => Int, { nullable: true })
  delayMs?: number;

  @Field({ nullable: true })
  fail?: boolean;
}

/** Sets `req.user` from an `x-user` header, as a Passport guard would for GraphQL. */
@Injectable()
class GqlHeaderUserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = GqlExecutionContext.create(context).getContext().req;
    const user = request?.headers?.['x-user'];
    if (typeof user === 'string') request.user = { id: user };
    return true;
  }
}

/** Where the tests' writes go (set per app). */
@Injectable()
export class GraphqlTables {
  bookings = '';
}

@Resolver(() => Booking)
@UseGuards(GqlHeaderUserGuard)
@Idempotent()
class BookingsResolver {
  constructor(
    private readonly runs: RunCounter,
    private readonly tx: IdempotencyTransaction,
    private readonly tables: GraphqlTables,
  ) {}

  /** Queries on an @Idempotent() resolver are never tracked. */
  @Query(() => Int)
  runsOf(@Args('name') name: string): number {
    this.runs.hit(`query:${name}`);
    return this.runs.count(name);
  }

  @Mutation(() => Booking)
  async book(@Args('input') input: BookInput): Promise<Booking> {
    this.runs.hit('book');
    if (input.delayMs) await sleep(input.delayMs);
    if (input.fail && this.runs.count('book') === 1) throw new Error('failed once');
    return { id: randomUUID(), product: input.product, run: this.runs.count('book') };
  }

  @Mutation(() => Booking)
  async cancel(@Args('input') input: BookInput): Promise<Booking> {
    this.runs.hit('cancel');
    return { id: randomUUID(), product: input.product, run: this.runs.count('cancel') };
  }

  @Mutation(() => Booking)
  @Idempotent({ key: (context) => GqlExecutionContext.create(context).getArgs().requestId })
  bookByRequestId(@Args('requestId') _requestId: string, @Args('input') input: BookInput): Booking {
    this.runs.hit('bookByRequestId');
    return { id: randomUUID(), product: input.product, run: this.runs.count('bookByRequestId') };
  }

  @Mutation(() => Booking)
  @Idempotent({ required: true })
  bookRequired(@Args('input') input: BookInput): Booking {
    this.runs.hit('bookRequired');
    return { id: randomUUID(), product: input.product, run: this.runs.count('bookRequired') };
  }

  @Mutation(() => Booking)
  @Idempotent({ transactional: true })
  async bookInTransaction(@Args('input') input: BookInput): Promise<Booking> {
    this.runs.hit('bookInTransaction');
    const [row] = await this.tx.manager.query(
      `INSERT INTO "${this.tables.bookings}" (product) VALUES ($1) RETURNING id`,
      [input.product],
    );
    if (input.fail) throw new Error('failed after inserting');
    return {
      id: String(row.id),
      product: input.product,
      run: this.runs.count('bookInTransaction'),
    };
  }

  @Mutation(() => Booking)
  whoAmI(@Args('input') input: BookInput): Booking {
    this.runs.hit('whoAmI');
    return { id: randomUUID(), product: input.product, run: this.runs.count('whoAmI') };
  }
}

export interface GraphqlTestApp {
  app: INestApplication;
  url: string;
  runs: RunCounter;
  tableName: string;
  bookingsTable: string;
  /** POSTs a GraphQL document to /graphql. */
  gql(
    query: string,
    variables?: Record<string, unknown>,
    headers?: Array<[string, string]>,
  ): Promise<TestResponse>;
  close(): Promise<void>;
}

/** GraphQL on `driver`, code first, with the module's replay plugin (Apollo) or hooks. */
export function graphqlModuleFor(driver: GraphqlDriverName) {
  return driver === 'apollo'
    ? GraphQLModule.forRoot<ApolloDriverConfig>({
        driver: ApolloDriver,
        autoSchemaFile: true,
        plugins: [idempotencyApolloPlugin()],
      })
    : GraphQLModule.forRoot<MercuriusDriverConfig>({
        driver: MercuriusDriver,
        autoSchemaFile: true,
        hooks: idempotencyMercuriusHooks(),
      });
}

export async function createGraphqlApp(driver: GraphqlDriverName): Promise<GraphqlTestApp> {
  const tableName = uniqueTableName('idem_gql');
  const bookingsTable = `${tableName}_bookings`;
  await sql(`CREATE TABLE "${bookingsTable}" (id bigserial PRIMARY KEY, product text NOT NULL)`);
  const graphql = graphqlModuleFor(driver);
  const moduleRef = await Test.createTestingModule({
    imports: [testIdempotencyModule(tableName), graphql],
    providers: [BookingsResolver, RunCounter, GraphqlTables],
  }).compile();
  moduleRef.get(GraphqlTables).bookings = bookingsTable;
  const app = createAdapterApp(moduleRef, driver === 'mercurius' ? 'fastify' : 'express');
  const url = await listenOnLoopback(app);
  return {
    app,
    url,
    runs: app.get(RunCounter),
    tableName,
    bookingsTable,
    gql: (query, variables = {}, headers = []) =>
      send(url, '/graphql', { body: { query, variables }, headers }),
    async close() {
      await app.close();
      await sql(`DROP TABLE IF EXISTS "${bookingsTable}"`);
      await sql(`DROP TABLE IF EXISTS "${tableName}"`);
    },
  };
}

/** One statement on the test database. */
export async function sql(text: string, values: unknown[] = []): Promise<any[]> {
  const client = new pg.Client(process.env.DATABASE_URL);
  await client.connect();
  try {
    return (await client.query(text, values)).rows;
  } finally {
    await client.end();
  }
}
