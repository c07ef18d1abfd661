"""``python -m dataforge`` runs the CLI."""

from dataforge.cli import main

main()
