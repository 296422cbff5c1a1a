"""Compression methods, registered by name (the same names as ``compression.configs``)."""

from compression.methods import lillama as lillama  # registers "lillama"
from compression.methods import minitron as minitron  # registers "minitron"
from compression.methods import svd as svd  # registers "svd"
from compression.methods.base import (
    Method,
    MethodResult,
    available_methods,
    get_method,
    register,
)

__all__ = ["Method", "MethodResult", "available_methods", "get_method", "register"]
