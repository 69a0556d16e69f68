// Retry in the browser: on a canceled job's page, Retry starts a new attempt that runs
// (the page moves to it), with JavaScript and as a plain form post before hydration.
import { test, expect } from '@playwright/test';
import { api, base, signIn, trackPipelines } from './helpers.mjs';

const pipelines = trackPipelines(test);

async function canceledJob(request) {
  const pipeline = await pipelines.create(request, `
again:
  script: ["echo attempt $CI_JOB_ID", "sleep 1000"]
`);
  const job = pipeline.jobs[0];
  await expect(async () => {
    const j = await api(request, 'GET', `/api/v1/jobs/${job.id}`);
    expect(j.status).toBe('running');
  }).toPass({ timeout: 30_000 });
  await api(request, 'POST', `/api/v1/jobs/${job.id}/cancel`);
  await expect(async () => {
    const j = await api(request, 'GET', `/api/v1/jobs/${job.id}`);
    expect(j.status).toBe('canceled');
  }).toPass({ timeout: 30_000 });
  return job;
}

for (const javaScriptEnabled of [true, false]) {
  test(`Retry on a canceled job starts a new attempt that runs (JavaScript ${javaScriptEnabled ? 'on' : 'off'})`, async ({ browser, request }) => {
    const job = await canceledJob(request);
    const context = await browser.newContext({ javaScriptEnabled });
    const page = await context.newPage();
    await signIn(page);
    await page.goto(`${base()}/jobs/${job.id}`);
    await page.getByRole('button', { name: 'Retry' }).click();
    await expect(page).not.toHaveURL(new RegExp(`/jobs/${job.id}$`));
    const attempt = Number(new URL(page.url()).pathname.split('/').pop());
    expect(attempt).toBeGreaterThan(job.id);
    await expect(page.getByText(`A retry of job #${job.id}`)).toBeVisible();
    await expect(async () => {
      const log = await (await request.fetch(`${base()}/api/v1/jobs/${attempt}/log`, { headers: { Authorization: `Bearer ${process.env.USHER_TOKEN}` } })).text();
      expect(log).toContain(`attempt ${attempt}`);
    }).toPass({ timeout: 30_000 });
    const old = await api(request, 'GET', `/api/v1/jobs/${job.id}`);
    expect(old.retried).toBe(true);
    await api(request, 'POST', `/api/v1/jobs/${attempt}/abort`);
    await context.close();
  });
}
