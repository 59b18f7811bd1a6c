#!/usr/bin/env bash
# The install path a user takes, checked end to end (README "Use it in your project"): `bun pm pack`
# this checkout -> a fresh project outside the repo -> `bun add` the tarball -> `bunx mlx-bun setup`
# (the runtime in the user cache, reused when already there) -> a script importing mlx-bun runs an
# op and generates 16 tokens from a checkpoint with no environment variables -> the project's strict
# `tsc --noEmit` (our .ts sources compile under the consumer's flags, stricter ones included).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.cache/bin:$PATH"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
log() { printf '[consumer] %s\n' "$*" >&2; }

(cd "$ROOT" && bun pm pack --quiet --destination "$WORK" >/dev/null)
TARBALL="$(ls "$WORK"/mlx-bun-*.tgz)"
log "packed $(basename "$TARBALL"): $(stat -c %s "$TARBALL") bytes"
mkdir "$WORK/app"
cd "$WORK/app"
echo '{ "name": "consumer", "type": "module", "private": true }' > package.json
bun add --silent "$TARBALL"
bun add --silent -d "typescript@7.0.2" "bun-types@1.4.4"
start=$(date +%s)
env -u MLXB_LIBRARY -u MLXB_HOME bunx mlx-bun setup >/dev/null
log "bunx mlx-bun setup: $(( $(date +%s) - start )) s"

cat > main.ts <<'TS'
import { DEFAULT_MODEL_DIR, generateText, loadModel, ops, Tensor, Tokenizer } from "mlx-bun";

// The model shipped inside the package.
const dir = DEFAULT_MODEL_DIR;
using x = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
using y = ops.matmul(x, x);
if (y.toFloat32Array().join(",") !== "7,10,15,22") throw new Error(`matmul gave ${y.toFloat32Array()}`);
const model = loadModel(dir, { backend: "mlx" });
const { tokens, text } = await generateText(model, Tokenizer.fromDir(dir), "The ship sailed", { maxTokens: 16, ignoreEos: true });
if (tokens.length !== 16) throw new Error(`generated ${tokens.length} tokens`);
console.log(`consumer: matmul ok; 16 tokens on ${model.backend}: ${JSON.stringify(text)}`);
model.dispose();
TS
env -u MLXB_LIBRARY -u MLXB_HOME bun run main.ts

cat > tsconfig.json <<'JSON'
{
  "compilerOptions": {
    "target": "ESNext", "module": "Preserve", "moduleResolution": "bundler", "lib": ["ESNext"],
    "types": ["bun-types"], "allowImportingTsExtensions": true, "noEmit": true,
    "strict": true, "noUncheckedIndexedAccess": true, "exactOptionalPropertyTypes": true,
    "noPropertyAccessFromIndexSignature": true, "verbatimModuleSyntax": true, "isolatedModules": true
  },
  "include": ["*.ts"]
}
JSON
./node_modules/.bin/tsc --noEmit -p .
log "the consumer project's strict tsc --noEmit passes"
