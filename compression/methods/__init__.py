"""Compression methods: one folder per method, registered once (torch-free to import).

Layout of a method ``<name>`` (see ``svd``)::

    methods/<name>/__init__.py   docstring only
    methods/<name>/config.py     parameters (pydantic), registered with @register_method,
                                 plus the torch-free check_model / check_target of the API
    methods/<name>/method.py     the torch implementation (a ``Method`` subclass), imported
                                 on first use by ``get_method``

and nothing else: every folder's ``config.py`` is imported below. The job body's union of
method parameters, ``/v1/methods``, the worker's look-up and the test matrix
(``tests/compression/test_methods_matrix.py``) all read the registry. ``factorization/``
holds what the two factorization methods share; it registers nothing.

Terms: *factorization* is what ``svd`` and ``lillama`` do (W → B·A); *low-rank* names the
factored layer (``LowRankLinear``) and the artifact format that ships it (model type
``slimforge_lowrank``); *checkpoint* is only the resumable state of a running job.
"""

import importlib
import pkgutil

from slimforge.compression.methods.registry import (
    MethodSpec,
    available_methods,
    check_target,
    get_method,
    method_config_union,
    method_descriptions,
    method_specs,
    register_method,
)

# Every sub-folder's config.py is imported (torch-free), which registers its method: a new
# method is one new folder. Sorted, so the union's order does not depend on the file system.
for _folder in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg):
    importlib.import_module(f"{__name__}.{_folder}.config")

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
