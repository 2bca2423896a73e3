"""Schemas shared by every part of journeys: the event, output rows, settings, errors.

Nothing here does I/O; every other package may import it.
"""
