// Accessibility: axe-core finds no serious or critical violation on any page, in the
// light and the dark colour scheme, with the pages showing real content (a finished job
// with a coloured log, a running one with its buttons, artifacts, users and tokens).
import { test, expect } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { api, base, signIn, trackPipelines } from './helpers.mjs';

const pipelines = trackPipelines(test);

async function seriousViolations(page) {
  const results = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']).analyze();
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
}

test('every page has no serious or critical accessibility violation, light and dark', async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
build:
  stage: build
  script:
    - printf '\\033[1;32mok\\033[0m \\033[38;5;208mwarn\\033[0m \\033[48;2;40;40;90mbox\\033[0m\\n'
    - mkdir -p out && echo artefact > out/a.txt
  artifacts:
    paths: [out/a.txt]
slow:
  stage: test
  needs: []
  script: [sleep 1000]
`);
  const build = pipeline.jobs.find((j) => j.name === 'build');
  const slow = pipeline.jobs.find((j) => j.name === 'slow');
  await expect(async () => {
    expect((await api(request, 'GET', `/api/v1/jobs/${build.id}`)).status).toBe('success');
    expect((await api(request, 'GET', `/api/v1/jobs/${slow.id}`)).status).toBe('running');
  }).toPass({ timeout: 30_000 });

  const pages = ['/', '/projects', `/projects/${pipeline.project_id}`, `/pipelines/${pipeline.id}`, `/jobs/${build.id}`,
    `/jobs/${slow.id}`, '/admin/jobs', '/admin/runners', '/admin/users'];
  const found = [];
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.goto(`${base()}/login`);
    found.push(...(await seriousViolations(page)).map((v) => `${scheme} /login: ${v}`));
    await signIn(page);
    for (const path of pages) {
      await page.goto(base() + path);
      await expect(page.locator('main')).toBeVisible();
      found.push(...(await seriousViolations(page)).map((v) => `${scheme} ${path}: ${v}`));
    }
    await page.context().clearCookies();
  }
  expect(found, found.join('\n')).toEqual([]);
});
