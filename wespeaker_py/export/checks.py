"""What every exporter shares: the fbank model to export, and checking the export against it."""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import tempfile
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from wespeaker_py.config import ConfigError, ModelConfig
from wespeaker_py.config.schema import FRONTENDS
from wespeaker_py.errors import RunFailedError
from wespeaker_py.runtime import SpeakerEmbedder, load_embedder
from wespeaker_py.utils.logging_utils import get_logger

logger = get_logger(__name__)

# Front-ends with no weights of their own, which the exporters can rebuild or trace
# (FRONTENDS' exportable entries).
EXPORTABLE_FRONTENDS = tuple(name for name, choice in FRONTENDS.items() if choice.exportable)
# Exporters that record one run (tracing) use this many frames for the example input.
EXAMPLE_FRAMES = 200
# the example input's shape, then (batch, frames) pairs that differ from it in both axes
CHECK_SHAPES: Tuple[Tuple[int, int], ...] = ((1, 200), (3, 123), (2, 301))


class ExportMismatchError(RunFailedError):
    """The exported model does not compute what the eager model computes."""


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence what torch says while it traces or exports a model whose result is then
    checked against eager (:func:`check_against_eager`): that torch.jit and the TorchScript
    ONNX exporter are deprecated upstream (they are what libtorch and onnxruntime users
    load), and that a traced branch or a folded constant "might be incorrect" (the check
    finds out whether it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        yield


# file descriptors of the standard output and error
_STANDARD_FDS = (1, 2)


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _run_each(actions: Sequence[Callable[[], None]]) -> None:
    """Run every action even when one fails, then raise the first error."""
    first: Optional[BaseException] = None
    for action in actions:
        try:
            action()
        except Exception as error:   # the rest still run; the first is raised below
            if first is None:
                first = error
    if first is not None:
        raise first


def _pass_on(fd: int, buffer: Any, failed: bool) -> None:
    """Write what ``buffer`` held back of ``fd`` to ``fd``, or log it when the block ``failed``."""
    buffer.seek(0)
    output = buffer.read()
    if failed and output:
        logger.debug("output of the failed export (fd %d):\n%s", fd,
                     output.decode(errors="replace"))
    elif not failed:
        _write_all(fd, output)


@contextlib.contextmanager
def output_held_back() -> Iterator[None]:
    """Hold back what the block writes to the standard output and error, at the level of
    file descriptors (torch's C++ code writes there too): it is passed on when the block
    ends, and only logged (at debug level) when the block raises. The redirect is
    process-wide: what other threads write meanwhile is held back (and dropped) too.

    Both descriptors are restored before either one's output is passed on, so a failing
    write (a closed pipe) leaves neither redirected; it is raised once all are written.

    torch's TorchScript ONNX exporter switches its log on at its first export and leaves it
    on (``setup_onnx_logging`` tests the function ``_jit_is_onnx_log_enabled`` instead of
    calling it), and then prints the whole traced graph before raising an error, such as
    for an operator the opset cannot express; the one line we make of that error says
    all a user needs.
    """
    with contextlib.ExitStack() as stack:
        held = {}
        for fd in _STANDARD_FDS:
            try:
                saved = os.dup(fd)
            except OSError:   # closed: nothing to hold back
                continue
            stack.callback(os.close, saved)
            held[fd] = (saved, stack.enter_context(tempfile.TemporaryFile()))
        _flush_python_streams()
        redirected = []
        failed = True
        try:
            for fd, (_, buffer) in held.items():
                os.dup2(buffer.fileno(), fd)
                redirected.append(fd)
            yield
            failed = False
        finally:
            _run_each([_flush_python_streams]
                      + [functools.partial(os.dup2, held[fd][0], fd) for fd in redirected]
                      + [functools.partial(_pass_on, fd, held[fd][1], failed)
                         for fd in redirected])


def load_exportable_embedder(config: ModelConfig, checkpoint: str) -> SpeakerEmbedder:
    """The trained model of ``config`` + ``checkpoint``; refuses an SSL front-end first."""
    frontend = config.dataset_args.frontend
    if frontend not in EXPORTABLE_FRONTENDS:
        raise ConfigError(f"config key 'dataset_args.frontend' is {frontend!r}: export needs "
                          f"a model on {' or '.join(EXPORTABLE_FRONTENDS)} features")
    return load_embedder(config, checkpoint)


def exportable_model(embedder: SpeakerEmbedder, source: str) -> Tuple[nn.Module, int]:
    """The eval-mode speaker model of an ``embedder`` on an exportable front-end
    (:data:`EXPORTABLE_FRONTENDS`) and its input feature dimension."""
    exportable = tuple(FRONTENDS[name].factory() for name in EXPORTABLE_FRONTENDS)
    if not isinstance(embedder.frontend, exportable):
        raise ConfigError(f"{source}: only models on {' or '.join(EXPORTABLE_FRONTENDS)} "
                          f"features export, this one uses {type(embedder.frontend).__name__}")
    return embedder.model.eval(), embedder.frontend.output_dim


def example_features(batch: int, frames: int, feat_dim: int, seed: int = 0) -> torch.Tensor:
    """Reproducible random ``[batch, frames, feat_dim]`` features."""
    return torch.randn(batch, frames, feat_dim, generator=torch.Generator().manual_seed(seed))


def embedding_size(model: nn.Module, feat_dim: int) -> int:
    """Size of the embeddings of ``model`` (eval mode), from one run on random features."""
    with torch.no_grad():
        return int(model.eval()(example_features(1, EXAMPLE_FRAMES, feat_dim)).shape[1])


# an export is taken when it is within this many times eager float32's own error (against
# float64) of eager: the rounding of deep models (ResNet221/293, Gemini 183/237) alone can
# exceed a fixed tolerance
EAGER_ERROR_FACTOR = 4.0


def check_against_eager(exported: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
                        feat_dim: int, shapes: Sequence[Tuple[int, int]] = CHECK_SHAPES,
                        tolerance: float = 1e-4) -> float:
    """Largest difference between ``exported`` and ``model`` on random features, relative
    to the output scale when that exceeds 1 (untrained models can output huge values).

    Raises :class:`ExportMismatchError` when it exceeds both ``tolerance`` and
    :data:`EAGER_ERROR_FACTOR` times eager's own float32 error on that input (see
    :class:`EagerReference`), or a shape differs.
    """
    reference = EagerReference(model)
    worst = 0.0
    for index, (batch, frames) in enumerate(shapes):
        feats = example_features(batch, frames, feat_dim, seed=index + 1)
        with torch.no_grad():
            got = exported(feats)
        worst = max(worst, reference.compare(got, (feats,), f"input {tuple(feats.shape)}",
                                             tolerance))
    return worst


class EagerReference:
    """The eager ``model`` an export is checked against: :meth:`compare` takes an export's
    output within ``tolerance`` of the model's, or within :data:`EAGER_ERROR_FACTOR` times
    the model's own float32 error on that input, measured against a float64 copy of it
    (:func:`float64_copy`, made once, when an input first exceeds the tolerance)."""

    def __init__(self, model: Callable[..., torch.Tensor]):
        self.model = model
        self._float64 = functools.cache(lambda: float64_copy(model))

    def compare(self, got: torch.Tensor, inputs: Sequence[torch.Tensor], what: str,
                tolerance: float, **options: Any) -> float:
        """:func:`compare_with_eager` of ``got`` with ``model(*inputs, **options)``; ``what``
        names the input in its error."""
        with torch.no_grad():
            expected = self.model(*inputs, **options)
            return compare_with_eager(
                got, expected, what, tolerance,
                eager_error=lambda: float32_error(self._float64(), inputs, expected, options))


def _relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference, relative to ``expected``'s scale when that exceeds 1."""
    scale = max(1.0, float(expected.abs().max()))
    return float((got.double() - expected.double()).abs().max()) / scale


def float64_copy(model: Callable[..., torch.Tensor]) -> Optional[nn.Module]:
    """A float64 copy of ``model``; None when it is no module (a plain function)."""
    return copy.deepcopy(model).double() if isinstance(model, nn.Module) else None


def float32_error(float64_model: Optional[nn.Module], inputs: Sequence[torch.Tensor],
                  expected: torch.Tensor, options: Optional[Dict[str, Any]] = None
                  ) -> Optional[float]:
    """How far ``expected`` (a model's float32 output for ``inputs`` and keyword
    ``options``) is from ``float64_model``'s (its :func:`float64_copy`) for the same inputs
    in float64, as :func:`compare_with_eager` measures differences; None without a copy or
    for a model that does not run in float64 (one that makes float32 tensors of its own)."""
    if float64_model is None:
        return None
    try:
        exact = float64_model(*(tensor.double() for tensor in inputs), **(options or {}))
    except RuntimeError:
        return None
    return _relative_difference(expected, exact)


def compare_with_eager(got: torch.Tensor, expected: torch.Tensor, what: str,
                       tolerance: float,
                       eager_error: Optional[Callable[[], Optional[float]]] = None) -> float:
    """Largest difference of an exported output from the eager one, relative to the output
    scale when that exceeds 1 (untrained models can output huge values).

    Raises :class:`ExportMismatchError` naming ``what`` (the input) when the shapes differ
    or the difference exceeds ``tolerance`` and, when ``eager_error`` (eager float32's own
    error on this input) is given, :data:`EAGER_ERROR_FACTOR` times that error.
    """
    if got.shape != expected.shape:
        raise ExportMismatchError(f"{what}: exported output has shape {tuple(got.shape)}, "
                                  f"eager {tuple(expected.shape)}")
    difference = _relative_difference(got, expected)
    if difference <= tolerance:
        return difference
    rounding = None if eager_error is None else eager_error()
    if rounding is None:
        raise ExportMismatchError(f"{what}: exported output differs from eager by "
                                  f"{difference:.3g} (> {tolerance})")
    if not difference <= EAGER_ERROR_FACTOR * rounding:
        raise ExportMismatchError(
            f"{what}: exported output differs from eager by {difference:.3g}, more than "
            f"{tolerance} and {EAGER_ERROR_FACTOR:g} times eager float32's own error "
            f"({rounding:.3g}, against float64)")
    return difference
