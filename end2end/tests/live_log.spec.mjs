// The job page's live log: output arrives over the event socket and is appended without
// re-rendering what is shown; progress lines overwrite themselves; the box follows the end
// until you scroll up; every line number is a link.
import { writeFileSync, rmSync } from 'node:fs';
import { test, expect } from '@playwright/test';
import { base, signIn, token, trackPipelines, waitForStatus } from './helpers.mjs';

const pipelines = trackPipelines(test);

test('a line printed by a running job appears in an open job page without a reload', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
talk:
  script:
    - echo first-line
    - while [ ! -e /tmp/usher-e2e-go-$CI_JOB_ID ]; do sleep 0.05; done
    - echo second-line
    - p=progr; printf "\${p}ess 10%%\\r"; sleep 0.3; printf "\${p}ess 60%%\\r"; sleep 0.3; printf '\\033[Kall-%s\\n' done
    - sleep 1000
`);
  const job = pipeline.jobs[0];
  await waitForStatus(request, job.id, 'running');
  const frames = [];
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));
  await signIn(page);
  // Reach the job page by the router (built in the browser, not hydrated).
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await page.locator(`li.job[data-job-id="${job.id}"] a.job-name`).click();
  await expect(page).toHaveURL(`${base()}/jobs/${job.id}`);
  const log = page.getByTestId('log');
  await expect(log).toContainText('first-line');
  await expect(page.locator('[data-live="connected"]')).toBeVisible();
  // Mark the shown line's element: if the log were re-rendered, the mark would be gone.
  await page.evaluate(() => { document.getElementById('L1').dataset.mark = 'kept'; });

  // The job goes on once this file exists (/tmp is shared with the job's user).
  writeFileSync(`/tmp/usher-e2e-go-${job.id}`, '');
  try {
    await expect(log.locator('.line', { hasText: /^\d+second-line\s*$/ })).toBeVisible();
    await expect(log.locator('.line', { hasText: /^\d+all-done\s*$/ })).toBeVisible();
  } finally {
    rmSync(`/tmp/usher-e2e-go-${job.id}`, { force: true });
  }
  expect(await page.evaluate(() => document.getElementById('L1').dataset.mark)).toBe('kept');
  // The progress line overwrote itself: one line, the last state.
  await expect(log.locator('.line', { hasText: 'progress' })).toHaveCount(0);
  // It came as a log frame on the socket (not by polling).
  expect(frames.some((f) => f.includes('"type":"log"') && f.includes('second-line'))).toBeTruthy();
});

test('the log follows its end until scrolled up, and Follow brings it back', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
chatty:
  script:
    - for i in $(seq 1 400); do echo "line $i"; done
    - for i in $(seq 1 1000); do echo "more $i"; sleep 0.1; done
`);
  const job = pipeline.jobs[0];
  await waitForStatus(request, job.id, 'running');
  await signIn(page);
  await page.goto(`${base()}/jobs/${job.id}`);
  const log = page.getByTestId('log');
  await expect(log).toContainText('more 3');
  const atEnd = () => log.evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 30);
  await expect.poll(atEnd).toBe(true);
  await expect(page.getByTestId('follow')).toBeHidden();

  await log.evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
  await expect(page.getByTestId('follow')).toBeVisible();
  const lines = await log.locator('.line').count();
  await expect.poll(() => log.locator('.line').count()).toBeGreaterThan(lines + 3);
  expect(await log.evaluate((el) => el.scrollTop)).toBe(0);

  await page.getByTestId('follow').click();
  await expect(page.getByTestId('follow')).toBeHidden();
  await expect.poll(atEnd).toBe(true);
});

test('line numbers are links: opening one marks its line, clicking one puts it in the address', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
numbered:
  script: ['for i in $(seq 1 300); do echo "row $i"; done']
`);
  const job = pipeline.jobs[0];
  await waitForStatus(request, job.id, 'success');
  await signIn(page);
  await page.goto(`${base()}/jobs/${job.id}#L120`);
  const line = page.locator('#L120');
  await expect(line).toContainText(/row \d+/);
  await expect(line).toHaveClass(/selected/);
  await expect(line).toBeInViewport();

  await page.locator('#L5 a.ln').click();
  await expect(page).toHaveURL(`${base()}/jobs/${job.id}#L5`);
  await expect(page.locator('#L5')).toHaveClass(/selected/);
  await expect(line).not.toHaveClass(/selected/);
  // Copying the log gives its text without the numbers.
  expect(await page.locator('#L5 a.ln').evaluate((a) => getComputedStyle(a).userSelect)).toBe('none');
});

test('a long log opens at its end; earlier output comes on demand, numbered as in the whole log', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
long:
  script: ['for i in $(seq 1 3000); do echo "entry $i of a long log"; done']
`);
  const job = pipeline.jobs[0];
  await waitForStatus(request, job.id, 'success');
  const raw = await (await request.get(`${base()}/api/v1/jobs/${job.id}/log`, { headers: { Authorization: `Bearer ${token()}` } })).text();
  const lineOf = (n) => raw.split('\n').findIndex((l) => l === `entry ${n} of a long log`) + 1;
  await signIn(page);
  await page.goto(`${base()}/jobs/${job.id}`);
  const log = page.getByTestId('log');
  // The end is shown, with the whole log's line numbers; the start is not sent.
  await expect(page.locator(`#L${lineOf(3000)}`)).toContainText('entry 3000 of a long log');
  await expect(page.locator(`#L${lineOf(1)}`)).toHaveCount(0);
  const earlier = page.getByTestId('show-earlier');
  await expect(earlier).toBeVisible();
  const shown = await log.locator('.line').count();
  expect(shown).toBeLessThan(1000);

  // Each click puts the lines before above, keeping the view where it was — once the
  // page's code runs: before, the button is a link that loads the page anew.
  await expect(page.locator('body[data-hydrated]')).toBeAttached();
  const first = await log.locator('.line').first().getAttribute('id');
  const top = () => page.locator(`#${first}`).evaluate((el) => el.getBoundingClientRect().top);
  const before = await top();
  await earlier.click();
  await expect.poll(() => log.locator('.line').count()).toBeGreaterThan(shown);
  // The view is put back in the frame after the lines arrive: wait for it to settle.
  await expect.poll(async () => Math.abs((await top()) - before)).toBeLessThan(40);
  for (let i = 0; i < 20 && (await earlier.isVisible()); i++) {
    const count = await log.locator('.line').count();
    await earlier.click();
    await expect.poll(() => log.locator('.line').count()).toBeGreaterThan(count);
  }
  await expect(earlier).toBeHidden();
  await expect(page.locator('#L1')).toBeAttached();
  await expect(page.locator(`#L${lineOf(1)}`)).toContainText('entry 1 of a long log');
  // Every line once, numbered 1..n in order.
  const ids = await log.locator('.line').evaluateAll((ls) => ls.map((l) => Number(l.id.slice(1))));
  expect(ids).toEqual(ids.map((_, i) => i + 1));

  // A link to an early line reads back to it (a new load, not a jump in this page).
  await page.goto('about:blank');
  await page.goto(`${base()}/jobs/${job.id}#L${lineOf(7)}`);
  await expect(page.locator(`#L${lineOf(7)}`)).toContainText('entry 7 of a long log');
  await expect(page.locator(`#L${lineOf(7)}`)).toHaveClass(/selected/);
  await expect(page.locator(`#L${lineOf(7)}`)).toBeInViewport();

  // Reached by the router (the page built in the browser): the same end, the same offer.
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  await page.locator(`li.job[data-job-id="${job.id}"] a.job-name`).click();
  await expect(page.locator(`#L${lineOf(3000)}`)).toContainText('entry 3000 of a long log');
  await expect(page.locator(`#L${lineOf(1)}`)).toHaveCount(0);
  await expect(earlier).toBeVisible();
});
