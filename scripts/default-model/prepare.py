"""Tokenizer and token files for the default model: a byte-level BPE of 8192 tokens trained on the
corpus (corpus.py), then the corpus shuffled by paragraph (seed 0), 0.5% held out for validation,
and both parts encoded as uint16 token streams with <|endoftext|> between paragraphs.

Usage: prepare.py CORPUS.txt OUT_DIR   (writes tokenizer.json, tokenizer_config.json, train.bin, val.bin)"""
import json
import os
import random
import sys

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

corpus, out = sys.argv[1], sys.argv[2]
EOS = "<|endoftext|>"
VOCAB = 8192
os.makedirs(out, exist_ok=True)
with open(corpus) as f:
    paragraphs = [line.rstrip("\n") for line in f if line.strip()]
random.Random(0).shuffle(paragraphs)
held = max(1, len(paragraphs) // 200)
train, val = paragraphs[held:], paragraphs[:held]

tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tokenizer.train_from_iterator(train, trainer)
tokenizer.save(os.path.join(out, "tokenizer.json"))
with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": EOS, "bos_token": None, "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast"}, f)

eos = tokenizer.token_to_id(EOS)
for name, part in (("train", train), ("val", val)):
    ids = []
    for encoding in tokenizer.encode_batch(part):
        ids.extend(encoding.ids + [eos])
    np.asarray(ids, dtype=np.uint16).tofile(os.path.join(out, f"{name}.bin"))
    print(f"{name}: {len(part)} paragraphs, {len(ids)} tokens", file=sys.stderr)
