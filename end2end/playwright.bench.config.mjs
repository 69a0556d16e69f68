// Browser benchmarks (`make bench-browser`): the same server as the browser tests
// (global-setup.mjs; USHER_BIN picks the build), measurements in bench/*.bench.mjs.
// They print numbers and assert nothing about speed.
import base from './playwright.config.mjs';
import { defineConfig } from '@playwright/test';

export default defineConfig({ ...base, testDir: './bench', testMatch: '*.bench.mjs', timeout: 600_000 });
