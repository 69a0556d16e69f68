// /admin/users: an admin adds a user, who can then sign in; makes an API token for them
// (shown once) that works until it is revoked; a developer is refused the page.
import { test, expect } from '@playwright/test';
import { base, signIn } from './helpers.mjs';

test('add a user and sign in as them; a token works until revoked', async ({ browser, page, request }) => {
  await signIn(page);
  await page.goto(`${base()}/admin/users`);
  // The form answers in the page once its code runs; before, it would post and reload.
  await expect(page.locator('body[data-hydrated]')).toBeAttached();
  const name = `newcomer${Date.now()}`;
  const form = page.locator('section.project-form');
  await form.getByLabel('Name').fill(name);
  await form.getByRole('combobox', { name: 'Role' }).selectOption('developer');
  await form.getByLabel(/Password/).fill('newcomer-password');
  await form.getByRole('button', { name: 'Add user' }).click();
  await expect(form.getByRole('status')).toContainText('Added');

  await page.goto(`${base()}/admin/users`);
  // The new token is shown in the page by its code; a post before it runs reloads the
  // page without it (slow machines hit this).
  await expect(page.locator('body[data-hydrated]')).toBeAttached();
  const row = page.locator(`tr[data-user="${name}"]`);
  await row.getByRole('button', { name: 'New token' }).click();
  const token = await row.getByTestId('new-token').innerText();
  expect(token).toMatch(/^usher_[0-9a-f]{64}$/);
  const asUser = () => request.fetch(`${base()}/api/v1/projects`, { headers: { Authorization: `Bearer ${token}` } });
  expect((await asUser()).status()).toBe(200);
  await page.goto(`${base()}/admin/users`);
  await page.locator(`tr[data-user="${name}"]`).getByRole('button', { name: 'Revoke' }).click();
  await expect(page.locator(`tr[data-user="${name}"]`).getByText('revoked')).toBeVisible();
  expect((await asUser()).status()).toBe(401);

  const context = await browser.newContext();
  const theirs = await context.newPage();
  await signIn(theirs, name, 'newcomer-password');
  await expect(theirs.locator('.who')).toContainText(`${name} · developer`);
  await theirs.goto(`${base()}/admin/users`);
  await expect(theirs.getByRole('alert')).toContainText('administer');
  await context.close();
});
