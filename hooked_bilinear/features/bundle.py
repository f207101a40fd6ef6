"""Rebuild the dictionaries bundled for `tiny-lm`: `python -m hooked_bilinear.features.bundle`.

Trains a TopK SAE on the MLP input (`blocks.1.ln2.hook_normalized`) and one on the MLP output
(`blocks.1.hook_mlp_out`) of tiny-lm's last layer on the stdlib corpus's training windows, at one
torch thread, and writes each to `zoo/tiny-lm/saes/<name>/` in SAELens's format with a `card.json`
(explained variance, L0, dead fraction, spliced loss increase on the first `EVAL_WINDOWS` held-out
windows) and a README.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Optional

import torch

MODEL = "tiny-lm"
DICTIONARIES = {  # name -> (hook, d_sae, k)
    "L1-mlp-in": ("blocks.1.ln2.hook_normalized", 512, 16),
    "L1-mlp-out": ("blocks.1.hook_mlp_out", 512, 16),
}
EVAL_WINDOWS = 128
STEPS = 1500


def eval_tokens(model) -> torch.Tensor:
    """The held-out windows the cards are measured on (the first `EVAL_WINDOWS` of the stdlib held-out split)."""
    from hooked_bilinear.train.tasks.corpus import chunk_tokens, stdlib_corpus

    _, heldout = stdlib_corpus(heldout_every=10)
    return chunk_tokens(model.tokenizer.tokenizer, heldout, model.cfg.n_ctx)["tokens"][:EVAL_WINDOWS]


def build(names: Optional[list[str]] = None, out_dir: Optional[Path] = None, steps: int = STEPS) -> None:
    from hooked_bilinear import HookedBilinearTransformer
    from hooked_bilinear.features.metrics import evaluate_sae
    from hooked_bilinear.features.trainer import SAETrainConfig, train_sae
    from hooked_bilinear.train.tasks.corpus import chunk_tokens, stdlib_corpus

    torch.set_num_threads(1)
    model = HookedBilinearTransformer.from_pretrained(MODEL)
    train_texts, _ = stdlib_corpus(heldout_every=10)
    tokens = chunk_tokens(model.tokenizer.tokenizer, train_texts, model.cfg.n_ctx)["tokens"]
    held = eval_tokens(model)
    out_dir = out_dir or Path(__file__).resolve().parents[1] / "zoo" / MODEL / "saes"
    for name in names or list(DICTIONARIES):
        hook, d_sae, k = DICTIONARIES[name]
        cfg = SAETrainConfig(steps=steps)
        sae, hist = train_sae(model, tokens, hook, d_sae=d_sae, k=k, config=cfg)
        metrics = evaluate_sae(model, sae, held)
        folder = out_dir / name
        sae.save(folder)
        card = {"name": f"{MODEL}/{name}", "model": MODEL, "hook_name": hook, "architecture": "topk",
                "d_in": sae.cfg.d_in, "d_sae": d_sae, "k": k, "metrics": metrics,
                "eval": f"first {EVAL_WINDOWS} held-out windows of the stdlib corpus (n_ctx {model.cfg.n_ctx})",
                "train": {**cfg.__dict__, "progress": False, "train_windows": int(tokens.shape[0]),
                          "final_loss": sum(hist["loss"][-50:]) / 50},
                "train_time_s": round(hist["elapsed_s"], 1), "command": "python -m hooked_bilinear.features.bundle",
                "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1}}
        (folder / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        (folder / "README.md").write_text(render_readme(card))
        print(name, json.dumps(metrics), flush=True)


def render_readme(card: dict) -> str:
    m = card["metrics"]
    return (f"# {card['name']}\n\nTopK SAE (k={card['k']}, d_sae={card['d_sae']}) on `{card['hook_name']}` of "
            f"`{card['model']}`, in SAELens's format. Load with `hooked_bilinear.load_sae({card['name']!r})`.\n\n"
            f"| metric | value |\n|---|---|\n| explained variance | {m['explained_variance']:.3f} |\n"
            f"| L0 | {m['l0']:.1f} |\n| dead fraction | {m['dead_fraction']:.3f} |\n"
            f"| loss (clean → spliced) | {m['loss']:.3f} → {m['spliced_loss']:.3f} (+{m['loss_increase']:.3f}) |\n\n"
            f"Measured on the {card['eval']}; `tests/features/test_bundled.py` recomputes them. "
            f"Trained for {card['train']['steps']} steps of {card['train']['batch_size']} activations "
            f"({card['train_time_s']} s at 1 thread on a shared 2-core machine) with "
            f"`{card['command']}`.\n")


if __name__ == "__main__":
    build(sys.argv[1:] or None)
