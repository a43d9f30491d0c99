"""paramlab.keyvalue: the one KEY=VALUE parser (`paramlab run --set`, `paramlab roles --set`)."""

import pytest

from paramlab.keyvalue import parse_assignments, parse_value


def test_values_become_python_values():
    assert [parse_value(v) for v in ("3", "-2", "0.5", "1e-3", "true", "False", "null", "mup", "sp-stable")] == \
        [3, -2, 0.5, 1e-3, True, False, None, "mup", "sp-stable"]
    assert parse_value("64,128") == [64, 128] and parse_value("mup,") == ["mup"]


def test_assignments_and_their_errors():
    assert parse_assignments(["a=1", "c=k=v"]) == {"a": 1, "c": "k=v"}  # the first = splits
    assert parse_assignments(["steps=3", "widths=64,128", "task=digits"]) == {"steps": 3, "widths": [64, 128],
                                                                              "task": "digits"}
    for bad in ("steps", "=3"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_assignments([bad])
