// `nest-idempotency-pg/testing`: what applications need in their own tests, and the store
// contract for anyone writing another IdempotencyStore.
export {
  IdempotencyTestingModule,
  type IdempotencyTestingOptions,
} from './idempotency-testing.module.js';
export {
  InMemoryIdempotencyStore,
  type InMemoryIdempotencyStoreOptions,
} from './in-memory-idempotency.store.js';
export {
  idempotencyStoreContract,
  type IdempotencyStoreContractCase,
  type IdempotencyStoreContractOptions,
} from './idempotency-store.contract.js';
