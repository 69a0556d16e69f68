// Each page's code is a WASM chunk of its own (cargo leptos build --split): a page
// downloads the main WASM and its own chunks, not the other pages', and the router
// fetches a page's chunk when it is first shown, without reloading the document.
import { test, expect } from '@playwright/test';
import { base, signIn, trackPipelines, waitForStatus } from './helpers.mjs';

const pipelines = trackPipelines(test);

test("a page loads only its own code; the router fetches the next page's on the way", async ({ page, request }) => {
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  const pipeline = await pipelines.create(request, `
wait:
  script: [echo waiting, sleep 1000]
`);
  const job = pipeline.jobs[0];
  await waitForStatus(request, job.id, 'running');
  await signIn(page);

  const wasm = [];
  page.on('request', (r) => { if (new URL(r.url()).pathname.endsWith('.wasm')) wasm.push(new URL(r.url()).pathname); });
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(page.locator('[data-live="connected"]')).toBeVisible();
  expect(wasm.some((p) => p.includes('split___pipeline_chunk_view'))).toBeTruthy();
  expect(wasm.filter((p) => p.includes('split___job_chunk_view'))).toEqual([]);

  await page.evaluate(() => { window.__sameDocument = true; });
  await page.locator(`li.job[data-job-id="${job.id}"] a.job-name`).click();
  await expect(page).toHaveURL(`${base()}/jobs/${job.id}`);
  await expect(page.getByTestId('log')).toContainText('waiting');
  expect(wasm.some((p) => p.includes('split___job_chunk_view'))).toBeTruthy();
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);

  // The page built from the chunk is live: Cancel works and its status follows.
  await page.getByRole('button', { name: 'Cancel' }).click();
  await expect(page.locator('.badge').first()).toHaveText('canceled', { timeout: 30_000 });
  await waitForStatus(request, job.id, 'canceled');
  expect(errors).toEqual([]);
});
