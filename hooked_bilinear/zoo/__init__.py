"""The bundled model zoo: small bilinear models shipped inside the package, loadable offline.

Each `hooked_bilinear/zoo/<name>/` holds `config.json` + `model.safetensors` (+ `tokenizer.json`),
a `README.md` model card and `zoo.json` (task, metrics measured on held-out data, training time), and
sometimes a `variants.safetensors` with sibling models that the card's claims need (`zoo.variants`).
Load one with `HookedBilinearTransformer.from_pretrained(name)` or `loading.load_pretrained(name)`;
regenerate them with `python scripts/train_zoo.py` (see `hooked_bilinear.train.zoo`).

Example:
    >>> from hooked_bilinear.zoo import zoo_table
    >>> print(zoo_table())  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).resolve().parent
CARD = "zoo.json"


def list_zoo() -> list[dict[str, Any]]:
    """One row per bundled model, sorted by name.

    Returns:
        Dicts with `name`, `task`, `architecture`, `params`, `metric` (its name), `value`,
        `metrics` (every held-out metric), `train_time_s` and `path`.
    """
    rows = []
    for folder in sorted(p for p in ZOO_DIR.iterdir() if (p / "config.json").exists()):
        card_path = folder / CARD
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        rows.append({
            "name": folder.name,
            "task": card.get("task", "?"),
            "architecture": card.get("architecture", "?"),
            "params": card.get("params"),
            "metric": card.get("metric"),
            "value": card.get("metrics", {}).get(card.get("metric")),
            "metrics": card.get("metrics", {}),
            "train_time_s": card.get("train_time_s"),
            "path": str(folder),
        })
    return rows


def zoo_table() -> str:
    """The zoo as a Markdown table: name, task, parameters, headline held-out metric, training time."""
    lines = ["| name | task | params | held-out metric | train time |", "|---|---|---|---|---|"]
    for row in list_zoo():
        value = row["value"]
        metric = f"{row['metric']} = {value:.4g}" if isinstance(value, (int, float)) else "?"
        time_s = f"{row['train_time_s']:.0f} s" if row["train_time_s"] is not None else "?"
        params = f"{row['params']:,}" if row["params"] is not None else "?"
        lines.append(f"| `{row['name']}` | {row['task']} | {params} | {metric} | {time_s} |")
    return "\n".join(lines)


__all__ = ["ZOO_DIR", "list_zoo", "zoo_table"]
