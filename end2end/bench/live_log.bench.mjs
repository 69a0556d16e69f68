// The job page's log in Chromium: a 4 MiB log (time to first paint, frames while
// scrolling it, frames while it streams in), and P9 — a line printed by a running job
// until it is visible in an open job page.
import { test, expect } from '@playwright/test';
import { base, signIn, trackPipelines, waitForStatus } from '../tests/helpers.mjs';
import { frameTimes, percentile, report } from './report.mjs';

const pipelines = trackPipelines(test);
const round = (x) => Math.round(x * 10) / 10;
const frameFigures = (frames) => ({ frames: frames.length, p50_ms: round(percentile(frames, 50)), p95_ms: round(percentile(frames, 95)),
  max_ms: round(Math.max(...frames)), over_50ms: frames.filter((f) => f > 50).length });

// 43,000 lines of 96 bytes with colours: 3.94 MiB, just under the default 4 MiB log cap.
const line = `printf '\\033[32m%06d\\033[0m build step \\033[1mcompiling\\033[0m module %-40s ok\\n' $i x`;
const FOUR_MIB = `big:
  script:
    - |
      for i in $(seq 1 43000); do
        ${line}
      done
`;
// The same, written over about ten seconds by a job that then keeps running.
const FOUR_MIB_STREAMED = `big:
  script:
    - sleep 2
    - |
      for i in $(seq 1 43000); do
        ${line}
        if [ $((i % 500)) = 0 ]; then sleep 0.1; fi
      done
    - echo stream-$((1+1))-finished
    - sleep 1000
`;

test('a 4 MiB log: first paint, scrolling, streaming', async ({ page, request }) => {
  const done = await pipelines.create(request, FOUR_MIB);
  const job = done.jobs[0];
  await waitForStatus(request, job.id, 'success', 120_000);
  await signIn(page);

  // When the page went live (hydrated, socket open), noted by the page itself.
  await page.addInitScript(() => {
    new MutationObserver((_, observer) => {
      if (document.querySelector('[data-live="connected"]')) { window.__liveAt = performance.now(); observer.disconnect(); }
    }).observe(document, { subtree: true, attributes: true, childList: true });
  });
  const loads = [];
  for (let i = 0; i < 5; i++) {
    await page.goto(`${base()}/jobs/${job.id}`, { waitUntil: 'load' });
    // Waiting in the page, cheaply: Playwright's locators over 43,000 lines would take
    // the main thread from the page being measured.
    await page.waitForFunction(() => window.__liveAt, null, { polling: 500, timeout: 60_000 });
    loads.push(await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const fcp = performance.getEntriesByName('first-contentful-paint')[0];
      return { ttfb: nav.responseStart, fcp: fcp ? fcp.startTime : NaN, load: nav.loadEventEnd, bytes: nav.transferSize,
        lines: document.querySelectorAll('.log .line').length, live: window.__liveAt };
    }));
  }
  const med = (k) => round(percentile(loads.map((l) => l[k]), 50));
  report({ figure: 'log-4mib-load', lines: loads[0].lines, page_bytes: loads[0].bytes, runs: loads.length,
    ttfb_ms: med('ttfb'), first_paint_ms: med('fcp'), load_ms: med('load'), live_ms: med('live') });

  const scrolling = await frameTimes(page, () => page.evaluate(() => new Promise((done) => {
    const log = document.querySelector('.log');
    let step = 0;
    const next = () => {
      log.scrollTop = (log.scrollHeight * step) / 240;
      if (++step <= 240) requestAnimationFrame(next); else done();
    };
    requestAnimationFrame(next);
  })));
  report({ figure: 'log-4mib-scroll', ...frameFigures(scrolling) });

  // The same 4 MiB written by a running job while the page follows it.
  const streaming = await pipelines.create(request, FOUR_MIB_STREAMED);
  const live = streaming.jobs[0];
  await page.goto(`${base()}/jobs/${live.id}`);
  await page.waitForFunction(() => window.__liveAt, null, { polling: 100, timeout: 60_000 });
  const started = Date.now();
  const frames = await frameTimes(page, () => page.waitForFunction(
    () => [...(document.querySelector('.log').lastElementChild?.children || [])].slice(-3)
      .some((line) => line.textContent.includes('stream-2-finished')),
    null, { polling: 250, timeout: 300_000 }));
  report({ figure: 'log-4mib-stream', seconds: round((Date.now() - started) / 1000), ...frameFigures(frames),
    lines: await page.locator('.log .line').count() });
});

test('P9: a line printed by a running job until it is visible in an open job page', async ({ page, request }) => {
  // Each line carries the wall-clock millisecond it was printed at; the page notes the
  // millisecond each line is added to the log (same machine, same clock).
  const n = 200;
  const pipeline = await pipelines.create(request, `
marks:
  script:
    - sleep 2
    - 'for i in $(seq 1 ${n}); do echo "mark $i $(date +%s%3N)"; sleep 0.05; done'
    - sleep 1000
`);
  const job = pipeline.jobs[0];
  await signIn(page);
  await page.goto(`${base()}/jobs/${job.id}`);
  await expect(page.locator('[data-live="connected"]')).toBeVisible();
  await page.evaluate(() => {
    window.__seen = [];
    const first = new Set();
    new MutationObserver((changes) => {
      const now = Date.now();
      for (const c of changes) for (const node of c.addedNodes) {
        const m = node.textContent && node.textContent.match(/mark (\d+) (\d{13})/);
        if (m && !first.has(m[1])) { first.add(m[1]); window.__seen.push(now - Number(m[2])); }
      }
    }).observe(document.querySelector('.log'), { childList: true, subtree: true });
  });
  await expect.poll(() => page.evaluate(() => window.__seen.length), { timeout: 60_000 }).toBeGreaterThanOrEqual(n);
  const lat = await page.evaluate(() => window.__seen);
  report({ figure: 'P9', n: lat.length, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99), max_ms: Math.max(...lat) });
});
