"""The `hooked-bilinear` command: `demo`, `list`, `info MODEL`, `circuits MODEL INPUT`, `graph MODEL INPUT`.

    hooked-bilinear demo                          # the README's main job, offline
    hooked-bilinear list                          # bundled and known Hub models
    hooked-bilinear info modadd-113-1l
    hooked-bilinear circuits modadd-113-1l "37 58 113" --level 2 --plot paths.png
    hooked-bilinear circuits modadd-113-1l "37 58 113" --target 94 --versus 95   # any logit (difference)
    hooked-bilinear graph induction-2l "0 5 9 17 23 5 9 17" --out graphs --html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

DEMO_MODEL = "modadd-113-1l"


def _load(name: str):
    from hooked_bilinear import HookedBilinearTransformer
    from hooked_bilinear.loading import load_pretrained

    model = load_pretrained(name)
    if not isinstance(model, HookedBilinearTransformer):
        raise SystemExit(f"error: {name!r} is an image classifier; `circuits` and `demo` need a transformer")
    return model.eval()


def _parse_input(model, text: str):
    """Space-separated token ids, or text when the model has a tokenizer."""
    import torch

    from hooked_bilinear.errors import InputError

    parts = text.split()
    if not parts:
        raise InputError(f"INPUT is empty ({text!r}): give space-separated token ids such as '37 58 113'"
                         + (" or some text" if model.tokenizer is not None else ""))
    if all(p.lstrip("-").isdigit() for p in parts):
        return torch.tensor([[int(p) for p in parts]])
    if model.tokenizer is None:
        raise SystemExit(f"error: {model.cfg.model_name} has no tokenizer: give INPUT as space-separated token ids")
    return model.to_tokens(text)


def _parse_token(model, text: str) -> int:
    """A token id, or a string that is exactly one token of the model's tokenizer."""
    from hooked_bilinear.errors import InputError

    if text.lstrip("-").isdigit():
        token = int(text)
        if not 0 <= token < model.cfg.d_vocab:
            raise InputError(f"target token {token} is out of range [0, d_vocab={model.cfg.d_vocab})")
        return token
    if model.tokenizer is None:
        raise InputError(f"{model.cfg.model_name} has no tokenizer: give the target as a token id, not {text!r}")
    return model.to_single_token(text)


def _token_str(model, token: int) -> str:
    return repr(model.to_string([token])) if model.tokenizer is not None else str(token)


def explain_prediction(model, tokens, level=2, top: int = 12, plot: Optional[str] = None,
                       target: Optional[int] = None, versus: Optional[int] = None):
    """Print the prediction at the last position and the exact paths behind a logit; optionally plot them.

    Args:
        target: the token whose logit is explained (default: the top prediction).
        versus: explain `logit[target] - logit[versus]` instead.
    """
    import torch

    from hooked_bilinear.circuits import Target, decompose
    from hooked_bilinear.circuits.decomposition import COLUMNS

    with torch.no_grad():
        logits = model(tokens)
    pred = int(logits[0, -1].argmax())
    print(f"input tokens: {tokens[0].tolist()}")
    print(f"prediction at the last position: {_token_str(model, pred)} (logit {logits[0, -1, pred]:.3f})")
    token = pred if target is None else target
    what = Target.logit(token) if versus is None else Target.logit_diff(token, versus)
    paths = decompose(model, tokens, level=level, target=what, dtype=torch.float64, progress=level == "lazy")
    print(f"{paths!r}\n{paths.check()}")
    frame = paths.top(top)[["label", "kind", "contribution", "norm", "expandable"]]
    frame.insert(0, "", ["∑" if e else "" for e in frame.pop("expandable")])
    into = f"logit of {_token_str(model, token)}" + (f" minus that of {_token_str(model, versus)}" if versus is not None else "")
    print(f"\ntop {len(frame)} paths into the {into}:")
    print(frame.to_string(index=False))
    print("\n" + "\n".join(f"  {name}: {COLUMNS[name]}" for name in ("kind", "contribution", "norm", "expandable"))
          .replace("  expandable:", "  ∑ (expandable):"))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        fig = paths.plot_top(top)
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=120, bbox_inches="tight")
        print(f"\nwrote the plot of the top paths to {Path(plot).resolve()}")
    return paths


def cmd_demo(args: argparse.Namespace) -> None:
    model = _load(args.model)
    print(model.summary())
    if args.input is not None:
        tokens = _parse_input(model, args.input)
    else:  # modular addition: "a b =" with '=' the token after the residues
        import torch

        p = model.cfg.d_vocab - 1
        tokens = torch.tensor([[37 % p, 58 % p, p]])
        print(f"example: {37 % p} + {58 % p} mod {p} = {(37 + 58) % p}")
    explain_prediction(model, tokens, level=2, top=args.top, plot=args.out)


def cmd_list(args: argparse.Namespace) -> None:
    from hooked_bilinear.loading import bundled_models
    from hooked_bilinear.loading.registry import list_pretrained

    print("Bundled models (offline):")
    try:
        from hooked_bilinear.zoo import zoo_table

        table = zoo_table()
        print(table if isinstance(table, str) else table.to_string(index=False))
    except ImportError:
        print("\n".join(f"  {name}" for name in bundled_models()))
    print("\nKnown Hub models (need network or a local HF cache):")
    print(list_pretrained(as_frame=True).to_string(index=False))


def cmd_info(args: argparse.Namespace) -> None:
    from hooked_bilinear.loading import ZOO_DIR, load_pretrained

    model = load_pretrained(args.model)
    if hasattr(model, "summary"):
        print(model.summary())
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(model.hook_dict)} hook points")
    for key, value in sorted(model.cfg.to_dict().items()):
        print(f"  {key}: {value}")
    card = ZOO_DIR / args.model / "README.md"
    if card.exists():
        print("\n" + card.read_text())


def cmd_circuits(args: argparse.Namespace) -> None:
    model = _load(args.model)
    level = args.level if args.level in ("full", "lazy") else int(args.level)
    tokens = _parse_input(model, args.input)
    target = None if args.target is None else _parse_token(model, args.target)
    versus = None if args.versus is None else _parse_token(model, args.versus)
    explain_prediction(model, tokens, level=level, top=args.top, plot=args.plot, target=target, versus=versus)


LEVELS_HELP = ("how far to expand: 1 = direct logit attribution (one term per head, MLP, bias); 2 = each MLP "
               "split into its input pairs (default); full = every path tree; lazy = best-first expansion of "
               "the largest terms")


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="load a bundled model and show the exact paths behind a prediction")
    demo.add_argument("--model", default=DEMO_MODEL, help=f"bundled name, folder or Hub id (default {DEMO_MODEL})")
    demo.add_argument("--input", default=None, help="token ids ('37 58 113') or text (default: 37 + 58 mod 113)")
    demo.add_argument("--top", type=int, default=12, help="how many of the largest paths to print (default 12)")
    demo.add_argument("--out", default="hooked_bilinear_demo.png", help="where to write the bar plot of the top paths")
    demo.set_defaults(func=cmd_demo)


def _add_list(sub) -> None:
    sub.add_parser("list", help="bundled and known Hub models").set_defaults(func=cmd_list)


def _add_info(sub) -> None:
    info = sub.add_parser("info", help="config and model card of a model")
    info.add_argument("model", help="bundled name, folder or Hub id")
    info.set_defaults(func=cmd_info)


def _add_circuits(sub) -> None:
    circ = sub.add_parser("circuits", help="exact path expansion of one logit (or logit difference) for INPUT")
    circ.add_argument("model", help="bundled name, folder or Hub id")
    circ.add_argument("input", help="token ids ('37 58 113') or text (models with a tokenizer)")
    circ.add_argument("--target", default=None,
                      help="the token whose logit at the last position is explained: an id or a one-token string "
                           "(default: the top prediction)")
    circ.add_argument("--versus", default=None,
                      help="explain logit[target] - logit[versus] instead (an id or a one-token string)")
    circ.add_argument("--level", default="2", choices=["1", "2", "full", "lazy"], help=LEVELS_HELP)
    circ.add_argument("--top", type=int, default=15, help="how many of the largest paths to print (default 15)")
    circ.add_argument("--plot", default=None, help="write a bar plot of the top paths to this file (.png, .pdf, ...)")
    circ.set_defaults(func=cmd_circuits)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooked-bilinear", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_list, _add_info, _add_circuits):  # one function per subcommand
        add(sub)
    from hooked_bilinear.graphs.command import add_parser as add_graph_command

    add_graph_command(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from hooked_bilinear.errors import CheckpointError, InputError

    try:
        args.func(args)
    except (CheckpointError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
