"""config.yaml, rendered from the config dataclasses: every key with its default and its
``setting`` doc as a comment (beside the key when it fits, above it otherwise).

    .venv/bin/python -m core.config_yaml --write config.yaml   # after changing a default or doc
    .venv/bin/python -m core.config_yaml --check config.yaml   # exit 1 if the file is stale

tests/core/test_config.py fails while the committed config.yaml differs from ``render()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from core.config import Config
from core.config_load import section_class

WIDTH = 100  # the repo's line length
COMMAND = ".venv/bin/python -m core.config_yaml --write config.yaml"
HEADER = f"""\
# Tickwise configuration: every tunable, read once at start-up into typed dataclasses
# (core/config.py). A bad value stops start-up with a message naming the key and what is allowed.
#
# Overrides, strongest last: this file < TICKWISE_* environment variables < command-line flags.
#   Environment: TICKWISE_<SECTION>__<KEY>, e.g. TICKWISE_REPLAY__SPEED=30,
#   TICKWISE_SERVER__PORT=8060, TICKWISE_MODELS__CNN__WINDOW=64,
#   TICKWISE_MARKET__SYMBOLS="ETH/USDT,BTC/USDT" (lists comma-separated).
#   Flags: --config PATH, --source, --recording, --speed, --host, --port, --no-load-models
#   (python app.py --help).
#
# This file is generated from the defaults and comments declared in code (core/config.py, and
# each model's config beside its network in nn/): change them there, then run
#   {COMMAND}
# For settings of your own, pass a copy with --config PATH, or use environment variables or flags.
"""


def _yaml(value: Any) -> str:
    """One value as YAML flow text: 600.0, null, [ETH/USDT, BTC/USDT], {1s: 32, 1m: 16}."""
    if isinstance(value, tuple):
        value = list(value)
    elif isinstance(value, Mapping):
        value = dict(value)
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf)
    return text.removesuffix("\n").removesuffix("\n...")  # a bare scalar ends its document


def _above(doc: str, pad: str) -> list[str]:
    return textwrap.wrap(doc, WIDTH, initial_indent=f"{pad}# ", subsequent_indent=f"{pad}# ",
                         break_on_hyphens=False) if doc else []


def _keys(items: list[tuple[str, str]], pad: str) -> list[str]:
    """Plain keys (``key: value`` text, doc): each doc beside its key in one column where the
    most of them fit, the rest above their key."""
    def fits(col: int, head: str, doc: str) -> bool:
        return len(head) + 2 <= col and col + 2 + len(doc) <= WIDTH

    cols = sorted({len(head) + 2 for head, _ in items})
    col = max(cols, key=lambda c: (sum(fits(c, h, d) for h, d in items if d), -c), default=0)
    lines = []
    for head, doc in items:
        if doc and fits(col, head, doc):
            lines.append(f"{head.ljust(col)}# {doc}")
        else:
            lines += [*_above(doc, pad), head]
    return lines


def _block(section: Any, fields: list[dataclasses.Field], depth: int) -> list[str]:
    """The lines of some of one dataclass instance's keys, indented by ``depth`` levels."""
    pad = "  " * depth
    hints = typing.get_type_hints(type(section))
    lines: list[str] = []
    plain: list[tuple[str, str]] = []  # a run of plain keys, aligned together
    for f in fields:
        value, doc = getattr(section, f.name), f.metadata.get("doc", "")
        if section_class(f, hints[f.name]) is None:
            plain.append((f"{pad}{f.name}: {_yaml(value)}", doc))
            continue
        lines += [*_keys(plain, pad), *_above(doc, pad), f"{pad}{f.name}:",
                  *_block(value, list(dataclasses.fields(value)), depth + 1)]
        plain = []
    return lines + _keys(plain, pad)


def render(cfg: Config | None = None) -> str:
    """The whole config.yaml for ``cfg`` (default: the defaults, with every registered model):
    the header, then each top-level key or section after a blank line."""
    cfg = Config() if cfg is None else cfg
    lines = [HEADER.rstrip("\n")]
    for f in dataclasses.fields(cfg):
        lines += ["", *_block(cfg, [f], 0)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.config_yaml", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="PATH", help="write the rendered config.yaml here")
    action.add_argument("--check", metavar="PATH", help="exit 1 unless PATH equals the rendering")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        Path(args.write).write_text(text)
        return 0
    if Path(args.check).read_text() != text:
        print(f"{args.check} differs from the defaults in code; run: {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
