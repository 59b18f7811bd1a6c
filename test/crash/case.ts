// Runs one case of cases.ts (argv[2] = its index) and prints its outcome as one JSON line.
import cases from "./cases.ts";

const index = Number(process.argv[2]);
const c = cases[index];
if (!c) throw new Error(`no case ${process.argv[2]}`);
try {
  await c.run();
  console.log(JSON.stringify({ outcome: "ok" }));
} catch (e) {
  console.log(
    JSON.stringify({
      outcome: "error",
      isError: e instanceof Error,
      message: e instanceof Error ? e.message : String(e),
    }),
  );
}
