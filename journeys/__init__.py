"""journeys: the command line and the processes it starts.

The parts live in the top-level packages `schemas`, `producers`, `streams`
and `sinks`; this package wires them to the `journeys` console script.
"""
