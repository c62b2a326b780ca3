"""CLI sub-commands that live outside cli.py, grouped by area."""
