"""transformers' greedy `generate` (KV cache) on the workload of
`cargo run --release -p otpref-trainers --example generate_speed`: the same model folder, the
first BATCH prompts of a TRL preference file that tokenize (as plain text) to as many tokens as
the first one, exactly NEW_TOKENS tokens per row. One JSON line: generated tokens per second over `generate` alone.

    python3 scripts/bench/hf_generate.py MODEL_DIR PAIRS_JSONL BATCH NEW_TOKENS
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, pairs, batch, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
prompts = [json.loads(line)["prompt"] for line in open(pairs)]
length = len(tokenizer(prompts[0]).input_ids)
prompts = [p for p in prompts if len(tokenizer(p).input_ids) == length][:batch]
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
inputs = tokenizer(prompts, return_tensors="pt", padding=True)
with torch.inference_mode():
    started = time.perf_counter()
    out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    seconds = time.perf_counter() - started
tokens = (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
print(json.dumps({"program": "transformers generate", "torch": torch.__version__,
                  "batch": len(prompts), "new_tokens": new_tokens, "tokens": tokens,
                  "seconds": seconds, "tokens_per_s": tokens / seconds}))
