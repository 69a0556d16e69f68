// `make screenshots`: the same server as the browser tests (global-setup.mjs), pages
// photographed into docs/screenshots/ by shots/pages.shot.mjs.
import base from './playwright.config.mjs';
import { defineConfig } from '@playwright/test';

export default defineConfig({ ...base, testDir: './shots', testMatch: '*.shot.mjs', timeout: 180_000 });
