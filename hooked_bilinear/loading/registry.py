"""The known public bilinear checkpoints on the Hub, with their sizes (from checkpoints.md)."""

from __future__ import annotations

import difflib
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Optional

VOCAB = {"ts-4096": 4096, "mistral": 32000, "gpt2": 50257}
SAE_SUFFIX = "-scope"  # the TopK SAEs of model X live in X-scope


@dataclass(frozen=True)
class KnownModel:
    """One row of the table; `n_params` is estimated from the sizes (vocab from the tokenizer)."""

    id: str
    format: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_ctx: int
    tokenizer: Optional[str]
    note: str = ""

    @property
    def n_params(self) -> int:
        if self.format == "mnist":
            return 784 * self.d_model + self.n_layers * 2 * self.d_model**2 + 10 * self.d_model
        vocab = VOCAB.get(self.tokenizer or "", 0)
        return 2 * vocab * self.d_model + self.n_layers * (4 * self.d_model**2 + 3 * self.d_model * self.d_mlp)


KNOWN_MODELS = (
    KnownModel("tdooms/ts-medium", "dooms-2024-10", 6, 512, 2048, 8, 256, "ts-4096", "scale_attn: false in config"),
    KnownModel("tdooms/ts-medium-v2", "dooms-2024-10", 6, 512, 2048, 8, 256, "ts-4096"),
    KnownModel("tdooms/ts-large", "dooms-2024-10", 8, 768, 3072, 12, 256, "ts-4096", "stray norm.linear keys (ignored)"),
    KnownModel("tdooms/fw-tiny-old", "dooms-2024-10", 8, 768, 3072, 12, 512, "mistral"),
    KnownModel("tdooms/fw-small", "dooms-2024-10", 12, 768, 3072, 12, 512, "mistral"),
    KnownModel("tdooms/fw-medium", "dooms-2024-10", 16, 1024, 4096, 16, 512, "mistral", "~335M params"),
    KnownModel("tdooms/ts-medium-swiglu", "dooms-2024-10", 6, 512, 2048, 8, 256, "ts-4096",
               "gate silu (SwiGLU): not bilinear"),
    KnownModel("tdooms/mnist", "mnist", 1, 512, 512, 0, 0, None,
               "one model per subfolder n{noise}-wd{wd}-r0-t0: pass subfolder=..."),
)


def list_pretrained(as_frame: bool = True):
    """The known Hub ids and their sizes.

    Older TinyStories / MicroStories models (`tdooms/TinyStories-{L}-{d}`) load too, but are not listed.

    Args:
        as_frame: return a pandas DataFrame (default), else a list of dicts.

    Example:
        >>> list_pretrained()[["id", "n_layers", "d_model"]].head(2)  # doctest: +SKIP
    """
    rows = [{**asdict(m), "n_params": m.n_params} for m in KNOWN_MODELS]
    if not as_frame:
        return rows
    import pandas as pd

    return pd.DataFrame(rows)


def known_ids_hint(repo_id: str, subfolder: Optional[str] = None) -> str:
    """"" for a known id, else a hint naming the closest known ids, for error messages.

    A multi-model repo gets its "pass subfolder=..." note only when no subfolder was given.
    """
    ids = [m.id for m in KNOWN_MODELS]
    if repo_id in ids:
        note = KNOWN_MODELS[ids.index(repo_id)].note
        return f" ({repo_id}: {note})" if "subfolder" in note and not subfolder else ""
    if repo_id.endswith(SAE_SUFFIX) and repo_id[: -len(SAE_SUFFIX)] in ids:
        return ""  # the TopK SAEs of a known model (loading.sae)
    from hooked_bilinear.loading import bundled_models

    full = f"{repo_id}/{subfolder}" if subfolder else repo_id
    what = "not a known id" + ("" if Path(full).exists() else f" or a local folder ({Path(full).resolve()})")
    see = "see hooked_bilinear.list_pretrained() and bundled_models(), or `hooked-bilinear list`"
    close = difflib.get_close_matches(repo_id, bundled_models() + ids, n=3, cutoff=0.6)
    if close:
        return f" ({what}; did you mean {close}? {see})"
    return f" ({what}; {see})"


def unknown_model_lead(repo_id: str, subfolder: Optional[str], cache: str) -> Optional[str]:
    """For an id that is neither known nor bundled nor a local folder: a message that leads with the closest
    names and says what was looked for where. None for a known id (or the SAEs of one)."""
    ids = [m.id for m in KNOWN_MODELS]
    if repo_id in ids or (repo_id.endswith(SAE_SUFFIX) and repo_id[: -len(SAE_SUFFIX)] in ids):
        return None
    from hooked_bilinear.loading import ZOO_DIR, bundled_models

    bundled = bundled_models()
    close = difflib.get_close_matches(repo_id, bundled + ids, n=3, cutoff=0.6)
    full = f"{repo_id}/{subfolder}" if subfolder else repo_id
    lead = f"unknown model {repo_id!r}" + (f": did you mean {close}?" if close else "")
    return (f"{lead} Looked for a bundled model in {ZOO_DIR} ({', '.join(bundled)}), a local folder "
            f"{Path(full).resolve()} (none), a known Hub id (`hooked-bilinear list`), and {full} in the HF cache "
            f"{cache} (not there)")
