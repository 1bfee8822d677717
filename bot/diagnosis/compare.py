"""Run comparison: what differs between two task documents (code, packages, Python, container, parameters,
datasets, models, configuration). Shared by the `repro.compare` check, the `diff` look-up and the reproduce
action's verdict."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bot.diagnosis.requirements import diff_lines, python_version, requirements_of
from bot.redact import MARK, is_secret_name, redact

if TYPE_CHECKING:
    from bot.clearml.models import Task


def _ignored(name: str, globs: Iterable[str]) -> bool:
    """Case-sensitive shell globs, as the checks' `Patterns` parameters match names."""
    return any(fnmatch.fnmatchcase(name, p) for p in globs)


def _masked(diff: dict[str, Any]) -> dict[str, Any]:
    """A `_dict_diff` of parameters with the values of secret-named ones (Args/db_password, Args/HF_TOKEN) blanked
    on both sides: that it changed is shown, never what it was or became."""
    out: dict[str, Any] = {}
    for part, entries in diff.items():
        out[part] = {
            name: ([MARK if v else v for v in value] if isinstance(value, list) else MARK if value else value)
            if is_secret_name(name) else value
            for name, value in entries.items()
        }
    return out


def _flat_hyperparams(task: Task) -> dict[str, str]:
    out: dict[str, str] = {}
    hp = task.get("hyperparams") or {}
    if isinstance(hp, dict):
        for section, params in hp.items():
            if not isinstance(params, dict):
                continue
            for name, value in params.items():
                if isinstance(value, dict):
                    out[f"{section}/{name}"] = str(value.get("value", ""))
                else:
                    out[f"{section}/{name}"] = str(value)
    legacy = task.get("execution.parameters") or {}
    if isinstance(legacy, dict):
        for name, value in legacy.items():
            out.setdefault(name if "/" in name else f"Args/{name}", str(value))
    return out


def _input_models(task: Task) -> dict[str, str]:
    models = task.get("models.input") or []
    out = {str(m.get("name") or m.get("model")): str(m.get("model") or "") for m in models if isinstance(m, dict)}
    legacy = task.get("execution.model")
    if legacy and not out:
        out["input"] = str(legacy)
    return out


def _changed(a: Any, b: Any) -> list[Any] | None:
    return None if a == b else [a, b]


def _dict_diff(a: dict[str, str], b: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    added = {k: b[k] for k in sorted(set(b) - set(a))}
    removed = {k: a[k] for k in sorted(set(a) - set(b))}
    changed = {k: [a[k], b[k]] for k in sorted(set(a) & set(b)) if a[k] != b[k]}
    if added:
        out["added"] = added
    if removed:
        out["removed"] = removed
    if changed:
        out["changed"] = changed
    return out


def compare_tasks(a: Task, b: Task, ignore_hyperparams: Iterable[str] = ()) -> dict[str, Any]:
    """The differences between two task documents, by part; a part is absent when it is the same."""
    diff: dict[str, Any] = {}
    commit = {
        key: pair
        for key in ("repository", "branch", "version_num", "entry_point", "working_dir")
        if (pair := _changed(a.get(f"script.{key}") or None, b.get(f"script.{key}") or None)) is not None
    }
    if commit:
        diff["commit"] = commit
    da, db = str(a.get("script.diff") or ""), str(b.get("script.diff") or "")
    if da != db:
        diff["diff"] = {
            "a": {
                "changed_lines": diff_lines(da),
                "sha256": hashlib.sha256(da.encode()).hexdigest()[:12] if da else None,
            },
            "b": {
                "changed_lines": diff_lines(db),
                "sha256": hashlib.sha256(db.encode()).hexdigest()[:12] if db else None,
            },
        }
    ra = {k: v.spec or "(any)" for k, v in requirements_of(a).items()}
    rb = {k: v.spec or "(any)" for k, v in requirements_of(b).items()}
    req = _dict_diff(ra, rb)
    if req:
        diff["requirements"] = req
    pa, pb = python_version(a)[0], python_version(b)[0]
    if pa != pb:
        diff["python"] = [pa, pb]
    container = {  # arguments and setup scripts carry `-e HF_TOKEN=…`, `export AWS_SECRET…`: redacted as text
        key: [redact(str(v)) if v is not None else None for v in pair]
        for key in ("image", "arguments", "setup_shell_script")
        if (pair := _changed(a.get(f"container.{key}") or None, b.get(f"container.{key}") or None)) is not None
    }
    if container:
        diff["container"] = container
    ha, hb = _flat_hyperparams(a), _flat_hyperparams(b)
    ignore = list(ignore_hyperparams)
    datasets_a = {k: v for k, v in ha.items() if k.startswith("Datasets/")}
    datasets_b = {k: v for k, v in hb.items() if k.startswith("Datasets/")}
    ha = {k: v for k, v in ha.items() if not k.startswith("Datasets/") and not _ignored(k, ignore)}
    hb = {k: v for k, v in hb.items() if not k.startswith("Datasets/") and not _ignored(k, ignore)}
    hyper = _masked(_dict_diff(ha, hb))
    if hyper:
        diff["hyperparams"] = hyper
    ds = _dict_diff(datasets_a, datasets_b)
    if ds:
        diff["datasets"] = ds
    models = _dict_diff(_input_models(a), _input_models(b))
    if models:
        diff["models"] = models
    conf_a, conf_b = a.get("configuration") or {}, b.get("configuration") or {}
    if isinstance(conf_a, dict) and isinstance(conf_b, dict):
        changed_conf = sorted(
            k
            for k in set(conf_a) | set(conf_b)
            if (conf_a.get(k) or {}).get("value") != (conf_b.get(k) or {}).get("value")
        )
        if changed_conf:
            diff["configuration"] = changed_conf
    return diff
