"""Generation with and without the key/value cache: `generate(use_past_kv_cache=True)` / `False`.

The bundled `tiny-lm` (2 layers, d_model 128, n_ctx 128) extends a 16-token prompt by 100 greedy tokens,
batch 1 and 8, one torch thread, this thread's CPU time; interleaved repeats, medians. Both produce the
same tokens (checked). The ratio is cached / uncached: below 1 is a speed-up.

    python bench/generate.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, ratio_stats, time_interleaved  # noqa: E402

PROMPT, NEW = 16, 100


def run(quick: bool = False) -> list[dict]:
    from hooked_bilinear import HookedBilinearTransformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = HookedBilinearTransformer.from_pretrained("tiny-lm")
        rows = []
        for batch in (1, 8):
            prompt = torch.randint(0, model.cfg.d_vocab, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
            gen = {key: (lambda key=key: model.generate(prompt, max_new_tokens=NEW, do_sample=False, stop_at_eos=False,
                                                         use_past_kv_cache=key == "cache"))
                   for key in ("cache", "plain")}
            assert torch.equal(gen["cache"](), gen["plain"]()), "the cache changed the generated tokens"
            times = time_interleaved(gen, repeats=3 if quick else 7, warmup=1, clock=time.thread_time)
            rows.append({"bench": "generate", "case": f"tiny-lm, {PROMPT}+{NEW} tokens, batch {batch}: cache / no cache",
                         **ratio_stats(times["cache"], times["plain"]), "target": "< 1", "threads": 1,
                         "note": "same tokens out; thread CPU time"})
        return rows
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    print_table(run(args.quick), ["case", "median_s", "ratio", "ratio_min", "ratio_max", "target"])


if __name__ == "__main__":
    main()
