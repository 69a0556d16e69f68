// The pipeline lists: each unfinished row has its own Cancel (the primary button), the
// status filter works as a plain GET form, and times read as "… ago" with the exact time
// and zone on hover.
import { test, expect } from '@playwright/test';
import { base, signIn, trackPipelines } from './helpers.mjs';

const pipelines = trackPipelines(test);

test("a row's Cancel on / winds its pipeline down live", async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
slow:
  script: [sleep 1000]
  after_script: [echo bye]
`);
  await signIn(page);
  const row = page.locator(`tr.pipeline[data-pipeline-id="${pipeline.id}"]`);
  await expect(row.locator('.badge')).toHaveText('running', { timeout: 30_000 });
  await expect(row.locator('time')).toHaveAttribute('title', /UTC$/);
  await expect(row.locator('time')).toHaveText(/just now|seconds? ago|minutes? ago/);
  await row.getByRole('button', { name: 'Cancel' }).click();
  await expect(row.locator('.badge')).toHaveText(/canceling|canceled/);
  await expect(row.locator('.badge')).toHaveText('canceled', { timeout: 30_000 });
  await expect(row.getByRole('button', { name: 'Cancel' })).toHaveCount(0);

  // The status filter (a GET form, so it works without JavaScript too).
  await page.getByLabel('Status').selectOption('canceled');
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(page).toHaveURL(/status=canceled/);
  await expect(page.locator(`tr.pipeline[data-pipeline-id="${pipeline.id}"]`)).toBeVisible();
  await page.goto(`${base()}/?status=success`);
  await expect(page.locator(`tr.pipeline[data-pipeline-id="${pipeline.id}"]`)).toHaveCount(0);
});
