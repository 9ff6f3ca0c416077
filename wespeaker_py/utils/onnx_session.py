"""The one way the package opens an onnxruntime session (CPU, quiet, bounded threads).

Every ONNX graph the package runs (exported speaker models, the waveform graphs behind
the API, the Silero VAD, the checks that follow an export) is opened here, so that the
options and the fork guard below hold for all of them.

The fork guard: an onnxruntime session that has become garbage in a reference cycle,
and is still uncollected when the process forks (a DataLoader worker of ``train`` or
``extract``), is freed by the child's garbage collector; its destructor then waits
forever on thread-pool threads that exist only in the parent. Collecting garbage just
before every fork, once any session has been opened, frees such a session in the parent.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import os
from typing import Any, Optional, Tuple, Type

from wespeaker_py.errors import MissingPackagesError
from wespeaker_py.utils.threads import check_num_threads

_fork_guard_registered = False


def guard_forks_against_session_garbage() -> None:
    """Collect garbage before every later ``os.fork`` of this process (registered once)."""
    global _fork_guard_registered
    if not _fork_guard_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=gc.collect)
        _fork_guard_registered = True


def import_onnxruntime(purpose: str, install: str = "pip install onnxruntime") -> Any:
    """The ``onnxruntime`` module; its absence is a :class:`MissingPackagesError` saying
    that ``purpose`` needs it and how to ``install`` it."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise MissingPackagesError(f"{purpose} needs the package onnxruntime: "
                                   f"{install}") from None


# onnxruntime's error classes for a file that it cannot load or parse as a graph; its
# others (RuntimeException, EPFail, EngineError, ...) report failures of a run or of a
# provider, out of memory included, which say nothing about the file. Not every version
# has every class: the missing ones are left out.
LOAD_ERROR_NAMES = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel",
                    "NoSuchFile", "NotImplemented")


def onnxruntime_errors() -> Tuple[Type[Exception], ...]:
    """The exception classes (of :data:`LOAD_ERROR_NAMES` that this onnxruntime has) that
    a session raises for a file it cannot load as a graph; none when onnxruntime is not
    installed. A wrong argument raises Python's own ``TypeError``/``ValueError`` instead,
    which is not one of them."""
    try:
        state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    except ImportError:
        return ()
    found = (getattr(state, name, None) for name in LOAD_ERROR_NAMES)
    return tuple(error for error in found
                 if isinstance(error, type) and issubclass(error, Exception))


def session_options(onnxruntime: Any, num_threads: Optional[int] = None) -> Any:
    """Session options that log errors only (an optional graph input is, to onnxruntime's
    optimiser, an initializer it cannot fold, which it warns about on every load), with
    ``num_threads`` intra-op threads when given (a whole number >= 1: onnxruntime itself
    takes 0 and negative counts without a word)."""
    options = onnxruntime.SessionOptions()
    with contextlib.suppress(AttributeError):
        options.log_severity_level = 3
    num_threads = check_num_threads(num_threads)
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return options


def open_onnx_session(path: str, num_threads: Optional[int] = None, *,
                      purpose: str = "running an ONNX model",
                      install: str = "pip install onnxruntime") -> Any:
    """An onnxruntime ``InferenceSession`` of the graph at ``path`` on the CPU."""
    onnxruntime = import_onnxruntime(purpose, install)
    guard_forks_against_session_garbage()
    return onnxruntime.InferenceSession(path, session_options(onnxruntime, num_threads),
                                        providers=["CPUExecutionProvider"])
