"""The public checkpoint formats, each a module with `NAME`, `matches(config)` and `convert(...)`.

`detect_format` picks one from the keys of `config.json` (spec: checkpoints.md):

- `dooms_2024_10`: current language models (`tdooms/ts-*`, `tdooms/fw-*`), keys `n_head, d_hidden, gate...`;
- `dooms_2024_06`: older TinyStories / MicroStories models, keys `n_vocab, mlp, normalization...`;
- `mnist`: image classifiers (`tdooms/mnist` subfolders), keys `d_input, d_output, residual...`.
"""

from __future__ import annotations

from typing import Any

from hooked_bilinear.errors import CheckpointError
from hooked_bilinear.loading.formats._base import Converted
from hooked_bilinear.loading.formats import dooms_2024_06, dooms_2024_10, mnist

FORMATS = (mnist, dooms_2024_06, dooms_2024_10)  # most specific keys first


def detect_format(config: dict[str, Any], source: str):
    """The format module whose `matches(config)` is true.

    Raises:
        CheckpointError: no known format has these config keys.
    """
    for fmt in FORMATS:
        if fmt.matches(config):
            return fmt
    raise CheckpointError(
        f"{source}: config.json keys {sorted(config)[:20]} match no known checkpoint format "
        f"(current LM: n_layer, n_head, d_model, d_hidden, gate; older TinyStories: n_vocab, mlp, "
        f"normalization; image: d_input, d_hidden, n_layer; ours: hooked_bilinear_format)"
    )


__all__ = ["Converted", "FORMATS", "detect_format"]
