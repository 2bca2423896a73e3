"""Where the engine's output is stored: the ClickHouse schema, migrations and writers."""
