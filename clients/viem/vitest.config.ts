import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // The integration suite waits on anvil and the bundler.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
