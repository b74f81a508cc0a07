"""TRL's DPOTrainer on the workload of run.sh's dpo_135m_dpo run (same model folder, same
pairs, batch, length limit, steps, learning rate and beta), on the same GPU in the same sitting:
the anchor for dpo_trainer's tokens/s and peak memory. One JSON line on stdout.

    python3 scripts/gpu/trl_dpo.py MODEL_DIR PAIRS_JSONL OUT_DIR STEPS BATCH [cpu|cuda] [MAX_LENGTH]

MAX_LENGTH (default 128) is TRL's `max_length`, as dpo_trainer's `--max-length`.

Tokens are TRL's own `num_tokens` (real tokens of prompt + chosen and prompt + rejected, as
dpo_trainer counts them). TRL and datasets come from the pack (the GPU machine has neither).
"""
import json
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

model_dir, pairs, out, steps, batch = sys.argv[1:6]
device = sys.argv[6] if len(sys.argv) > 6 else "cuda"
max_length = int(sys.argv[7]) if len(sys.argv) > 7 else 128
steps, batch = int(steps), int(batch)

rows = [json.loads(line) for line in open(pairs)]
dataset = Dataset.from_list(
    [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
config = DPOConfig(
    output_dir=out,
    per_device_train_batch_size=batch,
    max_steps=steps,
    learning_rate=2e-6,
    beta=0.1,
    max_length=max_length,
    logging_steps=5,
    save_strategy="no",
    report_to=[],
    seed=0,
    use_cpu=device == "cpu",
    dataloader_num_workers=0,
    # dpo_trainer keeps every activation; so must the anchor for a like-for-like comparison.
    gradient_checkpointing=False,
    # dpo_trainer trains in f32; TRL's configs default to bf16 autocast.
    bf16=False,
)
trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                     processing_class=tokenizer)


if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
started = time.perf_counter()
trainer.train()
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - started
tokens = max(float(entry.get("num_tokens", 0)) for entry in trainer.state.log_history)
print(json.dumps({
    "anchor": "TRL DPOTrainer",
    "trl": __import__("trl").__version__,
    "steps": steps,
    "batch": batch,
    "seconds": seconds,
    "tokens": tokens,
    "tokens_per_s": tokens / seconds,
    "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
}))
