"""The run's phases and trackers, the training loop's early stopping, optimisers and lr schedules."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.errors import PtmkitError, RecipeError
from ptmkit.inference import Encoded
from ptmkit.recipe import MONITORS, SGD_MOMENTUM, TrainSection
from ptmkit.run import run
from ptmkit.trackers import MlflowTracker, NullTracker, Tracker
from ptmkit.train import (
    Callback,
    EarlyStopping,
    build_optimizer,
    build_schedule,
    epoch_rows,
    epoch_size,
    fit,
    seed_everything,
    steps_per_epoch,
)

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"

TINY = """\
name: tiny
data:
  source: uniptms:H1
features:
  onehot: {type: onehot}
model:
  nodes:
    head: {type: mlp_head, inputs: [onehot], pool: center, hidden: [8]}
losses:
  - {type: bce}
train:
  epochs: 4
  batch_size: 8
  lr: 0.01
  seed: 0
"""


def _train(**values: object) -> TrainSection:
    return TrainSection.model_validate(values)


def _rows(values: list[float], key: str = "val/ap") -> list[dict[str, float]]:
    return [{key: v, "train/loss": 1.0} for v in values]


def _watch(stopping: EarlyStopping, values: list[float], key: str = "val/ap") -> list[int]:
    """Feed one epoch per value until the stopper says stop; the epochs that were a new best."""
    best = []
    for epoch, row in enumerate(_rows(values, key), 1):
        if stopping.update(epoch, row):
            best.append(epoch)
        if stopping.should_stop:
            break
    return best


# ---------------------------------------------------------------------------- early stopping
def test_early_stopping_max_keeps_strict_improvements_and_stops_after_patience():
    stopping = EarlyStopping("val/ap", "max", 0.0, patience=2)
    assert _watch(stopping, [0.5, 0.6, 0.6, 0.55, 0.9]) == [1, 2]  # a tie is no new best
    assert stopping.best == 0.6 and stopping.best_epoch == 2 and stopping.wait == 2 and stopping.should_stop


def test_early_stopping_min_for_losses():
    stopping = EarlyStopping("val/loss", "min", 0.0, patience=3)
    assert _watch(stopping, [0.9, 0.7, 0.8, 0.6, 0.6, 0.61, 0.65], "val/loss") == [1, 2, 4]
    assert stopping.best == 0.6 and stopping.best_epoch == 4 and stopping.should_stop


def test_early_stopping_min_delta_needs_a_larger_gain():
    stopping = EarlyStopping("val/auc", "max", min_delta=0.05, patience=10)
    assert _watch(stopping, [0.50, 0.54, 0.56, 0.60, 0.66], "val/auc") == [1, 3, 5]
    stopping = EarlyStopping("val/loss", "min", min_delta=0.1, patience=1)
    assert _watch(stopping, [1.0, 0.95, 0.5], "val/loss") == [1]  # 0.05 is not enough; stopped


def test_early_stopping_a_non_finite_first_epoch_is_beaten_by_any_finite_one():
    stopping = EarlyStopping("val/ap", "max", patience=5)
    assert _watch(stopping, [math.nan, math.nan, 0.1, 0.05]) == [1, 3]


def test_early_stopping_refuses_bad_settings_and_a_missing_metric():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(PtmkitError, match=r"'val/f1'.*valid: val/ap"):
        EarlyStopping("val/f1").update(1, {"val/ap": 0.5, "time/epoch_s": 1.0})


def test_the_recipe_section_defaults_reproduce_the_old_stopping_rule():
    section = _train().early_stopping
    assert (section.monitor, section.mode, section.min_delta, section.patience) == ("val/ap", "max", 0.0, 5)
    assert _train(early_stopping={"monitor": "val/loss"}).early_stopping.mode == "min"
    assert _train(early_stopping={"monitor": "val/loss", "mode": "max"}).early_stopping.mode == "max"


def test_train_patience_is_early_stopping_patience_and_two_values_are_refused(tmp_path):
    assert _train(patience=2).early_stopping.patience == 2
    assert _train(early_stopping={"patience": 3}).patience == 3
    assert _train(patience=3, early_stopping={"patience": 3}).patience == 3  # a filled recipe
    path = tmp_path / "r.yaml"
    path.write_text(TINY + "  patience: 2\n  early_stopping: {patience: 3}\n")
    line = TINY.count("\n") + 1
    with pytest.raises(RecipeError, match=rf"r.yaml:{line}: train.patience: .*given twice, differently"):
        recipes.load(path)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["train.patience=2", "train.early_stopping.monitor=val/loss"],
        ["train.optimizer=sgd", "train.schedule.type=cosine", "train.schedule.warmup_epochs=0.5"],
        [
            "train.optimizer=sgd",
            "train.momentum=0.5",
            "train.schedule.type=linear",
            "train.lr=1",
            "train.schedule.min_lr=0.1",
        ],
    ],
)
def test_the_filled_train_section_parses_back_to_itself(overrides):
    train = recipes.load(QUICKSTART, overrides).train
    again = TrainSection.model_validate(train.model_dump(mode="json"))
    assert again == train


def test_an_unknown_monitor_is_refused_at_its_recipe_line_with_the_valid_names(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TINY + "  early_stopping:\n    monitor: val/f1\n")
    with pytest.raises(RecipeError) as err:
        recipes.load(path)
    line = TINY.count("\n") + 2
    assert f"r.yaml:{line}: train.early_stopping.monitor: " in str(err.value)
    assert "unknown monitor 'val/f1'; valid: " + ", ".join(MONITORS) in str(err.value)


# ---------------------------------------------------------------------------- optimisers, schedules
def _param() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_optimizer_choice():
    adamw = build_optimizer(_param(), _train(lr=0.01, weight_decay=0.1))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.1
    adam = build_optimizer(_param(), _train(optimizer="adam", lr=0.01, weight_decay=0.0))
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.01
    sgd = build_optimizer(_param(), _train(optimizer="sgd", momentum=0.5))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.5
    assert build_optimizer(_param(), _train(optimizer="sgd")).defaults["momentum"] == SGD_MOMENTUM == 0.9
    with pytest.raises(ValueError, match="momentum applies to optimizer sgd only"):
        _train(momentum=0.5)


def _lrs(schedule: object, lr: float, per_epoch: int, epochs: int) -> list[float]:
    """The lr of every optimisation step of a schedule built as fit builds it."""
    optimiser = torch.optim.SGD(_param(), lr=lr)
    cfg = _train(lr=lr, schedule=schedule)
    scheduler = build_schedule(optimiser, cfg.schedule, lr, per_epoch, epochs)
    out = []
    for _ in range(per_epoch * epochs):
        out.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
    return out


def test_constant_without_warmup_builds_no_scheduler():
    optimiser = torch.optim.SGD(_param(), lr=0.1)
    assert build_schedule(optimiser, _train().schedule, 0.1, 10, 3) is None


def test_warmup_then_cosine_and_linear_decay_per_step():
    lrs = _lrs({"type": "cosine", "warmup_steps": 3, "min_lr": 0.1}, lr=1.0, per_epoch=5, epochs=3)
    assert lrs[:3] == pytest.approx([0.25, 0.5, 0.75])  # warmup: (step + 1) / (warmup + 1)
    assert lrs[3] == pytest.approx(1.0)  # the peak right after warmup
    halfway = 3 + (15 - 3) // 2
    assert lrs[halfway] == pytest.approx(0.1 + 0.9 * 0.5)  # cosine: half way down at half time
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 11 / 12)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))
    lrs = _lrs({"type": "linear", "warmup_epochs": 1}, lr=0.5, per_epoch=4, epochs=3)  # warmup 4 steps
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lrs[4:] == pytest.approx([0.5 * (1 - i / 8) for i in range(8)])
    lrs = _lrs("constant", lr=0.2, per_epoch=2, epochs=2)
    assert lrs == [0.2] * 4
    lrs = _lrs({"warmup_steps": 1}, lr=0.2, per_epoch=2, epochs=2)
    assert lrs == pytest.approx([0.1, 0.2, 0.2, 0.2])


def test_schedule_settings_are_checked():
    assert _train(schedule="cosine").schedule.type == "cosine"
    with pytest.raises(ValueError, match="not both"):
        _train(schedule={"type": "cosine", "warmup_steps": 1, "warmup_epochs": 1})
    with pytest.raises(ValueError, match="above train.lr"):
        _train(lr=0.01, schedule={"type": "cosine", "min_lr": 0.1})


@pytest.mark.parametrize("cap", [None, 7, 64, 1000])
@pytest.mark.parametrize("balanced", [False, True])
def test_epoch_size_is_the_length_epoch_rows_draws(cap, balanced):
    labels = torch.tensor([1.0] * 9 + [0.0] * 40)
    gen = torch.Generator().manual_seed(0)
    drawn = epoch_rows(49, cap, gen, labels if balanced else None)
    assert epoch_size(49, cap, labels if balanced else None) == len(drawn)


def test_steps_per_epoch_skips_a_last_batch_of_one():
    assert [steps_per_epoch(n, 4) for n in (1, 2, 4, 5, 6, 8, 9)] == [1, 1, 1, 1, 2, 2, 2]


# ---------------------------------------------------------------------------- fit, on synthetic rows
class Rows(Callback):
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.started = self.ended = 0

    def on_fit_start(self, cfg: TrainSection) -> None:
        self.started += 1

    def on_epoch_end(self, epoch: int, row: dict[str, float]) -> None:
        self.rows.append((epoch, dict(row)))

    def on_fit_end(self, result: object) -> None:
        self.ended += 1


def _synthetic(tmp_path: Path, extra: str = "") -> tuple:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY + extra)
    recipe = recipes.load(path)
    seed_everything(0)
    assembly = assemble(recipe)
    (dim,) = assembly.feature_dims.values()
    gen = torch.Generator().manual_seed(1)

    def rows(n: int) -> Encoded:
        labels = (torch.arange(n) % 3 == 0).float()
        x = torch.randn(n, 7, dim, generator=gen) + labels[:, None, None]
        return Encoded({"onehot": x}, torch.ones(n, 7, dtype=torch.bool), labels)

    train, valid = rows(48), rows(24)
    for _, loss in assembly.losses:
        loss.setup(train.labels.numpy())
    return recipe, assembly, train, valid


def test_fit_calls_back_each_epoch_and_logs_the_scheduled_lr(tmp_path):
    extra = "  schedule: {type: linear, warmup_epochs: 1}\n  early_stopping: {monitor: val/loss}\n"
    recipe, assembly, train, valid = _synthetic(tmp_path, extra)
    seen = Rows()
    result = fit(
        assembly.graph, assembly.losses, train, valid, recipe.train, tmp_path / "best.pt",
        callbacks=[seen], progress=False,
    )  # fmt: skip
    assert seen.started == 1 and seen.ended == 1
    assert [e for e, _ in seen.rows] == list(range(1, result.epochs_run + 1))
    per_epoch = steps_per_epoch(48, 8)
    lrs = [row["train/lr"] for _, row in seen.rows]
    assert lrs[0] == pytest.approx(0.01 / (per_epoch + 1))  # the first warmup step
    assert lrs[1] == pytest.approx(0.01)  # after one epoch of warmup: the peak
    assert lrs[2] == pytest.approx(0.01 * (1 - per_epoch / (3 * per_epoch)))
    losses = [row["val/loss"] for _, row in seen.rows]
    assert result.monitor == "val/loss" and result.best_value == min(losses)
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert set(MONITORS) <= set(seen.rows[0][1])


def test_fit_stops_after_patience_and_keeps_the_best_weights(tmp_path):
    recipe, assembly, train, valid = _synthetic(tmp_path, "  early_stopping: {patience: 1}\n")
    train_cfg = recipe.train.model_copy(update={"epochs": 30})
    seen = Rows()
    result = fit(
        assembly.graph, assembly.losses, train, valid, train_cfg, tmp_path / "best.pt",
        callbacks=[seen], progress=False,
    )  # fmt: skip
    aps = [row["val/ap"] for _, row in seen.rows]
    assert result.epochs_run < 30 and result.epochs_run == result.best_epoch + 1
    assert result.best_value == aps[result.best_epoch - 1] == max(aps)
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(v, assembly.graph.state_dict()[k]) for k, v in state.items())


# ---------------------------------------------------------------------------- trackers, one real run
def test_the_trackers_satisfy_the_protocol():
    recipe = recipes.load(QUICKSTART)
    assert isinstance(NullTracker(), Tracker) and isinstance(MlflowTracker(recipe.tracking), Tracker)


@pytest.mark.slow
def test_a_null_tracker_run_writes_no_store_and_scores_as_the_mlflow_run(workdir, data_root):
    recipe = recipes.load(QUICKSTART, ["train.epochs=2", "train.threads=1"])
    null = NullTracker(keep_files=True)
    quiet = run(recipe, data_root=data_root, tracker=null, progress=False, inference_repeats=1)
    assert not list(workdir.rglob("mlflow.db")) and not (workdir / "mlartifacts").exists()
    assert quiet.run_id == "" and quiet.store.startswith("none") and null.status == "FINISHED"
    assert [step for step, _ in null.metrics["val/ap"]] == [1, 2]
    assert null.tags["ptmkit.dataset"] == "uniptms:H1" and null.params["data.source"] == "uniptms:H1"
    logged_files = {"data/splits.tsv.gz", "predictions/test_predictions.csv", "plots/roc_pr.png"}
    assert logged_files <= set(null.artifacts)
    assert null.artifacts["model/weights.pt"] and "recipe.yaml" in null.texts
    assert null.phases[0] == "feature encoding" and null.phases[-1] == "the end of the run"

    tracked = run(recipe, data_root=data_root, progress=False, inference_repeats=1)
    assert tracked.test == quiet.test and tracked.threshold == quiet.threshold
    assert tracked.best_epoch == quiet.best_epoch
    logged = MlflowClient(tracked.tracking_uri).get_run(tracked.run_id)
    assert logged.info.status == "FINISHED"
    for name in ("test/mcc", "test/auc", "val/ap", "train/lr", "threshold/val_max_mcc"):
        assert logged.data.metrics[name] == null.last[name], name
    assert set(logged.data.params) == set(null.params)


def test_a_null_tracker_run_that_crashes_records_why(workdir, data_root):
    recipe = recipes.load(QUICKSTART, ["train.epochs=1", "train.device=mps"])
    null = NullTracker()
    with pytest.raises(PtmkitError, match="train.device is 'mps'"):
        run(recipe, data_root=data_root, tracker=null, progress=False)
    assert null.status == "FAILED" and null.error.startswith("PtmkitError: train.device is 'mps'")
    assert not list(workdir.rglob("mlflow.db"))


def test_nesting_options_belong_to_the_default_tracker(data_root):
    recipe = recipes.load(QUICKSTART)
    with pytest.raises(ValueError, match="default MlflowTracker"):
        run(recipe, data_root=data_root, tracker=NullTracker(), nested=True)


def test_a_window_budget_ends_training_after_the_epoch_that_reaches_it(tmp_path):
    recipe, assembly, train, valid = _synthetic(tmp_path, "  budget: {windows: 100}\n")
    cfg = recipe.train.model_copy(update={"epochs": 30})
    result = fit(assembly.graph, assembly.losses, train, valid, cfg, tmp_path / "best.pt", progress=False)
    # 48 windows an epoch: 96 after two epochs, 144 after three (the first to reach 100)
    assert (result.epochs_run, result.windows_seen, result.stopped_by) == (3, 144, "budget_windows")
    assert result.best_is_last == (result.best_epoch == 3)


def test_a_decaying_schedule_spans_the_window_budget_not_train_epochs(tmp_path):
    extra = "  schedule: {type: linear}\n  budget: {windows: 100}\n"
    recipe, assembly, train, valid = _synthetic(tmp_path, extra)
    cfg = recipe.train.model_copy(update={"epochs": 30})
    seen = Rows()
    result = fit(
        assembly.graph, assembly.losses, train, valid, cfg, tmp_path / "best.pt", callbacks=[seen],
        progress=False,
    )  # fmt: skip
    assert result.epochs_run == 3  # 48 windows an epoch: the budget of 100 ends in epoch 3 ...
    lrs = [row["train/lr"] for _, row in seen.rows]  # the lr each epoch began with
    # ... so the decay spans 3 epochs (over train.epochs it would be 0.01, 0.01 * 29/30, ...)
    assert lrs == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3])


def test_bf16_precision_runs_the_step_in_bfloat16_and_keeps_weights_and_scoring_fp32(tmp_path):
    from ptmkit.train import native_bf16

    recipe, assembly, train, valid = _synthetic(tmp_path, "  precision: bf16\n")
    seen: list[tuple[bool, torch.dtype]] = []
    linear = next(m for m in assembly.graph.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(
            assembly.graph, assembly.losses, train, valid, recipe.train, tmp_path / "b.pt", progress=False
        )
    emulated = [w for w in caught if "bf16 instructions" in str(w.message)]
    assert len(emulated) == (0 if native_bf16() else 1)  # said once, and only where it is slower
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation
    assert all(p.dtype == torch.float32 for p in assembly.graph.parameters())
    assert all(math.isfinite(row["train/loss"]) for row in result.history)


COMPILE_SCRIPT = """
import sys, warnings
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_training import _synthetic
from ptmkit.train import fit
tmp = Path({tmp!r})
recipe, assembly, train, valid = _synthetic(tmp, "  compile: true\\n")
stop = recipe.train.early_stopping.model_copy(update={{"patience": 5}})
cfg = recipe.train.model_copy(update={{"epochs": 2, "early_stopping": stop}})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = fit(assembly.graph, assembly.losses, train, valid, cfg, tmp / "c.pt", progress=False)
said = [str(w.message) for w in caught if "train.compile" in str(w.message)]
keys = list(torch.load(tmp / "c.pt", weights_only=True))
print("FELL_BACK" if said else "COMPILED", result.epochs_run, any("_orig_mod" in k for k in keys))
print(said[0] if said else "")
"""


def _compile_run(tmp_path: Path, **env: str) -> list[str]:
    import os
    import subprocess
    import sys

    script = COMPILE_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    environ = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), **env}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environ, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.mark.slow
def test_compile_trains_through_torch_compile_and_saves_plain_weights(tmp_path):
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the fallback test covers this machine")
    lines = _compile_run(tmp_path)
    assert lines[0] == "COMPILED 2 False", lines  # compiled, both epochs, no _orig_mod. in the checkpoint


@pytest.mark.slow
def test_compile_without_a_compiler_falls_back_to_eager_with_the_reason(tmp_path):
    lines = _compile_run(tmp_path, CXX=str(tmp_path / "no-such-c++"))
    assert lines[0] == "FELL_BACK 2 False"
    assert lines[1].startswith("train.compile: torch.compile failed here, training eagerly: ")


def test_a_seconds_budget_and_the_stop_reasons(tmp_path):
    recipe, assembly, train, valid = _synthetic(tmp_path, "  budget: {seconds: 1.0e-9}\n")
    cfg = recipe.train.model_copy(update={"epochs": 30})
    result = fit(assembly.graph, assembly.losses, train, valid, cfg, tmp_path / "best.pt", progress=False)
    assert (result.epochs_run, result.stopped_by) == (1, "budget_seconds")
    recipe, assembly, train, valid = _synthetic(tmp_path)
    result = fit(
        assembly.graph, assembly.losses, train, valid, recipe.train, tmp_path / "best.pt", progress=False
    )
    assert result.stopped_by in ("epochs", "early_stopping")
    assert result.windows_seen == 48 * result.epochs_run


def test_budget_settings_are_checked(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(TINY + "  budget: {windows: 0, minutes: 3}\n")
    with pytest.raises(RecipeError) as err:
        recipes.load(path)
    text = str(err.value)
    assert "train.budget.windows: Input should be greater than or equal to 1" in text
    assert "train.budget.minutes: unknown key; valid keys: windows, seconds" in text
