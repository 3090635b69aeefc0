"""`python -m pytest_vdens`: the pyvdens command (see cli.py)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
