"""Check that our models reproduce WeSpeaker's: same state_dict, same embeddings.

For each model name, build WeSpeaker's model and ours with the recipe's
model_args, give WeSpeaker's BatchNorm statistics random values, load its
state_dict into ours with ``strict=True`` and compare eval-mode embeddings on
random features (for WeSpeaker models returning a tuple, its last element is
the embedding). Needs WeSpeaker's source (see dump_state_dict_keys.py):

    python tools/compare_with_wespeaker.py --sys_path /tmp/wsref --models ResNet34 XVEC ...

Exits with status 1 if any model differs by more than ``--tolerance``.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import torch
import torch.nn as nn

from dump_state_dict_keys import find_factory
from wespeaker_py.cli.common import FlagParser, add_flag, run_main
from wespeaker_py.models import get_model, model_frontend
from wespeaker_py.models.complexity import recipe_feat_dim, recipe_model_args


def _randomize_batchnorm_statistics(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics, so that a mismatch in their use shows up."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape,
                                                        generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape,
                                                      generator=generator))


def compare(package: str, name: str, num_frames: int, feat_dim: Optional[int] = None,
            seed: int = 0) -> float:
    """Max abs embedding difference between ``package``'s model ``name`` and ours.

    ``feat_dim`` None: the recipe's input size (80, or 72 for ReDimNet).
    """
    if feat_dim is None:
        feat_dim = recipe_feat_dim(name)
    model_args = recipe_model_args(name, feat_dim)
    torch.manual_seed(seed)
    reference = find_factory(package, name)(**model_args)
    ours = get_model(name, **model_args)
    reference_shapes = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    our_shapes = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
    if reference_shapes != our_shapes:
        missing = sorted(set(reference_shapes) - set(our_shapes))
        extra = sorted(set(our_shapes) - set(reference_shapes))
        raise AssertionError(f"{name}: state_dicts differ; only in reference: {missing[:5]}, "
                             f"only in ours: {extra[:5]}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _randomize_batchnorm_statistics(reference, generator)
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.eval()
    ours.eval()
    features = torch.randn(2, num_frames, feat_dim, generator=generator)
    # WeSpeaker's TFMel models (ReDimNet2) take [B, feat_dim, T]; ours frames first
    reference_input = features.transpose(1, 2) if model_frontend(name) == "tfmel" else features
    with torch.no_grad():
        expected = reference(reference_input)
        if isinstance(expected, tuple):
            expected = expected[-1]
        return (expected - ours(features)).abs().max().item()


def main(argv: Optional[List[str]] = None) -> int:
    """Compare each model; the exit status is 1 when any differs."""
    parser = FlagParser(description=__doc__.splitlines()[0])
    add_flag(parser, "models", nargs="+", required=True, help="WeSpeaker model names")
    add_flag(parser, "package", default="wespeaker.models")
    add_flag(parser, "sys_path", default=None, help="directory holding the package")
    add_flag(parser, "frames", type=int, default=300, help="input length in frames")
    add_flag(parser, "tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if args.sys_path:
        sys.path.insert(0, args.sys_path)
    torch.set_num_threads(2)
    failed = False
    for name in args.models:
        difference = compare(args.package, name, args.frames)
        status = "ok" if difference < args.tolerance else "DIFFERENT"
        failed |= status != "ok"
        print(f"{name}: max abs embedding difference {difference:.3g} {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
