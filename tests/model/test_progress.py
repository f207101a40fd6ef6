"""Progress bars: the text bar where ipywidgets is missing, so Jupyter shows no IProgress warning."""

import sys
import warnings

import tqdm.std

from hooked_bilinear.progress import tqdm as progress_bar


def test_text_bar_without_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = progress_bar(total=3, disable=True)
    assert type(bar) is tqdm.std.tqdm
    bar.close()


def test_bar_takes_tqdm_arguments():
    bar = progress_bar(range(4), total=4, desc="x", disable=True)
    assert list(bar) == [0, 1, 2, 3] and bar.total == 4
