// `mlx-bun launch -n N [--backend ring] -- COMMAND ...`: starts N copies of a command as the ranks of
// one MLX process group on this machine. For the ring backend each rank gets MLX_RANK and
// MLX_HOSTFILE (a JSON list of one 127.0.0.1:port per rank, free ports picked here); output lines are
// prefixed with the rank. Exits with the first failing rank's code (the others are stopped).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Ports the OS reports free now (each bound, read and released). */
function freePorts(count: number): number[] {
  const servers = Array.from({ length: count }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }));
  const ports = servers.map((s) => s.port);
  for (const s of servers) s.stop(true);
  return ports;
}

async function prefixed(stream: ReadableStream<Uint8Array>, rank: number, out: NodeJS.WriteStream): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) out.write(`[${rank}] ${line}\n`);
  }
  if (pending) out.write(`[${rank}] ${pending}\n`);
}

/** Runs `command` as `ranks` processes of one group; resolves to the exit code. */
export async function launch(ranks: number, command: string[], options: { backend?: "ring" } = {}): Promise<number> {
  if (!Number.isSafeInteger(ranks) || ranks < 1 || ranks > 64) throw new Error(`launch: the rank count must be an integer in [1, 64], got ${ranks}`);
  if (command.length === 0) throw new Error("launch: no command to run");
  if ((options.backend ?? "ring") !== "ring") throw new Error("launch: only the ring backend is launched here");
  const dir = mkdtempSync(join(tmpdir(), "mlxb-launch-"));
  const hostfile = join(dir, "hosts.json");
  writeFileSync(hostfile, JSON.stringify(freePorts(ranks).map((port) => [`127.0.0.1:${port}`])));
  try {
    const children = Array.from({ length: ranks }, (_, rank) =>
      Bun.spawn(command, { env: { ...process.env, MLX_RANK: String(rank), MLX_HOSTFILE: hostfile, MLX_WORLD_SIZE: String(ranks) }, stdout: "pipe", stderr: "pipe" }),
    );
    const streams = children.flatMap((child, rank) => [prefixed(child.stdout, rank, process.stdout), prefixed(child.stderr, rank, process.stderr)]);
    let code = 0;
    await Promise.all(
      children.map(async (child) => {
        const exit = await child.exited;
        if (exit !== 0 && code === 0) {
          code = exit;
          for (const other of children) if (other !== child) other.kill();
        }
      }),
    );
    await Promise.all(streams);
    return code;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
