"""Config values that name a class: ``loss``, ``optimizer``, ``scheduler``, and
``dataset_args.frontend`` (:class:`FrontendChoice`).

Each such key has one table in :mod:`wespeaker_py.config.schema`, value name ->
:class:`Choice` (a :class:`NamedClass`): the block that checks its ``*_args`` and where
the class it names lives. The schema takes the accepted values from the table
(:func:`one_of`), and training builds the class from it (:meth:`Choice.build`), so that
a new entry is one line there.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable, Iterator, Literal, Mapping, Optional, Union

from wespeaker_py.config.fields import ConfigError


@dataclasses.dataclass(frozen=True)
class NamedClass:
    """What one value of a naming key stands for: a class and its settings block.

    ``builds`` is the class, as ``"module:attribute"``: it is imported only when a run
    builds it, so that ``config/`` imports neither torch nor the layers above it that
    implement these classes. ``args`` is the block that checks the key's ``*_args``
    mapping, or None where that mapping is open (``optimizer_args``: torch's optimizer
    takes what it takes). How the class is built is the subclass's.
    """

    builds: str
    args: Optional[type] = None

    def factory(self) -> Callable[..., Any]:
        """The class (or function) that ``builds`` names."""
        module, _, attribute = self.builds.partition(":")
        return getattr(importlib.import_module(module), attribute)


@dataclasses.dataclass(frozen=True)
class Choice(NamedClass):
    """A class built from its config block by keyword (a loss, an optimizer, a scheduler)."""

    def build(self, key: str, settings: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """The class called with ``args``, ``kwargs`` and the config's ``settings``.

        ``key`` is the config key of ``settings`` (``loss_args``): a setting the class
        takes no argument of is a :class:`ConfigError` naming ``key.<setting>``.
        """
        factory = self.factory()
        parameters = list(inspect.signature(factory).parameters.values())
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            # what the config may set: not what the caller passes itself
            settable = [p.name for p in parameters[len(args):]
                        if p.name not in kwargs and p.kind is not inspect.Parameter.VAR_POSITIONAL]
            for name in settings:
                if name not in settable:
                    raise ConfigError(f"config key '{key}.{name}': {self.builds} takes no "
                                      f"argument {name!r} (it takes {', '.join(settable)})")
        return factory(*args, **kwargs, **settings)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrontendChoice(NamedClass):
    """What one value of ``dataset_args.frontend`` stands for, and what the rest of the
    package must know of it (``config/schema.py`` ``FRONTENDS``; the other tables of
    front-end names are derived from that one).

    ``builds`` is the front-end class: :meth:`build_from` calls its ``from_dataset_args``.
    ``args`` is the class of its settings block, the ``DatasetArgs`` field named ``block``
    (``fbank_args``). ``feat_dim_source`` is where its output size, what
    ``model_args.feat_dim`` must match, is set (quoted in that error).
    """

    block: str
    feat_dim_source: str
    # the block must be given (no default settings make a usable front-end)
    args_required: bool = False
    # the rate its pretrained weights or feature extractor learnt from (fine-tuning
    # resamples other data to it); None: any rate
    sample_rate: Optional[int] = None
    # it runs at ``sample_rate`` only: dataset_args.resample_rate must be it
    rate_only: bool = False
    # it normalises its own features: dataset_args.cmvn and spec_aug must be false
    own_norm: bool = False
    # export takes models on its features
    exportable: bool = False
    # only the models whose family names it in FRONTEND read it, and they read nothing else
    exclusive: bool = False
    # its from_dataset_args takes ``pretrained`` (False: built without reading its weights)
    takes_pretrained: bool = False

    def build_from(self, dataset_args: Any, pretrained: bool = True) -> Any:
        """The front-end module of the checked ``dataset_args``; ``pretrained`` is passed
        on where the class takes it."""
        factory = self.factory()
        if self.takes_pretrained:
            return factory.from_dataset_args(dataset_args, pretrained=pretrained)
        return factory.from_dataset_args(dataset_args)


def one_of(table: Mapping[str, NamedClass]) -> Any:
    """The type of a key whose value is a name of ``table`` (its error lists them)."""
    return Literal[tuple(table)]


def args_union(table: Mapping[str, NamedClass]) -> Any:
    """The type of the ``*_args`` block of a key named by ``table``: any of its blocks."""
    return Union[tuple(choice.args for choice in table.values())]


class ArgsBlocks(Mapping[str, type]):
    """Name -> args block of ``table``, as ``setting(variants=...)`` takes it (a live view:
    an entry added to the table is chosen too)."""

    def __init__(self, table: Mapping[str, NamedClass]):
        self._table = table

    def __getitem__(self, name: str) -> type:
        return self._table[name].args

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
