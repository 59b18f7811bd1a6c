"""Peer for bench/embed.ts: sentence-transformers (PyTorch, CPU) embedding the same sentences.
argv: model dir, a JSON file with the sentences. Prints {batch: [sentences/s per rep]}."""
import json
import sys
import time

from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
sentences = json.load(open(sys.argv[2]))
out = {}
for batch in (1, 32):
    model.encode(sentences[:8], batch_size=batch)
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        model.encode(sentences, batch_size=batch)
        rates.append(len(sentences) / (time.perf_counter() - start))
    out[str(batch)] = rates
print(json.dumps(out))
