"""paramlab.runners: the registry (built-in names, in-process registration, import paths) and options."""

import math

import pytest

from paramlab.experiments import NAMES, RUNNERS, get
from paramlab.runners import Option, Runner, SpecError, builtin_runners, get_runner, register_runner


def test_every_built_in_runner_loads_under_its_own_name():
    BUILTIN, EXPERIMENTS = builtin_runners(), tuple(RUNNERS)  # the experiments list their own runners
    assert set(EXPERIMENTS) <= set(BUILTIN) and "train_mlp" in BUILTIN and NAMES == EXPERIMENTS
    for name in BUILTIN:
        r = get_runner(name)
        assert isinstance(r, Runner) and r.name == name and r.options
    for name in EXPERIMENTS:  # each experiment has the three sizes the tests and the README rely on
        assert {"tiny", "quick", "default"} <= set(get(name).sizes)
        assert get(name).runner.options.keys() == get_runner(name).options.keys()


def test_runners_by_import_path_and_clear_errors():
    assert get_runner("paramlab.experiments.transfer:RUNNER").name == "transfer"
    with pytest.raises(SpecError, match="unknown runner 'nope'.*train_mlp"):
        get_runner("nope")
    with pytest.raises(SpecError, match="cannot load runner"):
        get_runner("paramlab.experiments.transfer:NOPE")
    with pytest.raises(SpecError, match="not a paramlab Runner"):
        get_runner("paramlab.experiments.transfer:NAME")
    with pytest.raises(ValueError, match="registered already"):
        register_runner("transfer", lambda c: {}, replace=False)
    with pytest.raises(ValueError, match="batch and batch_key together"):
        Runner("x", lambda c: {}, batch=lambda cs: [])


def test_register_runner_and_option_checks():
    r = register_runner("double", lambda c: {"y": 2 * c["x"]}, options={"x": 1.0, "name": Option("a", choices=("a", "b")),
                                                                      "n": Option(None, (int, None), check=lambda v: None if v > 0 else "must be positive")})
    assert get_runner("double") is r and r.defaults() == {"x": 1.0, "name": "a", "n": None}
    r.options["x"].validate("x", 3)  # an int is a fine float
    r.options["n"].validate("n", None)
    for key, value, match in [("x", "3", "is a str, expected int, float"), ("x", True, "is a bool"),
                              ("x", math.inf, "not a finite number"), ("name", "c", "not one of"),
                              ("n", 0, "must be positive"), ("n", 1.5, "expected int, null")]:
        with pytest.raises(SpecError, match=match):
            r.options[key].validate(key, value)
