"""Every option the documentation gives a command is one that command accepts.

Commands are found in fenced code blocks (backslash continuations joined) and in inline
code spans of README.md, docs/*.md, bench/README.md and the examples' READMEs:
``python -m wespeaker_py.bin.NAME``, ``wespeaker-py SUBCOMMAND``, ``python PATH.py`` and
``[bash] PATH.sh``. Their options are read from the command itself: the argparse parser
of a ``bin/`` module or of the ``wespeaker-py`` subcommand, the ``add_argument`` calls of
a script, and, for a shell script that sources ``tools/parse_options.sh``, the variables
it sets before doing so (an unqualified ``run.sh`` may be any recipe's).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from wespeaker_py.cli.main import build_parser
from wespeaker_py.config.schema import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
OPTION = re.compile(r"(?<![\w-])(--[A-Za-z][\w.-]*)")
QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
# the command, then its arguments up to the end of the line or a shell operator
PYTHON_MODULE = re.compile(r"python3? -m (wespeaker_py\.bin\.\w+)((?:\s+\w[\w-]*)?)([^|;&]*)")
CLI = re.compile(r"wespeaker-py\s+([a-z][\w-]*)([^|;&]*)")
PYTHON_SCRIPT = re.compile(r"python3? ((?:[\w.-]+/)*\w+\.py)([^|;&]*)")
SHELL_SCRIPT = re.compile(r"(?:^|\s|\./)((?:[\w.-]+/)*\w+\.sh)(?=\s|$)([^|;&]*)")
PARSE_OPTIONS = re.compile(r"^\s*(\.|source)\s.*parse_options\.sh")
SHELL_DEFAULT = re.compile(r"^([A-Za-z_]\w*)=")
RECIPE_RUN_SCRIPTS = (sorted(ROOT.glob("examples/*/run*.sh"))
                      + sorted(ROOT.glob("examples/*/*/run*.sh"))
                      + sorted(ROOT.glob("examples/*/*/*/run*.sh")))

Use = Tuple[str, int, str, List[str]]  # file, line, command, its options


def documented_files() -> List[Path]:
    return ([ROOT / "README.md", ROOT / "bench" / "README.md"]
            + sorted((ROOT / "docs").glob("*.md")) + sorted(ROOT.glob("examples/**/README.md")))


def code_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, code): each inline code span, and each command of a fenced block
    (a command continued with backslashes is one, at the line it starts on)."""
    text = path.read_text(encoding="utf-8")
    for block in FENCED_BLOCK.finditer(text):
        number = text.count("\n", 0, block.start(1))
        command, start = "", 0
        for line in block.group(1).splitlines():
            number += 1
            if not command:
                start = number
            if line.rstrip().endswith("\\"):
                command += line.rstrip()[:-1] + " "
                continue
            yield start, command + line
            command = ""
    prose = FENCED_BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for number, line in enumerate(prose.splitlines(), 1):
        for span in INLINE_CODE.findall(line):
            yield number, span


def options_of(arguments: str) -> List[str]:
    """The options among a command's arguments; quoted values (options for another
    command, as in ``--train_args "--model_init X"``) are not its own."""
    return OPTION.findall(QUOTED.sub(" ", arguments))


def command_uses() -> List[Use]:
    uses = []
    for path in documented_files():
        name = path.relative_to(ROOT).as_posix()
        for number, code in code_lines(path):
            for match in PYTHON_MODULE.finditer(code):
                command = (match.group(1) + match.group(2)).strip()
                uses.append((name, number, command, options_of(match.group(3))))
            for match in CLI.finditer(code):
                if match.group(1).isupper():  # a placeholder: wespeaker-py SUBCOMMAND --help
                    continue
                uses.append((name, number, f"wespeaker-py {match.group(1)}",
                             options_of(match.group(2))))
            for match in PYTHON_SCRIPT.finditer(code):
                uses.append((name, number, match.group(1), options_of(match.group(2))))
            for match in SHELL_SCRIPT.finditer(code):
                uses.append((name, number, match.group(1), options_of(match.group(2))))
    return [use for use in uses if use[3]]


def parser_options(parser: argparse.ArgumentParser, subcommand: Optional[str]) -> Set[str]:
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and subcommand in action.choices:
            options |= set(action.choices[subcommand]._option_string_actions)
    return options


def script_options(path: Path) -> Optional[Set[str]]:
    """Options a Python script's ``add_argument`` / ``add_flag`` calls name (None: none)."""
    options = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", "")
        names = [arg.value for arg in node.args
                 if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        if func == "add_argument":
            options |= {name for name in names if name.startswith("--")}
        elif func in ("add_flag", "add_bool_flag") and names:
            options |= {f"--{names[0]}", f"--{names[0].replace('_', '-')}"}
    return options or None


def shell_options(path: Path) -> Optional[Set[str]]:
    """Options of a script that sources parse_options.sh (None: it parses its own)."""
    options = {"--help"}
    for line in path.read_text(encoding="utf-8").splitlines():
        if PARSE_OPTIONS.match(line):
            return options
        default = SHELL_DEFAULT.match(line)
        if default:
            options |= {f"--{default.group(1)}", f"--{default.group(1).replace('_', '-')}"}
    return None


def accepted_options(command: str, cli: argparse.ArgumentParser) -> Optional[Set[str]]:
    """The options ``command`` accepts, or None when they cannot be read statically."""
    if command.startswith("wespeaker_py.bin."):
        module, _, subcommand = command.partition(" ")
        return parser_options(importlib.import_module(module).build_parser(), subcommand or None)
    if command.startswith("wespeaker-py "):
        return parser_options(cli, command.split()[1])
    path = ROOT / command
    if command.endswith(".py"):
        assert path.is_file(), f"no script {command}"
        return script_options(path)
    scripts = [path] if path.is_file() else [
        script for script in RECIPE_RUN_SCRIPTS if script.name == Path(command).name]
    assert scripts, f"no script {command}"
    per_script = [shell_options(script) for script in scripts]
    if any(options is None for options in per_script):
        return None
    return set().union(*per_script)


def is_accepted(option: str, command: str, accepted: Set[str]) -> bool:
    if option in accepted:
        return True
    # the trainer also takes any config key: --key VALUE or --dotted.key VALUE
    return command == "wespeaker_py.bin.train" and option[2:].split(".")[0] in CONFIG_KEYS


USES = command_uses()
CHECKED = {command: options for command, options in (
    (command, accepted_options(command, build_parser())) for command in {use[2] for use in USES})
    if options is not None}
CONFIG_KEYS = {field.name for field in dataclasses.fields(TrainConfig)}


def test_the_scan_finds_each_kind_of_command():
    # an empty scan would pass anything
    assert {"wespeaker_py.bin.train", "wespeaker_py.bin.extract", "run.sh",
            "tools/recipe/score_plda.sh", "wespeaker-py diarize",
            "bench/diarization_eval.py"} <= set(CHECKED)


@pytest.mark.parametrize("command", sorted(CHECKED))
def test_documented_options_are_accepted(command):
    unknown: Dict[str, List[str]] = {}
    for name, number, used, options in USES:
        if used == command:
            for option in options:
                if not is_accepted(option, command, CHECKED[command]):
                    unknown.setdefault(f"{name}:{number}", []).append(option)
    assert not unknown, f"{command} does not accept: " + "; ".join(
        f"{where} {', '.join(options)}" for where, options in unknown.items())
