"""A ~135M-parameter Llama (SmolLM2-135M's shape) with random weights, as a Hugging Face folder,
for the trainers' GPU throughput runs (no download: the shape is written here and the
tokenizer comes from the pack).

    python3 scripts/gpu/make_model.py TOKENIZER_DIR OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

tokenizer_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
model = LlamaForCausalLM(config)
model.save_pretrained(out)
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tokenizer_dir / name, out / name)
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters -> {out}")
