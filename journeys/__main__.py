"""`python -m journeys` runs the command line (how `journeys run` starts its children)."""

from journeys.cli import run

run()
