// The pipeline page shows each job's `needs:`: the jobs it waits for, linked, so the
// graph of a pipeline that does not simply run stage by stage can be read.
import { test, expect } from '@playwright/test';
import { base, signIn, trackPipelines } from './helpers.mjs';

const pipelines = trackPipelines(test);

test("a job's needs are listed under it, each a link to that job", async ({ page, request }) => {
  const pipeline = await pipelines.create(request, `
stages: [build, test, deploy]
compile:
  stage: build
  script: [sleep 1000]
docs:
  stage: build
  script: [sleep 1000]
unit:
  stage: test
  needs: [compile]
  script: ["true"]
lint:
  stage: test
  needs: []
  script: ["true"]
ship:
  stage: deploy
  needs: [unit, docs]
  script: ["true"]
plain:
  stage: deploy
  script: ["true"]
`);
  const id = (name) => pipeline.jobs.find((j) => j.name === name).id;
  await signIn(page);
  await page.goto(`${base()}/pipelines/${pipeline.id}`);
  const needs = (name) => page.locator(`li.job[data-job-name="${name}"] [data-testid="job-needs"]`);
  await expect(needs('unit')).toHaveText('needs compile');
  await expect(needs('ship')).toHaveText('needs unit, docs');
  await expect(needs('lint')).toHaveText('needs nothing: starts at once');
  await expect(needs('plain')).toHaveCount(0);
  await expect(needs('compile')).toHaveCount(0);
  await expect(needs('ship').getByRole('link', { name: 'docs' })).toHaveAttribute('href', `/jobs/${id('docs')}`);
  await needs('unit').getByRole('link', { name: 'compile' }).click();
  await expect(page).toHaveURL(`${base()}/jobs/${id('compile')}`);
});
