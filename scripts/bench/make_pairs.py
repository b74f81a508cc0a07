"""200 synthetic preference pairs of about 240 tokens (with the SmolLM fixture's tokenizer)
for the trainer benchmarks: /tmp/bench/pairs.jsonl and its first 8 lines as eval.jsonl."""
import json
import random

from tokenizers import Tokenizer

tok = Tokenizer.from_file("trainers/tests/fixtures/hf/smollm/tokenizer.json")
words = ("the quick brown fox jumps over the lazy dog optimal transport moves mass from one "
         "distribution to another at the least cost a reward model scores a response policy learns "
         "to prefer the better one hello how are you today i am fine thank you").split()
random.seed(0)


def text(n):
    out = []
    while len(tok.encode(" ".join(out)).ids) < n:
        out.append(random.choice(words))
    return " ".join(out)


rows = [{"prompt": text(120), "chosen": " " + text(110), "rejected": " " + text(105)} for _ in range(200)]
with open("/tmp/bench/pairs.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
with open("/tmp/bench/eval.jsonl", "w") as f:
    for r in rows[:8]:
        f.write(json.dumps(r) + "\n")
