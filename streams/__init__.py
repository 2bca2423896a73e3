"""Stream processing: the pure journey engine and the Faust app that drives it."""
