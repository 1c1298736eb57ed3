"""Throughput of the frozen-feature encoder (core/stages/frozen_features.py ``encode_texts``): texts/s and
tokens/s of one forward pass per (prompt, response) text, with hidden states pooled, on a model built from a
config (random weights, nothing downloaded). Prints one JSON line per setting.

    python -m benchmarks.features_throughput                 # CUDA: Gemma-2-2B shapes, bf16 and fp32
    python -m benchmarks.features_throughput --tiny --cpu    # a quick check of the script itself

The CPU figure for the real recipe (Gemma-3-270M, 2 cores) is in reports/cpu/README.md.
"""

from __future__ import annotations

import argparse
import json
import time


def _config(tiny: bool):
    from transformers import Gemma2Config

    if tiny:
        return Gemma2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=32, pad_token_id=0)
    # google/gemma-2-2b shapes
    return Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                        query_pre_attn_scalar=256, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                        pad_token_id=0)


class _Tok:
    pad_token_id = 0


def run(dtype: str, device: str, tiny: bool, n_texts: int, max_length: int, batch_tokens: int) -> dict:
    import random

    import torch
    from transformers import AutoModel

    from replicator.core.config.recipe import FeaturesConfig
    from replicator.core.stages.frozen_features import encode_texts

    torch.manual_seed(0)
    cfg = _config(tiny)
    model = AutoModel.from_config(cfg, dtype=getattr(torch, dtype)).to(device).eval()
    rng = random.Random(0)
    items = []
    for _ in range(n_texts):  # arena-like lengths: most texts fill the budget, some are short
        n = min(max_length, rng.randint(40, 2 * max_length))
        items.append(([1] + [rng.randrange(3, cfg.vocab_size) for _ in range(n - 1)], min(n - 1, 64)))
    features_config = FeaturesConfig(layers=[-1], max_length=max_length, batch_tokens=batch_tokens)
    encode_texts(model, _Tok(), items[:8], features_config, progress=False)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = encode_texts(model, _Tok(), items, features_config, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    tokens = sum(len(ids) for ids, _ in items)
    res = {"model": "tiny" if tiny else "gemma-2-2b shapes", "dtype": dtype, "device": device,
           "texts": n_texts, "max_length": max_length, "batch_tokens": batch_tokens, "seconds": round(dt, 2),
           "texts_per_s": round(n_texts / dt, 1), "tokens_per_s": round(tokens / dt),
           "dim": int(out.shape[1])}
    if device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--texts", type=int, default=2956)  # the real rows' A and B texts
    a = ap.parse_args()
    device = "cpu" if a.cpu else "cuda"
    for dtype in (["float32"] if a.cpu else ["bfloat16", "float32"]):
        for batch_tokens in ([4096] if a.cpu else [4096, 32768]):
            print(json.dumps(run(dtype, device, a.tiny, a.texts, 256, batch_tokens)), flush=True)


if __name__ == "__main__":
    main()
