// Jest runs the TypeScript sources as native ESM (NestJS 12 ships ESM only), compiled by SWC.
/** @type {import('jest').Config} */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest'] },
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1',
    // @fastify/static (Mercurius loads it) requires content-disposition 3, which is ESM only:
    // Node 20.19 can require() it, Jest's module loader cannot. Version 2 has the same API
    // in CommonJS (Express 5 brings it), so Jest resolves every require of it there.
    '^content-disposition$': '<rootDir>/node_modules/content-disposition/dist/index.js',
    // The README's examples import the package by name, as users do.
    '^nest-idempotency-pg$': '<rootDir>/src/index.ts',
    '^nest-idempotency-pg/(client|testing)$': '<rootDir>/src/$1/index.ts',
  },
  testMatch: ['<rootDir>/src/**/*.spec.ts', '<rootDir>/test/**/*.e2e-spec.ts'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
  testTimeout: 30000,
  maxWorkers: 2,
};
