"""The project's exceptions, one root and a few branches.

    JourneysError
    ├── InvalidEvent        input that breaks the event contract (goes to dead letters)
    ├── ConfigError         a setting, rules file or duration that cannot be used
    ├── SinkUnavailable     ClickHouse could not be reached or refused a write
    └── BrokerError         the Kafka broker could not be started, reached or used

Drivers' exceptions are translated into these where they enter the project,
so callers handle one family and messages say what to do next.
"""


class JourneysError(Exception):
    """Root of every error the project raises on purpose."""


class InvalidEvent(JourneysError):
    """An event that breaks the contract; the message is the dead-letter reason."""


class ConfigError(JourneysError):
    """A setting, rules file or duration that cannot be used as given."""


class SinkUnavailable(JourneysError):
    """ClickHouse could not be reached or refused a write."""


class BrokerError(JourneysError):
    """The Kafka broker could not be started, reached or used."""
