// Timing helpers for the bench suite: medians and spreads of repeated runs after warm-up.
export interface Sample {
  median: number;
  /** (p90 - p10) / median: the spread of the runs. */
  spread: number;
}

export function summarize(values: number[]): Sample {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const median = at(0.5);
  return { median, spread: (at(0.9) - at(0.1)) / median };
}

/** Runs `fn` `inner` times per repetition; returns ns per call over `reps` repetitions after warm-up. */
export function timeNs(fn: () => void, inner: number, reps = 15, warmup = 3): Sample {
  const runs: number[] = [];
  for (let r = 0; r < reps + warmup; r++) {
    const start = Bun.nanoseconds();
    for (let i = 0; i < inner; i++) fn();
    const ns = (Bun.nanoseconds() - start) / inner;
    if (r >= warmup) runs.push(ns);
  }
  return summarize(runs);
}

export function table(title: string, header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === "number" ? format(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  console.log(`\n${title}`);
  for (const [n, row] of cells.entries()) {
    console.log(row.map((c, i) => String(c).padEnd(widths[i]!)).join("  "));
    if (n === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

function format(x: number): string {
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}
