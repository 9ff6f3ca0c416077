"""One error hierarchy: every exception class of the package derives from
wespeaker_py.errors, and the command line maps them to exit statuses by isinstance."""
import importlib
import inspect
import pkgutil

import pytest

import wespeaker_py
from wespeaker_py.cli.common import UsageError, run_main
from wespeaker_py.errors import (RUN_FAILED_STATUS, USER_ERROR_STATUS, RunFailedError,
                                 WespeakerError, exit_status, first_line)


def _package_exception_classes():
    """Every exception class defined in a module of the package, warnings and Ctrl-C aside
    (a KeyboardInterrupt that carries a hint must stay out of ``except Exception``)."""
    found = []
    for info in pkgutil.walk_packages(wespeaker_py.__path__, "wespeaker_py."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and not issubclass(obj, (Warning, KeyboardInterrupt))
                    and obj.__module__ == info.name):
                found.append(obj)
    return found


PACKAGE_ERRORS = _package_exception_classes()


def test_the_walk_finds_the_errors_of_several_layers():
    modules = {cls.__module__ for cls in PACKAGE_ERRORS}
    assert {"wespeaker_py.errors", "wespeaker_py.config.fields", "wespeaker_py.utils.tables",
            "wespeaker_py.utils.paths", "wespeaker_py.utils.atomic_files",
            "wespeaker_py.train.loop", "wespeaker_py.cli.common"} <= modules


@pytest.mark.parametrize("cls", PACKAGE_ERRORS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_package_error_derives_from_the_root_and_maps_to_its_status(cls):
    assert issubclass(cls, WespeakerError)
    error = cls.__new__(cls)   # no constructor arguments needed to ask for its status
    expected = RUN_FAILED_STATUS if issubclass(cls, RunFailedError) else USER_ERROR_STATUS
    assert exit_status(error) == expected


def test_errors_keep_their_builtin_bases():
    from wespeaker_py.config import ConfigError
    from wespeaker_py.utils.atomic_files import DiskFullError
    from wespeaker_py.utils.tables import DataFormatError
    assert issubclass(ConfigError, ValueError) and issubclass(DataFormatError, ValueError)
    assert issubclass(DiskFullError, OSError) and issubclass(RunFailedError, RuntimeError)
    full = DiskFullError("out/x.ark", OSError(28, "No space left on device"))
    assert full.errno == 28 and str(full) == "no space left on device while writing out/x.ark"


def test_the_mapping_goes_by_class_not_by_name(capsys):
    # classes the mapping cannot know by name: only isinstance sorts them
    class NewInputError(WespeakerError):
        pass

    class NewRunError(RunFailedError):
        pass

    def raising(error):
        def main(argv):
            raise error
        return main

    assert run_main(raising(NewInputError("bad thing")), [], prog="x") == USER_ERROR_STATUS
    assert capsys.readouterr().err.startswith("x: error: bad thing (run with --debug")
    assert run_main(raising(NewRunError("no result")), [], prog="x") == RUN_FAILED_STATUS
    assert run_main(raising(FileNotFoundError(2, "No such file", "a.wav")), [],
                    prog="x") == USER_ERROR_STATUS
    assert "x: error: a.wav: No such file" in capsys.readouterr().err
    assert run_main(raising(UsageError("give one audio file")), [], prog="x") == 2
    assert capsys.readouterr().err == "x: error: give one audio file\n"
    with pytest.raises(ValueError):   # a plain ValueError is a bug: it keeps its traceback
        run_main(raising(ValueError("oops")), [], prog="x")


def test_an_interrupt_with_a_hint_is_still_ctrl_c_and_no_error():
    from wespeaker_py.cli.common import InterruptedWithHint
    assert issubclass(InterruptedWithHint, KeyboardInterrupt)
    assert not issubclass(InterruptedWithHint, Exception)   # never caught as an error


def test_first_line_quotes_another_librarys_message_cut_at_a_word():
    error = RuntimeError("failed finding central directory. This is an internal error.\nmore")
    assert first_line(error) == "failed finding central directory. This is an internal error."
    assert first_line(error, sentence=True) == "failed finding central directory."
    assert first_line(error, limit=20) == "failed finding ..."
    assert first_line(RuntimeError("")) == "RuntimeError"
