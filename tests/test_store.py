"""paramlab.store: safe names, atomic writes, JSON of configs, run names, run folders and their state."""

import json
import math
import os

import numpy as np
import pytest
import torch

from paramlab.io import atomic_write, read_json, to_jsonable, write_json_atomic
from paramlab.store import run_dir_name, run_name, run_state, safe_component, safe_relpath


def test_to_jsonable_and_run_name():
    class Color(__import__("enum").Enum):
        RED = "red"

    out = to_jsonable({
        1: (1, 2), "s": {3, 1}, "np": np.int64(3), "b": np.bool_(True), "arr": np.arange(2),
        "t": torch.tensor([1.5]), "dev": torch.device("cpu"), "e": Color.RED, "f": math.nan,
        "fn": math.sqrt, "size": torch.Size([2, 3]),
    })
    assert json.loads(json.dumps(out))  # plain JSON
    assert out["1"] == [1, 2] and out["s"] == [1, 3] and out["np"] == 3 and out["b"] is True
    assert out["arr"] == [0, 1] and out["t"] == [1.5] and out["dev"] == "cpu" and out["e"] == "red"
    assert math.isnan(out["f"]) and out["fn"] == "math.sqrt" and out["size"] == [2, 3]
    nested = {"model": {"width": 64, "scheme": "mf"}, "optim": {"learning_rate": 3e-4}}
    assert run_name(nested) == "mf-w64-lr0.0003"
    assert run_name({}) == "run"


def test_safe_names_stay_inside_their_folder():
    assert safe_component("a/b c") == "a_b_c" and safe_component("..") == "_" and safe_component("") == "_"
    assert str(safe_relpath("feat/../h2//k")) == "feat/_/h2/k"


def test_atomic_write_replaces_whole_files_or_leaves_the_old_one(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"a": math.inf})
    assert read_json(path) == {"a": math.inf} and path.read_text().endswith("\n")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("{half")
            raise RuntimeError("killed mid-write")
    assert read_json(path) == {"a": math.inf}  # the old file, whole
    assert os.listdir(path.parent) == ["x.json"]  # no temp file left behind
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert read_json(tmp_path / "missing.json", default=7) == 7


def test_run_folder_names_are_deterministic_and_state_follows_meta(tmp_path):
    cfg = {"scheme": "mup", "width": 64, "lr": 0.1, "seed": 0, "log2_lr": -3, "task_args": {"d": 8}}
    name = run_dir_name(cfg, ["width", "log2_lr", "task_args"])
    assert name.startswith("mup-w64-lr0.1-s0-log2_lr=-3-task_args=__d__8_-")
    assert name == run_dir_name(dict(cfg), ["width", "log2_lr", "task_args"])
    assert run_dir_name({**cfg, "seed": 1}) != run_dir_name(cfg)
    path = tmp_path / name
    assert run_state(path, cfg) == "absent"
    path.mkdir()
    write_json_atomic(path / "config.json", cfg)
    write_json_atomic(path / "meta.json", {"status": "running"})
    assert run_state(path, cfg) == "incomplete"
    write_json_atomic(path / "meta.json", {"status": "diverged"})
    assert run_state(path, cfg) == "complete"
    assert run_state(path, {**cfg, "lr": 0.2}) == "incomplete"  # recorded with another config
