"""Name → class registries, so configs can select components by name.

Adding a component is one decorator on its class; nothing else has to be touched.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twinnet.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (classes or functions) of one kind of component.

    ``builtins`` names the module whose import registers the built-in entries; it is imported the
    first time anyone asks the registry anything, so a module low in the package (the config
    schema) can list what is registered without importing the modules that register it.
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._builtins = builtins

    @property
    def _loaded(self) -> dict[str, Callable[..., T]]:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)
        return self._entries

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def __contains__(self, name: str) -> bool:
        return name in self._loaded

    def get(self, name: str, *, field: str = "") -> Callable[..., T]:
        try:
            return self._loaded[name]
        except KeyError:
            prefix = f"{field}: " if field else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def build(self, name: str, params: dict[str, Any] | None = None, *, field: str = "") -> T:
        """Instantiate ``name`` with ``params``, naming any parameter it does not take.

        Components raise plain ``ValueError`` (or ``TypeError``) for a bad argument; here that
        becomes a one-line :class:`ConfigError` naming the config ``field`` it came from.
        """
        factory = self.get(name, field=field)
        params = dict(params or {})
        where = field or f"{self.kind} {name!r}"
        check_params(factory, params, field=where)
        try:
            return factory(**params)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{where}: {err}") from None

    def items(self) -> list[tuple[str, Callable[..., T]]]:
        return sorted(self._loaded.items())

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plug-ins that register something for a while)."""
        self._loaded.pop(name, None)


def check_params(factory: Callable[..., Any], params: dict[str, Any], *, field: str) -> None:
    """Raise ConfigError naming every key in ``params`` that ``factory`` does not accept."""
    signature = inspect.signature(factory)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    accepted = {
        name
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"{field}: unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )


#: Evaluation protocols (:class:`twinnet.protocols.EvaluationProtocol`), by name.
PROTOCOLS: Registry[Any] = Registry("protocol", builtins="twinnet.protocols")
#: Data formats (:class:`twinnet.data.sources.DataSource`), by name.
DATA_SOURCES: Registry[Any] = Registry("data format", builtins="twinnet.data.builtin_sources")
#: Where the trainer's per-epoch records go (``train.loggers``: ``jsonl``, ``tensorboard``, ``mlflow``;
#: :mod:`twinnet.training.loggers`).
LOGGERS: Registry[Any] = Registry("run logger", builtins="twinnet.training.loggers")
#: How a saved model directory is loaded (``twinnet.load(path, runtime=…)``, ``--runtime``): ``torch``
#: (registered by :mod:`twinnet.io`) and ``onnx`` (an export run by ONNX Runtime, :mod:`twinnet.onnx`).
RUNTIMES: Registry[Any] = Registry("runtime", builtins="twinnet.onnx.runtime")
#: Image preprocessing steps saved with a model (``model.input.preprocess``), applied to every image it
#: reads before resizing: ``fingerprint`` (:mod:`twinnet.fingerprints.preprocess`). Each has
#: ``apply(image, size) -> image`` (Pillow images; ``size`` the input's (H, W)).
IMAGE_PREPROCESSORS: Registry[Any] = Registry("image preprocessor", builtins="twinnet.fingerprints.preprocess")
#: How the items of each kind of input (``model.input.kind``) are augmented for training, per
#: ``data.augment``: ``image`` (:class:`twinnet.data.transforms.RandomAffine`), ``sequence`` (pen
#: trajectories, :mod:`twinnet.data.trajectory_augment`). Each is built from the ``AugmentConfig`` and
#: called as ``augment(batch, generator)``; :func:`twinnet.data.transforms.build_augmenter` picks one.
AUGMENTATIONS: Registry[Any] = Registry("augmentation", builtins="twinnet.data.builtin_augmentations")
