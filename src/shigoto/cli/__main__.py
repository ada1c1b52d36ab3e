"""``python -m shigoto.cli``: the same as the ``shigoto`` console script."""

from .main import main

main()
