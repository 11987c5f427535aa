"""``python -m crossgrad.server``: the same as ``crossgrad-server``."""

from .main import main

main()
