// A page that reconnects its event websocket again and again does not grow: each
// connection's handlers are dropped when the next one replaces it (app/src/live.rs).
// The test closes the page's websocket from the server side 60 times (Playwright's
// routeWebSocket stands between the page and the real server) and compares the page's
// JavaScript heap, after a forced garbage collection, between the 10th and the 60th
// connection.
import { test, expect } from '@playwright/test';
import { base, signIn } from './helpers.mjs';

const WARM_UP = 10;
const MEASURED = 50;

test('fifty reconnects leave the page heap flat', async ({ page }) => {
  test.setTimeout(180_000);
  const sockets = [];
  await page.routeWebSocket(/\/api\/v1\/events/, (ws) => {
    ws.connectToServer();
    sockets.push(ws);
  });
  await signIn(page);
  await page.goto(`${base()}/projects`);
  const dot = page.locator('.live');
  const cdp = await page.context().newCDPSession(page);

  // Closes the current connection and waits for the page to open the next one.
  async function reconnect() {
    await expect(dot).toHaveAttribute('data-live', 'connected');
    const before = sockets.length;
    await sockets[sockets.length - 1].close({ code: 1001, reason: 'test' });
    await expect.poll(() => sockets.length, { timeout: 10_000 }).toBe(before + 1);
  }
  async function memory() {
    await cdp.send('HeapProfiler.collectGarbage');
    await cdp.send('HeapProfiler.collectGarbage');
    const { usedSize } = await cdp.send('Runtime.getHeapUsage');
    return { js: usedSize };
  }

  for (let i = 0; i < WARM_UP; i++) await reconnect();
  const start = await memory();
  for (let i = 0; i < MEASURED; i++) await reconnect();
  await expect(dot).toHaveAttribute('data-live', 'connected');
  const end = await memory();

  const grown = end.js - start.js;
  console.log(`JS heap after ${WARM_UP} reconnects: ${start.js} B; after ${WARM_UP + MEASURED}: ${end.js} B (${grown >= 0 ? '+' : ''}${grown} B)`);
  // A leaked socket with its three handlers costs a few KiB of heap: fifty of them
  // would be well over this; GC noise stays well under it.
  expect(grown, 'the heap grows with reconnects').toBeLessThan(64 * 1024);
});
