"""Playbooks: YAML files that list checks with parameters, validated with pydantic.

Errors name the file, the line and the key, and suggest the closest check id or parameter name.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.config import CronSchedule, IntervalSchedule, validate_cron, validate_timezone
from bot.engine.registry import REGISTRY, load_builtin_checks
from bot.errors import BotError
from bot.yamlload import LocatedDict, load_with_lines


class PlaybookError(BotError):
    """A playbook that cannot be used; the message says where and what to change."""


class CheckEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["info", "warning", "critical"] | None = None  # caps the check's severity


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    server: str | None = None
    schedule: str | IntervalSchedule | CronSchedule | None = None
    timezone: str | None = None
    channel: str | None = None
    # Opt-in: a finding about one task also goes to the task's owner as a Slack DM when its incident opens
    # (ClearML user -> Slack user through slack.owners, else users.lookupByEmail); the channel keeps the thread.
    notify_owner: bool = False
    checks: list[CheckEntry] = Field(min_length=1)
    path: str | None = Field(default=None, exclude=True)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return validate_timezone(value)

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: Any) -> Any:
        expr = value if isinstance(value, str) else getattr(value, "cron", None)
        if expr is not None:
            validate_cron(expr, getattr(value, "timezone", None))
        return value

    @property
    def cron(self) -> str | None:
        if isinstance(self.schedule, str):
            return self.schedule
        if isinstance(self.schedule, CronSchedule):
            return self.schedule.cron
        return None


# ------------------------------------------------------------------------------------------------
# Loading with line numbers


def _line_of(doc: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest key in `loc` that we can find in the located document."""
    node, line = doc, getattr(doc, "line", None)
    for part in loc:
        if isinstance(node, LocatedDict):
            found = node.key_lines.get(part)
            line = found[1] if found else line
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


def _closest(word: str, options: list[str]) -> str:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" (did you mean `{match[0]}`?)" if match else ""


MAX_NODES = 100_000  # YAML anchors can make a tiny file expand to billions of values ("billion laughs")
# A playbook is a few kB (the shipped ones are under 3 kB). Checked before parsing: a 3 MB file took 24 s to parse
# and a 50 MB one 300 s and 5 GB.
MAX_PLAYBOOK_BYTES = 64 * 1024


class _TooLarge(BotError):
    pass


def _plain(value: Any, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(value, dict):
        return {k: _plain(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, budget) for v in value]
    return value


def _too_big(source: str, size: int) -> PlaybookError:
    return PlaybookError(f"{source}: {size} bytes, over the {MAX_PLAYBOOK_BYTES // 1024} kB a playbook may have: "
                         "split it into several playbooks")


def parse_playbook(text: str, source: str = "<playbook>") -> Playbook:
    if len(text) > MAX_PLAYBOOK_BYTES:
        raise _too_big(source, len(text.encode("utf-8", errors="replace")))
    load_builtin_checks()
    try:
        doc = load_with_lines(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlaybookError(f"{source}{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise PlaybookError(f"{source}: nested too deeply to be a playbook") from None
    if not isinstance(doc, dict):
        raise PlaybookError(f"{source}: a playbook is a mapping with `name` and `checks`, got {type(doc).__name__}")
    try:
        plain = _plain(doc, [MAX_NODES])
    except (_TooLarge, RecursionError):
        raise PlaybookError(
            f"{source}: more than {MAX_NODES} values once YAML anchors are expanded: too large to be a playbook"
        ) from None
    try:
        playbook = Playbook.model_validate(plain)
    except ValidationError as exc:
        raise PlaybookError(_describe(exc, doc, source)) from None
    for index, entry in enumerate(playbook.checks):
        loc: tuple[Any, ...] = ("checks", index, "check")
        spec = REGISTRY.get(entry.check)
        if spec is None:
            line = _line_of(doc, loc)
            raise PlaybookError(
                f"{source}:{line}: checks[{index}].check: unknown check `{entry.check}`"
                f"{_closest(entry.check, sorted(REGISTRY))}; `clearml-chatops checks` lists them all"
            )
        try:
            spec.params_model.model_validate(entry.params)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            line = _line_of(doc, ("checks", index, "params", *err["loc"])) or _line_of(doc, loc)
            hint = ""
            if err["type"] == "extra_forbidden":
                hint = _closest(str(err["loc"][-1]), sorted(spec.params_model.model_fields))
                msg = f"unknown parameter `{key}` for {entry.check}{hint}"
            else:
                msg = f"parameter `{key}` of {entry.check}: {err['msg']} (got {err.get('input')!r})"
            raise PlaybookError(f"{source}:{line}: checks[{index}].params: {msg}") from None
    return playbook


def _describe(exc: ValidationError, doc: Any, source: str) -> str:
    errors = exc.errors()
    # A misspelt key also shows up as "missing": name the misspelling, it is the real mistake.
    # A validator's own complaint (a bad duration) is the most specific, whatever union branch it came from.
    err = next(
        (e for e in errors if e["type"] == "value_error"),
        next((e for e in errors if e["type"] == "extra_forbidden"), errors[0]),
    )
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("str", "IntervalSchedule", "CronSchedule")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_of(doc, loc)
    where = f"{source}:{line}" if line else source
    if err["type"] == "extra_forbidden":
        if len(loc) == 1:
            allowed = sorted(f for f in Playbook.model_fields if f != "path")
        elif loc[0] == "schedule":
            allowed = ["cron", "every", "timezone"]
        else:
            allowed = sorted(CheckEntry.model_fields)
        return f"{where}: unknown key `{key}`{_closest(str(loc[-1]), allowed)}; allowed: {', '.join(allowed)}"
    if err["type"] == "missing":
        return f"{where}: missing required key `{key}`"
    return f"{where}: `{key}`: {err['msg']}"


# Parsed playbooks by path, valid while the file's mtime and size are unchanged. The Slack bot reads the playbooks
# directory on every command, and parsing costs milliseconds per file (a third of the bot's CPU during a burst of
# /clearml status); a stat is cheap, so an edited file is still noticed. A file that fails to parse is cached with
# its error too (it is not re-parsed on every command). Callers get copies: a Playbook is mutable.
_PARSED: dict[str, tuple[tuple[int, int], Playbook | PlaybookError]] = {}
_PARSED_MAX = 256


def _signature(file: Path) -> tuple[int, int]:
    st = file.stat()
    return st.st_mtime_ns, st.st_size


def cached_playbook(path: str | Path) -> Playbook | PlaybookError | None:
    """The parse of `path` if it is cached and the file is unchanged (a stat, no read or parse); else None."""
    file = Path(path)
    try:
        signature = _signature(file)
    except OSError:
        return None
    hit = _PARSED.get(str(file))
    if hit is None or hit[0] != signature:
        return None
    return hit[1].model_copy(deep=True) if isinstance(hit[1], Playbook) else hit[1]


def load_playbook(path: str | Path) -> Playbook:
    file = Path(path)
    if not file.is_file():
        raise PlaybookError(f"{file}: no such playbook file")
    cached = cached_playbook(file)
    if isinstance(cached, PlaybookError):
        raise cached
    if cached is not None:
        return cached
    try:
        signature = _signature(file)
        if signature[1] > MAX_PLAYBOOK_BYTES:  # before reading: an oversized file is never read or parsed
            raise _too_big(str(file), signature[1])
        with file.open("rb") as fh:
            data = fh.read(MAX_PLAYBOOK_BYTES + 1)
        if len(data) > MAX_PLAYBOOK_BYTES:  # grew since the stat
            raise _too_big(str(file), len(data))
        text = data.decode("utf-8")
    except PlaybookError as exc:
        _remember(file, signature, exc)
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"{file}: cannot read: {exc}") from None
    try:
        playbook = parse_playbook(text, str(file))
    except PlaybookError as exc:
        _remember(file, signature, exc)
        raise
    playbook.path = str(file)
    _remember(file, signature, playbook.model_copy(deep=True))
    return playbook


def _remember(file: Path, signature: tuple[int, int], result: Playbook | PlaybookError) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[str(file)] = (signature, result)


def find_playbooks(directory: str | Path) -> list[Path]:
    folder = Path(directory)
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def resolve_playbook(ref: str, directory: str | Path = "playbooks") -> Path:
    """A playbook argument: a path, or a bare name looked up in the playbooks directory."""
    candidate = Path(ref)
    if candidate.is_file():
        return candidate
    for suffix in (".yaml", ".yml"):
        named = Path(directory) / f"{ref}{suffix}"
        if named.is_file():
            return named
    names = [p.stem for p in find_playbooks(directory)] if Path(directory).is_dir() else []
    raise PlaybookError(
        f"no playbook `{ref}`: not a file, and not in {directory}/{_closest(ref, names)}"
        + (f"; available: {', '.join(names)}" if names else "")
    )
