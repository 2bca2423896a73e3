"""Hostile tests: every attack on the pipeline's entry points, as a test that fails safely."""
