"""Record the state_dict keys and shapes of speaker models into a JSON manifest.

The manifest maps a model name to ``[[key, shape], ...]`` in state_dict order;
tests/test_models.py checks our models against it. It is generated from
WeSpeaker's own code, which CI does not have:

    git -C WESPEAKER_GIT archive HEAD wespeaker | tar -x -C /tmp/wsref
    : > /tmp/wsref/wespeaker/__init__.py   # skip its CLI imports (silero_vad, ...)
    python tools/dump_state_dict_keys.py --sys_path /tmp/wsref --package wespeaker.models \\
        --models ResNet34 XVEC ...

Entries for the named models are added to (or replace those in) the output
file; other entries are kept. Models are built with the VoxCeleb v2 recipe's
model_args (wespeaker_py.models.complexity.recipe_model_args). With
``--package wespeaker_py.models`` the same tool dumps our implementation.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.models import family_module_name
from wespeaker_py.models.complexity import recipe_model_args
from wespeaker_py.utils.atomic_files import atomic_open

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "tests", "data", "wespeaker_state_dict_keys.json")


def find_factory(package: str, name: str) -> Callable[..., nn.Module]:
    """The factory of model ``name`` in ``package`` (WeSpeaker's family module layout).

    A family module either has a ``MODELS`` dict (ours) or a function named
    after the model (WeSpeaker's).
    """
    family = family_module_name(name)
    module = importlib.import_module(f"{package}.{family}")
    registry = getattr(module, "MODELS", None)
    factory = registry.get(name) if isinstance(registry, dict) else getattr(module, name, None)
    if factory is None:
        raise ValueError(f"{package}.{family} has no model {name!r}")
    return factory


def state_dict_manifest(model: nn.Module) -> List[List[object]]:
    """``[[key, shape], ...]`` of the model's state_dict, in order."""
    return [[key, list(value.shape)] for key, value in model.state_dict().items()]


def dump(package: str, names: List[str], output: str) -> Dict[str, List[List[object]]]:
    """Add the manifests of ``names`` built from ``package`` to the JSON file ``output``."""
    manifest: Dict[str, List[List[object]]] = {}
    if os.path.exists(output):
        with open(output, encoding="utf-8") as handle:
            manifest = json.load(handle)
    for name in names:
        model = find_factory(package, name)(**recipe_model_args(name))
        manifest[name] = state_dict_manifest(model)
    with atomic_open(output, "w", encoding="utf-8") as handle:
        handle.write(format_manifest(manifest))
    return manifest


def format_manifest(manifest: Dict[str, List[List[object]]]) -> str:
    """JSON with one ``[key, shape]`` pair a line, models sorted, so diffs stay readable."""
    blocks = []
    for name in sorted(manifest):
        pairs = ",\n".join(json.dumps(pair) for pair in manifest[name])
        blocks.append(f"{json.dumps(name)}: [\n{pairs}\n]")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "models", nargs="+", required=True, help="WeSpeaker model names")
    add_flag(parser, "package", default="wespeaker.models",
             help="package holding the family modules (default: wespeaker.models)")
    add_flag(parser, "sys_path", default=None,
             help="directory to put first on sys.path (where the package lives)")
    add_flag(parser, "output", default=DEFAULT_OUTPUT, help="JSON manifest to update")
    args = parser.parse_args(argv)
    if args.sys_path:
        sys.path.insert(0, args.sys_path)
    dump(args.package, args.models, args.output)
    print(f"wrote {len(args.models)} model(s) to {args.output}")


if __name__ == "__main__":
    sys.exit(run_main(main))
