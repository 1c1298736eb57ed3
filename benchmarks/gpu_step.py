"""One LoRA training step of a Gemma-2-2B-shaped sequence classifier (random weights from the
google/gemma-2-2b config, nothing downloaded) in bf16 or 4-bit nf4; prints tokens/s and peak memory.

    python -m benchmarks.gpu_step            # both variants, needs CUDA
"""

from __future__ import annotations

import json
import time


def gemma2_2b_config():
    from transformers import Gemma2Config

    # google/gemma-2-2b(-it) shapes
    return Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                        query_pre_attn_scalar=256, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                        num_labels=3, pad_token_id=0)


def one_step(quant: str = "bf16", seq_len: int = 512, batch: int = 2, steps: int = 3) -> dict:
    import tempfile

    import torch
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    torch.manual_seed(0)
    cfg = gemma2_2b_config()
    with tempfile.TemporaryDirectory() as d:
        AutoModelForSequenceClassification.from_config(cfg, dtype=torch.bfloat16).save_pretrained(d)
        kw = {"dtype": torch.bfloat16}
        if quant == "4bit":
            kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
        model = AutoModelForSequenceClassification.from_pretrained(d, device_map={"": 0}, **kw)
    if quant == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=16, lora_alpha=32,
                                             target_modules="all-linear"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(3, cfg.vocab_size, (batch, seq_len), device="cuda")
    labels = torch.randint(0, 3, (batch,), device="cuda")
    before = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_B" in k}
    losses = []
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(steps):
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    torch.cuda.synchronize()
    dt = time.time() - t0
    changed = any(not torch.equal(before[k], v) for k, v in model.named_parameters() if k in before)
    return {"quant": quant, "device": torch.cuda.get_device_name(0), "seq_len": seq_len, "batch": batch,
            "tokens_per_s": round(steps * batch * seq_len / dt, 1),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "loss_before": losses[0], "loss_after": losses[-1], "lora_changed": changed}


if __name__ == "__main__":
    for q in ("bf16", "4bit"):
        print(json.dumps(one_step(q)))
