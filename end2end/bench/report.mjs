// What the browser benchmarks share: percentiles, and one line of JSON per figure on
// stdout (prefixed "BENCH ") and appended to $USHER_BENCH_OUT when set.
import { appendFileSync } from 'node:fs';

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export function report(figure) {
  const line = JSON.stringify(figure);
  console.log(`BENCH ${line}`);
  if (process.env.USHER_BENCH_OUT) appendFileSync(process.env.USHER_BENCH_OUT, line + '\n');
}

/// Frame durations (ms) while `during` runs, from requestAnimationFrame in the page.
export async function frameTimes(page, during) {
  await page.evaluate(() => {
    window.__frames = [];
    let last = performance.now();
    const tick = (t) => { window.__frames.push(t - last); last = t; if (window.__framesOn) requestAnimationFrame(tick); };
    window.__framesOn = true;
    requestAnimationFrame((t) => { last = t; requestAnimationFrame(tick); });
  });
  await during();
  return page.evaluate(() => { window.__framesOn = false; return window.__frames; });
}
