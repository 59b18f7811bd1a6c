// node-llama-cpp (llama.cpp's prebuilt CPU binary) on a GGUF file: greedy tokens after the prompt ids,
// end-of-sequence tokens included. Usage: node llama-cpp-greedy.mjs FILE '[ids]' COUNT
// Prints one JSON line: { tokens }.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [file, ids, count] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" });
const model = await llama.loadModel({ modelPath: file });
const context = await model.createContext({ contextSize: 512 });
const tokens = [];
for await (const token of context.getSequence().evaluate(JSON.parse(ids), { temperature: 0, yieldEogToken: true })) {
  tokens.push(token);
  if (tokens.length >= Number(count)) break;
}
console.log(JSON.stringify({ tokens }));
process.exit(0);
