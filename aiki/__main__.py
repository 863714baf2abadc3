"""``python -m aiki`` runs the command line."""

from .cli import main

main()
