// The crash harness: hostile calls (test/crash/cases.ts) and CLI argv, each in a child process. The
// suite fails if any child ends by a signal, if a call that must be rejected completes, or if a
// rejection is not an Error with a message; CLI usage errors must be one line without a stack trace.
import { expect, test } from "bun:test";
import { join } from "node:path";
import cases, { CLI_CASES } from "./crash/cases.ts";

const ROOT = join(import.meta.dir, "..");
const PARALLEL = 2;

interface Ended {
  exitCode: number | null;
  signal: string | number | null;
  stdout: string;
  stderr: string;
}

async function runChild(args: string[], env: Record<string, string> = {}): Promise<Ended> {
  const child = Bun.spawn([process.execPath, ...args], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...env },
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  await child.exited;
  return { exitCode: child.exitCode, signal: child.signalCode, stdout, stderr };
}

async function all<T>(count: number, run: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await run(i);
      }
    }),
  );
  return results;
}

test(`${cases.length} hostile API calls and ${CLI_CASES.length} CLI invocations, each in its own process: no signal, an Error where one is due`, async () => {
  expect(cases.length + CLI_CASES.length).toBeGreaterThanOrEqual(200);
  const problems: string[] = [];
  const ended = await all(cases.length, (i) => runChild([join(import.meta.dir, "crash", "case.ts"), String(i)]));
  for (const [i, c] of cases.entries()) {
    const e = ended[i]!;
    if (e.signal !== null || e.exitCode !== 0) {
      problems.push(
        `${c.name}: ended by ${e.signal ?? `exit ${e.exitCode}`} (${e.stderr.trim().split("\n").slice(-2).join(" / ")})`,
      );
      continue;
    }
    const outcome = JSON.parse(e.stdout.trim().split("\n").pop()!) as {
      outcome: string;
      isError?: boolean;
      message?: string;
    };
    if (outcome.outcome !== c.expect)
      problems.push(
        `${c.name}: expected ${c.expect}, got ${outcome.outcome}${outcome.message ? ` (${outcome.message})` : ""}`,
      );
    else if (c.expect === "error" && (!outcome.isError || !outcome.message || outcome.message.length < 8))
      problems.push(`${c.name}: rejected without a clear Error (${outcome.message})`);
  }
  const cli = await all(CLI_CASES.length, (i) =>
    runChild(
      [join(ROOT, "src", "bin.ts"), ...(CLI_CASES[i]!.command ?? ["generate"]), ...CLI_CASES[i]!.args],
      CLI_CASES[i]!.env,
    ),
  );
  for (const [i, c] of CLI_CASES.entries()) {
    const e = cli[i]!;
    const label = `cli ${Object.entries(c.env ?? {})
      .map(([k, v]) => `${k}=${v} `)
      .join("")}${(c.command ?? ["generate"]).join(" ")} ${c.args.join(" ")}`;
    if (e.signal !== null) problems.push(`${label}: ended by ${e.signal}`);
    else if (e.exitCode !== c.exit)
      problems.push(`${label}: exit ${e.exitCode}, expected ${c.exit} (${e.stderr.trim()})`);
    else if (c.exit !== 0) {
      const lines = e.stderr
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("mlx-bun:"));
      if (lines.length !== 1 || /\n\s+at /.test(e.stderr))
        problems.push(`${label}: expected one 'mlx-bun:' line without a stack trace, got ${JSON.stringify(e.stderr)}`);
    }
  }
  expect(problems).toEqual([]);
}, 600_000);
