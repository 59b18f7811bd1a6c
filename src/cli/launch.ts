// `mlx-bun launch -n N [--backend ring|nccl] -- COMMAND ...`: starts N copies of a command as the
// ranks of one MLX process group on this machine. Every rank gets MLX_RANK and MLX_WORLD_SIZE. Ring
// (CPUs): MLX_HOSTFILE, a JSON list of one 127.0.0.1:port per rank, free ports picked here. NCCL
// (CUDA GPUs, MLX's CUDA build): NCCL_HOST_IP=127.0.0.1 and one free NCCL_PORT for the bootstrap, and
// CUDA_VISIBLE_DEVICES naming one GPU per rank (rank i gets the i-th of the caller's
// CUDA_VISIBLE_DEVICES, else GPU i), as MLX's own launcher does, so that each rank's MLX device 0 is
// its GPU. Output lines are prefixed with the rank. Exits with the first failing rank's code (the
// others are stopped).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Ports the OS reports free now (each bound, read and released). */
function freePorts(count: number): number[] {
  const servers = Array.from({ length: count }, () =>
    Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }),
  );
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

export const LAUNCH_BACKENDS = ["ring", "nccl"] as const;
export type LaunchBackend = (typeof LAUNCH_BACKENDS)[number];

/** The environment MLX reads for each rank, besides the caller's (see the file's comment); for the
 * ring, writes its hostfile at `hostfile`. */
function rankEnvironments(ranks: number, backend: LaunchBackend, hostfile: string): Record<string, string>[] {
  const common = { MLX_WORLD_SIZE: String(ranks) };
  if (backend === "ring") {
    writeFileSync(hostfile, JSON.stringify(freePorts(ranks).map((port) => [`127.0.0.1:${port}`])));
    return Array.from({ length: ranks }, (_, rank) => ({ ...common, MLX_RANK: String(rank), MLX_HOSTFILE: hostfile }));
  }
  // Set but empty, CUDA_VISIBLE_DEVICES hides every GPU (as CUDA reads it): no rank gets one.
  const visible = process.env["CUDA_VISIBLE_DEVICES"];
  const gpus =
    visible === undefined
      ? Array.from({ length: ranks }, (_, i) => String(i))
      : visible
          .split(",")
          .map((d) => d.trim())
          .filter((d) => d !== "");
  if (gpus.length < ranks)
    throw new Error(
      `launch: ${ranks} NCCL ranks need ${ranks} GPUs, CUDA_VISIBLE_DEVICES names ${gpus.length} (${JSON.stringify(visible)})`,
    );
  const port = String(freePorts(1)[0]);
  return Array.from({ length: ranks }, (_, rank) => ({
    ...common,
    MLX_RANK: String(rank),
    NCCL_HOST_IP: "127.0.0.1",
    NCCL_PORT: port,
    CUDA_VISIBLE_DEVICES: gpus[rank]!,
  }));
}

/** Runs `command` as `ranks` processes of one group; resolves to the exit code. */
export async function launch(
  ranks: number,
  command: string[],
  options: { backend?: LaunchBackend } = {},
): Promise<number> {
  if (!Number.isSafeInteger(ranks) || ranks < 1 || ranks > 64)
    throw new Error(`launch: the rank count must be an integer in [1, 64], got ${ranks}`);
  if (command.length === 0) throw new Error("launch: no command to run");
  const backend = options.backend ?? "ring";
  if (!LAUNCH_BACKENDS.includes(backend))
    throw new Error(`launch: backend must be one of ${LAUNCH_BACKENDS.join(", ")}, got '${backend}'`);
  const dir = mkdtempSync(join(tmpdir(), "mlxb-launch-"));
  try {
    const environments = rankEnvironments(ranks, backend, join(dir, "hosts.json"));
    const children = environments.map((env) =>
      Bun.spawn(command, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" }),
    );
    const streams = children.flatMap((child, rank) => [
      prefixed(child.stdout, rank, process.stdout),
      prefixed(child.stderr, rank, process.stderr),
    ]);
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
