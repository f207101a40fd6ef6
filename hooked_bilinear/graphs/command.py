"""`hooked-bilinear graph MODEL INPUT`: build an exact attribution graph, print it, write the viewers' files.

    hooked-bilinear graph induction-2l "0 5 9 17 23 5 9 17" --out graphs --html
    hooked-bilinear graph tiny-lm "Once upon a time" --target " there" --serve
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path


def add_parser(sub) -> None:
    """Register the `graph` subcommand on the CLI's subparsers."""
    p = sub.add_parser("graph", help="exact attribution graph of INPUT: circuit-tracer files, offline html, viewer",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled name, local folder or Hub name")
    p.add_argument("input", help="token ids ('37 58 113') or text (models with a tokenizer)")
    p.add_argument("--target", action="append", default=None, metavar="TOKEN",
                   help="a target logit: token id, 'A-B' for logit[A] - logit[B], or a token string; repeatable "
                        "(default: the top logits up to 95%% probability, at most 10)")
    p.add_argument("--max-nodes", type=int, default=None, help="rows (explained nodes) to choose by influence")
    p.add_argument("--out", default="graphs", help="folder for {slug}.json, graph-metadata.json and the html")
    p.add_argument("--slug", default=None, help="the graph's name in the viewer (default: model and input hash)")
    p.add_argument("--top", type=int, default=15, help="how many nodes to print")
    p.add_argument("--html", action="store_true", help="also write {slug}.html, the self-contained offline page")
    p.add_argument("--why", type=int, default=0, metavar="K",
                   help="say in each node's details which head carried its input from other positions, with the "
                        "top K query×key pairs of that head's score (softmax models)")
    p.add_argument("--serve", action="store_true",
                   help="serve circuit-tracer's viewer over --out until Ctrl-C (needs the circuit-tracer wheel and "
                        "a browser that is online)")
    p.add_argument("--port", type=int, default=8041, help="port for --serve (default 8041)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """The `graph` subcommand (see the module docstring)."""
    from hooked_bilinear.cli import _load, _parse_input
    from hooked_bilinear.graphs import attribute, serve, to_circuit_tracer, to_html

    model = _load(args.model)
    tokens = _parse_input(model, args.input)
    kwargs = {} if args.max_nodes is None else {"max_nodes": args.max_nodes}
    graph = attribute(model, tokens, parse_targets(model, args.target), **kwargs)
    print(f"{graph!r}\n{graph.check()}")
    print(f"\ntop {args.top} nodes by influence on the targets:")
    print(top_nodes(graph, args.top).to_string(index=False))

    slug = args.slug or default_slug(model.cfg.model_name, tokens)
    path = to_circuit_tracer(graph, args.out, slug, why=args.why)
    listing = Path(args.out).resolve() / "graph-metadata.json"
    print(f"\nwrote circuit-tracer's graph files: {path.resolve()} and {listing}")
    if args.html:
        page = to_html(graph, Path(args.out) / f"{slug}.html", why=args.why)
        print(f"wrote the offline page: {page.resolve()}")
    if args.serve:
        try:
            server = serve(args.out, port=args.port)
        except ImportError as e:  # the circuit-tracer wheel is missing: say what to install
            raise SystemExit(f"error: {e}") from e
        print(f"circuit-tracer's viewer: {server.url}index.html?slug={slug}  (its page loads d3, dagre and pako "
              "from CDNs: open it in a browser that is online; Ctrl-C stops)")
        server.wait()


def parse_targets(model, values):
    """`--target` values as `attribute`'s targets: None, or a list of token ids and `Target.logit_diff`s."""
    if not values:
        return None
    from hooked_bilinear.circuits import Target
    from hooked_bilinear.errors import InputError

    targets = []
    for value in values:
        if re.fullmatch(r"\d+", value.strip()):
            targets.append(int(value))
        elif re.fullmatch(r"\d+-\d+", value.strip()):
            a, b = value.strip().split("-")
            targets.append(Target.logit_diff(int(a), int(b)))
        elif model.tokenizer is not None:
            targets.append(int(model.to_single_token(value)))
        else:
            raise InputError(f"--target {value!r} is not a token id and {model.cfg.model_name} has no tokenizer: "
                             "expected an id like 17 or a difference like 17-4")
    return targets


def top_nodes(graph, n: int):
    """The `n` non-logit nodes of largest influence (or |activation| when influence is unknown)."""
    nodes = graph.nodes[graph.nodes["kind"] != "logit"]
    key = nodes["influence"].fillna(-1.0) if nodes["influence"].notna().any() else nodes["activation"].abs()
    cols = [c for c in ("node_id", "label", "kind", "activation", "influence") if c in nodes.columns]
    return nodes.assign(_key=key).nlargest(n, "_key")[cols]


def default_slug(model_name: str, tokens) -> str:
    """A file-name-safe slug: the model name and a short hash of the token ids."""
    digest = hashlib.sha1(str(tokens.tolist()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', str(model_name or 'model')).strip('-.') or 'model'}-{digest}"
