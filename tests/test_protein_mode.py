"""Whole-protein mode (``data.unit: protein``, issue 14): proteins cut into units, every residue
scored in one pass, rows read at their residue; training, packaging, predict and evaluate."""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ptmkit import recipe as recipes
from ptmkit.assembly import assemble
from ptmkit.errors import GraphError, PtmkitError, RecipeError
from ptmkit.evaluate import evaluate_model
from ptmkit.hooks import build_registry
from ptmkit.inference import UnitEncoded, encode, infer
from ptmkit.model_store import load_model
from ptmkit.predict import predict_file
from ptmkit.recipe import ProteinSection
from ptmkit.run import run
from ptmkit.sitetable import SiteTable, window_at
from ptmkit.trackers import MlflowTracker
from ptmkit.units import bucket_widths, chunk_owner, chunk_spans, plan_units

AMINO = "ACDEFGHILMNPQRSTVWY"


def _protein(rng: random.Random, length: int) -> tuple[str, list[int]]:
    """A random protein whose K sites with a W two residues before them are modified."""
    seq = [rng.choice(AMINO.replace("W", "")) for _ in range(length)]
    for i in range(3, length, 9):  # plant candidates: some with the motif, some without
        seq[i] = "K"
        if rng.random() < 0.4:
            seq[i - 2] = "W"
    text = "".join(seq)
    sites = [i + 1 for i, c in enumerate(text) if c == "K" and i >= 2 and text[i - 2] == "W"]
    return text, sites


def _marked(seq: str, sites: list[int]) -> str:
    marks = set(sites)
    return "".join(c + ("#" if i + 1 in marks else "") for i, c in enumerate(seq))


@pytest.fixture
def proteins(tmp_path: Path) -> Path:
    """Whole proteins (40 to 700 residues, some longer than the chunk) with marked K sites."""
    rng = random.Random(0)
    lines = []
    for i in range(70):
        seq, sites = _protein(rng, rng.choice([40, 120, 260, 700]))
        lines += [f">sp|P{i:05d}|PROT{i}", _marked(seq, sites)]
    path = tmp_path / "proteins.fasta"
    path.write_text("\n".join(lines) + "\n")
    return path


def _recipe(tmp_path: Path, **data: object) -> dict:
    return {
        "name": "whole-k",
        "data": {
            "source": {
                "reader": "musite_fasta",
                "name": "synthetic-k",
                "ptm": "succinylation",
                "residues": "K",
                "files": {"unsplit": "proteins.fasta"},
            },
            "window": 15,
            "split": {"valid": 0.2, "test": 0.2, "seed": 0, "group": "protein"},
            "unit": "protein",
            "protein": {"chunk": 301, "overlap": 40, "batch_residues": 2048},
            **data,
        },
        "features": {"onehot": {"type": "onehot"}},
        "model": {
            "nodes": {
                "trunk": {
                    "type": "multiscale_cnn",
                    "inputs": ["onehot"],
                    "channels": 8,
                    "kernel_sizes": [1, 5],
                },
                "heads": {
                    "type": "task_heads",
                    "inputs": ["trunk"],
                    "tasks": 1,
                    "hidden": [16],
                    "pool": "none",
                },
            }
        },
        "losses": [{"type": "weighted_ce", "pos_weight": 1.0}],
        "train": {"epochs": 8, "lr": 0.01, "seed": 0},
        "tracking": {"experiment": "protein-mode", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }


def _write(tmp_path: Path, raw: dict, name: str = "whole.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _site_table(sequences: dict[str, str], sites: list[tuple[str, int]], width: int = 7) -> SiteTable:
    return SiteTable.from_records(
        [
            {
                "protein_id": pid,
                "position": p,
                "residue": sequences[pid][p - 1],
                "window": window_at(sequences[pid], p, width),
                "label": int(k % 2),
                "task": "t",
                "split": "train",
                "origin": f"x:{k}",
            }
            for k, (pid, p) in enumerate(sites)
        ],
        proteins=sequences,
    )


# ------------------------------------------------------------------------------- geometry


def test_bucket_widths_are_odd_and_about_sqrt2_apart() -> None:
    widths = bucket_widths(1021)
    assert widths[-1] == 1021 and widths[0] == 17
    assert all(w % 2 == 1 for w in widths)
    ratios = [b / a for a, b in zip(widths, widths[1:], strict=False)]
    assert all(1.2 < r < 1.5 for r in ratios[1:]) and ratios[0] < 1.5, ratios  # the floor clamps the first


def test_every_row_is_read_at_its_own_residue_from_the_chunk_where_it_is_most_central() -> None:
    rng = random.Random(1)
    seqs = {
        "short": "".join(rng.choice(AMINO) for _ in range(40)),
        "long": "".join(rng.choice(AMINO) for _ in range(500)),
    }
    sites = [("short", p) for p in (1, 17, 40)] + [("long", p) for p in (1, 90, 100, 101, 180, 260, 499, 500)]
    table = _site_table(seqs, sites)
    plan = plan_units(table, chunk=101, overlap=20)
    spans = chunk_spans(500, 101, 20)
    owner = chunk_owner(500, spans)
    for i, (pid, p) in enumerate(sites):
        unit = plan.tables[plan.bucket[i]].frame.iloc[plan.unit[i]]
        window = unit["window"]
        assert window[plan.column[i]] == seqs[pid][p - 1]  # the row's own residue
        centre = int(unit["position"])  # the unit is the window around its middle residue
        assert window == window_at(seqs[pid], centre, len(window))
        if pid == "long":  # read from the chunk chunk_owner picks, whose residues the unit holds
            start, end = spans[owner[p - 1]]
            assert window == seqs["long"][start:end]
    short_units = {(plan.bucket[i], plan.unit[i]) for i, (pid, _) in enumerate(sites) if pid == "short"}
    assert len(short_units) == 1  # one pass scores every site of a short protein
    # 40 residues in the narrowest bucket that holds them
    assert plan.tables[plan.bucket[0]].width == min(w for w in bucket_widths(101) if w >= 41)


def test_fragment_rows_and_windowed_rows_are_units_of_their_own_window() -> None:
    seqs = {"p": "MKAAWKSTSGWSLLK"}
    table = _site_table(seqs, [("p", 2), ("p", 6)])
    frag = SiteTable.from_records(
        [
            {
                "protein_id": "f1",
                "position": None,
                "residue": "K",
                "window": "AAAKAAA",
                "label": 1,
                "task": "t",
                "split": "train",
                "origin": "f:1",
            }
        ]
    )
    both = table.concat(frag)
    plan = plan_units(both, chunk=101, overlap=20, windowed=np.array([False, True, False]))
    assert plan.tables[plan.bucket[2]].frame.iloc[plan.unit[2]]["window"] == "AAAKAAA"
    assert plan.column[2] == 3
    own = plan.tables[plan.bucket[1]].frame.iloc[plan.unit[1]]
    assert own["window"] == window_at(seqs["p"], 6, 7) and pd.isna(own["position"])
    assert plan.tables[plan.bucket[0]].frame.iloc[plan.unit[0]]["window"].strip("-") == seqs["p"]


def test_batches_hold_whole_units_of_one_bucket_and_every_row_once() -> None:
    rng = random.Random(2)
    seqs = {f"p{i}": "".join(rng.choice("ACDK") for _ in range(rng.choice([30, 90, 200]))) for i in range(30)}
    sites = [(pid, i + 1) for pid, s in seqs.items() for i, c in enumerate(s) if c == "K"]
    table = _site_table(seqs, sites)
    encoded = encode({}, table, protein=ProteinSection(chunk=101, overlap=20, batch_residues=600))
    assert isinstance(encoded, UnitEncoded) and len(encoded) == len(sites)
    order = torch.randperm(len(sites), generator=torch.Generator().manual_seed(0))
    batches = encoded.batches(order, 64, torch.Generator().manual_seed(1))
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(len(sites)))
    for index in batches:
        assert len(set(encoded.bucket[index].tolist())) == 1
        batch = encoded.batch(index, torch.device("cpu"))
        units = batch.mask.shape[0]
        assert units == 1 or units * batch.mask.shape[1] <= 600
        for u, col in batch.sites.tolist():  # every row at a real residue
            assert batch.mask[u, col]
        # a unit's rows are all in its batch: no unit is cut across batches
    units_of = [set(zip(encoded.bucket[i].tolist(), encoded.unit[i].tolist(), strict=True)) for i in batches]
    assert sum(len(u) for u in units_of) == len(set().union(*units_of))


def test_a_sites_score_does_not_depend_on_the_padding_of_its_bucket(proteins: Path, tmp_path: Path) -> None:
    raw = _recipe(tmp_path)
    recipe = recipes.parse(raw, build_registry(), path=_write(tmp_path, raw))
    assembly = assemble(recipe)
    table, _ = assembly.read(tmp_path)
    model = assembly.graph.eval()
    narrow = encode(assembly.features, table, protein=ProteinSection(chunk=701, overlap=40))
    wide = encode(
        assembly.features, table, protein=ProteinSection(chunk=1001, overlap=40, batch_residues=50000)
    )
    assert narrow._widths != wide._widths  # other buckets: other padding, other batch mixes
    np.testing.assert_allclose(infer(model, narrow).scores, infer(model, wide).scores, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unit": "window"}, "data.protein sets how proteins are chunked: it needs data.unit: protein"),
        ({"protein": {"chunk": 300}}, "data.protein.chunk must be odd"),
        ({"protein": {"chunk": 101, "overlap": 101}}, "must be smaller than chunk"),
        ({"unit": "residue"}, "window.*protein"),
    ],
)
def test_bad_protein_settings_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    raw = _recipe(tmp_path, **change)
    with pytest.raises(RecipeError, match=message):
        recipes.parse(raw, build_registry())


def test_a_pooled_head_in_protein_mode_is_refused_at_its_node(tmp_path: Path) -> None:
    raw = _recipe(tmp_path)
    raw["model"]["nodes"]["heads"]["pool"] = "center"
    recipe = recipes.parse(raw, build_registry(), path=_write(tmp_path, raw))
    with pytest.raises(GraphError, match=r"heads.*per-residue output .*pool: none"):
        assemble(recipe)


def test_window_recipes_hash_as_before_and_protein_ones_keep_their_settings(tmp_path: Path) -> None:
    raw = _recipe(tmp_path)
    protein = recipes.parse(raw, build_registry())
    assert protein.filled()["data"]["protein"]["chunk"] == 301
    del raw["data"]["unit"], raw["data"]["protein"]
    window = recipes.parse(raw, build_registry())
    assert "unit" not in window.filled()["data"] and window.data.units is None
    assert window.digest() != protein.digest()


def test_protein_mode_refuses_a_source_of_fragments_only(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text(
        "protein,sequence,label\n" + "".join(f"f{i},AAAKAAA,{i % 2}\n" for i in range(40))
    )
    raw = _recipe(tmp_path)
    raw["data"]["source"] = {
        "reader": "csv_sites",
        "name": "frags",
        "ptm": "x",
        "files": {"unsplit": "f.csv"},
    }
    raw["data"]["window"] = 7
    recipe = recipes.parse(raw, build_registry(), path=_write(tmp_path, raw))
    with pytest.raises(PtmkitError, match="data.unit: protein .* frags hold.* fragments only"):
        assemble(recipe).read(tmp_path)


# ------------------------------------------------------------------------------- end to end


def test_a_protein_mode_run_trains_on_labelled_residues_packages_and_predicts_as_it_scored(
    proteins: Path, tmp_path: Path
) -> None:
    raw = _recipe(tmp_path)
    path = _write(tmp_path, raw)
    recipe = recipes.load(path)
    summary = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    uri = recipe.tracking.uri
    logged = mlflow.MlflowClient(uri).get_run(summary.run_id).data.metrics
    assert logged["test/ap"] > 0.9  # the motif is learnt from whole proteins
    # the budget counts labelled residues (rows), not the residues the passes saw
    n_train = summary.counts["train"][0] + summary.counts["train"][1]
    assert logged["train/windows_seen"] == n_train * logged["train/epochs_run"]

    model = load_model(summary.run_id, tracking_uri=uri)
    assert model.recipe.data.units is not None and model.recipe.data.units.chunk == 301
    test_rows = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            f"runs:/{summary.run_id}/predictions/test_predictions.csv",
            tracking_uri=uri,
            dst_path=str(tmp_path / "dl"),
        )
    )
    fasta = tmp_path / "test.fasta"
    seqs = dict(record.split("\n", 1) for record in proteins.read_text().split(">")[1:])
    ids = set(test_rows["protein_id"])
    fasta.write_text(
        "".join(
            f">{h.split('|')[1]}\n{s.replace('#', '').strip()}\n"
            for h, s in seqs.items()
            if h.split("|")[1] in ids
        )
    )
    out = tmp_path / "sites.tsv"
    predict_file([model], fasta, out, progress=False)
    sites = pd.read_csv(out, sep="\t", comment="#")
    merged = test_rows.merge(sites, on=["protein_id", "position"], suffixes=("_run", "_predict"))
    assert len(merged) == len(test_rows)  # every candidate K of the test proteins, whatever its length
    np.testing.assert_allclose(merged["score_run"], merged["score_predict"], atol=2e-6)
    assert json.loads(Path(f"{out}.json").read_text())["models"][0]["name"] == "whole-k"

    marked = tmp_path / "test_marked.fasta"  # the test proteins with their sites, as a user has them
    marked.write_text("".join(f">{h}\n{s}" for h, s in seqs.items() if h.split("|")[1] in ids))
    result = evaluate_model(model, str(marked), reader="musite_fasta", data_root=tmp_path)
    assert result.counts["sites"] == len(test_rows)
    assert result.report["ap"] == pytest.approx(logged["test/ap"], abs=1e-6)


def test_a_multi_task_protein_model_reads_a_fragment_task_from_its_windows(
    proteins: Path, tmp_path: Path
) -> None:
    rng = random.Random(3)
    rows = ["protein,sequence,label"]
    for i in range(160):
        left = [rng.choice("ACDEFG") for _ in range(3)]
        if i % 2:
            left[-1] = "W"
        rows.append(f"s{i},{''.join(left)}S{''.join(rng.choice('ACDEFG') for _ in range(3))},{i % 2}")
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    raw = _recipe(tmp_path)
    source = raw["data"].pop("source")
    raw["data"]["tasks"] = {
        "K": {"source": source},
        "S": {
            "source": {
                "reader": "csv_sites",
                "name": "frag-s",
                "ptm": "phospho",
                "files": {"unsplit": "s.csv"},
            }
        },
    }
    raw["data"]["split"].pop("group")
    raw["model"]["nodes"]["heads"]["tasks"] = 2
    raw["train"]["epochs"] = 3
    recipe = recipes.parse(raw, build_registry(), path=_write(tmp_path, raw))
    with pytest.warns(UserWarning, match=r"task\(s\) S hold fragments, not whole proteins"):
        summary = run(recipe, data_root=tmp_path, tracker=MlflowTracker(recipe.tracking), progress=False)
    model = load_model(summary.run_id, tracking_uri=recipe.tracking.uri)
    assert [(t.name, t.windowed, t.width) for t in model.tasks] == [("K", False, None), ("S", True, 7)]
    fasta = tmp_path / "one.fasta"
    protein = "MKAAWKSTSGWSLLKAWSK"
    fasta.write_text(f">P1\n{protein}\n")
    out = tmp_path / "two.tsv"
    predict_file([model], fasta, out, progress=False)
    sites = pd.read_csv(out, sep="\t", comment="#")
    assert sorted(sites.loc[sites["ptm_type"] == "K", "position"]) == [2, 6, 15, 19]
    assert sorted(sites.loc[sites["ptm_type"] == "S", "position"]) == [7, 9, 12, 18]
    # S is scored as trained: its 7-wide window, padded to the common 15, no protein context
    windows = SiteTable.from_records(
        [
            {
                "protein_id": "P1",
                "position": None,
                "residue": "S",
                "window": window_at(protein, p, 7),
                "label": 0,
                "task": "S",
                "split": "test",
                "origin": "x:1",
            }
            for p in (7, 9, 12, 18)
        ]
    ).fit_width(15)
    want = infer(
        model.model, encode(model.features, windows, tasks=["K", "S"], protein=model.recipe.data.units)
    ).scores
    got = sites[sites["ptm_type"] == "S"].sort_values("position")["score"].to_numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)
    # evaluate reads the fragment task from its own windows too, even from whole proteins
    marked = tmp_path / "s_marked.fasta"
    marked.write_text(">sp|P1|P1\nMKAAWKS#TSGWS#LLKAWSK\n")
    result = evaluate_model(model, str(marked), reader="musite_fasta", data_root=tmp_path, task="S")
    assert result.table.frame["position"].tolist() == [7, 9, 12, 18]
    np.testing.assert_allclose(result.scores, want, atol=1e-6)


def test_a_row_whose_position_does_not_match_its_protein_is_refused() -> None:
    seqs = {"p": "MKAAWKSTSGWSLLK"}
    table = _site_table(seqs, [("p", 2)])
    table.frame.loc[0, "residue"] = "S"  # the reader's position names another residue
    with pytest.raises(
        PtmkitError, match=r"x:0: protein 'p' has 'K' at position 2, but the row's residue is 'S'"
    ):
        plan_units(table, chunk=101, overlap=20)


def test_a_contrastive_loss_on_a_trunk_output_reads_each_sites_own_vector(
    proteins: Path, tmp_path: Path
) -> None:
    raw = _recipe(tmp_path)
    raw["losses"].append(
        {
            "type": "infonce",
            "weight": 0.1,
            "inputs": ["trunk", "heads.embedding"],
            "pool": "mean",
            "proj_dim": 8,
        }
    )
    recipe = recipes.parse(raw, build_registry(), path=_write(tmp_path, raw))
    assembly = assemble(recipe)
    table, _ = assembly.read(tmp_path)
    train = table.split("train")
    encoded = encode(assembly.features, train, protein=recipe.data.units)
    index = encoded.batches(torch.arange(len(encoded)), 64)[0]
    batch = encoded.batch(index, torch.device("cpu"))
    outputs = assembly.graph(batch.features, batch.mask, batch.task, batch.sites)
    assert outputs["trunk"].shape[0] == len(index) == outputs["logits"].shape[0]
    for _, loss in assembly.losses:
        loss.setup(train.labels)
        loss.start_epoch(1, 8)
    total = sum(w * loss(outputs, batch.labels) for w, loss in assembly.losses)
    total.backward()  # both losses train through the trunk
    assert assembly.graph.blocks["trunk"].stages[0].convs[0].weight.grad is not None
