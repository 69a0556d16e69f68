// The mission in a real browser: Cancel shows `canceling`, then `canceled`, without a
// reload; Abort asks first and ends the job at once; buttons also work without JS.
import { test, expect } from '@playwright/test';
import { base, signIn, trackPipelines } from './helpers.mjs';

const CONFIG = `
stages: [test]
graceful:
  stage: test
  script: [echo working, sleep 1000]
  after_script: [echo cleaning up, sleep 2, echo cleaned up]
stuck:
  stage: test
  script: [echo stuck, sleep 1000]
  after_script: [echo this must not run]
`;

const pipelines = trackPipelines(test);
const newPipeline = (request, config = CONFIG) => pipelines.create(request, config);

test('Cancel winds a job down live; Abort asks, then kills', async ({ page, request }) => {
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  const pipeline = await newPipeline(request);
  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(page.locator('[data-live="connected"]')).toBeVisible();

  const graceful = page.locator('li.job[data-job-name="graceful"]');
  const stuck = page.locator('li.job[data-job-name="stuck"]');
  await expect(graceful.locator('.badge')).toHaveText('running', { timeout: 30_000 });
  await expect(stuck.locator('.badge')).toHaveText('running', { timeout: 30_000 });

  // Any reload would drop this marker.
  await page.evaluate(() => { window.__sameDocument = true; });
  await graceful.getByRole('button', { name: 'Cancel' }).click();
  await expect(graceful.locator('.badge')).toHaveText('canceling');
  await expect(graceful.getByRole('button', { name: 'Cancel' })).toHaveCount(0);
  await expect(graceful.locator('.badge')).toHaveText('canceled', { timeout: 30_000 });

  // Abort asks for confirmation; dismissing it changes nothing.
  page.once('dialog', (d) => d.dismiss());
  await stuck.getByRole('button', { name: 'Abort' }).click();
  await page.waitForTimeout(500);
  await expect(stuck.locator('.badge')).toHaveText('running');
  page.once('dialog', (d) => { expect(d.message()).toContain('after_script'); d.accept(); });
  await stuck.getByRole('button', { name: 'Abort' }).click();
  await expect(stuck.locator('.badge')).toHaveText('canceled');
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);

  // The job page shows the log, after_script's cleanup included, and the timeline.
  const gracefulId = pipeline.jobs.find((j) => j.name === 'graceful').id;
  await page.goto(`${base()}/jobs/${gracefulId}`);
  await expect(page.getByTestId('log')).toContainText('cleaned up');
  await expect(page.locator('table.timeline')).toContainText('running → canceling');
  const stuckId = pipeline.jobs.find((j) => j.name === 'stuck').id;
  await page.goto(`${base()}/jobs/${stuckId}`);
  await expect(page.getByTestId('log')).toContainText('stuck');
  await expect(page.getByTestId('log')).not.toContainText('this must not run');
  expect(errors).toEqual([]);
});

test('Cancel works as a plain form post before hydration', async ({ browser, request }) => {
  const pipeline = await newPipeline(request, `
quiet:
  script: [sleep 1000]
  after_script: [echo bye]
`);
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await signIn(page);
  const job = page.locator('li.job[data-job-name="quiet"]');
  await expect(async () => {
    await page.goto(`${base()}/pipelines/${pipeline.id}`);
    await expect(job.locator('.badge')).toHaveText('running', { timeout: 1000 });
  }).toPass({ timeout: 30_000 });
  await job.getByRole('button', { name: 'Cancel' }).click();
  // The server function redirects the plain form post back to the page.
  await expect(page).toHaveURL(new RegExp(`/pipelines/${pipeline.id}\\??$`));
  await expect(job.locator('.badge')).toHaveText(/canceling|canceled/);
  await context.close();
});

test('a viewer sees no Cancel or Abort; a developer sees Cancel only', async ({ page, request }) => {
  const pipeline = await newPipeline(request, `
slow:
  script: [sleep 1000]
`);
  await signIn(page, 'watcher', 'watcher-password');
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  const job = page.locator('li.job[data-job-name="slow"]');
  await expect(job.locator('.badge')).toHaveText('running', { timeout: 30_000 });
  await expect(page.getByRole('button', { name: 'Cancel' })).toHaveCount(0);
  await expect(page.getByRole('button', { name: 'Abort' })).toHaveCount(0);

  await page.context().clearCookies();
  await signIn(page, 'dev', 'dev-password');
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(job.locator('.badge')).toHaveText('running');
  await expect(job.getByRole('button', { name: 'Cancel' })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Abort' })).toHaveCount(0);
  await page.goto(`${base()}/admin/jobs?status=running`);
  await expect(page.locator('tr.job').first().getByRole('button', { name: 'Cancel' })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Abort' })).toHaveCount(0);
});

test('a cleanup faster than the Cancel answer still shows canceled', async ({ page, request }) => {
  // after_script finishes before the server function's answer (`canceling`) reaches
  // the page; that older answer must not overwrite the newer `canceled` frame.
  const pipeline = await newPipeline(request, `
quick:
  script: [sleep 1000]
  after_script: [echo done]
`);
  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(page.locator('[data-live="connected"]')).toBeVisible();
  const job = page.locator('li.job[data-job-name="quick"]');
  await expect(job.locator('.badge')).toHaveText('running', { timeout: 30_000 });
  await job.getByRole('button', { name: 'Cancel' }).click();
  await expect(job.locator('.badge')).toHaveText('canceled');
  await expect(page.locator('.title-row .badge')).toHaveText('canceled');
});

test('a log is shown as text: markup stays inert, ANSI colours become styles', async ({ page, request }) => {
  const pipeline = await newPipeline(request, `
noisy:
  script:
    - echo '<script>window.__injected = 1</script><b>bold?</b>'
    - printf '\\033[31mred alert\\033[0m plain\\n'
`);
  const id = pipeline.jobs[0].id;
  await signIn(page);
  await page.goto(`${base()}/jobs/${id}`);
  const log = page.getByTestId('log');
  await expect(log).toContainText('<script>window.__injected = 1</script><b>bold?</b>', { timeout: 30_000 });
  await expect(log.locator('span.f1')).toHaveText('red alert');
  await expect(log).not.toContainText('\u001b[');
  expect(await log.locator('script, b').count()).toBe(0);
  expect(await page.evaluate(() => window.__injected)).toBeUndefined();
});

test('Cancel during test: the pipeline shows canceling while destroy cleans up, then canceled', async ({ page, request }) => {
  const pipeline = await newPipeline(request, `
stages: [test, cleanup]
test:
  stage: test
  script: [echo testing, sleep 1000]
destroy:
  stage: cleanup
  when: on_cancel
  script: [echo destroying, sleep 3, echo destroyed]
`);
  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(page.locator('[data-live="connected"]')).toBeVisible();
  const test_ = page.locator('li.job[data-job-name="test"]');
  const destroy = page.locator('li.job[data-job-name="destroy"]');
  const badge = page.locator('.title-row .badge').first();
  await expect(destroy.getByTestId('job-when')).toHaveText('when: on_cancel');
  await expect(test_.locator('.badge')).toHaveText('running', { timeout: 30_000 });

  await page.locator('.pipeline-buttons').getByRole('button', { name: 'Cancel' }).click();
  await expect(test_.locator('.badge')).toHaveText('canceled', { timeout: 30_000 });
  // The cleanup job runs; the pipeline says canceling all the while.
  await expect(destroy.locator('.badge')).toHaveText('running', { timeout: 30_000 });
  await expect(badge).toHaveText('canceling');
  // Cancelling the cleanup job is refused, with the reason shown.
  await destroy.getByRole('button', { name: 'Cancel' }).click();
  await expect(page.getByRole('alert')).toContainText('only an abort stops it');
  await expect(destroy.locator('.badge')).toHaveText('success', { timeout: 30_000 });
  await expect(badge).toHaveText('canceled');
});

test('a pipeline cancelled with a message says why, live and after a reload', async ({ page, request }) => {
  const pipeline = await newPipeline(request, `
waits:
  script: [echo waiting, sleep 1000]
`);
  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await expect(page.locator('body[data-hydrated]')).toBeAttached();
  const job = page.locator('li.job[data-job-name="waits"]');
  await expect(job.locator('.badge')).toHaveText('running', { timeout: 30_000 });
  const buttons = page.locator('.pipeline-buttons');
  await buttons.locator('form').filter({ has: page.getByRole('button', { name: 'Cancel' }) })
    .getByRole('textbox', { name: 'Message' }).fill('<b>release freeze</b>');
  await buttons.getByRole('button', { name: 'Cancel' }).click();
  // Text, never markup.
  await expect(page.getByTestId('pipeline-cancel')).toContainText('“<b>release freeze</b>”');
  await expect(job.locator('.badge')).toHaveText('canceled', { timeout: 30_000 });
  await page.goto(`${base()}/jobs/${pipeline.jobs[0].id}`);
  await expect(page.locator('dl.facts')).toContainText('“<b>release freeze</b>”');
  await expect(page.locator('table.timeline')).toContainText('<b>release freeze</b>');
});
