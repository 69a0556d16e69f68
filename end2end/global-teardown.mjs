// Stops the server global-setup started (by its pid only) and waits for it to exit.
import { readFileSync } from 'node:fs';

export default async function globalTeardown() {
  const pidFile = process.env.USHER_E2E_PIDFILE;
  if (!pidFile) return;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  for (let i = 0; i < 100; i++) {
    try { process.kill(pid, 0); } catch { return; }
    await new Promise((r) => setTimeout(r, 100));
  }
  try { process.kill(pid, 'SIGKILL'); } catch {}
}
