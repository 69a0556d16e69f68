// Photographs every page with real content into docs/screenshots/<name>.png (light,
// 1280 px wide; plus the job page dark and at 375 px). Run by `make screenshots`.
import { test, expect } from '@playwright/test';
import { resolve } from 'node:path';
import { api, base, signIn } from '../tests/helpers.mjs';

const out = (name) => resolve(import.meta.dirname, '../../docs/screenshots', `${name}.png`);

test('screenshots of every page', async ({ page, request }) => {
  const project = await api(request, 'POST', '/api/v1/projects', {
    name: 'webshop',
    ci_config: `
build:
  stage: build
  script:
    - printf '\\033[1;34m==>\\033[0m compiling \\033[1mwebshop\\033[0m\\n'
    - for i in 1 2 3; do printf '\\033[32m  ok\\033[0m module-%s\\n' $i; done
    - printf '\\033[38;5;208mwarning\\033[0m 2 deprecated calls\\n'
    - mkdir -p dist && echo bundle > dist/app.js
  artifacts:
    paths: [dist/app.js]
test:
  stage: test
  script:
    - echo "starting database"; export DB_CONTAINER=db-$CI_JOB_ID
    - for i in $(seq 1 5); do echo "test $i passed"; done
    - sleep 1000
  after_script:
    - echo "removing $DB_CONTAINER"
deploy:
  stage: deploy
  script: [echo deploy]
`,
  });
  const first = await api(request, 'POST', `/api/v1/projects/${project.id}/pipelines`, { ref: 'main' });
  const build = first.jobs.find((j) => j.name === 'build');
  const testJob = first.jobs.find((j) => j.name === 'test');
  await expect(async () => {
    expect((await api(request, 'GET', `/api/v1/jobs/${testJob.id}`)).status).toBe('running');
  }).toPass({ timeout: 30_000 });
  await api(request, 'POST', `/api/v1/jobs/${testJob.id}/cancel`);
  await expect(async () => {
    expect((await api(request, 'GET', `/api/v1/jobs/${testJob.id}`)).status).toBe('canceled');
  }).toPass({ timeout: 30_000 });
  const second = await api(request, 'POST', `/api/v1/projects/${project.id}/pipelines`, { ref: 'feature/cart' });
  const running = second.jobs.find((j) => j.name === 'test');
  await expect(async () => {
    expect((await api(request, 'GET', `/api/v1/jobs/${running.id}`)).status).toBe('running');
  }).toPass({ timeout: 30_000 });

  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${base()}/login`);
  await page.screenshot({ path: out('login') });
  await signIn(page);
  const shots = [
    ['pipelines', '/'],
    ['projects', '/projects'],
    ['project', `/projects/${project.id}`],
    ['pipeline', `/pipelines/${first.id}`],
    ['job-canceled', `/jobs/${testJob.id}`],
    ['job-running', `/jobs/${running.id}`],
    ['job-log', `/jobs/${build.id}`],
    ['admin-jobs', '/admin/jobs'],
    ['admin-runners', '/admin/runners'],
    ['admin-users', '/admin/users'],
  ];
  for (const [name, path] of shots) {
    await page.goto(base() + path);
    await expect(page.locator('main')).toBeVisible();
    await page.waitForLoadState('networkidle');
    await page.screenshot({ path: out(name), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.goto(`${base()}/jobs/${testJob.id}`);
  await page.screenshot({ path: out('job-canceled-dark'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 375, height: 800 });
  await page.goto(`${base()}/pipelines/${second.id}`);
  await page.screenshot({ path: out('pipeline-phone'), fullPage: true });
  await api(request, 'POST', `/api/v1/pipelines/${second.id}/abort`);
});
