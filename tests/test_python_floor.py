"""The package's own code parses as the oldest Python that setup.py admits.

CI runs one newer Python; syntax from a later release (``except*``, type parameter
lists, ...) would pass there and break every user on the oldest supported one.
(``ast``'s ``feature_version`` checks grammar only; APIs such as ``dataclass(kw_only=)``
were checked by running the suite on that Python, see the README.)
"""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def oldest_python():
    setup = open(os.path.join(ROOT, "setup.py")).read()
    major, minor = re.search(r'python_requires=">=(\d+)\.(\d+)"', setup).groups()
    return int(major), int(minor)


def test_every_module_parses_as_the_oldest_supported_python():
    floor = oldest_python()
    assert floor >= (3, 10)      # the config schema's dataclass(kw_only=True) needs 3.10
    checked = 0
    for folder in ("wespeaker_py", "tools", "bench", "examples"):
        for parent, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(parent, name)
                    ast.parse(open(path).read(), path, feature_version=floor)
                    checked += 1
    assert checked > 100


def test_syntax_of_a_later_python_is_refused_at_the_floor():
    """The check can fail: a type parameter list (Python 3.12) does not parse as 3.10."""
    try:
        ast.parse("def first[T](items: list[T]) -> T:\n    return items[0]\n",
                  feature_version=(3, 10))
    except SyntaxError:
        return
    raise AssertionError("3.12 syntax parsed as 3.10")
