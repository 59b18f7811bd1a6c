"""A GGUF file with random Q4_0 weights in the shape of a checkpoint's config.json (llama or qwen3,
as make_bench_model.py writes them), for llama.cpp as a decode peer: every matrix Q4_0 (blocks of
32: an f16 scale and 16 bytes of 4-bit values), norms F32, no output matrix when the embeddings are
tied (llama.cpp then reuses token_embd), and a byte-level gpt2 vocabulary of the config's size
with one merge (llama.cpp refuses none; prompts go in as token ids; a tokenizer model of 'none' aborts node-llama-cpp).
Only the shapes and bytes matter: speed does not depend on the values.
Usage: make_bench_gguf.py CHECKPOINT_DIR OUT_FILE"""
import json
import os
import sys

import gguf
import numpy as np

src, out = sys.argv[1], sys.argv[2]
config = json.load(open(os.path.join(src, "config.json")))
arch = config["model_type"]
if arch not in ("llama", "qwen3"):
    sys.exit(f"make_bench_gguf.py: model_type '{arch}' is not llama or qwen3")
hidden, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
heads, kv_heads, vocab = config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"]
head_dim = config.get("head_dim", hidden // heads)
rng = np.random.default_rng(0)


def q4_0(rows, cols):
    """Random Q4_0 blocks of a [rows, cols] matrix as gguf-py takes raw data: uint8 [rows, cols / 32 * 18]."""
    blocks = rng.integers(0, 256, size=(rows, cols // 32, 18), dtype=np.uint8)
    # Scales of 1/64: the activations stay finite through every layer.
    blocks[:, :, 0:2] = np.frombuffer(np.float16(1 / 64).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, cols // 32 * 18)


writer = gguf.GGUFWriter(out, arch)
writer.add_context_length(config.get("max_position_embeddings", 4096))
writer.add_embedding_length(hidden)
writer.add_block_count(layers)
writer.add_feed_forward_length(inter)
writer.add_head_count(heads)
writer.add_head_count_kv(kv_heads)
writer.add_key_length(head_dim)
writer.add_value_length(head_dim)
writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
writer.add_tokenizer_model("gpt2")
writer.add_token_list([f"<t{i}>" for i in range(vocab)])
writer.add_token_merges(["< t"])
writer.add_eos_token_id(0)
Q4_0 = gguf.GGMLQuantizationType.Q4_0
writer.add_tensor("token_embd.weight", q4_0(vocab, hidden), raw_dtype=Q4_0)
writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
if not config.get("tie_word_embeddings", False):
    writer.add_tensor("output.weight", q4_0(vocab, hidden), raw_dtype=Q4_0)
for i in range(layers):
    for name, rows, cols in [
        ("attn_q", heads * head_dim, hidden), ("attn_k", kv_heads * head_dim, hidden),
        ("attn_v", kv_heads * head_dim, hidden), ("attn_output", hidden, heads * head_dim),
        ("ffn_gate", inter, hidden), ("ffn_up", inter, hidden), ("ffn_down", hidden, inter),
    ]:
        writer.add_tensor(f"blk.{i}.{name}.weight", q4_0(rows, cols), raw_dtype=Q4_0)
    writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    if arch == "qwen3":
        writer.add_tensor(f"blk.{i}.attn_q_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_k_norm.weight", np.ones(head_dim, dtype=np.float32))
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print(json.dumps({"file": out, "bytes": os.path.getsize(out)}))
