// Projects in the browser: a maintainer creates one on /projects (a YAML mistake is
// shown with its line), then runs its pipeline from the project's page.
import { test, expect } from '@playwright/test';
import { api, base, signIn } from './helpers.mjs';

test('create a project in the browser and run its pipeline', async ({ page, request }) => {
  await signIn(page);
  await page.goto(`${base()}/projects`);
  const form = page.locator('section.project-form');
  const name = `browser-${Date.now()}`;
  await form.getByLabel('Name').fill(name);
  await form.getByLabel(/Inline CI YAML/).fill('hello:\n  script: echo hi\n  scirpt: typo\n');
  await form.getByRole('button', { name: 'Create project' }).click();
  await expect(form.getByRole('alert')).toContainText('line 3');

  await form.getByLabel(/Inline CI YAML/).fill('hello:\n  script: ["echo hello from the browser"]\n');
  await form.getByRole('button', { name: 'Create project' }).click();
  const created = form.getByRole('link', { name });
  await expect(created).toBeVisible();
  await created.click();
  await expect(page.getByRole('heading', { name })).toBeVisible();
  await page.getByRole('button', { name: 'Run pipeline' }).click();
  const row = page.locator('tr.pipeline').first();
  await expect(row.locator('.badge')).toHaveText('success', { timeout: 30_000 });
  const id = await row.getAttribute('data-pipeline-id');
  const pipeline = await api(request, 'GET', `/api/v1/pipelines/${id}`);
  const log = await (await request.fetch(`${base()}/api/v1/jobs/${pipeline.jobs[0].id}/log`, { headers: { Authorization: `Bearer ${process.env.USHER_TOKEN}` } })).text();
  expect(log).toContain('hello from the browser');
});
