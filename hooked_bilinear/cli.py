"""The `hooked-bilinear` command: `demo`, `list`, `info MODEL`, `circuits MODEL INPUT`, `graph MODEL INPUT`.

    hooked-bilinear demo                          # the README's main job, offline
    hooked-bilinear list                          # bundled and known Hub models
    hooked-bilinear info modadd-113-1l
    hooked-bilinear circuits modadd-113-1l "37 58 113" --level 2 --plot paths.png
    hooked-bilinear graph induction-2l "0 5 9 17 23 5 9 17" --out graphs --html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

DEMO_MODEL = "modadd-113-1l"


def _load(name: str):
    from hooked_bilinear import HookedBilinearTransformer
    from hooked_bilinear.loading import load_pretrained

    model = load_pretrained(name)
    if not isinstance(model, HookedBilinearTransformer):
        raise SystemExit(f"error: {name!r} is an image classifier; `circuits` and `demo` need a transformer")
    return model.eval()


def _parse_input(model, text: str) -> torch.Tensor:
    """Space-separated token ids, or text when the model has a tokenizer."""
    parts = text.split()
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return torch.tensor([[int(p) for p in parts]])
    if model.tokenizer is None:
        raise SystemExit(f"error: {model.cfg.model_name} has no tokenizer: give INPUT as space-separated token ids")
    return model.to_tokens(text)


def _token_str(model, token: int) -> str:
    return repr(model.to_string([token])) if model.tokenizer is not None else str(token)


def explain_prediction(model, tokens: torch.Tensor, level=2, top: int = 12, plot: Optional[str] = None):
    """Print the prediction at the last position and the exact paths behind its logit; optionally plot them."""
    from hooked_bilinear.circuits import Target, decompose

    with torch.no_grad():
        logits = model(tokens)
    pred = int(logits[0, -1].argmax())
    print(f"input tokens: {tokens[0].tolist()}")
    print(f"prediction at the last position: {_token_str(model, pred)} (logit {logits[0, -1, pred]:.3f})")
    paths = decompose(model, tokens, level=level, target=Target.logit(pred), dtype=torch.float64,
                      progress=level == "lazy")
    print(f"{paths!r}\n{paths.check()}")
    frame = paths.top(top)[["label", "kind", "contribution", "norm"]]
    print(f"\ntop {len(frame)} paths into the logit of {_token_str(model, pred)}:")
    print(frame.to_string(index=False))
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
    explain_prediction(model, _parse_input(model, args.input), level=level, top=args.top, plot=args.plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooked-bilinear", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="load a bundled model and show the exact paths behind a prediction")
    demo.add_argument("--model", default=DEMO_MODEL)
    demo.add_argument("--input", default=None, help="token ids ('37 58 113') or text")
    demo.add_argument("--top", type=int, default=12)
    demo.add_argument("--out", default="hooked_bilinear_demo.png", help="where to write the plot")
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("list", help="bundled and known Hub models").set_defaults(func=cmd_list)
    info = sub.add_parser("info", help="config and model card of a model")
    info.add_argument("model")
    info.set_defaults(func=cmd_info)
    circ = sub.add_parser("circuits", help="exact path expansion of the prediction for INPUT")
    circ.add_argument("model")
    circ.add_argument("input", help="token ids ('37 58 113') or text (models with a tokenizer)")
    circ.add_argument("--level", default="2", choices=["1", "2", "full", "lazy"])
    circ.add_argument("--top", type=int, default=15)
    circ.add_argument("--plot", default=None, help="write a bar plot of the top paths here")
    circ.set_defaults(func=cmd_circuits)
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
