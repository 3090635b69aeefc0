"""python-prctl, or a stand-in that says how to install it, so the package still imports.

Without it nothing can make namespaces, but `pyvdens --doctor` and the plugin's
header line must still run to say so.
"""

from __future__ import annotations

import sys
from typing import Any

from .errors import Unavailable

try:
    import prctl
except ImportError as _error:
    _why = str(_error)

    class _Missing:
        def __getattr__(self, name: str) -> Any:
            raise Unavailable(f"python-prctl cannot be imported ({_why}): install it with "
                              f"`sudo apt install libcap-dev && {sys.executable} -m pip install "
                              "python-prctl`")

    prctl = _Missing()

__all__ = ["prctl"]
