"""Start-up stays light: `import hooked_bilinear`, `hooked-bilinear --help` and `list` import no heavy library.

Each check runs in a fresh interpreter and reads `sys.modules` (timing is measured in bench/startup.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("transformer_lens", "transformers", "pandas", "matplotlib", "plotly", "pyarrow", "tokenizers",
         "huggingface_hub")


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if '.' not in m)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_hooked_bilinear_imports_no_heavy_library():
    mods = imported_after("import hooked_bilinear")
    assert not mods & set(HEAVY + ("torch",)), sorted(mods & set(HEAVY + ("torch",)))


def test_public_names_still_resolve_and_train_is_the_function():
    mods = imported_after(
        "import hooked_bilinear.train.tasks\n"
        "from hooked_bilinear import HookedBilinearTransformer, train, Target, ConfigError\n"
        "assert callable(train) and train.__name__ == 'train' and hooked_bilinear.train is train\n"
        "assert 'decompose' in dir(hooked_bilinear)")
    assert "transformer_lens" in mods  # the model needs it: imported on first use, not before


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["circuits", "--help"]])
def test_cli_help_and_list_do_not_import_transformer_lens(argv):
    code = ("import sys\nfrom hooked_bilinear.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass")
    mods = imported_after(code)
    assert "transformer_lens" not in mods and "torch" not in mods
