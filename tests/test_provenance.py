"""paramlab.provenance: which code (git) and which libraries made a run."""

import os
import shutil
import subprocess

import pytest

import paramlab
from paramlab.provenance import code_git_info, git_info, library_versions


def test_git_info(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("no git")
    assert git_info(tmp_path) == {"sha": None, "dirty": None, "root": None}
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)

    git("init", "-q")
    assert git_info(tmp_path)["sha"] is None  # no commit yet: no failure either
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "x")
    info = git_info(tmp_path)
    assert len(info["sha"]) == 40 and info["dirty"] is False
    (tmp_path / "f.txt").write_text("b")
    assert git_info(tmp_path)["dirty"] is True


def test_library_versions_and_the_code_s_own_repository():
    v = library_versions()
    assert v["paramlab"] == paramlab.__version__ and v["torch"] and v["numpy"] and v["python"]
    info = code_git_info()  # this checkout: paramlab's source tree is a git work tree
    assert info["root"] is None or os.path.isdir(info["root"])
