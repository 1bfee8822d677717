"""Unit tests of the diagnosis building blocks: storage errors and URIs in job logs, requirement parsing,
environment gaps, failure classification and run comparison. (URLs, credentials, S3 errors and datasets are in
tests/unit/storage/test_building_blocks.py.)

The checks that use them are tested end to end over the simulator in tests/integration/test_checks_*.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.checks.storage import storage_uris
from bot.clearml.models import Task
from bot.diagnosis.compare import compare_tasks
from bot.diagnosis.environment import environment_gaps
from bot.diagnosis.failure_causes import classify_failure
from bot.diagnosis.requirements import parse_conda, parse_pip, python_version
from bot.diagnosis.storage_errors import match_storage_errors
from bot.storage import results as r

# ------------------------------------------------------------------------------------------------ log patterns


def test_storage_error_lines_and_uris() -> None:
    lines = [
        "Epoch 3 done",
        "2024-01-01 clearml.storage - ERROR - Exception encountered while uploading Failed uploading object "
        "s3://bkt/a/b.pt (403): An error occurred (AccessDenied) when calling the PutObject operation",
        "ValueError: Insufficient permissions (delete failed) for s3://bkt/a",
        "requests.exceptions.SSLError: HTTPSConnectionPool(host='api.example.com'): CERTIFICATE_VERIFY_FAILED",
        "SSLError uploading artifact to https://files.example.com:8081/x",
        "botocore.exceptions.NoCredentialsError: Unable to locate credentials",
    ]
    hits = match_storage_errors(lines)
    kinds = [k for _, k in hits]
    assert kinds == [r.ACCESS_DENIED_WRITE, r.ACCESS_DENIED_DELETE, r.TLS, r.NO_CREDENTIALS]
    # the API server's own TLS error is not a storage error
    assert all("api.example.com" not in line for line, _ in hits)
    assert storage_uris(lines, "https://api.example.com") == ["s3://bkt/a/b.pt", "s3://bkt/a",
                                                              "https://files.example.com:8081/x"]


# ------------------------------------------------------------------------------------------------ requirements


def test_parse_pip_pins_urls_and_python_line() -> None:
    reqs, python = parse_pip(
        "# Python 3.10.12 (main, Nov 20 2023) [GCC 11.4.0]\n"
        "torch==2.3.0\n"
        "numpy>=1.24\n"
        "pandas\n"
        "Pillow[webp]==10.3.0 ; python_version >= '3.8'\n"
        "gdal @ file:///home/conda/feedstock_root/build_artifacts/gdal\n"
        "flash-attn @ https://example.com/flash_attn-2.5.9-cp311-linux_x86_64.whl\n"
        "-e git+https://github.com/acme/lib.git@0123456789abcdef#egg=acme_lib\n"
        "--extra-index-url https://download.pytorch.org/whl/cu121\n"
        "mylib @ git+https://github.com/acme/mylib.git@v1\n"
    )
    by = {x.name: x for x in reqs}
    assert python == "3.10.12"
    assert by["torch"].pinned and by["pillow"].pinned and by["flash-attn"].pinned and by["acme-lib"].pinned
    assert not by["numpy"].pinned and not by["pandas"].pinned and not by["mylib"].pinned
    assert by["gdal"].local and not by["gdal"].pinned
    assert len(reqs) == 8


def test_parse_conda() -> None:
    reqs = parse_conda("# This file may be used to create an environment\nnumpy=1.26.4=py311h\npython=3.11.9\nzlib\n")
    assert [(x.name, x.pinned) for x in reqs] == [("numpy", True), ("python", True), ("zlib", False)]


def task(**doc: Any) -> Task:
    base: dict[str, Any] = {"id": doc.pop("id", "t1"), "name": doc.pop("name", "train"), "status": "completed"}
    base.update(doc)
    return Task.from_api(base)


FULL_SCRIPT = {
    "repository": "https://github.com/acme/x.git", "version_num": "abc123", "binary": "python3.10",
    "requirements": {"pip": "# Python 3.10.4\ntorch==2.3.0\n"}, "diff": "",
}


def test_environment_gaps() -> None:
    assert environment_gaps(task(script=FULL_SCRIPT)) == {}
    notebook = environment_gaps(task(script={"binary": "python3", "requirements": {}}))
    assert set(notebook) == {"no_requirements", "no_code", "no_python_version"}
    standalone = environment_gaps(task(script={**FULL_SCRIPT, "repository": "", "diff": "+print(1)\n"}))
    assert set(standalone) == {"no_repository"}
    dirty = environment_gaps(task(script={**FULL_SCRIPT, "version_num": "", "diff": "--- a\n+++ b\n+x\n-y\n",
                                          "requirements": {"pip": "torch\nnumpy==1.0\n"}}))
    assert set(dirty) == {"no_commit", "uncommitted_changes", "unpinned_requirements"}
    assert dirty["uncommitted_changes"].startswith("2 changed lines")
    assert dirty["unpinned_requirements"] == ["torch"]
    # a container image stands in for the Python version
    image = environment_gaps(task(script={**FULL_SCRIPT, "binary": "python3", "requirements": {"pip": "x==1\n"}},
                                  container={"image": "python:3.11"}))
    assert image == {}
    assert python_version(task(script={"binary": "python3", "requirements": {"pip": "# Python 3.9.1\n"}})) == (
        "3.9.1", "requirements")


# ------------------------------------------------------------------------------------------------ failure causes


@pytest.mark.parametrize(
    ("lines", "reason", "cause"),
    [
        (["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'timm'"], "", "missing_module"),
        (["ERROR: No matching distribution found for torch==1.9.0", "clearml_agent: ERROR: Could not install task "
          "requirements!", "ModuleNotFoundError: No module named 'torch'"], "", "requirements_install"),
        (["clearml_agent: WARNING: Python executable with version '3.7' requested by the Task, not found in path",
          "clearml_agent: ERROR: Could not install task requirements!"], "", "python_not_found"),
        (["error: patch failed: a.py:3", "clearml_agent: ERROR: Failed applying git diff:"], "", "git_diff"),
        (["fatal: could not read Username for 'https://github.com'"], "", "repository"),
        (["Traceback (most recent call last):", "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate"],
         "", "cuda_oom"),
        (["ValueError: Insufficient permissions (write failed) for s3://b"], "", "storage"),
        (["step 100", "Killed"], "worker execution exit code -9", "agent_killed"),
        ([], "Forced stop (non-responsive)", "watchdog_stop"),  # its own cause since the larger catalogue
        (["Traceback (most recent call last):", "KeyError: 'x'"], "", "user_code"),
        (["all good"], "", "unknown"),
    ],
)
def test_failure_classification(lines: list[str], reason: str, cause: str) -> None:
    got, hits = classify_failure(lines, reason, "")
    assert got == cause
    assert (hits != []) == (cause != "unknown")


# ------------------------------------------------------------------------------------------------ compare


def test_compare_tasks_structured_diff() -> None:
    a = task(id="a", script={**FULL_SCRIPT, "requirements": {"pip": "# Python 3.10.4\ntorch==2.2.2\nnumpy==1.26\n"}},
             hyperparams={"Args": {"lr": {"value": "0.1"}, "bs": {"value": "8"}},
                          "Datasets": {"train": {"value": "ds1"}}},
             container={"image": "img:1"}, models={"input": [{"name": "backbone", "model": "m1"}]})
    b = task(id="b", script={**FULL_SCRIPT, "version_num": "def456", "diff": "+x\n", "binary": "python3.11",
                             "requirements": {"pip": "# Python 3.11.2\ntorch==2.3.0\npandas==2.2\n"}},
             hyperparams={"Args": {"lr": {"value": "0.1"}, "bs": {"value": "16"}, "seed": {"value": "1"}},
                          "Datasets": {"train": {"value": "ds2"}}},
             container={"image": "img:2"}, models={"input": [{"name": "backbone", "model": "m2"}]})
    diff = compare_tasks(a, b, ignore_hyperparams=["Args/seed"])
    assert diff["commit"] == {"version_num": ["abc123", "def456"]}
    assert diff["diff"]["b"]["changed_lines"] == 1
    assert diff["requirements"] == {"added": {"pandas": "==2.2"}, "removed": {"numpy": "==1.26"},
                                    "changed": {"torch": ["==2.2.2", "==2.3.0"]}}
    assert diff["python"] == ["3.10", "3.11"]  # script.binary wins over the requirements' "# Python" line
    assert diff["container"] == {"image": ["img:1", "img:2"]}
    assert diff["hyperparams"] == {"changed": {"Args/bs": ["8", "16"]}}
    assert diff["datasets"] == {"changed": {"Datasets/train": ["ds1", "ds2"]}}
    assert diff["models"] == {"changed": {"backbone": ["m1", "m2"]}}
    assert compare_tasks(a, a) == {}
