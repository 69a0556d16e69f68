// Starts a real `usher serve` (SQLite in a temp dir, two local runners) on a free port,
// with a known admin token and an `e2e` user, and tells the tests where it is.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');

export default async function globalSetup() {
  const bin = process.env.USHER_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'usher');
  const siteRoot = process.env.LEPTOS_SITE_ROOT || join(root, 'target', 'site');
  const dataDir = mkdtempSync(join(tmpdir(), 'usher-e2e-'));
  const env = { ...process.env, USHER_DATA_DIR: dataDir, LEPTOS_SITE_ROOT: siteRoot, USHER_ADMIN_TOKEN: 'usher_e2e_admin_token', RUST_LOG: 'warn' };
  delete env.DATABASE_URL;
  const server = spawn(bin, ['serve', '--addr', '127.0.0.1:0', '--local-runners', '2'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const baseURL = await new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`usher did not start:\n${out}`)), 30_000);
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/serving (http:\/\/[\d.]+:\d+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    server.on('exit', (code) => fail(new Error(`usher exited with ${code}:\n${out}`)));
  });
  server.stdout.resume();
  // Users are added once the server has bootstrapped `admin` on the empty database.
  execFileSync(bin, ['user', 'add', 'e2e', '--role', 'admin', '--password-stdin'], { env, input: 'e2e-password\n' });
  execFileSync(bin, ['user', 'add', 'watcher', '--role', 'viewer', '--password-stdin'], { env, input: 'watcher-password\n' });
  execFileSync(bin, ['user', 'add', 'dev', '--role', 'developer', '--password-stdin'], { env, input: 'dev-password\n' });
  process.env.USHER_URL = baseURL;
  process.env.USHER_TOKEN = 'usher_e2e_admin_token';
  writeFileSync(join(dataDir, 'server.pid'), String(server.pid));
  process.env.USHER_E2E_PIDFILE = join(dataDir, 'server.pid');
  server.unref();
}
