import shutil, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
tok = "/work/main/trainers/tests/fixtures/hf/smollm"
for name, d, i, layers, heads, kv in [("s1", 256, 768, 6, 4, 2), ("s2", 384, 1024, 10, 6, 2)]:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=8192, hidden_size=d, intermediate_size=i, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=1024,
                      rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    m = LlamaForCausalLM(cfg)
    out = f"/tmp/bench/{name}"
    m.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tok}/{f}", f"{out}/{f}")
    print(name, sum(p.numel() for p in m.parameters()))
