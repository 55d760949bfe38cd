"""Run ids as people pass them around: a full id, or any unique prefix of >= 8 hex digits.

``ptmkit compare`` prints the shortest prefix (at least 8 digits) that is unique in the store,
as ``git log --oneline`` does, and every command that takes a run (``predict``, ``evaluate``,
``register``, ``runs:/<id>/model``) accepts it back. An ambiguous prefix lists its candidates, an
unknown one names the store and the closest ids, and fewer than 8 digits is refused: a short
prefix that is unique today would silently mean another run once the store has grown.
"""

from __future__ import annotations

import bisect
import difflib
import re
import sqlite3
import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .errors import PtmkitError, first_line

#: Fewest hex digits accepted as a run id prefix (git's default abbreviation is 7; MLflow ids
#: are 32 random hex digits, so 8 makes an accidental clash in a store of 10 000 runs ~1 %).
MIN_PREFIX = 8
FULL = 32
_HEX = re.compile(r"[0-9a-f]+")
#: Candidates listed for an ambiguous prefix or an unknown id.
SHOW = 5


class RunIdError(PtmkitError):
    """A run id or prefix that is malformed, ambiguous or not in the store."""


class NoPackagedModel(PtmkitError):
    """The run exists but holds no packaged model (still running, failed, killed, or older)."""


def is_hex(text: str) -> bool:
    """True for a string of hex digits (either case): something meant as a run id."""
    return bool(_HEX.fullmatch(text.strip().lower()))


def normalise(text: str, what: str = "run id") -> str:
    """Lower-case hex of 8..32 digits, else ``RunIdError`` stating the rule."""
    value = text.strip().lower()
    if not _HEX.fullmatch(value):
        raise RunIdError(
            f"{what} {text!r} is not a run id: run ids are hex digits (0-9, a-f); give the id or at "
            f"least its first {MIN_PREFIX} digits, as `ptmkit compare` shows them"
        )
    if len(value) > FULL:
        raise RunIdError(f"{what} {text!r} has {len(value)} hex digits; an MLflow run id has {FULL}")
    if len(value) < MIN_PREFIX:
        raise RunIdError(
            f"{what} {text!r} is too short ({len(value)} hex digits): give at least {MIN_PREFIX} digits "
            "of the run id, as `ptmkit compare` shows them"
        )
    return value


# ---------------------------------------------------------------------------- the store's ids
def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def _experiment_ids(client: Any) -> list[str]:
    from mlflow.entities import ViewType

    return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]


def _search(client: Any, filter_string: str) -> list[Any]:
    """Every run (deleted too: a prefix must stay unique among them) matching ``filter_string``."""
    from .tracking import search_all_runs

    return search_all_runs(client, _experiment_ids(client), filter_string, deleted=True)


def all_run_ids(uri: str) -> list[str]:
    """Every run id in the store, deleted runs included (a prefix must be unique among them all).

    A sqlite store is read directly (one indexed column, read-only): loading every run through
    ``search_runs`` would also load all their metrics, params and tags.
    """
    from .tracking import sqlite_path

    db = sqlite_path(uri)
    if db is not None and db.is_file():
        try:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
            try:
                return [row[0] for row in con.execute("select run_uuid from runs")]
            finally:
                con.close()
        except sqlite3.Error:
            pass  # not MLflow's schema as we know it: ask MLflow
    return [run.info.run_id for run in _search(_client(uri), "")]


def short_ids(ids: Iterable[str], universe: Iterable[str], min_len: int = MIN_PREFIX) -> dict[str, str]:
    """The shortest prefix (>= ``min_len``) of each id that no other id of ``universe`` shares."""
    ordered = sorted(set(universe) | set(ids))
    out = {}
    for run_id in ids:
        i = bisect.bisect_left(ordered, run_id)
        need = min_len
        for j in (i - 1, i + 1):
            if 0 <= j < len(ordered):
                other = ordered[j]
                common = next((k for k, (a, b) in enumerate(zip(run_id, other, strict=False)) if a != b), 0)
                need = max(need, common + 1)
        out[run_id] = run_id[:need]
    return out


def _describe(run: Any, shown: str) -> str:
    name = run.data.tags.get("mlflow.runName", "")
    started = ""
    if run.info.start_time:
        started = ", started " + datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
    deleted = ", deleted" if run.info.lifecycle_stage == "deleted" else ""
    return f"{shown} ({name or 'unnamed'}, {run.info.status}{started}{deleted})"


def resolve(text: str, uri: str, what: str = "run id") -> str:
    """The full run id that ``text`` (an id or a unique prefix of >= 8 hex digits) names in ``uri``."""
    prefix = normalise(text, what)
    client = _client(uri)
    if len(prefix) == FULL:
        try:
            return client.get_run(prefix).info.run_id
        except Exception:  # RESOURCE_DOES_NOT_EXIST: say so below, with close matches
            found: list[Any] = []
    else:
        found = _search(client, f"attributes.run_id LIKE '{prefix}%'")
    if len(found) == 1:
        return found[0].info.run_id
    if found:
        found.sort(key=lambda r: r.info.run_id)
        shorts = short_ids([r.info.run_id for r in found], [r.info.run_id for r in found])
        listed = "; ".join(_describe(r, shorts[r.info.run_id]) for r in found[:SHOW])
        more = f"; and {len(found) - SHOW} more" if len(found) > SHOW else ""
        raise RunIdError(
            f"run id prefix {prefix} is ambiguous in {uri}: {len(found)} runs start with it: "
            f"{listed}{more}; give more digits"
        )
    ids = all_run_ids(uri)
    if not ids:
        raise RunIdError(
            f"no run {prefix} in {uri}: the store holds no runs (wrong store? pass --uri or set "
            "MLFLOW_TRACKING_URI)"
        )
    heads: dict[str, str] = {}
    for run_id in ids:
        heads.setdefault(run_id[: len(prefix)], run_id)
    close = difflib.get_close_matches(prefix, list(heads), n=3, cutoff=0.6)
    hint = "; `ptmkit compare` lists the runs and their ids"
    if close:
        shorts = short_ids([heads[c] for c in close], ids)
        runs = [client.get_run(heads[c]) for c in close]
        hint = "; closest: " + "; ".join(_describe(r, shorts[r.info.run_id]) for r in runs) + hint
    raise RunIdError(f"no run {prefix} in {uri}{hint}")


# ---------------------------------------------------------------------------- runs:/ URIs
def split_runs_uri(ref: str) -> tuple[str, str]:
    """``runs:/<id>/<path>`` -> (id as given, artifact path; ``model`` when none is given)."""
    rest = ref.removeprefix("runs:/").strip("/")
    run_part, _, path = rest.partition("/")
    return run_part, path.strip("/") or "model"


def _has_artifact(client: Any, run_id: str, path: str) -> bool:
    try:
        if client.list_artifacts(run_id, path):
            return True  # a folder with files in it
        parent = path.rpartition("/")[0] or None
        return any(a.path == path for a in client.list_artifacts(run_id, parent))
    except Exception:  # artifact store unreachable: let the download say what is wrong
        return True


def require_model(uri: str, run_id: str, path: str = "model", shown: str | None = None) -> None:
    """Refuse, in one line, a run that holds no packaged model at ``path``.

    A run that is RUNNING, FAILED or KILLED normally has none (it is written at the very end);
    the message says which, with the run's recorded error. One that ended badly *after*
    packaging still has a usable model: it is used, with a warning.
    """
    client = _client(uri)
    run = client.get_run(run_id)
    status = run.info.status
    shown = shown or run_id
    error = run.data.tags.get("ptmkit.error", "")
    why = f" ({first_line(error, 160)})" if error else ""
    if not _has_artifact(client, run_id, path):
        if status == "FINISHED":
            raise NoPackagedModel(
                f"run {shown} finished but has no packaged model (no '{path}' artifact; runs made before "
                "ptmkit packaged models, or not by ptmkit, have none)"
            )
        raise NoPackagedModel(f"run {shown} is {status} and has no packaged model{why}")
    if status != "FINISHED":
        warnings.warn(
            f"run {shown} is {status}{why}; using the model it packaged before that",
            UserWarning,
            stacklevel=2,
        )


def resolve_runs_uri(ref: str, uri: str) -> str:
    """``runs:/<prefix>/<path>`` -> ``runs:/<full id>/<path>``, checked to hold a packaged model."""
    run_part, path = split_runs_uri(ref)
    try:
        run_id = resolve(run_part, uri)
    except RunIdError as exc:
        raise RunIdError(f"{ref}: {exc}") from None
    require_model(uri, run_id, path, shown=run_part.lower())
    return f"runs:/{run_id}/{path}"
