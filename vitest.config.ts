import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // test/cluster/ runs on its own after the rest (test/run.sh): it times takeovers.
    exclude: process.env.HK_TEST_ALL ? ['**/node_modules/**'] : ['**/node_modules/**', 'test/cluster/**'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
