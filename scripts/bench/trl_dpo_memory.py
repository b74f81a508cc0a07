"""TRL's DPOTrainer (with PEFT for the LoRA rows) on CPU: the anchor for dpo_trainer's peak
resident memory and tokens/s in docs/benchmarks.md ("Trainers at scale"). One JSON line.

    python3 scripts/bench/trl_dpo_memory.py MODEL_DIR PAIRS_JSONL OUT_DIR STEPS BATCH \
        MAX_LENGTH LORA_RANK GRADIENT_CHECKPOINTING [BASE_DTYPE]

LORA_RANK 0 trains every parameter (TRL then keeps a second copy of the model as the
reference); otherwise a PEFT LoRA adapter (alpha 2r, the attention projections, as dpo_trainer's
default targets) and the reference is the base with the adapter off. GRADIENT_CHECKPOINTING is
0 or 1. BASE_DTYPE `bf16` loads the model in bf16 (PEFT keeps the adapters in f32). Two threads, as the 2-core machine has. Peak memory is the process's maximum resident
set (getrusage), as /usr/bin/time reports it for dpo_trainer.
"""
import json
import resource
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

model_dir, pairs, out, steps, batch, max_length, rank, checkpointing = sys.argv[1:9]
base_dtype = torch.bfloat16 if len(sys.argv) > 9 and sys.argv[9] == "bf16" else torch.float32
steps, batch, max_length, rank = int(steps), int(batch), int(max_length), int(rank)
checkpointing = checkpointing == "1"
torch.set_num_threads(2)

rows = [json.loads(line) for line in open(pairs)]
dataset = Dataset.from_list(
    [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=base_dtype)
peft_config = None
if rank > 0:
    from peft import LoraConfig

    peft_config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                             task_type="CAUSAL_LM")
config = DPOConfig(
    output_dir=out,
    per_device_train_batch_size=batch,
    max_steps=steps,
    learning_rate=2e-6,
    beta=0.1,
    max_length=max_length,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    seed=0,
    use_cpu=True,
    dataloader_num_workers=0,
    gradient_checkpointing=checkpointing,
    warmup_steps=0,
    max_grad_norm=0.0,
    # f32 as dpo_trainer trains (TRL's configs default to bf16 autocast).
    bf16=False,
)
trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                     processing_class=tokenizer, peft_config=peft_config)
started = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - started
tokens = max(float(entry.get("num_tokens", 0)) for entry in trainer.state.log_history)
print(json.dumps({
    "anchor": "TRL DPOTrainer" + (" + PEFT LoRA" if rank else ""),
    "trl": __import__("trl").__version__,
    "torch": torch.__version__,
    "steps": steps,
    "batch": batch,
    "lora_rank": rank,
    "gradient_checkpointing": checkpointing,
    "base_dtype": str(base_dtype),
    "seconds": seconds,
    "tokens": tokens,
    "tokens_per_s": tokens / seconds,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
