// Hostile and careless calls through the public API, one per child process (test/crash.test.ts):
// each either throws an Error (expect "error") or completes (expect "ok"); none may end the process
// by a signal. Checkpoint cases copy the llama fixture into a temporary directory and damage it.
// The cases live by area in cases-api.ts, cases-device.ts, cases-gguf.ts and cases-entries.ts
// (registered in this import order, so that a case's index is the same in every process).
import "./cases-api.ts";
import "./cases-device.ts";
import "./cases-gguf.ts";
import "./cases-entries.ts";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { cases, FIXTURE, GGUF } from "./harness.ts";

export type { Case } from "./harness.ts";
export default cases;

/** CLI invocations (run as `bun src/bin.ts COMMAND ...args`, the command `generate` unless given, with
 * `env` added): usage errors exit 2, runtime errors 1. */
export const CLI_CASES: { args: string[]; exit: number; command?: string[]; env?: Record<string, string> }[] = [
  { args: ["--help"], exit: 0 },
  { args: ["--max-tokens", "abc"], exit: 2 },
  { args: ["--max-tokens", "0"], exit: 2 },
  { args: ["--max-tokens", "-4"], exit: 2 },
  { args: ["--max-tokens", "1.5"], exit: 2 },
  { args: ["--max-tokens", ""], exit: 2 },
  { args: ["--temperature", "-1"], exit: 2 },
  { args: ["--temperature", "NaN"], exit: 2 },
  { args: ["--top-p", "0"], exit: 2 },
  { args: ["--top-p", "2"], exit: 2 },
  { args: ["--seed", "1.5"], exit: 2 },
  { args: ["--top-k", "-2"], exit: 2 },
  { args: ["--min-p", "1.5"], exit: 2 },
  { args: ["--repetition-penalty", "x"], exit: 2 },
  {
    args: ["--model", FIXTURE, "--max-tokens", "3", "--top-k", "5", "--min-p", "0.05", "--repetition-penalty", "1.3"],
    exit: 0,
  },
  { args: ["--backend", "tpu"], exit: 2 },
  { args: ["--model", "/nonexistent/dir"], exit: 2 },
  { args: ["--model", `${FIXTURE}/config.json`], exit: 2 },
  { args: ["--bogus"], exit: 2 },
  { args: ["positional"], exit: 2 },
  { args: ["--model", FIXTURE, "--max-tokens", "1000000000"], exit: 1 },
  { args: ["--model", FIXTURE, "--max-tokens", "2"], exit: 0 },
  // Negative numbers report the flag's range (parseArgs alone calls them ambiguous).
  { args: ["--top-k", "-1"], exit: 2 },
  { args: ["--max-tokens", "-1"], exit: 2 },
  { command: ["serve"], args: ["--port", "-1"], exit: 2 },
  { command: ["serve"], args: ["--max-concurrent", "-3"], exit: 2 },
  { command: ["serve"], args: ["--body-timeout", "0"], exit: 2 },
  // A library asked for by MLXB_LIBRARY that is missing or not a library: an Error, never another one.
  { args: ["--model", FIXTURE, "--max-tokens", "2"], exit: 1, env: { MLXB_LIBRARY: "/nonexistent/libmlxb.so" } },
  { args: ["--model", FIXTURE, "--max-tokens", "2"], exit: 1, env: { MLXB_LIBRARY: join(FIXTURE, "config.json") } },
  {
    command: ["launch"],
    args: ["-n", "1", "--backend", "nccl", "--", "true"],
    exit: 1,
    env: { CUDA_VISIBLE_DEVICES: "" },
  },
  // GGUF files wherever a model directory goes.
  { args: ["--model", "/nonexistent/model.gguf"], exit: 2 },
  ...(existsSync(GGUF)
    ? [
        { args: ["--model", GGUF, "--max-tokens", "2"], exit: 0 },
        {
          args: ["--model", join(import.meta.dir, "..", "fixtures", "data", "bad-mamba.gguf"), "--max-tokens", "2"],
          exit: 1,
        },
      ]
    : []),
];
