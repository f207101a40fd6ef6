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
