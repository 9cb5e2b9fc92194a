"""Write (or check) the parameter tables of README.md and docs/parameters.md from the code.

    python -m vpr_ros.apps.parameter_docs           # rewrite the tables in place
    python -m vpr_ros.apps.parameter_docs --check   # exit 1 when a table differs from the code

The tables sit between ``<!-- parameters:NAME -->`` and ``<!-- /parameters -->`` markers, so
the prose around them is hand-written and the rows always equal the code's defaults.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ..config import PipelineConfig
from ..node_parameters import NODE_PARAMETERS
from ..rerank import registry

REPO_ROOT = Path(__file__).resolve().parents[2]
# The README shows the parameters most users touch; docs/parameters.md shows all of them.
README_PARAMETERS = (
    "model",
    "weights",
    "device",
    "keyframe_min_period",
    "keyframe_min_translation",
    "keyframe_min_rotation_deg",
    "top_k",
    "exclude_recent_keyframes",
    "exclude_recent_seconds",
    "exclude_recent_distance_m",
    "stationary_similarity",
    "index_factory",
    "localization_only",
    "reranker",
    "geometric_min_inliers",
    "min_similarity",
    "consistency_mode",
    "consistency",
    "image_topic",
    "camera_info_topic",
    "depth_topic",
    "odom_topic",
    "base_frame",
    "camera_extrinsics",
    "map_path",
    "map_save_period",
)
_BLOCK = re.compile(r"(<!-- parameters:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /parameters -->)", re.S)


def _value(value) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "`''`"
    if isinstance(value, float) and math.isinf(value):
        return "`inf`" if value > 0 else "`-inf`"
    return f"`{value}`"


def _meaning(description: str, meta: dict) -> str:
    text = description.replace("|", "\\|")
    if "range" in meta:
        low, high = meta["range"]
        text += f" (range {'-inf' if low is None else low} to {'inf' if high is None else high})"
    if "choices" in meta:
        text += f" (one of {', '.join(map(str, meta['choices']))})"
    return text


def parameter_rows() -> dict[str, tuple[str, str, str]]:
    """Every parameter: name -> (default, meaning, where it is read)."""
    defaults = PipelineConfig().to_dict()
    metadata = PipelineConfig.parameter_metadata()
    descriptions = PipelineConfig.descriptions()
    descriptions["reranker"] = "re-ranker: " + ", ".join(registry.reranker_names())
    rows = {
        name: (_value(defaults[name]), _meaning(descriptions[name], metadata[name]), "pipeline")
        for name in defaults
    }
    for p in NODE_PARAMETERS.values():
        meta = {"range": p.range} if p.range else {}
        rows[p.name] = (_value(p.default), _meaning(p.description, meta), ", ".join(p.nodes))
    return rows


def _table(names, rows, with_nodes: bool) -> str:
    head = "| parameter | default | meaning |" + (" read by |" if with_nodes else "")
    rule = "|---|---|---|" + ("---|" if with_nodes else "")
    lines = [head, rule]
    for name in names:
        default, meaning, where = rows[name]
        lines.append(f"| `{name}` | {default} | {meaning} |" + (f" {where} |" if with_nodes else ""))
    return "\n".join(lines) + "\n"


def tables() -> dict[str, str]:
    """Marker name -> table text."""
    rows = parameter_rows()
    out = {
        "readme": _table(README_PARAMETERS, rows, with_nodes=False),
        "pipeline": _table(PipelineConfig.generic_parameter_names(), rows, with_nodes=False),
        "nodes": _table(list(NODE_PARAMETERS), rows, with_nodes=True),
    }
    for name in registry.reranker_names():
        names = [n for n, (s, _) in registry.reranker_parameters().items() if s.name == name]
        if names:
            out[f"reranker_{name}"] = _table(names, rows, with_nodes=False)
    return out


def render(text: str, generated: dict[str, str]) -> str:
    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in generated:
            raise KeyError(f"no parameter table named '{name}' (known: {', '.join(generated)})")
        return match.group(1) + generated[name] + match.group(4)

    return _BLOCK.sub(fill, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="parameter_docs", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a table is stale")
    parser.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/parameters.md")
    args = parser.parse_args(argv)
    generated = tables()
    stale = []
    for path in args.files or [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "parameters.md"]:
        text = path.read_text()
        new = render(text, generated)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if stale:
        verb = "stale (run python -m vpr_ros.apps.parameter_docs)" if args.check else "updated"
        print("\n".join(f"{p}: parameter tables {verb}" for p in stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
