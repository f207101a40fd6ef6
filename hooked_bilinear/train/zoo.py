"""Regenerate bundled zoo models from scratch: `python -m hooked_bilinear.train.zoo NAME [NAME ...]`.

Each run is deterministic on CPU: init, split and batch order are seeded, and the default single torch
thread makes reruns bit-exact (more threads, other torch versions or CPUs can change the last bits). It writes `<out>/<name>/` with config.json,
model.safetensors, tokenizer.json (when the model has one), zoo.json and a README.md model card, and
prints the time each model takes. CI does not retrain them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from hooked_bilinear.train.recipes import RECIPES, Trained

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "zoo"


def build(name: str, out_dir: Optional[Path] = None, progress: bool = True) -> dict:
    """Train zoo model `name` and write its folder; returns the card (the contents of zoo.json).

    Raises:
        KeyError: `name` is not a recipe.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown zoo model {name!r}; recipes: {sorted(RECIPES)}")
    folder = Path(out_dir or DEFAULT_OUT) / name
    start = time.perf_counter()
    trained = RECIPES[name](progress=progress)
    elapsed = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    trained.model.save_pretrained(str(folder))
    if trained.variants:
        from hooked_bilinear.zoo.variants import save_variants

        save_variants(trained.variants, folder)
    card = _card(name, trained, elapsed)
    (folder / "zoo.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(render_readme(card))
    return card


def _card(name: str, trained: Trained, elapsed: float) -> dict:
    model = trained.model
    summary = _summary(model)
    return {
        "name": name,
        "task": trained.task,
        "architecture": type(model).__name__,
        "summary": summary,
        "params": sum(p.numel() for p in model.parameters()),
        "metric": trained.metric,
        "metrics": trained.metrics,
        "data": trained.data,
        "train_config": trained.train_config.to_dict(),
        "train_time_s": round(elapsed, 1),
        "train_steps": len(trained.history.train),
        "command": f"python -m hooked_bilinear.train.zoo {name}",
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "threads": torch.get_num_threads()},
        "notes": trained.notes,
        "tables": trained.tables,
        "evals": trained.history.evals,
    }


def _eval_table(evals: list[dict]) -> str:
    """Markdown table of the evaluation records (one row per evaluation)."""
    if not evals:
        return "(no evaluation during training)"
    keys = [k for k in sorted(evals[-1]) if k != "step"]
    lines = ["| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {e['step']} | " + " | ".join(_fmt(e.get(k)) for k in keys) + " |" for e in evals]
    return "\n".join(lines)


def _tables(tables: dict[str, list[dict]]) -> str:
    """Each extra held-out table of the card as a titled Markdown table."""
    parts = []
    for title, rows in tables.items():
        keys = list(rows[0]) if rows else []
        lines = ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
        parts.append(f"### {title[:1].upper() + title[1:]}\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _summary(model) -> str:
    """One line describing the architecture."""
    if hasattr(model, "summary"):
        return model.summary()
    c = model.cfg
    return (f"HookedBilinearMLP({c.model_name!r}: d_input={c.d_input}, d_hidden={c.d_hidden}, n_layers={c.n_layers}, "
            f"n_classes={c.n_classes}, residual={c.residual}, bias={c.bias}, gate={c.gate}, input_shape={c.input_shape})")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_readme(card: dict) -> str:
    """The README.md model card, rendered from a zoo.json card."""
    cfg = card["train_config"]
    metric_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in card["metrics"].items())
    schedule = (f"AdamW lr {cfg['lr']:g} (warmup {cfg['warmup_steps']} steps, {cfg['schedule']} to {cfg['min_lr']:g}), "
                f"betas {tuple(cfg['betas'])}, weight decay {cfg['weight_decay']:g} (matrices only), "
                f"batch {cfg['batch_size'] or 'full'}, grad clip {cfg['grad_clip']}, seed {cfg['seed']}")
    notes = "\n".join(f"- {n}" for n in card["notes"]) or "- none"
    curve = _eval_table(card.get("evals", []))
    tables = _tables(card.get("tables", {}))
    tables = f"\n{tables}\n" if tables else ""
    return f"""# {card['name']}

**Task:** {card['task']}. Bundled with `hooked_bilinear`; load offline with

```python
from hooked_bilinear.loading import load_pretrained
model = load_pretrained("{card['name']}")
```

## Architecture

`{card['summary']}` ({card['params']:,} parameters).

## Data

{card['data']}.

## Training

- Command: `{card['command']}` (or `python scripts/train_zoo.py {card['name']}`), CPU only, bit-exact reruns with the default `--threads 1`.
- {schedule}; {card['train_steps']} steps.
- Training time: {card['train_time_s']:.0f} s on {card['environment']['machine']} with {card['environment']['threads']} torch thread(s)
  (python {card['environment']['python']}, torch {card['environment']['torch']}; a shared machine, so times are indicative).

## Held-out metrics

| metric | value |
|---|---|
{metric_rows}

Headline metric: `{card['metric']}`; `tests/train/test_zoo_models.py` recomputes it.
{tables}
## Evaluation during training

{curve}

## Notes

{notes}
"""


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models to build (default: all of {sorted(RECIPES)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parent folder (default: the package zoo)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--cards-only", action="store_true", help="re-render README.md from zoo.json, no training")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: bit-exact reruns; with more, MKL may adapt its thread "
                             "count to the machine's load and results differ in the last bits)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or sorted(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown zoo models {unknown}; choose from {sorted(RECIPES)}")
    for name in names:
        if args.cards_only:
            card = json.loads((args.out / name / "zoo.json").read_text())
            (args.out / name / "README.md").write_text(render_readme(card))
            continue
        card = build(name, args.out, progress=not args.no_progress)
        print(f"{name}: {card['metric']} = {card['metrics'][card['metric']]:.4f}, "
              f"{card['params']:,} params, trained in {card['train_time_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
