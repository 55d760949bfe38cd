"""Run lifecycle and the tracking store under faults: signals, SIGKILL, concurrent starts, stores
that are missing or not databases, a taken UI port, and which store a command uses.

Real processes, a real sqlite MLflow store, real signals. The runs train a one-hot MLP head on
the real H1 set; the "long" ones would take hours and are signalled once the store shows them
RUNNING and training (each process is started by these tests and killed by them at the end).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest
from mlflow.tracking import MlflowClient

from ptmkit import tracking
from ptmkit.cli import main

TINY = """\
name: tiny
data:
  source: uniptms:H1
  split: {valid: 0.1, seed: 0}
features:
  onehot: {type: onehot}
model:
  nodes:
    head: {type: mlp_head, inputs: [onehot], pool: center, hidden: [8]}
losses:
  - {type: bce}
train: {epochs: 2, batch_size: 64, lr: 0.01, patience: 5, seed: 0, epoch_windows: 256, threads: 1}
tracking: {experiment: runs-tests}
"""
# a run that only ends when signalled, with epochs of about half a second: the store sees
# writes at the pace of real training (a tight loop of writes from four processes would only
# measure sqlite's lock contention)
LONG = """\
name: long
data:
  source: uniptms:H1
  split: {valid: 0.1, seed: 0}
features:
  onehot: {type: onehot}
model:
  nodes:
    enc: {type: bilstm, inputs: [onehot], hidden: 16}
    head: {type: mlp_head, inputs: [enc], pool: center, hidden: [8]}
losses:
  - {type: bce}
train: {epochs: 1000000, batch_size: 16, patience: 1000000, seed: 0, epoch_windows: 256, threads: 1}
tracking: {experiment: runs-tests}
"""
SWEEP = """\
name: long-sweep
base: long.yaml
variants:
  first: {}
  second: {}
"""
PROTEIN = "MKTAYHAKRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"  # H at 6 and 26
CLI = "import sys; from ptmkit.cli import main; sys.exit(main())"


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A child's environment: the per-user store in ``home``, fast heartbeats, no outside store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PTMKIT_HOME=str(home), PTMKIT_CEILING_DIRS=str(home), PTMKIT_HEARTBEAT_S="0.5", **extra)
    scratch = home.parent / f"{home.name}-tmp"  # what a SIGKILLed run leaves stays in pytest's tmp
    scratch.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(scratch)
    return env


def _ptmkit(*args: str, cwd: Path, env: dict[str, str], **kw) -> subprocess.Popen:  # noqa: ANN003
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def _default_sigint() -> None:
    """In the child: SIGINT at its default (a shell's background job would inherit SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _runs(db: Path) -> dict[str, dict]:
    """run name -> status, epochs logged, heartbeat: read straight from the sqlite file."""
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(
                "select r.name, r.run_uuid, r.status,"
                " (select count(*) from metrics m where m.run_uuid = r.run_uuid and m.key = 'val/ap'),"
                " (select value from tags t where t.run_uuid = r.run_uuid and t.key = 'ptmkit.heartbeat')"
                " from runs r"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or tables not migrated yet
        return {}
    return {n: {"id": i, "status": s, "epochs": e, "heartbeat": h} for n, i, s, e, h in rows}


def _wait(condition, procs: list[subprocess.Popen], what: str, timeout: float = 150) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"{what}: a process ended early ({p.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _finish(procs: dict[str, subprocess.Popen], timeout: float = 120) -> dict[str, tuple[int, str]]:
    out = {}
    for name, p in procs.items():
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        out[name] = (p.returncode, err)
    return out


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if "INFO mlflow" not in line]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def signalled(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict:
    """Four long jobs started together on a new per-user store (the store lock in use): SIGTERM,
    SIGINT and SIGKILL to one run each, SIGTERM to a sweep while its first variant trains."""
    home = tmp_path_factory.mktemp("home")
    cwd = home / "work"  # a folder without a store: everything goes to <PTMKIT_HOME>/mlflow.db
    cwd.mkdir()
    (cwd / "long.yaml").write_text(LONG)
    (cwd / "sweep.yaml").write_text(SWEEP)
    env = _env(home, PTMKIT_DATA=str(data_root))
    db = home / "mlflow.db"

    def run(name: str, **kw) -> subprocess.Popen:  # noqa: ANN003
        args = ("run", "long.yaml", "--quiet", "--set", f"tracking.run_name={name}")
        return _ptmkit(*args, cwd=cwd, env=env, **kw)

    procs = {
        "sigterm": run("sigterm"),
        "sigint": run("sigint", preexec_fn=_default_sigint),
        "sigkill": run("sigkill"),
        "sweep": _ptmkit("sweep", "sweep.yaml", "--quiet", cwd=cwd, env=env),
    }
    try:

        def training() -> bool:
            runs = _runs(db)
            return all(
                runs.get(n, {}).get("status") == "RUNNING" and runs[n]["epochs"] >= 2 and runs[n]["heartbeat"]
                for n in ("sigterm", "sigint", "sigkill", "first")
            )

        _wait(training, list(procs.values()), "four jobs RUNNING and training")
        procs["sigterm"].send_signal(signal.SIGTERM)
        procs["sigint"].send_signal(signal.SIGINT)
        procs["sigkill"].send_signal(signal.SIGKILL)
        procs["sweep"].send_signal(signal.SIGTERM)
        done = _finish(procs)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("runs-tests")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    return {"home": home, "cwd": cwd, "db": db, "done": done, "runs": runs, "client": client}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("job", "code", "message", "reason"),
    [
        ("sigterm", 143, "terminated by SIGTERM", "terminated by SIGTERM during epoch "),
        ("sigint", 130, "interrupted by SIGINT", "interrupted by SIGINT during epoch "),
    ],
)
def test_a_signalled_run_exits_with_its_code_and_is_ended_killed(signalled, job, code, message, reason):
    rc, err = signalled["done"][job]
    assert rc == code, err[-2000:]
    assert "warning: could not record" not in err, err[-2000:]
    assert _last_line(err) == message
    run = signalled["runs"][job]
    assert run.info.status == "KILLED" and run.info.end_time
    assert run.data.tags["ptmkit.error"].startswith(reason)
    # what was logged before the signal is in the store: the epochs' metrics, params, recipe
    history = signalled["client"].get_metric_history(run.info.run_id, "val/ap")
    assert len(history) >= 2 and run.data.params["data.source"] == "uniptms:H1"
    epoch = int(run.data.tags["ptmkit.error"].split("during epoch ")[1].split()[0])
    assert epoch - max(m.step for m in history) in (0, 1)  # in progress (or being logged)


@pytest.mark.slow
def test_a_signalled_sweep_ends_the_parent_and_the_running_variant_killed(signalled):
    rc, err = signalled["done"]["sweep"]
    assert rc == 143 and _last_line(err) == "terminated by SIGTERM"
    runs = signalled["runs"]
    parent, child = runs["long-sweep"], runs["first"]
    assert parent.info.status == "KILLED" and child.info.status == "KILLED"
    assert parent.data.tags["ptmkit.error"] == "terminated by SIGTERM during variant first (1/2)"
    assert child.data.tags["ptmkit.error"].startswith("terminated by SIGTERM during epoch ")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "second" not in runs  # the sweep stopped; it did not go on to the next variant


@pytest.mark.slow
def test_runs_go_to_the_per_user_store_not_the_working_directory(signalled):
    assert signalled["db"].is_file() and not (signalled["cwd"] / "mlflow.db").exists()
    assert (signalled["home"] / "mlartifacts").is_dir()


@pytest.fixture
def stale_store(signalled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the store with the SIGKILLed run (still RUNNING), a live run whose heartbeat
    beats, and the finished/killed ones; silent for more than 3 s counts as stale here (the
    heartbeat is whole unix seconds: a live run's can look up to 1 s older than it is)."""
    db = tmp_path / "mlflow.db"
    shutil.copy(signalled["db"], db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    killed = client.get_run(signalled["runs"]["sigkill"].info.run_id)
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to end it
    exp = client.get_experiment_by_name("runs-tests")
    live = client.create_run(exp.experiment_id, run_name="live")
    beat = tracking.Heartbeat(live.info.run_id, uri, interval=0.2)
    beat.__enter__()
    last = max(float(killed.data.tags["ptmkit.heartbeat"]), killed.info.start_time / 1000)
    while time.time() - last <= 3.5:
        time.sleep(0.1)
    monkeypatch.setenv("PTMKIT_STALE_AFTER_S", "3")
    monkeypatch.setenv("PTMKIT_HEARTBEAT_S", "0.5")  # as the runs above beat: 3 s is six beats
    yield {"uri": uri, "client": client, "killed": killed.info.run_id, "live": live.info.run_id}
    beat.__exit__()


def _compare_rows(capsys, uri: str) -> dict[str, str]:
    assert main(["compare", "--uri", uri, "--format", "csv"]) == 0
    rows = csv.DictReader(io.StringIO(capsys.readouterr().out))
    return {r["run"]: r["status"] for r in rows}


@pytest.mark.slow
def test_compare_flags_a_run_without_heartbeat_as_stale_and_a_live_one_not(stale_store, capsys, monkeypatch):
    status = _compare_rows(capsys, stale_store["uri"])
    assert status["sigkill"] == "RUNNING (stale)"
    assert status["live"] == "RUNNING" and status["sigterm"] == "KILLED"
    monkeypatch.delenv("PTMKIT_STALE_AFTER_S")  # the default limit (10 min): not stale yet
    assert _compare_rows(capsys, stale_store["uri"])["sigkill"] == "RUNNING"


@pytest.mark.slow
def test_mark_stale_dry_run_lists_the_run_and_changes_nothing(stale_store, capsys, monkeypatch):
    monkeypatch.delenv("PTMKIT_STALE_AFTER_S")  # the limit from --older-than instead
    assert main(["runs", "mark-stale", "--uri", stale_store["uri"], "--dry-run", "--older-than", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 RUNNING run(s) silent for more than 3 s" in out
    assert f"would mark {stale_store['killed']} ('sigkill' in 'runs-tests') FAILED" in out
    assert stale_store["live"] not in out
    assert stale_store["client"].get_run(stale_store["killed"]).info.status == "RUNNING"


@pytest.mark.slow
def test_mark_stale_ends_the_silent_run_failed_and_leaves_the_others(stale_store, capsys):
    client = stale_store["client"]
    experiment = client.get_run(stale_store["killed"]).info.experiment_id
    before = {r.info.run_id: r.info.status for r in client.search_runs([experiment])}
    assert main(["runs", "mark-stale", "--uri", stale_store["uri"]]) == 0
    out = capsys.readouterr().out
    assert "1 RUNNING run(s) silent for more than 3 s" in out and f"marked {stale_store['killed']}" in out
    killed = client.get_run(stale_store["killed"])
    assert killed.info.status == "FAILED"
    assert killed.data.tags["ptmkit.error"].startswith("stale: no heartbeat since ")
    # ended at its last sign of life, not now
    assert killed.info.end_time <= float(killed.data.tags["ptmkit.heartbeat"]) * 1000 + 1000
    after = {r.info.run_id: r.info.status for r in client.search_runs([experiment])}
    assert after.pop(stale_store["killed"]) == "FAILED"
    assert after == {k: v for k, v in before.items() if k != stale_store["killed"]}
    assert after[stale_store["live"]] == "RUNNING"
    assert main(["runs", "mark-stale", "--uri", stale_store["uri"]]) == 0  # idempotent
    assert "0 RUNNING run(s)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-5"])
def test_mark_stale_refuses_a_limit_that_is_not_positive(tmp_path, capsys, value):
    assert main(["runs", "mark-stale", "--uri", str(tmp_path / "x.db"), f"--older-than={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --older-than: expected a positive number of seconds (got {float(value):g})"


def test_a_stale_run_is_running_and_silent_for_longer_than_the_limit():
    now = 10_000.0
    assert tracking.is_stale("RUNNING", now - 700, None, now=now, limit=600)
    assert not tracking.is_stale("RUNNING", now - 700, now - 30, now=now, limit=600)  # beating
    assert not tracking.is_stale("RUNNING", now - 30, None, now=now, limit=600)  # just started
    assert not tracking.is_stale("FINISHED", now - 7000, None, now=now, limit=600)
    assert tracking.STALE_AFTER_S == 600 and tracking.HEARTBEAT_S == 60


# ---------------------------------------------------------------------------- concurrent starts
@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict:
    """Two short runs started together on a store that does not exist yet."""
    home = tmp_path_factory.mktemp("pair")
    (home / "tiny.yaml").write_text(TINY)
    env = _env(home, PTMKIT_DATA=str(data_root))
    procs = {
        n: _ptmkit("run", "tiny.yaml", "--quiet", "--set", f"tracking.run_name={n}", cwd=home, env=env)
        for n in ("one", "two")
    }
    done = _finish(procs, timeout=300)
    return {"home": home, "db": home / "mlflow.db", "done": done}


@pytest.mark.slow
def test_two_runs_started_together_on_a_new_store_both_finish(pair):
    for name, (rc, err) in pair["done"].items():
        assert rc == 0, f"{name}: {err[-2000:]}"
    runs = _runs(pair["db"])
    assert {n: r["status"] for n, r in runs.items()} == {"one": "FINISHED", "two": "FINISHED"}
    assert (pair["home"] / "mlflow.db.lock").is_file()


_OPEN = """\
import sys, time
from pathlib import Path
import mlflow.tracking  # imported before the start: the processes then race for the store only
from ptmkit import tracking
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
print(tracking.setup(sys.argv[1], "raced"))
"""


@pytest.mark.slow
def test_processes_opening_a_new_store_at_the_same_moment_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN, uri, str(go)], stdout=PIPE, stderr=PIPE, text=True)
        for _ in range(4)
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4
    go.touch()
    results = [(p.wait(timeout=120), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err[-2000:]
    assert len({out for _, out, _ in results}) == 1  # one experiment, the same id for all
    assert {e.name for e in MlflowClient(uri).search_experiments()} == {"raced", "Default"}


@pytest.mark.slow
def test_predict_with_uri_from_another_folder_leaves_no_store_there(pair, tmp_path):
    run_id = _runs(pair["db"])["one"]["id"]
    (tmp_path / "p.fasta").write_text(f">p1\n{PROTEIN}\n")
    env = _env(tmp_path / "elsewhere")  # no per-user store there either
    done = subprocess.run(
        [sys.executable, "-c", CLI, "predict", run_id, "p.fasta", "-o", "sites.tsv", "--quiet",
         "--uri", f"sqlite:///{pair['db']}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "sites.tsv").is_file()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------------------- bad stores
def _sqlite_other(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("create table notes (id integer, body text)")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    ("make", "as_uri", "message"),
    [
        (lambda p: p.write_text("my notes\n"), True, "is not an MLflow database (not an SQLite file)"),
        (lambda p: p.write_text("my notes\n"), False, "is not an MLflow database (not an SQLite file)"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84), True, "is not an MLflow database"),
        (_sqlite_other, True, "is not an MLflow database (an SQLite file with other tables: notes)"),
        (lambda p: p.mkdir(), True, "is not an MLflow database (it is a directory)"),
    ],
    ids=["text-uri", "text-path", "truncated-sqlite", "foreign-sqlite", "directory"],
)
def test_compare_on_a_file_that_is_not_an_mlflow_database_says_so(tmp_path, capsys, make, as_uri, message):
    target = tmp_path / "notes.txt"
    make(target)
    before = target.read_bytes() if target.is_file() else None
    uri = f"sqlite:///{target}" if as_uri else str(target)
    assert main(["compare", "--uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {target} {message}")
    assert (target.read_bytes() if target.is_file() else None) == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no lock file, no store


@pytest.mark.parametrize("command", [["compare"], ["runs", "mark-stale"]])
def test_a_missing_store_is_reported_and_not_created(tmp_path, capsys, command):
    db = tmp_path / "nowhere" / "mlflow.db"
    assert main([*command, "--uri", f"sqlite:///{db}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: no runs: store {db} does not exist"
    assert not db.parent.exists()


def test_compare_with_no_store_anywhere_names_the_per_user_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTMKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # empty = unset
    assert main(["compare"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    db = tmp_path / "home" / "mlflow.db"
    assert err[0] == f"runs in sqlite:///{db} (the per-user store; set PTMKIT_HOME to move it)"
    assert err[-1] == f"error: no runs: store {db} does not exist"
    assert not (tmp_path / "home").exists() and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------------- which store
@pytest.mark.parametrize(
    ("uri", "env", "project", "expected", "origin"),
    [
        ("sqlite:///{t}/given.db", "sqlite:///{t}/env.db", True, "sqlite:///{t}/given.db", "--uri"),
        ("{t}/given.db", None, False, "sqlite:///{t}/given.db", "--uri"),
        (None, "sqlite:///{t}/env.db", True, "sqlite:///{t}/env.db", "MLFLOW_TRACKING_URI"),
        (None, "", True, "sqlite:///{t}/project/mlflow.db", "nearest mlflow.db"),
        (None, None, True, "sqlite:///{t}/project/mlflow.db", "nearest mlflow.db"),
        (None, None, False, "sqlite:///{t}/home/mlflow.db", "per-user store"),
    ],
    ids=["uri-over-env", "uri-as-path", "env-over-project", "empty-env-is-unset", "project", "per-user"],
)
def test_store_precedence(tmp_path, monkeypatch, uri, env, project, expected, origin):
    t = tmp_path.resolve()
    cwd = t / "project" / "sub" / "deeper"
    cwd.mkdir(parents=True)
    if project:
        _sqlite_other(t / "project" / "mlflow.db")  # any file named mlflow.db marks the project
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PTMKIT_HOME", str(t / "home"))
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(t))
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env.format(t=t))
    store = tracking.resolve_store(uri.format(t=t) if uri else None)
    assert store.uri == expected.format(t=t) and origin in store.origin


@pytest.mark.slow
def test_a_relative_sqlite_uri_is_the_working_folder_s_wherever_the_process_goes(
    tmp_path, monkeypatch, data_root
):
    # MLflow keeps one store per URI string in a process: a relative URI must be made absolute,
    # or a second run from another folder would write to the first folder's database
    monkeypatch.setenv("PTMKIT_DATA", str(data_root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        assert tracking.resolve_store("sqlite:///mlflow.db?timeout=5").uri == (
            f"sqlite:///{folder.resolve() / 'mlflow.db'}?timeout=5"
        )
        relative = TINY.replace("tracking: {", 'tracking: {uri: "sqlite:///mlflow.db", ')
        (folder / "tiny.yaml").write_text(relative)
        assert main(["run", "tiny.yaml", "--quiet"]) == 0
    for name in ("first", "second"):
        client = MlflowClient(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1, name
    assert tracking.normalise_uri("sqlite:///:memory:") == "sqlite:///:memory:"


def test_the_walk_up_stops_at_a_ceiling(tmp_path, monkeypatch):
    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(tmp_path / "a"))
    assert tracking.find_project_store(tmp_path / "a" / "b") is None
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(tmp_path))
    assert tracking.find_project_store(tmp_path / "a" / "b") == (tmp_path / "mlflow.db").resolve()


def test_the_walk_up_stops_at_a_shared_scratch_folder(tmp_path, monkeypatch):
    """Another user's /tmp/mlflow.db must not receive your runs: sticky world-writable folders end
    the walk, and a store someone else owns is passed over."""
    scratch = tmp_path / "scratch"
    (scratch / "me" / "work").mkdir(parents=True)
    (scratch / "mlflow.db").write_bytes(b"")
    monkeypatch.setenv("PTMKIT_CEILING_DIRS", str(tmp_path))
    assert tracking.find_project_store(scratch / "me" / "work") == (scratch / "mlflow.db").resolve()
    scratch.chmod(0o1777)
    assert tracking.find_project_store(scratch / "me" / "work") is None
    assert tracking.find_project_store(scratch) == (scratch / "mlflow.db").resolve()  # cwd itself is fine
    if os.geteuid() == 0:
        os.chown(scratch / "mlflow.db", 12345, 12345)
        assert tracking.find_project_store(scratch) is None


def test_the_per_user_store_defaults_to_the_user_data_dir(monkeypatch):
    import platformdirs

    monkeypatch.delenv("PTMKIT_HOME")
    assert tracking.ptmkit_home() == Path(platformdirs.user_data_dir("ptmkit"))


# ---------------------------------------------------------------------------- ptmkit ui
def test_ui_on_a_taken_port_exits_with_one_line_before_starting_a_server(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", CLI, "ui", "--port", str(port), "--uri", f"sqlite:///{tmp_path / 'm.db'}"],
            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: port {port} on 127.0.0.1 is already in use")
    assert "choose another with --port" in line and "ptmkit ui --port " in line
    assert not (tmp_path / "m.db").exists()  # nothing was opened or created


def test_ui_on_a_file_that_is_not_a_database_exits_with_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-c", CLI, "ui", "--port", str(port), "--uri", str(notes)],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"error: {notes} is not an MLflow database (not an SQLite file)"
    assert notes.read_text() == "my notes\n"


# ---------------------------------------------------------------------------- crashes
def test_a_crash_inside_a_run_ends_it_failed_with_the_error(workdir, capsys):
    handler = signal.getsignal(signal.SIGTERM)
    (workdir / "tiny.yaml").write_text(TINY)
    assert main(["run", "tiny.yaml", "--quiet", "--set", "train.device=mps"]) == 2
    assert "train.device is 'mps'" in capsys.readouterr().err
    (run,) = _runs(workdir / "mlflow.db").values()
    assert run["status"] == "FAILED" and run["heartbeat"]
    tags = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(run["id"]).data.tags
    assert tags["ptmkit.error"].startswith("PtmkitError: train.device is 'mps'")
    assert signal.getsignal(signal.SIGTERM) == handler  # main() gave the caller its handler back


def test_a_signal_while_a_store_is_created_is_held_until_it_is_done(tmp_path):
    from ptmkit.errors import Terminated
    from ptmkit.tracking import sigterm_unwinds

    restore = sigterm_unwinds()  # as `ptmkit` installs it: SIGTERM raises Terminated
    reached = False
    try:
        with pytest.raises(Terminated), tracking.deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # a handler that raised would have done so by now
            reached = True
    finally:
        restore()
    assert reached


@pytest.mark.parametrize("limit", ["--older-than=30", "env"])
def test_a_stale_limit_shorter_than_two_heartbeats_is_refused(tmp_path, capsys, monkeypatch, limit):
    """Live runs beat every 60 s: calling 30 s of silence stale would fail them."""
    monkeypatch.delenv("PTMKIT_HEARTBEAT_S", raising=False)
    args = ["runs", "mark-stale", "--uri", str(tmp_path / "x.db")]
    if limit == "env":
        monkeypatch.setenv("PTMKIT_STALE_AFTER_S", "30")
    else:
        args.append(limit)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "30 s is shorter than two heartbeats (120 s)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


def test_ending_a_run_waits_out_a_locked_store_but_not_other_errors() -> None:
    """Several processes signalled at once end their runs at the same moment; sqlite refuses all
    but one writer ("database is locked") for longer than its own 5 s wait under load."""
    import sqlite3

    from ptmkit import tracking

    calls = []

    def locked_twice() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    tracking._while_locked(locked_twice, budget=5)
    assert len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: runs")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        tracking._while_locked(broken, budget=5)
    assert len(calls) == 1  # not retried

    def always_locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        tracking._while_locked(always_locked, budget=0.2)


@pytest.fixture
def sigint_raises():
    """SIGINT raising KeyboardInterrupt, as in a foreground run (pytest started as a background job
    of a shell inherits SIGINT ignored, and the signal would then never arrive)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_a_signal_inside_a_metric_write_waits_for_the_write_then_ends_the_run_killed(tmp_path: Path) -> None:
    """SIGINT delivered while SQLAlchemy is inserting a metric: the write completes (no half
    transaction holding sqlite's lock), then the run unwinds and is ended KILLED at once."""
    import sqlalchemy
    from mlflow.tracking._tracking_service.utils import _get_store

    from ptmkit.recipe import TrackingSection
    from ptmkit.trackers import MlflowTracker

    db = tmp_path / "mlflow.db"
    tracker = MlflowTracker(TrackingSection(uri=f"sqlite:///{db}", experiment="signals"))
    armed = []

    def interrupt_the_insert(conn, cursor, statement, *args) -> None:  # noqa: ANN001, ANN002
        if armed and statement.lstrip().upper().startswith("INSERT INTO METRICS"):
            armed.clear()
            signal.raise_signal(signal.SIGINT)  # the real signal, to the default handler

    with pytest.raises(KeyboardInterrupt), tracker.start("sig"):
        engine = _get_store().engine
        sqlalchemy.event.listen(engine, "before_cursor_execute", interrupt_the_insert)
        try:
            tracker.log_metrics({"val/ap": 0.5}, step=0)
            armed.append(True)
            tracker.log_metrics({"val/ap": 0.6}, step=1)
            pytest.fail("the signal was not delivered after the write")
        finally:
            sqlalchemy.event.remove(engine, "before_cursor_execute", interrupt_the_insert)
    assert tracker.status == "KILLED"
    run = MlflowClient(f"sqlite:///{db}").get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["ptmkit.error"] == "interrupted by SIGINT during setup"
    history = MlflowClient(f"sqlite:///{db}").get_metric_history(tracker.run_id, "val/ap")
    assert [m.value for m in history] == [0.5, 0.6]  # the interrupted write is whole


def test_what_an_unwound_frame_holds_on_the_store_is_let_go_before_the_run_is_ended(tmp_path: Path) -> None:
    """A statement cut short by a signal keeps sqlite's shared lock while its frame's locals
    live (and the traceback keeps them alive): no write can commit until they are released."""
    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x)")
    con.executemany("insert into t values (?)", [(i,) for i in range(100)])
    con.commit()
    con.close()

    def read_until_interrupted() -> None:
        reader = sqlite3.connect(db)
        rows = reader.execute("select x from t")
        rows.fetchone()  # the statement is mid-way: it holds the shared lock
        raise KeyboardInterrupt

    try:
        read_until_interrupted()
    except KeyboardInterrupt as exc:
        writer = sqlite3.connect(db, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.execute("insert into t values (-1)")
            writer.commit()
        writer.rollback()
        tracking.release_interrupted(exc)
        writer.execute("insert into t values (-1)")
        writer.commit()  # nothing holds the lock any more
        writer.close()


@pytest.mark.usefixtures("sigint_raises")
def test_a_signal_while_the_run_is_created_ends_it_killed_not_finished(tmp_path: Path) -> None:
    """The signal is held while MLflow creates the run, then lands inside the run's guard: the
    run is ended KILLED (left open, MLflow's exit hook would have ended it FINISHED)."""
    import mlflow
    import sqlalchemy
    from mlflow.tracking._tracking_service.utils import _get_store

    from ptmkit.recipe import TrackingSection
    from ptmkit.trackers import MlflowTracker

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.setup(uri, "signals")  # the store exists: the listener sees only the run's creation
    engine = _get_store().engine

    def interrupt(conn, cursor, statement, *args) -> None:  # noqa: ANN001, ANN002
        if statement.lstrip().upper().startswith("INSERT INTO RUNS"):
            signal.raise_signal(signal.SIGINT)

    tracker = MlflowTracker(TrackingSection(uri=uri, experiment="signals"))
    sqlalchemy.event.listen(engine, "before_cursor_execute", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), tracker.start("created"):
            pytest.fail("the held signal was not delivered before the body")
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", interrupt)
    assert mlflow.active_run() is None
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED" and tracker.status == "KILLED"
    assert run.data.tags["ptmkit.error"] == "interrupted by SIGINT during setup"
