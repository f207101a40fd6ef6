"""Progress bars: tqdm's notebook widget where ipywidgets is installed, its text bar everywhere else.

`tqdm.auto` alone warns "IProgress not found" in a Jupyter kernel without ipywidgets; the text bar
renders fine there, so we pick it ourselves.
"""

from __future__ import annotations

from typing import Any


def tqdm(*args: Any, **kwargs: Any):
    """A `tqdm` progress bar (same arguments)."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm as bar
    except ImportError:
        from tqdm.std import tqdm as bar
    return bar(*args, **kwargs)


def _in_widgetless_notebook() -> bool:
    import sys

    if "ipykernel" not in sys.modules:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    return False


def tl_tqdm(*args: Any, **kwargs: Any):
    """The bar TransformerLens's patching loops get (installed by `hooked_bilinear._tl`).

    TL builds its bars with `tqdm.auto`, which in a Jupyter kernel without ipywidgets warns "IProgress not
    found" and then writes a text bar that fills the cell's output (one line per update in a saved
    notebook). There, and only there, TL's bars are off; everywhere else they are TL's own bars, chosen
    as `tqdm` above chooses (so no warning either).
    """
    if _in_widgetless_notebook():
        kwargs["disable"] = True
    return tqdm(*args, **kwargs)
