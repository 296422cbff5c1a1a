"""Compression methods, registered by name (the same names as ``slimforge.compression.configs``)."""

from slimforge.compression.methods import lillama as lillama  # registers "lillama"
from slimforge.compression.methods import minitron as minitron  # registers "minitron"
from slimforge.compression.methods import svd as svd  # registers "svd"
from slimforge.compression.methods.base import (
    Method,
    MethodResult,
    available_methods,
    get_method,
    register,
)

__all__ = ["Method", "MethodResult", "available_methods", "get_method", "register"]
