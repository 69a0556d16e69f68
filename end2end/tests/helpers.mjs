// What the browser specs share: where the server is, API calls as admin, signing in,
// and pipelines that are aborted after each test so a failing test cannot keep the
// runners busy for the next one.
import { expect } from '@playwright/test';

export const base = () => process.env.USHER_URL;
export const token = () => process.env.USHER_TOKEN;

export async function api(request, method, path, data) {
  const resp = await request.fetch(base() + path, { method, data, headers: { Authorization: `Bearer ${token()}` } });
  expect(resp.ok(), `${method} ${path}: ${resp.status()} ${await resp.text()}`).toBeTruthy();
  return resp.json();
}

export async function signIn(page, name = 'e2e', password = 'e2e-password') {
  await page.goto(base() + '/login');
  await page.getByLabel('User').fill(name);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(base() + '/');
}

/// Waits until job `id` has `status` (through the API).
export async function waitForStatus(request, id, status, timeout = 30_000) {
  await expect(async () => {
    expect((await api(request, 'GET', `/api/v1/jobs/${id}`)).status).toBe(status);
  }).toPass({ timeout });
}

/// Registers an afterEach on `test` that aborts the pipelines created through it.
export function trackPipelines(test) {
  let started = [];
  test.afterEach(async ({ request }) => {
    for (const id of started) {
      await request.fetch(`${base()}/api/v1/pipelines/${id}/abort`, { method: 'POST', headers: { Authorization: `Bearer ${token()}` } });
    }
    started = [];
  });
  return {
    async create(request, config) {
      const project = await api(request, 'POST', '/api/v1/projects', { name: `e2e-${Date.now()}-${Math.random()}`, ci_config: config });
      const pipeline = await api(request, 'POST', `/api/v1/projects/${project.id}/pipelines`, { ref: 'main' });
      started.push(pipeline.id);
      return pipeline;
    },
  };
}
