"""fglib: the library behind the FGVC book.

Every chapter of the book imports its models, losses and training from here; the chapters
derive the formulas, fglib is the single source of truth for the code.
"""
from __future__ import annotations

__version__ = "0.1.0"

from fglib.core.runtime import setup  # noqa: E402,F401
