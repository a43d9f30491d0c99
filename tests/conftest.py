import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

# Small models on 2 cores: one thread is 10-90x faster than two when the other core is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def wandb_home(tmp_path_factory):
    """wandb's cache/config/data folders (core logs, artifact staging) in a tmp dir, not ~."""
    base = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in [("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                         ("WANDB_DATA_DIR", "data"), ("WANDB_DIR", "dir")]:
            (base / sub).mkdir()
            mp.setenv(var, str(base / sub))
        yield base
