// Jobs that wait for a person or may fail, in the browser: on the pipeline page a
// `when: manual` job shows the `manual` badge and a Play button; Play starts it and the
// page follows it live to `success` (with JavaScript, and as a plain form post before
// hydration). An allowed failure says so, and its pipeline's badge stays `success`.
import { test, expect } from '@playwright/test';
import { api, base, signIn, trackPipelines } from './helpers.mjs';

const pipelines = trackPipelines(test);

for (const javaScriptEnabled of [true, false]) {
  test(`Play starts a manual job (JavaScript ${javaScriptEnabled ? 'on' : 'off'})`, async ({ browser, request }) => {
    const pipeline = await pipelines.create(request, `
deploy:
  when: manual
  script: ["echo deployed by play"]
`);
    const id = pipeline.jobs[0].id;
    await expect(async () => {
      expect((await api(request, 'GET', `/api/v1/jobs/${id}`)).status).toBe('manual');
    }).toPass({ timeout: 30_000 });
    const context = await browser.newContext({ javaScriptEnabled });
    const page = await context.newPage();
    await signIn(page);
    await page.goto(`${base()}/pipelines/${pipeline.id}`);
    const job = page.locator('li.job[data-job-name="deploy"]');
    await expect(job.locator('.badge')).toHaveText('manual');
    if (javaScriptEnabled) {
      await expect(page.locator('body[data-hydrated]')).toBeAttached();
    }
    await job.getByRole('button', { name: 'Play' }).click();
    if (!javaScriptEnabled) {
      await expect(page).toHaveURL(new RegExp(`/pipelines/${pipeline.id}\\??$`));
    }
    await expect(async () => {
      if (!javaScriptEnabled) await page.reload();
      await expect(job.locator('.badge')).toHaveText('success', { timeout: 2000 });
    }).toPass({ timeout: 30_000 });
    await expect(job.getByRole('button', { name: 'Play' })).toHaveCount(0);
    const log = await (await request.fetch(`${base()}/api/v1/jobs/${id}/log`, { headers: { Authorization: `Bearer ${process.env.USHER_TOKEN}` } })).text();
    expect(log).toContain('deployed by play');
    await context.close();
  });
}

test('an allowed failure is marked so, and its pipeline still succeeds', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
lint:
  allow_failure:
    exit_codes: [3]
  script: ["exit 3"]
`);
  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  const job = page.locator('li.job[data-job-name="lint"]');
  await expect(job.locator('.badge')).toHaveText('failed', { timeout: 30_000 });
  await expect(job.getByTestId('job-allowed')).toHaveText('allowed to fail');
  await expect(page.locator('.title-row .badge')).toHaveText('success');
});
