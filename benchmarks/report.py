"""Suite results -> the per-dataset tables (ptmkit recipes, scikit-learn floor, paper rows).

One result row per trained model (dataset, scope, block, model, seed, metrics, phase times,
peak memory). Tables show mean ± sd over seeds; the paper's rows come from the catalogue
(the ``uniptms`` dataset plugin, which holds the data README's reference numbers).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ptmkit import metrics
from ptmkit.catalog import get as catalog_entry
from ptmkit.table import render

from .floor import MODELS as FLOOR_MODELS

#: Metric columns of the tables; ACC/SEN/SPEC/MCC at the validation-chosen threshold.
METRICS = ("acc", "sen", "spec", "mcc", "auc", "ap")
#: result-row key of each table metric (the tuned ones for threshold-dependent metrics)
SOURCE_KEY = {"acc": "tuned_acc", "sen": "tuned_sen", "spec": "tuned_spec", "mcc": "tuned_mcc"}
PHASES = ("features_s", "train_s", "inference_s")
BLOCKS = ("ptmkit", "scikit-learn floor", "paper")
FULL, LEAK_FREE = "test", "leak-free test"


def metric_row(report: dict[str, float]) -> dict[str, float]:
    """The table's metrics out of a ``ptmkit.metrics.evaluate`` report."""
    return {m: float(report[SOURCE_KEY.get(m, m)]) for m in METRICS}


def leak_free(
    rows: pd.DataFrame, scores: np.ndarray, threshold: float, train_windows: frozenset[str]
) -> tuple[dict[str, float], int]:
    """Metrics on the test rows whose window never occurs in train/valid (same threshold)."""
    keep = ~rows["window"].isin(train_windows).to_numpy()
    labels = rows["label"].to_numpy().astype(int)[keep]
    return metric_row(metrics.evaluate(labels, np.asarray(scores)[keep], threshold)), int((~keep).sum())


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if not len(values):
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def paper_rows(dataset: str) -> list[dict[str, object]]:
    """The paper's published rows for ``dataset`` (independent test; MCC/AUC/AP only)."""
    entry = catalog_entry(dataset)
    src = "paper, ProtT5-XL + ESM-2-650M, GPU"
    rows = []
    for label, m in entry.reference.items():
        rows.append({"block": "paper", "model": label, "source": src, "mcc": m.mcc, "auc": m.auc, "ap": m.ap})
    name, mcc = entry.best_tool or ("none reported", float("nan"))
    rows.append(
        {
            "block": "paper",
            "model": f"{name} (best single-type tool)",
            "source": "paper's comparison table",
            "mcc": mcc,
        }
    )
    return rows


def dataset_table(results: pd.DataFrame, dataset: str, scope: str = FULL, seeds: int = 3) -> pd.DataFrame:
    """One dataset's table: ptmkit rows, floor rows (this suite), paper rows (published)."""
    part = results[(results["dataset"] == dataset) & (results["scope"] == scope)]
    part = part[part["status"] == "FINISHED"]
    out = []
    for block in BLOCKS[:2]:
        for model, group in part[part["block"] == block].groupby("model", sort=False):
            n = len(group)
            name = f"{model} ({FLOOR_MODELS[model][0]})" if model in FLOOR_MODELS else model
            row = {"block": block, "model": name, "source": f"this suite, {n} run{'s' * (n != 1)}"}
            row.update({m: _mean_sd(group[m]) for m in METRICS})
            out.append(row)
    if scope == FULL:
        for row in paper_rows(dataset):
            out.append({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in row.items()})
    frame = pd.DataFrame(out, columns=["block", "model", "source", *METRICS]).fillna("")
    frame.columns = ["block", "model", "source", *(m.upper() for m in METRICS)]
    return frame


def time_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean wall seconds per phase, epochs and peak memory per dataset and model (test scope)."""
    part = results[(results["scope"] == FULL) & (results["status"] == "FINISHED")]
    if not len(part):
        return pd.DataFrame()
    # floor rows carry no epochs or feature timings: a report written after floor rows alone
    # (they finish first) must still render
    wanted = ["features_s", "train_s", "inference_s", "epochs_run", "best_epoch"]
    wanted += ["start_mb", "peak_mb", "wall_s"]
    part = part.reindex(columns=[*part.columns, *(c for c in wanted if c not in part.columns)])
    part = part.assign(best_last=best_is_last(part))
    agg = part.groupby(["dataset", "model"], sort=False).agg(
        runs=("seed", "size"),
        features_s=("features_s", "mean"),
        train_s=("train_s", "mean"),
        inference_s=("inference_s", "mean"),
        epochs=("epochs_run", "mean"),
        best_last=("best_last", "mean"),
        start_mb=("start_mb", "min"),
        peak_mb=("peak_mb", "max"),
        total_s=("wall_s", "sum"),
    )
    return agg.reset_index()


def best_is_last(rows: pd.DataFrame) -> pd.Series:
    """1.0 where a trained model's best epoch was its last (it may still have been improving),
    0.0 where it was earlier, NaN for rows without epochs (the floor)."""
    best = pd.to_numeric(rows["best_epoch"], errors="coerce")
    run = pd.to_numeric(rows["epochs_run"], errors="coerce")
    return (best == run).astype(float).where(best.notna() & run.notna())


def targets(results: pd.DataFrame, recipe: str = "uniptms-lite") -> pd.DataFrame:
    """Per dataset: does ``recipe`` beat the best floor on MCC and AP, and reach UniPTMs-mini's MCC?"""
    part = results[(results["scope"] == FULL) & (results["status"] == "FINISHED")]
    rows = []
    for dataset, group in part.groupby("dataset", sort=False):
        mine = group[group["model"] == recipe]
        floor = group[group["block"] == "scikit-learn floor"]
        if not len(mine):
            continue
        mean = mine[["mcc", "ap"]].astype(float).mean()
        best_floor = floor.groupby("model")[["mcc", "ap"]].mean().max() if len(floor) else None
        mini = catalog_entry(dataset).reference["UniPTMs-mini"].mcc
        ours = group[group["block"] == "ptmkit"].groupby("model")["mcc"].mean()
        rows.append(
            {
                "dataset": dataset,
                f"{recipe} MCC": mean["mcc"],
                "best floor MCC": np.nan if best_floor is None else best_floor["mcc"],
                f"{recipe} AP": mean["ap"],
                "best floor AP": np.nan if best_floor is None else best_floor["ap"],
                "beats floor (MCC and AP)": _yes(
                    best_floor is not None
                    and mean["mcc"] > best_floor["mcc"]
                    and mean["ap"] > best_floor["ap"]
                ),
                "UniPTMs-mini MCC": mini,
                f"{recipe} reaches it": _yes(mean["mcc"] >= mini),
                "best ptmkit recipe (MCC)": f"{ours.idxmax()} ({ours.max():.3f})",
                "it reaches it": _yes(ours.max() >= mini),
            }
        )
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset: mean MCC / AP of every ptmkit recipe, the best floor and the paper."""
    part = results[(results["scope"] == FULL) & (results["status"] == "FINISHED")]
    rows = []
    for dataset, group in part.groupby("dataset", sort=False):
        row: dict[str, object] = {"dataset": dataset}
        for model, g in group[group["block"] == "ptmkit"].groupby("model", sort=False):
            row[model] = f"{g['mcc'].mean():.3f} / {g['ap'].mean():.3f}"
        floor = group[group["block"] == "scikit-learn floor"].groupby("model")[["mcc", "ap"]].mean()
        if len(floor):
            row["best floor"] = f"{floor['mcc'].max():.3f} / {floor['ap'].max():.3f}"
        entry = catalog_entry(dataset)
        for label in ("UniPTMs-mini", "UniPTMs"):
            ref = entry.reference[label]
            row[f"paper {label}"] = f"{ref.mcc:.3f} / {ref.ap:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown(results: pd.DataFrame, datasets: list[str], header: str, total_s: float) -> str:
    """The whole report: header (command, machine, versions), one table per dataset, timings."""
    parts = [header.rstrip(), ""]
    if len(results):
        parts.append("### Summary: test MCC / AP (mean over seeds; best floor model per metric)\n")
        parts.append(render(summary(results), "markdown", index=False))
    for dataset in datasets:
        entry = catalog_entry(dataset)
        parts.append(f"### {dataset}: {entry.ptm} ({entry.residues})\n")
        parts.append(render(dataset_table(results, dataset), "markdown", index=False))
        clean = results[(results["dataset"] == dataset) & (results["scope"] == LEAK_FREE)]
        if len(clean):
            dropped = int(clean["dropped"].iloc[0])
            parts.append(
                f"\n{dataset} with the {dropped} test rows whose window also occurs in training removed "
                "(same models, same thresholds):\n"
            )
            parts.append(render(dataset_table(results, dataset, LEAK_FREE), "markdown", index=False))
        parts.append("")
    tt = time_table(results)
    if len(tt):
        parts.append(
            "### Where the time goes\n\nMean wall seconds per run and phase (features, training with "
            "validation, one test pass), epochs run, the share of runs whose best epoch was the last "
            "(`best_last`), and memory: `start_mb` is the worker's resident "
            "memory when the model started (imports and data already held), `peak_mb` its highest "
            "resident memory while the model ran (max over seeds); `total_s` sums the runs.\n"
        )
        parts.append(render(tt, "markdown", digits=1, index=False))
        trained = results[(results["scope"] == FULL) & (results["status"] == "FINISHED")]
        last = best_is_last(trained.reindex(columns=["best_epoch", "epochs_run"])).dropna()
        if len(last):
            parts.append(
                f"\n{int(last.sum())} of {len(last)} trained models had their best epoch at the last "
                "epoch run (`best_last` above: the share per dataset and model).\n"
            )
        parts.append(f"\nSuite wall time: {total_s / 60:.1f} min.\n")
    tg = targets(results)
    if len(tg):
        parts.append("### Targets\n")
        parts.append(render(tg, "markdown", index=False))
    return "\n".join(parts) + "\n"


def check(fresh: pd.DataFrame, committed: pd.DataFrame, spread: float = 2.0) -> pd.DataFrame:
    """Compare a rerun with committed results: is each mean within ``spread`` sd of the other?

    The tolerance per (dataset, model, metric) is ``spread * max(sd_committed, sd_fresh)`` plus
    0.005 (so single-run rows, whose sd is undefined, are held to 0.005).
    """
    keys = ["dataset", "scope", "model"]
    rows = []
    for key, new in fresh[fresh["status"] == "FINISHED"].groupby(keys, sort=False):
        old = committed[
            (committed["status"] == "FINISHED")
            & (committed["dataset"] == key[0])
            & (committed["scope"] == key[1])
            & (committed["model"] == key[2])
        ]
        if not len(old):
            continue
        for m in METRICS:
            a, b = old[m].astype(float), new[m].astype(float)
            sd = max(_sd(a), _sd(b))
            tol = spread * sd + 0.005
            diff = abs(a.mean() - b.mean())
            rows.append(
                {
                    "dataset": key[0],
                    "scope": key[1],
                    "model": key[2],
                    "metric": m,
                    "committed": a.mean(),
                    "rerun": b.mean(),
                    "diff": diff,
                    "tolerance": tol,
                    "within": _yes(diff <= tol),
                }
            )
    return pd.DataFrame(rows)


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 and not math.isnan(values.std(ddof=1)) else 0.0
