// A page left open across a server restart comes back: its live dot goes offline while
// the server is down, the websocket reconnects by itself (with backoff), and the page
// re-reads what it missed. This test runs its own server (not the shared one), so it can
// kill it and start it again on the same port and data.
import { test, expect } from '@playwright/test';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createServer } from 'node:net';

const root = resolve(import.meta.dirname, '..', '..');
const bin = process.env.USHER_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'usher');
const siteRoot = process.env.LEPTOS_SITE_ROOT || join(root, 'target', 'site');
const token = 'usher_reconnect_token';

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

function start(dataDir, port) {
  const env = { ...process.env, USHER_DATA_DIR: dataDir, LEPTOS_SITE_ROOT: siteRoot, USHER_ADMIN_TOKEN: token, RUST_LOG: 'warn' };
  delete env.DATABASE_URL;
  const server = spawn(bin, ['serve', '--addr', `127.0.0.1:${port}`], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`usher did not start:\n${out}`)), 30_000);
    server.stdout.on('data', (c) => { out += c; if (out.includes('Usher is serving')) { clearTimeout(timer); server.stdout.resume(); ok(server); } });
  });
}

test('a page open across a server restart comes back live and correct', async ({ page, request }) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'usher-reconnect-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server = await start(dataDir, port);
  try {
    const env = { ...process.env, USHER_DATA_DIR: dataDir };
    delete env.DATABASE_URL;
    execFileSync(bin, ['user', 'add', 'back', '--role', 'developer', '--password-stdin'], { env, input: 'back-password\n' });
    const headers = { Authorization: `Bearer ${token}` };
    const project = await (await request.post(`${base}/api/v1/projects`, { headers, data: { name: 'restart', ci_config: 'a:\n  script: ["true"]\n' } })).json();

    await page.goto(`${base}/login`);
    await page.getByLabel('User').fill('back');
    await page.getByLabel('Password').fill('back-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.goto(`${base}/projects/${project.id}`);
    const dot = page.locator('.live');
    await expect(dot).toHaveAttribute('data-live', 'connected');

    server.kill('SIGKILL');
    await expect(dot).toHaveAttribute('data-live', 'offline');
    server = await start(dataDir, port);
    // Made while the page was not connected (no frame will ever say so): the re-read
    // after reconnecting must show it.
    const pipeline = await (await request.post(`${base}/api/v1/projects/${project.id}/pipelines`, { headers, data: { ref: 'main' } })).json();
    await expect(dot).toHaveAttribute('data-live', 'connected', { timeout: 30_000 });
    await expect(page.locator(`tr.pipeline[data-pipeline-id="${pipeline.id}"]`)).toBeVisible();
  } finally {
    server.kill('SIGKILL');
  }
});
