"""`journeys run`'s supervisor starts an exited process again, and passes settings on."""

from __future__ import annotations

import sys
import time

from journeys.processes import Child, settings_env, stop_processes, supervise
from journeys.schemas.settings import Settings


def test_an_exited_child_is_started_again_with_backoff() -> None:
    child = Child([sys.executable, "-c", "import sys; sys.exit(3)", "sink"], {})
    processes = [child]
    said: list[str] = []
    deadline = time.monotonic() + 3.0
    restarts = supervise(
        processes,
        lambda: time.monotonic() > deadline,
        first_delay=0.2,
        max_delay=0.8,
        say=said.append,
    )
    stop_processes(processes)
    assert 2 <= restarts <= 8 and processes[0] is not child
    assert said[0].startswith("journeys sink (pid") and "exited with 3" in said[0]
    assert said[0].endswith("starting it again in 0.2s") and said[1].endswith("in 0.4s")


def test_a_running_child_is_left_alone() -> None:
    processes = [Child([sys.executable, "-c", "import time; time.sleep(30)", "worker"], {})]
    deadline = time.monotonic() + 1.0
    assert supervise(processes, lambda: time.monotonic() > deadline) == 0
    stop_processes(processes, timeout=5)
    assert processes[0].returncode is not None


def test_settings_reach_children_in_their_written_form() -> None:
    settings = Settings.model_validate({"cart_abandon_after": "90m", "topic_prefix": "p."})
    env = settings_env(settings)
    assert env["JOURNEYS_CART_ABANDON_AFTER"] == "90m"
    assert env["JOURNEYS_TOPIC_PREFIX"] == "p."
    again = {name.removeprefix("JOURNEYS_").lower(): value for name, value in env.items()}
    assert Settings.model_validate(again) == settings
