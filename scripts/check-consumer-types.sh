#!/usr/bin/env bash
# Packs mlx-bun, installs the tarball into a fresh project outside the repo and type-checks a script
# importing the public API with strict settings (plus noUncheckedIndexedAccess,
# exactOptionalPropertyTypes, noPropertyAccessFromIndexSignature): our .ts sources compile under the
# consumer's flags. Needs the setup's Bun (and the npm registry for the dependencies).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.cache/bin:$PATH"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$ROOT" && bun pm pack --quiet --destination "$WORK" >/dev/null)
cd "$WORK"
echo '{ "name": "consumer", "type": "module", "private": true }' > package.json
bun add --silent ./mlx-bun-*.tgz
bun add --silent -d "typescript@$(node -p 'require(process.argv[1]).devDependencies.typescript' "$ROOT/package.json" 2>/dev/null || echo 7.0.2)" "bun-types@1.4.4"
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
cat > main.ts <<'TS'
import * as mlxb from "mlx-bun";
import { createCache, forward, generate, loadModel, ops, Tensor, Tokenizer, type Model } from "mlx-bun";

export async function demo(dir: string): Promise<void> {
  using x = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
  using y = ops.matmul(x, x);
  console.log(y.toFloat32Array(), Object.keys(mlxb).length);
  const model: Model = loadModel(dir);
  const mlx = loadModel(dir, { backend: "mlx" });
  using cache = createCache(mlx, 1, 16);
  using ids = Tensor.from(new Int32Array([1, 2]), [1, 2]);
  using logits = forward(mlx, ids, { cache });
  using next = ops.argmax(logits, -1);
  const tokenizer = Tokenizer.fromDir(dir);
  for await (const chunk of generate(model, tokenizer, "Hello", { maxTokens: 4 })) process.stdout.write(chunk.text);
  console.log(next.shape);
}
TS
./node_modules/.bin/tsc --noEmit -p .
echo "consumer project: tsc --noEmit (strict) passes on a script importing mlx-bun" >&2
