"""Flags and CROSSGRAD_* variables: a flag wins over its variable, a variable over the default."""

from __future__ import annotations

import pytest
from crossgrad.server.config import Config, parse


def test_defaults() -> None:
    assert parse([], {}) == Config()
    assert parse(["--grace", "0"], {}).grace == 0.0  # stop at once
    assert Config().address == "127.0.0.1:50051" and Config().store == "memory"


def test_variables_then_flags() -> None:
    environ = {"CROSSGRAD_ADDRESS": "0.0.0.0:6000", "CROSSGRAD_MAX_NODES": "50",
               "CROSSGRAD_REFLECTION": "false", "CROSSGRAD_SYMBOLIC_DEADLINE": "2.5"}
    config = parse([], environ)
    assert (config.address, config.max_nodes, config.reflection, config.symbolic_deadline) == \
        ("0.0.0.0:6000", 50, False, 2.5)
    assert config.limits.max_nodes == 50 and config.caps.deadline == 2.5
    flagged = parse(["--address", "127.0.0.1:0", "--reflection", "--max-nodes", "7"], environ)
    assert (flagged.address, flagged.max_nodes, flagged.reflection) == ("127.0.0.1:0", 7, True)


@pytest.mark.parametrize("argv, environ", [
    (["--max-nodes", "many"], {}),
    ([], {"CROSSGRAD_MAX_NODES": "many"}),
    ([], {"CROSSGRAD_REFLECTION": "perhaps"}),
    (["--store", "redis://localhost"], {}),
    (["--max-leaves", "0"], {}),
    ([], {"CROSSGRAD_SESSION_TTL": "-1"}),
    (["--symbolic-deadline", "nan"], {}),
    (["--grace", "-1"], {}),
])
def test_bad_settings_stop_with_a_message(argv: list[str], environ: dict[str, str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        parse(argv, environ)
    assert stop.value.code != 0
