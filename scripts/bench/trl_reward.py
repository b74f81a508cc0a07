"""TRL's RewardTrainer on CPU: the anchor for reward_trainer's tokens/s and peak resident memory
in docs/benchmarks.md ("Trainer step speed"). One JSON line.

    python3 scripts/bench/trl_reward.py MODEL_DIR PAIRS_JSONL OUT_DIR STEPS BATCH MAX_LENGTH

The model folder is a causal LM (as scripts/gpu/make_model.py writes it); like reward_trainer's
`--model` on such a folder, the reward model is its decoder with a fresh one-output score head
(`AutoModelForSequenceClassification`, num_labels 1). Bradley-Terry loss, f32, every parameter
trained, no clipping, two threads (the 2-core machine). Tokens are the real tokens of prompt +
chosen and prompt + rejected after truncation to MAX_LENGTH, over the pairs the steps saw.
"""
import json
import resource
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

model_dir, pairs, out, steps, batch, max_length = sys.argv[1:7]
steps, batch, max_length = int(steps), int(batch), int(max_length)
torch.set_num_threads(2)

rows = [json.loads(line) for line in open(pairs)]
dataset = Dataset.from_list(
    [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForSequenceClassification.from_pretrained(
    model_dir, num_labels=1, dtype=torch.float32)
model.config.pad_token_id = tokenizer.pad_token_id
config = RewardConfig(
    output_dir=out,
    per_device_train_batch_size=batch,
    max_steps=steps,
    learning_rate=1e-5,
    max_length=max_length,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    seed=0,
    use_cpu=True,
    dataloader_num_workers=0,
    gradient_checkpointing=False,
    warmup_steps=0,
    max_grad_norm=0.0,
    bf16=False,
)
trainer = RewardTrainer(model=model, args=config, train_dataset=dataset,
                        processing_class=tokenizer)
started = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - started
logged = [float(e["num_tokens"]) for e in trainer.state.log_history if "num_tokens" in e]


def real_tokens(row):
    prompt = len(tokenizer(row["prompt"])["input_ids"])
    return sum(min(max_length, prompt + len(tokenizer(row[k], add_special_tokens=False)["input_ids"]))
               for k in ("chosen", "rejected"))


# Without a logged count: the pairs the steps saw (the first steps * batch, as an upper bound
# when the trainer shuffles: the pairs are all of about the same length).
tokens = max(logged) if logged else float(sum(real_tokens(r) for r in rows[: steps * batch]))
print(json.dumps({
    "anchor": "TRL RewardTrainer",
    "trl": __import__("trl").__version__,
    "torch": torch.__version__,
    "steps": steps,
    "batch": batch,
    "seconds": seconds,
    "tokens": tokens,
    "tokens_from_log": bool(logged),
    "tokens_per_s": tokens / seconds,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
