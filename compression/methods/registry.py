"""The one registry of compression methods (torch-free).

A method registers once, on its parameter class::

    @register_method("slimforge.compression.methods.svd.method:SvdMethod")
    class SvdConfig(FactorizationConfig):
        name: Literal["svd"] = "svd"

The name comes from the class's ``name`` literal; the implementation (torch) is a
``"module:Class"`` path imported on the first :func:`get_method`, so the API can validate,
document and check jobs without loading torch. The job body's discriminated union, the
``/v1/methods`` catalogue and the worker's look-up are all built from this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union

from pydantic import Field

from slimforge.compression.parameters import MethodParameters

if TYPE_CHECKING:
    from slimforge.compression.methods.method import Method
    from slimforge.compression.model_shapes import ModelShapes

__all__ = [
    "MethodSpec",
    "available_methods",
    "check_target",
    "get_method",
    "method_config_union",
    "method_descriptions",
    "method_specs",
    "register_method",
]

_C = TypeVar("_C", bound=type[MethodParameters])


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, parameter class and implementation path."""

    name: str
    config_class: type[MethodParameters]
    implementation: str  # "package.module:Class", imported lazily


_SPECS: dict[str, MethodSpec] = {}
_LOADED: dict[str, Method] = {}


def register_method(implementation: str) -> Callable[[_C], _C]:
    """Class decorator on a method's parameter class: register the method under the class's
    ``name`` default with its torch implementation at ``implementation`` ("module:Class").
    Raises ValueError for a second registration of a name or a class without a name."""

    def deco(cls: _C) -> _C:
        field = cls.__pydantic_fields__.get("name")
        name = None if field is None else field.default
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} needs a default 'name' (a Literal) to register")
        if name in _SPECS:
            raise ValueError(f"method {name!r} is already registered")
        _SPECS[name] = MethodSpec(name, cls, implementation)
        return cls

    return deco


def method_specs() -> list[MethodSpec]:
    """Every registered method, in registration order (the order of the API's union)."""
    return list(_SPECS.values())


def available_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_SPECS)


def _spec(name: str) -> MethodSpec:
    try:
        return _SPECS[name]
    except KeyError:
        known = ", ".join(available_methods()) or "none"
        raise ValueError(f"unknown compression method {name!r}; available: {known}") from None


def get_method(name: str) -> Method:
    """The implementation of method ``name`` (imports torch on first use); ValueError listing
    the known names for an unknown one."""
    method = _LOADED.get(name)
    if method is None:
        spec = _spec(name)
        module, _, attr = spec.implementation.partition(":")
        method = getattr(importlib.import_module(module), attr)()
        method.name, method.config_class = spec.name, spec.config_class
        _LOADED[name] = method
    return method


def method_config_union() -> Any:
    """``Annotated[Union[<every parameter class>], Field(discriminator="name")]``, the type of
    a job's ``method`` (pydantic validates and documents it as a tagged union)."""
    classes = tuple(spec.config_class for spec in _SPECS.values())
    return Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007


def _first_paragraph(doc: str) -> str:
    """The docstring's opening paragraph on one line (a summary may wrap, as minitron's does)."""
    return " ".join(doc.split("\n\n", 1)[0].split())


def method_descriptions() -> list[dict[str, object]]:
    """Name, one-line description, full description and JSON schema of every method."""
    out: list[dict[str, object]] = []
    for spec in _SPECS.values():
        doc = (spec.config_class.__doc__ or "").strip()
        out.append(
            {
                "name": spec.name,
                "summary": _first_paragraph(doc) or spec.name,
                "description": doc,
                "parameters_schema": spec.config_class.model_json_schema(),
            }
        )
    return out


def check_target(config: MethodParameters, shapes: ModelShapes, target_params: int) -> None:
    """Everything a job's method can be checked against before loading the model: its
    parameters against the model (``ParameterConflict``, field relative to the method) and
    whether the target is reachable (``UnreachableTargetError``)."""
    config.check_model(shapes)
    config.check_target(shapes, target_params)
