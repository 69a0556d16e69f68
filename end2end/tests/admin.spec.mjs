// The admin pages and the job page's artifacts, in a real browser: a cleanup stuck in
// `canceling` is listed at /admin/jobs and an admin ends it there with Abort; the
// runners page lists the local runners and what they hold; artifacts are download links.
import { test, expect } from '@playwright/test';
import { api, base, signIn, trackPipelines, token } from './helpers.mjs';

const pipelines = trackPipelines(test);

function watchErrors(page) {
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  return errors;
}

test('a stuck cleanup is listed and aborted from /admin/jobs; runners show what they hold', async ({ page, request }) => {
  const errors = watchErrors(page);
  const pipeline = await pipelines.create(request, `
stuck_cleanup:
  script: [echo working, sleep 1000]
  after_script: [echo cleanup hangs, sleep 1000]
`);
  const job = pipeline.jobs[0];
  await expect.poll(async () => (await api(request, 'GET', `/api/v1/jobs/${job.id}`)).status, { timeout: 30_000 }).toBe('running');
  await signIn(page);

  await page.goto(`${base()}/admin/runners`);
  const holder = page.locator('tr.runner', { has: page.locator(`a[href="/jobs/${job.id}"]`) });
  await expect(holder).toHaveCount(1);
  await expect(holder).toContainText('online');

  await page.goto(`${base()}/admin/jobs?status=canceling`);
  await expect(page.locator('[data-live="connected"]')).toBeVisible();
  const row = page.locator(`tr.job[data-job-id="${job.id}"]`);
  await expect(row).toHaveCount(0);
  // Cancelled elsewhere (the API): the row appears live, its after_script hanging.
  await api(request, 'POST', `/api/v1/jobs/${job.id}/cancel`);
  await expect(row.locator('.badge')).toHaveText('canceling');
  await expect(row).toContainText('graceful by admin');
  page.once('dialog', (d) => d.accept());
  await row.getByRole('button', { name: 'Abort' }).click();
  await expect(row).toHaveCount(0);
  const after = await api(request, 'GET', `/api/v1/jobs/${job.id}`);
  expect(after.status).toBe('canceled');
  expect(after.cancel.mode).toBe('abort');
  expect(errors).toEqual([]);
});

test('artifacts are listed on the job page as downloads', async ({ page, request }) => {
  const errors = watchErrors(page);
  const pipeline = await pipelines.create(request, `
build:
  script: ["mkdir -p out && echo '<script>alert(1)</script>' > out/page.html && echo report > out/report.txt"]
  artifacts:
    paths: [out/]
`);
  const job = pipeline.jobs[0];
  await signIn(page);
  await page.goto(`${base()}/jobs/${job.id}`);
  const list = page.getByTestId('artifacts');
  await expect(list.getByRole('link', { name: 'out/report.txt' })).toBeVisible({ timeout: 30_000 });
  await expect(list.getByRole('link', { name: 'out/page.html' })).toBeVisible();
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    list.getByRole('link', { name: 'out/page.html' }).click(),
  ]);
  expect(download.suggestedFilename()).toBe('page.html');
  // An uploaded page is never shown as one of ours: it comes as an attachment.
  const resp = await request.fetch(`${base()}/api/v1/jobs/${job.id}/artifacts/out/page.html`, { headers: { Authorization: `Bearer ${token()}` } });
  expect(resp.headers()['content-disposition']).toContain('attachment');
  expect(resp.headers()['content-type']).toBe('application/octet-stream');
  expect(errors).toEqual([]);
});

test('an admin pauses a runner from /admin/runners and resumes it', async ({ page, request }) => {
  const errors = watchErrors(page);
  await signIn(page);
  await page.goto(`${base()}/admin/runners`);
  await expect(page.locator('body[data-hydrated]')).toBeAttached();
  const runner = page.locator('tr.runner[data-state="online"]').first();
  const id = await runner.getAttribute('data-runner-id');
  const row = page.locator(`tr.runner[data-runner-id="${id}"]`);
  await row.getByRole('button', { name: 'Pause' }).click();
  await expect(row).toHaveAttribute('data-state', 'paused');
  const listed = await api(request, 'GET', '/api/v1/runners');
  expect(listed.find((r) => String(r.id) === id).paused).toBe(true);
  await row.getByRole('button', { name: 'Resume' }).click();
  await expect(row).toHaveAttribute('data-state', 'online');
  expect((await api(request, 'GET', '/api/v1/runners')).find((r) => String(r.id) === id).paused).toBe(false);
  expect(errors).toEqual([]);
});
