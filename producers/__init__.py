"""Where events come from: the producer client, collectors, webhook adapters, the simulator."""
