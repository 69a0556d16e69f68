// What a finished job shows: its duration on the pipeline page, and its log as plain
// text behind the job page's "raw" link (signed in with the browser's session).
import { test, expect } from '@playwright/test';
import { api, base, signIn, trackPipelines } from './helpers.mjs';

const pipelines = trackPipelines(test);

test('a finished job shows how long it ran and links its raw log', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
short:
  script: ["echo raw-line-$CI_JOB_ID", "sleep 1"]
`);
  const job = pipeline.jobs[0];
  await expect(async () => {
    const j = await api(request, 'GET', `/api/v1/jobs/${job.id}`);
    expect(j.status).toBe('success');
  }).toPass({ timeout: 30_000 });

  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(page.locator(`li.job[data-job-id="${job.id}"] [data-testid="job-took"]`)).toHaveText(/^\d+s$/);

  await page.goto(`${base()}/jobs/${job.id}`);
  await page.getByTestId('raw-log').click();
  await expect(page).toHaveURL(new RegExp(`/api/v1/jobs/${job.id}/log$`));
  await expect(page.locator('body')).toContainText(`raw-line-${job.id}`);
});
