// P2: Cancel clicked in browser A → browser B, which has the same job page open, shows
// `canceling`. Two browser contexts (two signed-in users' sessions); A notes the
// wall-clock time (performance.timeOrigin + now, sub-millisecond) just before it clicks,
// B notes it when its status badge turns `canceling` (a MutationObserver). Both pages
// run in one Chromium on one machine, so they read the same clock.
import { test, expect } from '@playwright/test';
import { base, signIn, trackPipelines, waitForStatus } from '../tests/helpers.mjs';
import { percentile, report } from './report.mjs';

const pipelines = trackPipelines(test);
const ROUNDS = Number(process.env.USHER_BENCH_P2_ROUNDS || 200);

test('P2: a cancel in one browser reaches another', async ({ browser, request }) => {
  const a = await (await browser.newContext()).newPage();
  const b = await (await browser.newContext()).newPage();
  await signIn(a);
  await signIn(b);
  const lat = [];
  for (let i = 0; i < ROUNDS; i++) {
    const pipeline = await pipelines.create(request, 'job:\n  script: [echo ready, sleep 1000]\n  after_script: [sleep 0.3]\n');
    const job = pipeline.jobs[0];
    await waitForStatus(request, job.id, 'running');
    for (const page of [a, b]) {
      await page.goto(`${base()}/jobs/${job.id}`);
      await expect(page.locator('[data-live="connected"]')).toBeVisible();
      await expect(page.locator('.badge').first()).toHaveText('running');
    }
    await b.evaluate(() => {
      window.__canceling = null;
      new MutationObserver((_, observer) => {
        if (document.querySelector('.badge')?.textContent.trim() === 'canceling') {
          window.__canceling = performance.timeOrigin + performance.now();
          observer.disconnect();
        }
      }).observe(document.body, { childList: true, characterData: true, subtree: true, attributes: true });
    });
    const clicked = await a.evaluate(() => {
      const button = [...document.querySelectorAll('button')].find((el) => el.textContent.trim() === 'Cancel');
      const at = performance.timeOrigin + performance.now();
      button.click();
      return at;
    });
    await b.waitForFunction(() => window.__canceling, null, { timeout: 10_000 });
    lat.push((await b.evaluate(() => window.__canceling)) - clicked);
    await waitForStatus(request, job.id, 'canceled');
  }
  const r = (x) => Math.round(x * 100) / 100;
  report({ figure: 'P2', n: lat.length, p50_ms: r(percentile(lat, 50)), p99_ms: r(percentile(lat, 99)), max_ms: r(Math.max(...lat)) });
});
