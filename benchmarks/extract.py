"""Feature-extraction throughput: our extractor versus the naive way, in one run, as ratios.

The naive way is what the reference implementation does: one prompt at a time, a full forward
with ``output_hidden_states=True`` over all layers (and the LM head), then pick one layer. Both
read the same 256 chat-formatted prompts (128 AdvBench, 128 of our harmless set) at the default
model's default layer and must agree on every feature.

It also measures the machine's own matrix-multiply throughput (float32 GEMM of the shapes the
model uses) in the same run, and reports the FLOP/s each extractor achieves as a fraction of that
compute floor. FLOPs counted are the useful ones: 2 x (block parameters used) per real token plus
causal attention (2 x 2 x d x (t+1)/2 per token per layer); padding and the LM head are not
counted as useful work.

    python benchmarks/extract.py [--model smollm2-135m-instruct] [--n 256] [--device auto]
    python benchmarks/extract.py --random-llama-7b --device cuda   # GPU: 7B-shaped, bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from safety_polytope import __version__
from safety_polytope.features import FeatureSpec, encode, extract_features
from safety_polytope.lm import default_layer, load_model, wrap_model


def prompts_from_default_sets(n: int) -> list[str]:
    from safety_polytope.datasets import load_source

    harmful = [r.prompt for r in load_source("advbench")][: n // 2]
    harmless = [r.prompt for r in load_source("harmless")][: n - len(harmful)]
    return harmful + harmless


def gemm_floor(d: int, ffn: int, dtype: torch.dtype, device: torch.device,
               seconds: float = 3.0) -> float:
    """Best-of float GEMM throughput (FLOP/s) for (2048 x d) @ (d x ffn), the MLP shape."""
    a = torch.randn(2048, d, dtype=dtype, device=device)
    b = torch.randn(d, ffn, dtype=dtype, device=device)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        _sync(device)
        t = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        _sync(device)
        best = max(best, 10 * 2 * 2048 * d * ffn / (time.perf_counter() - t))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def useful_flops(lm, lengths: list[int], n_layers: int) -> float:  # type: ignore[no-untyped-def]
    block_params = sum(p.numel() for p in lm.blocks[0].parameters())
    d = lm.hidden_size
    total = 0.0
    for t in lengths:
        total += 2 * block_params * t * n_layers
        total += n_layers * 2 * 2 * d * t * (t + 1) / 2
    return total


def naive(lm, prompts: list[str], layer: int) -> tuple[torch.Tensor, float]:  # type: ignore[no-untyped-def]
    enc = encode(lm.tokenizer, prompts)
    out = []
    _sync(lm.device)
    t = time.perf_counter()
    with torch.no_grad():
        for e in enc:
            hs = lm.model(input_ids=torch.tensor([e.ids], device=lm.device),
                          output_hidden_states=True).hidden_states
            out.append(hs[layer][0, -1].float().cpu())
    _sync(lm.device)
    return torch.stack(out), time.perf_counter() - t


def ours(lm, prompts: list[str], layer: int, batch_size: int) -> tuple[torch.Tensor, float]:  # type: ignore[no-untyped-def]
    _sync(lm.device)
    t = time.perf_counter()
    feats = extract_features(lm, prompts, FeatureSpec((layer,)), use_cache=False,
                             batch_size=batch_size, show_progress=False)
    _sync(lm.device)
    return feats[layer], time.perf_counter() - t


def random_llama_7b(device: torch.device):  # type: ignore[no-untyped-def]
    """A random-initialised Llama-2-7B-shaped model in bf16 (no weights needed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--random-llama-7b", action="store_true",
                    help="GPU benchmark: random 7B-shaped Llama in bf16, the default tokenizer")
    ap.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = ap.parse_args()

    lm = load_model(args.model, device=args.device)
    if args.random_llama_7b:
        lm = wrap_model(random_llama_7b(lm.device), lm.tokenizer, name="random-llama-7b")
    layer = args.layer or (20 if args.random_llama_7b else default_layer(lm))
    prompts = prompts_from_default_sets(args.n)
    lengths = [len(e.ids) for e in encode(lm.tokenizer, prompts)]
    dtype = next(lm.model.parameters()).dtype
    cfg = lm.model.config
    floor = gemm_floor(lm.hidden_size, getattr(cfg, "intermediate_size", 4 * lm.hidden_size),
                       dtype, lm.device)

    # Warm-up both paths once on a few prompts, then time each on all prompts.
    naive(lm, prompts[:4], layer)
    ours(lm, prompts[:8], layer, args.batch_size)
    f_naive, t_naive = naive(lm, prompts, layer)
    f_ours, t_ours = ours(lm, prompts, layer, args.batch_size)
    diff = (f_naive - f_ours).abs().max().item()
    scale = f_naive.abs().max().item()

    flops_ours = useful_flops(lm, lengths, layer)
    flops_naive = useful_flops(lm, lengths, lm.n_layers)  # naive also runs the blocks above
    res = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
        f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}"
                                               if lm.device.type == "cuda" else ""),
        "versions": {"safety_polytope": __version__, "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__,
                     "python": platform.python_version()},
        "model": lm.name, "dtype": str(dtype), "layer": layer, "n_layers": lm.n_layers,
        "prompts": len(prompts), "tokens": sum(lengths), "batch_size": args.batch_size,
        "naive_prompts_per_s": len(prompts) / t_naive,
        "ours_prompts_per_s": len(prompts) / t_ours,
        "speedup": t_naive / t_ours,
        "gemm_floor_tflops": floor / 1e12,
        "ours_tflops": flops_ours / t_ours / 1e12,
        "naive_tflops": flops_naive / t_naive / 1e12,
        "ours_fraction_of_floor": flops_ours / t_ours / floor,
        "naive_fraction_of_floor": flops_naive / t_naive / floor,
        "max_abs_diff": diff, "max_abs_value": scale,
    }
    print(json.dumps(res, indent=2))
    print(f"\nours {res['ours_prompts_per_s']:.1f} prompts/s vs naive "
          f"{res['naive_prompts_per_s']:.1f} prompts/s: {res['speedup']:.2f}x; ours reaches "
          f"{res['ours_fraction_of_floor']:.0%} of the GEMM floor "
          f"({res['gemm_floor_tflops'] * 1e3:.1f} GFLOP/s); max |diff| {diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
