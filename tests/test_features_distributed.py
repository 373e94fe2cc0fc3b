"""Two gloo processes on CPU split the shards and gather one cache equal to a single process."""

from __future__ import annotations

import os
import sys

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file


def _worker(rank: int, world: int, init_file: str, cache_dir: str, out_dir: str,
            sys_path: list[str]) -> None:
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    import torch.distributed as dist

    from conftest import make_model, make_tokenizer, many_prompts
    from safety_polytope.features import FeatureSpec, extract_features
    from safety_polytope.lm import wrap_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        tok = make_tokenizer()
        lm = wrap_model(make_model("llama", vocab_size=len(tok)), tok, name="tiny-llama")
        calls: list[int] = []
        lm.blocks[0].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
        feats = extract_features(lm, many_prompts(45), FeatureSpec((1, 2), "mean"),
                                 cache_dir=cache_dir, shard_size=8, batch_size=8,
                                 show_progress=False)
        save_file({"l1": feats[1], "l2": feats[2], "rows": torch.tensor(sum(calls))},
                  os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()

def test_two_gloo_ranks_equal_one_process(tmp_path) -> None:
    from conftest import make_model, make_tokenizer, many_prompts
    from safety_polytope.features import FeatureSpec, extract_features
    from safety_polytope.lm import wrap_model

    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "cache"),
                                      str(tmp_path), list(sys.path)),
                       nprocs=2, join=True, start_method="spawn")
    tok = make_tokenizer()
    lm = wrap_model(make_model("llama", vocab_size=len(tok)), tok, name="tiny-llama")
    solo = extract_features(lm, many_prompts(45), FeatureSpec((1, 2), "mean"),
                            use_cache=False, shard_size=8, batch_size=8, show_progress=False)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for r in (r0, r1):
        assert torch.equal(r["l1"], solo[1]) and torch.equal(r["l2"], solo[2])
    # The work was split: 6 shards (8+8+8+8+8+5 rows), ranks 0 and 1 did alternate ones.
    assert int(r0["rows"]) == 24 and int(r1["rows"]) == 21
    entry = next(p for p in (tmp_path / "cache").iterdir())
    assert len(list(entry.glob("shard-*.safetensors"))) == 6
