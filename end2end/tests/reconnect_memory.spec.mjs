// A page that reconnects its event websocket again and again keeps nothing of the
// connections it replaced: each connection's socket and handlers are dropped when the
// next one takes over (app/src/live.rs). The test closes the page's socket 60 times
// (the page then reconnects by itself) and, after forced garbage collections, counts the
// sockets still alive (through WeakRefs, which keep nothing alive) and compares the
// page's JavaScript heap between the 10th and the 60th connection.
import { test, expect } from '@playwright/test';
import { signIn } from './helpers.mjs';

const WARM_UP = 10;
const MEASURED = 50;

test('sixty reconnects leave one socket and a flat heap', async ({ page }) => {
  test.setTimeout(180_000);
  // Every socket the page makes is noted weakly; only the newest is held, to close it.
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(new WeakRef(this));
        window.__newest = this;
      }
    };
  });
  // Signing in lands on the pipelines list, whose live dot shows the socket's state.
  await signIn(page);
  const dot = page.locator('.live');
  const cdp = await page.context().newCDPSession(page);
  const made = () => page.evaluate(() => window.__sockets.length);

  // Closes the current connection and waits for the page to open the next one.
  async function reconnect() {
    await expect(dot).toHaveAttribute('data-live', 'connected');
    const before = await made();
    await page.evaluate(() => window.__newest.close());
    await expect.poll(made, { timeout: 15_000 }).toBe(before + 1);
  }
  async function collect() {
    for (let i = 0; i < 3; i++) await cdp.send('HeapProfiler.collectGarbage');
  }
  async function heap() {
    await collect();
    return (await cdp.send('Runtime.getHeapUsage')).usedSize;
  }

  for (let i = 0; i < WARM_UP; i++) await reconnect();
  const start = await heap();
  for (let i = 0; i < MEASURED; i++) await reconnect();
  await expect(dot).toHaveAttribute('data-live', 'connected');
  const end = await heap();
  const alive = await page.evaluate(() => window.__sockets.filter((s) => s.deref() !== undefined).length);

  const grown = end - start;
  console.log(`sockets made: ${await made()}, alive after GC: ${alive}; JS heap after ${WARM_UP} reconnects: ${start} B, after ${WARM_UP + MEASURED}: ${end} B (${grown >= 0 ? '+' : ''}${grown} B)`);
  // The open one (the newest, also held by the test) and at most one still closing.
  expect(alive, 'sockets of replaced connections are kept alive').toBeLessThanOrEqual(2);
  // A leaked connection (socket, three handlers, its closures' state) costs KiBs:
  // fifty would be far over this; garbage-collection noise stays under it.
  expect(grown, 'the heap grows with reconnects').toBeLessThan(64 * 1024);
});
