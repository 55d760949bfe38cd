"""The ``ptmkit`` command line. Errors are one clear message; ``--debug`` shows the traceback."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from . import thresholds
from .errors import PtmkitError, Terminated
from .registry import KINDS


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: an integer in [low, high], refused up front (before models load or
    data is read) with the range in the message."""
    valid = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {valid} (got {text!r})") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {valid} (got {text!r})")
        return value

    return parse


def _unit_float(text: str) -> float:
    """An argparse ``type=`` for a score threshold: sigmoid scores lie in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1] (got {text!r})") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1] (got {text!r})")
    return value


def version_line() -> str:
    """``ptmkit X (torch Y, mlflow Z, python W)`` from package metadata: nothing heavy is imported."""
    from importlib import metadata

    from . import __version__

    parts = []
    for dist in ("torch", "mlflow"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    parts.append(f"python {sys.version.split()[0]}")
    return f"ptmkit {__version__} ({', '.join(parts)})"


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_line())
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """Usage mistakes read as one line naming the option, like every other ptmkit error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _kv(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise PtmkitError(f"{flag} {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _reader_options(args: argparse.Namespace) -> dict[str, object]:
    """``--option KEY=VALUE`` items, each value read as (bounded) YAML."""
    from . import safeyaml

    return {k: safeyaml.load(v, f"--option {k}") for k, v in _kv(args.option, "--option").items()}


def cmd_run(args: argparse.Namespace) -> int:
    from . import recipe as recipes
    from .datasets import resolve_data_root
    from .metrics import small_validation_note
    from .run import metrics_table, run
    from .table import render

    recipe = recipes.load(args.recipe, args.set)  # a recipe error is one line, before any rank starts
    if args.nproc is not None and args.nproc != 1:  # one process runs here, in this one
        launch_ranks(args.nproc, _without_nproc(args.argv))  # does not return
    summary = run(recipe, data_root=resolve_data_root(args.data_root), progress=not args.quiet)
    if summary.rank:  # another rank of a torchrun job: rank 0 reports
        return 0
    print(
        f"\n{recipe.name} on {summary.dataset}: best epoch {summary.best_epoch} of {summary.epochs_run}, "
        f"{summary.seconds:.1f} s"
    )
    for name, (pos, neg) in summary.counts.items():
        print(f"  {name:5s} {pos:6d} positive {neg:6d} negative")
    print("\nTest metrics (threshold chosen on validation data only):")
    print(render(metrics_table(summary)))
    print(f"sensitivity at 95% specificity: {summary.test['sen_at_spec95']:.3f}")
    note = small_validation_note(*summary.counts["valid"])
    if note and not summary.tasks:
        print(f"warning: {note}", file=sys.stderr)
    for task, split_counts in summary.task_counts.items():  # each task's thresholds are its own
        note = small_validation_note(*split_counts["valid"])
        if note:
            print(f"warning: task {task}: {note}", file=sys.stderr)
    from .mlflow_ui import experiment_url

    print(f"\nMLflow run {summary.run_id} in experiment {summary.experiment!r} at {summary.store}")
    print("Compare runs: ptmkit compare    Open the UI: ptmkit ui, then")
    print(f"  {experiment_url('http://127.0.0.1:5000', summary.experiment_id)}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N`` (what each rank is given)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def launch_ranks(nproc: int, command: list[str]) -> NoReturn:
    """Become ``torchrun --standalone --nproc-per-node N -m ptmkit COMMAND``: the process is
    replaced (exec), so a signal to it reaches torchrun, which passes it on to every rank.
    Each rank gets an equal share of this machine's cores unless OMP_NUM_THREADS is set."""
    from .distributed import launched

    if nproc < 1:
        raise PtmkitError(f"--nproc {nproc}: give the number of processes (1 or more)")
    if launched():
        raise PtmkitError("--nproc inside a torchrun job: give the process count to torchrun only")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [*argv, "-m", "ptmkit", *command], env)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from . import pretrain as pretraining
    from .datasets import resolve_data_root

    recipe = pretraining.load(args.recipe, args.set)
    if args.quiet:
        recipe.train.progress = False
    out = Path(args.out) if args.out else Path("pretrain") / recipe.name
    try:
        summary = pretraining.pretrain(
            recipe,
            data_root=resolve_data_root(args.data_root),
            out=out,
            resume=args.resume,
            restart=args.restart,
        )
    except (KeyboardInterrupt, Terminated) as exc:
        if (out / pretraining.STATE).exists():
            print(
                f"stopped ({type(exc).__name__}); checkpoint at {out / pretraining.STATE}; continue with: "
                f"ptmkit pretrain {args.recipe} --resume" + (f" --out {args.out}" if args.out else ""),
                file=sys.stderr,
            )
        raise
    if summary.rank:  # another rank of a torchrun job: rank 0 reports
        return 0
    m = summary.metrics
    print(
        f"\n{recipe.name}: {summary.steps} steps, {summary.tokens:,} tokens ({summary.epochs:.2f} epochs), "
        f"{summary.seconds / 60:.1f} min, stopped by {summary.stopped_by}; {summary.parameters:,} parameters"
    )
    if m:
        accs = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in m.items() if k.startswith("val/acc/"))
        print(
            f"validation: loss {m['val/loss']:.3f}, perplexity {m['val/perplexity']:.2f}; "
            f"masked-token accuracy: {accs}"
        )
    print(f"package: {summary.package}")
    print(f"MLflow run {summary.run_id} in experiment {summary.experiment!r} at {summary.store}")
    return 0


def cmd_task_tokens(args: argparse.Namespace) -> int:
    from . import recipe as recipes
    from . import task_tokens
    from .datasets import resolve_data_root

    recipe = recipes.load(args.recipe, args.set)
    tokens = task_tokens.compute(
        recipe, args.feature, args.length, data_root=resolve_data_root(args.data_root), seed=args.seed
    )
    path = task_tokens.save(tokens, Path(args.output), recipe=recipe, feature=args.feature)
    counts = ", ".join(f"{t} {n}" for t, n in tokens.positives.items())
    print(
        f"{path}: task_tokens {list(tokens.tokens.shape)}, tasks in recipe order "
        f"({', '.join(tokens.tasks)}), from the positive training sites ({counts})"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep as sweeps
    from .datasets import resolve_data_root
    from .table import render

    reporting = args.sweep == "report" and args.file is not None and not Path(args.sweep).is_file()
    if args.file is not None and not reporting:
        raise PtmkitError(
            f"ptmkit sweep takes one sweep file (or `report FILE`), got {args.sweep!r} and {args.file!r}"
        )
    sweep = sweeps.load(args.file if reporting else args.sweep, args.set)
    if args.list:
        for name in sweep.recipes:
            print(name)
        return 0
    print(
        f"sweep {sweep.name}: {len(sweep.recipes)} variants valid ({', '.join(sweep.recipes)})",
        file=sys.stderr,
    )
    if args.dry_run:
        return 0
    if args.start:
        parent = sweeps.start_parent(sweep, sweep_id=args.sweep_id)
        print(parent)
        print(
            f"parent run {parent} of sweep {sweep.name} at {sweeps.store_of(sweep)}; run each variant "
            f"with --only NAME --parent-run {parent}, then "
            f"`ptmkit sweep report {args.sweep} --parent-run {parent}`",
            file=sys.stderr,
        )
        return 0
    if args.only is not None or reporting:
        parent = sweeps.resolve_parent(sweep, parent_run=args.parent_run, sweep_id=args.sweep_id)
        if args.only is not None:
            row = sweeps.run_variant(
                sweep,
                args.only,
                parent_id=parent,
                data_root=resolve_data_root(args.data_root),
                progress=not args.quiet,
            )
            print(f"variant {args.only}: {row['status']} (run {row.get('run_id', '-')}, parent {parent})")
            return 0 if row["status"] == "FINISHED" else 1
        table = sweeps.report(sweep, parent_id=parent, partial=args.partial)
    else:
        table = sweeps.run_sweep(sweep, data_root=resolve_data_root(args.data_root), progress=not args.quiet)
    print(f"\n{sweep.name}: test metrics per variant (* best; ranked by {sweep.rank_by})")
    print(
        render(
            sweeps.highlight(table.drop(columns=["description"], errors="ignore"), args.format), args.format
        )
    )
    print(
        f"parent MLflow run {table.attrs['parent_run_id']} in experiment {sweep.experiment!r} "
        f"at {table.attrs['tracking_uri']}"
    )
    failed = (table["status"] != "FINISHED").sum() if "status" in table else 0
    return 1 if failed else 0


def cmd_validate(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import recipe as recipes
    from .assembly import assemble
    from .recipe import load_with_extends
    from .table import render

    if load_with_extends(Path(args.recipe))[0].get("kind") == "pretrain":
        return _validate_pretrain(args)
    from .plugin_api import structure_only_build

    recipe = recipes.load(args.recipe, args.set)
    with structure_only_build():  # a node whose weights are elsewhere describes its architecture
        built = assemble(recipe)
    graph = built.graph
    print(f"{args.recipe}: valid (recipe hash {recipe.digest()})")
    if recipe.source is not None:
        src = recipe.source
        window = f", window {src.window}" if src.window else ""
        print(f"data: {src.name} read by {src.reader.spec.name} ({src.ptm}{window})")
    for i, (name, src) in enumerate(recipe.tasks.items()):
        reader = src.reader.spec.name
        print(f"task {i} {name}: {src.name} read by {reader} ({src.ptm}, window {recipe.data.window})")
    rows = [(n, recipe.features[n].spec.name, "", f.dim, "", "") for n, f in built.features.items()]
    for n in graph.order:
        params = list(graph.blocks[n].parameters())
        total = sum(p.numel() for p in params)
        trained = sum(p.numel() for p in params if p.requires_grad)
        rows.append(
            (
                n,
                recipe.nodes[n].spec.name,
                ", ".join(graph.inputs[n]),
                graph.dims[n],
                trained,
                total - trained,
            )
        )
    columns = ["name", "plugin", "inputs", "dim", "trainable", "frozen"]
    frame = pd.DataFrame(rows, columns=columns).set_index("name")
    for column in ("trainable", "frozen"):
        frame[column] = [f"{v:,}" if isinstance(v, int) else v for v in frame[column]]
    print(render(frame))
    losses = ", ".join(f"{u.spec.name} x{u.weight:g}" for u in recipe.losses)
    trainable = sum(p.numel() for p in graph.parameters() if p.requires_grad)
    frozen = built.parameters - trainable
    print(
        f"parameters: {built.parameters:,} ({trainable:,} trainable, {frozen:,} frozen); "
        f"output node: {graph.output}; losses: {losses}"
    )
    for name in graph.order:
        missing = getattr(graph.blocks[name], "unloaded", None)
        if missing:
            print(f"note: node {name}: {missing}; counts from its architecture; `ptmkit run` needs them")
    if args.filled:
        print("\nfilled recipe (every default written out; what runs log and package):")
        print(recipe.to_yaml(), end="")
    return 0


def _validate_pretrain(args: argparse.Namespace) -> int:
    from . import pretrain as pretraining

    recipe = pretraining.load(args.recipe, args.set)
    model = recipe.model.build()
    print(f"{args.recipe}: valid pretraining recipe (hash {recipe.digest()})")
    for name, src in [(recipe.name, recipe.source)] if recipe.source else list(recipe.tasks.items()):
        print(f"corpus {name}: {src.name} read by {src.reader.spec.name} ({src.ptm})")
    groups = ", ".join(f"{g} {len(ids)}" for g, ids in model.token_groups().items())
    print(
        f"model: {recipe.model.spec.name}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(model.vocab)} tokens ({groups}); masking {recipe.masking.model_dump()}"
    )
    if recipe.context is not None:
        spec = recipe.context_spec() or {}
        print(
            f"context: {spec.get('type')} {spec.get('model', '')} (frozen, {model.context_dim} per residue; "
            "masked and modified residues hidden from it)"
        )
    if args.filled:
        print("\nfilled recipe (every default written out):")
        print(recipe.to_yaml(), end="")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .datacheck import check_recipe, check_source, resolve_source
    from .datasets import resolve_data_root
    from .recipe import Recipe

    options = _reader_options(args)
    root = resolve_data_root(args.data_root)
    source, base = resolve_source(
        args.source, reader=args.reader, options=options, overrides=args.set, base_dir=Path.cwd()
    )
    if isinstance(source, Recipe):
        report = check_recipe(source, data_root=root)
    else:
        report = check_source(source, base_dir=base, data_root=root)
    print(report.render())
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .datasets import resolve_data_root
    from .fetch import fetch

    root = resolve_data_root(args.data_root)
    kwargs = {"base_url": args.base_url} if args.base_url else {}
    paths = fetch(args.name, root, force=args.force, **kwargs)
    print(f"{len(paths)} file(s) present and verified under {root}")
    return 0


def cmd_plugins_list(args: argparse.Namespace) -> int:
    import pandas as pd

    from .hooks import get_registry
    from .table import render

    registry = get_registry()
    rows = [
        (s.kind, s.name, ", ".join(s.aliases), s.provider, s.version, s.doc)
        for s in registry
        if (not args.kind or s.kind == args.kind)
        and (args.pattern is None or s.name in registry.names(s.kind, args.pattern))
    ]
    columns = ["kind", "name", "aliases", "distribution", "version", "description"]
    frame = pd.DataFrame(rows, columns=columns)
    print(render(frame, args.format, index=False), end="")
    for dist, problem in registry.broken.items():
        print(f"\nplugin package {dist!r} was not loaded: {problem}", file=sys.stderr)
    return 0


def cmd_plugins_new(args: argparse.Namespace) -> int:
    from .scaffold import scaffold

    print(scaffold(args.name, kind=args.kind, directory=args.dir).next_steps())
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    from .embcache import cache_info

    print(cache_info(args.cache_dir))
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from .embcache import cache_clear, cache_root

    removed = cache_clear(args.cache_dir, model=args.model)
    print(f"removed {removed} file(s) from {cache_root(args.cache_dir)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import runs_table
    from .table import render
    from .tracking import resolve_store

    store = resolve_store(args.uri)
    print(f"runs in {store.describe()}", file=sys.stderr)  # stderr: --format csv stays clean
    table = runs_table(
        store.uri,
        experiments=args.experiment,
        tags=_kv(args.tag, "--tag"),
        metrics=args.metrics.split(",") if args.metrics else None,
        params=args.params.split(",") if args.params else None,
        status=args.status,
        sort=args.sort,
        limit=args.limit,
        full_ids=args.full_ids,
        tasks=args.tasks,
    )
    if table.empty:
        print("no runs match", file=sys.stderr)
        return 1
    print(render(table, args.format, index=False), end="")
    return 0


def _load_models(refs: list[str], args: argparse.Namespace) -> list:
    """Load each MODEL once (folder, run id, runs:/ or models:/ URI) with ptmkit's safe loader."""
    import torch

    from .model_store import load_model
    from .tracking import tracking_uri

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    uri = tracking_uri(args.uri)
    return [load_model(ref, tracking_uri=uri, device=getattr(args, "device", "cpu")) for ref in refs]


def cmd_predict(args: argparse.Namespace) -> int:
    from .outputs import check_output, check_plot_dir, is_special
    from .predict import predict_file, sidecar_path
    from .textio import check_input

    check_output(args.output, "-o")  # before any model is loaded or protein scanned
    if not is_special(Path(args.output)):
        check_output(sidecar_path(Path(args.output)), "sidecar")
    if args.plot:
        check_plot_dir(args.plot)
    check_input(Path(args.fasta))
    from .distributed import joined

    with joined(args.device) as world:  # under torchrun: ranks share the proteins, rank 0 merges
        models = _load_models(args.models, args)
        summary = predict_file(
            models,
            Path(args.fasta),
            Path(args.output),
            rule=args.rule,
            threshold=args.threshold,
            plot_dir=Path(args.plot) if args.plot else None,
            plot_max=args.plot_max,
            batch_size=args.batch_size,
            known_sites=args.known_sites,
            progress=not args.quiet,
        )
    if world.main:
        print(summary.render())
    return 0


def cmd_cache_fill(args: argparse.Namespace) -> int:
    from . import cache_fill
    from .distributed import joined
    from .textio import check_input

    check_input(Path(args.fasta))
    with joined(args.device) as world:  # under torchrun: ranks share the proteins by length
        features = cache_fill.features_of(args.source, tracking_uri=_uri(args), device=args.device)
        report = cache_fill.fill(features, Path(args.fasta), progress=not args.quiet)
    if world.main:
        print(report.render())
    return 0


def cmd_ptm_scan(args: argparse.Namespace) -> int:
    from . import language_models, zero_shot
    from .outputs import atomic_open, check_output
    from .predict import Protein, read_fasta
    from .textio import check_input

    check_output(args.output, "-o")
    check_input(Path(args.fasta))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = language_models.load(args.model, tracking_uri=_uri(args), kind=args.type)
    proteins: dict[str, str] = {}
    known: dict[str, tuple[int, ...]] = {}
    for item in read_fasta(Path(args.fasta)):
        if isinstance(item, Protein):
            proteins[item.protein_id] = item.sequence
            known[item.protein_id] = item.known
        else:
            print(f"warning: {item.message()}", file=sys.stderr)
    if not proteins:
        raise PtmkitError(f"{args.fasta}: no protein to scan")
    frame = zero_shot.scan(
        model,
        proteins,
        residues=args.residues.upper() if args.residues else None,
        tokens=args.token or (),
        context=args.context,
        spacing=args.spacing,
        batch_tokens=args.batch_tokens,
        device=args.device,
        progress=not args.quiet,
    )
    marks = {(p, k) for p, ks in known.items() for k in ks}
    frame["known"] = [
        int((p, k) in marks) for p, k in zip(frame["protein_id"], frame["position"], strict=True)
    ]
    with atomic_open(args.output) as fh:
        fh.write(f"# ptmkit ptm-scan {args.model} {args.fasta}: zero-shot, P(token) at the masked residue\n")
        frame.to_csv(fh, sep="\t", index=False, float_format="%.6g")
    print(
        f"{len(frame):,} scores ({len(frame[['protein_id', 'position']].drop_duplicates()):,} residues x "
        f"their PTM tokens) of {len(proteins):,} proteins -> {args.output}"
    )
    return 0


def _uri(args: argparse.Namespace) -> str | None:
    from .tracking import tracking_uri

    return tracking_uri(args.uri)


def cmd_evaluate_zero_shot(args: argparse.Namespace) -> int:
    import json

    from . import language_models, zero_shot
    from .datasets import resolve_data_root
    from .outputs import write_text
    from .table import render

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = language_models.load(args.model, tracking_uri=_uri(args))
    result = zero_shot.evaluate_source(
        model,
        args.source,
        reader=args.reader,
        split=args.split,
        options=_reader_options(args),
        data_root=resolve_data_root(args.data_root),
        token=args.token,
        ptm=args.ptm,
        residues=args.residues,
        context=args.context,
        spacing=args.spacing,
        device=args.device,
        progress=not args.quiet,
    )
    r = result.report
    print(
        f"{args.model} (zero-shot language model) on {args.source}"
        f"{f' split {args.split}' if args.split else ''}: "
        f"{int(r['sites'])} sites ({int(r['positive'])} positive) in "
        f"{result.table.frame['protein_id'].nunique()} proteins"
    )
    if result.split_from:
        print(f"{args.split} split: {result.split_from}")
    print(render(result.frame(), args.format), end="")
    print(
        "protocol: P(PTM token) at the masked residue; no threshold (a zero-shot score has no validation set)"
    )
    if args.json:
        write_text(args.json, json.dumps(result.to_json(), indent=2))
        print(f"metrics written to {args.json}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from . import language_models
    from .datasets import resolve_data_root
    from .evaluate import evaluate_model
    from .outputs import check_output, write_text
    from .table import render
    from .tracking import tracking_uri

    options = _reader_options(args)
    if args.json:
        check_output(args.json, "--json")
    if args.zero_shot or language_models.is_language_model(args.model, tracking_uri=_uri(args)):
        return cmd_evaluate_zero_shot(args)
    for flag in ("token", "ptm", "residues"):
        if getattr(args, flag):
            raise PtmkitError(
                f"--{flag} applies to a language model (zero-shot); {args.model} is a site model"
            )
    (model,) = _load_models([args.model], args)
    result = evaluate_model(
        model,
        args.source,
        reader=args.reader,
        split=args.split,
        options=options,
        data_root=resolve_data_root(args.data_root),
        progress=not args.quiet,
        tracking_uri=tracking_uri(args.uri),
        task=args.task,
    )
    c = result.counts
    what = f"task {result.task}" if result.task else f"{model.ptm}, {model.residues}"
    print(
        f"{model.name} ({what}, window {model.window}) on {args.source}"
        f"{f' split {args.split}' if args.split else ''} (reader {result.reader}): {c['sites']} sites "
        f"({c['positive']} positive, {c['negative']} negative) in {c['proteins']} proteins"
    )
    if result.dropped_residues:
        print(f"left out {result.dropped_residues} rows whose centre is not {model.residues}")
    if result.split_from:
        print(f"{args.split} split rebuilt from {result.split_from}")
    print(render(result.frame(), args.format), end="")
    print(f"sensitivity at 95% specificity: {result.report['sen_at_spec95']:.3f}")
    if args.json:
        write_text(args.json, json.dumps(result.to_json(), indent=2))
        print(f"metrics written to {args.json}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    import contextlib

    import torch

    from .datasets import resolve_data_root
    from .ensemble import build
    from .model_store import fetched
    from .outputs import check_new_dir
    from .table import render
    from .tracking import tracking_uri

    check_new_dir(args.output)  # before any model is downloaded or scored
    if args.threads:
        torch.set_num_threads(args.threads)
    uri = tracking_uri(args.uri)
    with contextlib.ExitStack() as stack:  # store models stay downloaded until they are copied
        members = [stack.enter_context(fetched(ref, tracking_uri=uri)) for ref in args.models]
        built = build(
            members,
            Path(args.output),
            name=args.name,
            data_root=resolve_data_root(args.data_root),
            progress=not args.quiet,
        )
    meta = built.model.meta
    rows = meta["validation"]
    print(
        f"ensemble {meta['name']!r} of {len(members)} models ({meta['ptm']}, {meta['residues']}, window "
        f"{meta['window']}) written to {built.directory}; thresholds chosen on the members' shared "
        f"validation split ({rows['rows']} rows, {rows['positives']} positive)"
    )
    import pandas as pd

    frame = pd.DataFrame(built.validation).T[["mcc", "auc", "ap", "sen", "spec"]]
    frame.index.name = "validation (each at its own max-MCC threshold)"
    print(render(frame, args.format), end="")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .model_store import register
    from .tracking import tracking_uri

    version = register(args.run_id, args.name, alias=args.alias, tracking_uri=tracking_uri(args.uri))
    ref = f"models:/{args.name}@{args.alias}" if args.alias else f"models:/{args.name}/{version}"
    alias = f", alias {args.alias!r}" if args.alias else ""
    print(f"registered run {args.run_id} as {args.name!r} version {version}{alias}; load it as {ref}")
    return 0


def cmd_runs_mark_stale(args: argparse.Namespace) -> int:
    from . import tracking

    if args.older_than is None:
        limit = tracking.stale_after()  # checked before the store is opened
    elif not args.older_than > 0:
        raise PtmkitError(f"--older-than: expected a positive number of seconds (got {args.older_than:g})")
    else:
        limit = tracking.check_stale_limit(args.older_than, "--older-than")
    store = tracking.resolve_store(args.uri)
    try:
        uri = tracking.open_store(store.uri, create=False)
    except tracking.StoreNotFound as exc:
        raise PtmkitError(f"no runs: store {exc.path} does not exist") from None
    stale = tracking.stale_runs(uri, older_than=limit)
    print(f"store {store.describe()}: {len(stale)} RUNNING run(s) silent for more than {limit:g} s")
    for run in stale:
        if args.dry_run:
            verb = "would mark"
        elif tracking.mark_failed(uri, run):
            verb = "marked"
        else:
            print(f"  left {run.run_id}: it beat or ended since it was listed")
            continue
        where = f"{run.name!r} in {run.experiment!r}"
        print(f"  {verb} {run.run_id} ({where}) FAILED: no heartbeat since {run.since()}")
    return 0


def _check_port(port: int) -> None:
    """Refuse a taken port before exec'ing the server (which would print a page of tracebacks)."""
    import socket

    def free(p: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            try:
                sock.bind(("127.0.0.1", p))
            except OSError:
                return False
            return True

    if free(port):
        return
    other = next((p for p in range(port + 1, min(port + 50, 65536)) if free(p)), None)
    hint = f", e.g. ptmkit ui --port {other}" if other else ""
    raise PtmkitError(
        f"port {port} on 127.0.0.1 is already in use (another MLflow UI?); choose another with --port{hint}"
    )


def cmd_ui(args: argparse.Namespace) -> int:
    from .tracking import artifact_root, open_store, resolve_store

    store = resolve_store(args.uri)
    _check_port(args.port)
    uri = open_store(store.uri)  # created / migrated under the store lock, refused if not a database
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    root = artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_TRACKING_URI": uri}
    base = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI for {store.describe()} on {base} (Ctrl-C to stop)")
    training_view = f"{base}/#/experiments?workflowType=machine_learning"
    print(f"model-training view: {training_view} (`ptmkit run` prints each run's link)", flush=True)
    # become the server: a signal to `ptmkit ui` then reaches it, and no orphan is left behind
    os.execve(sys.executable, cmd, env)
    return 0  # pragma: no cover - execve does not return


STORE_HELP = (
    "tracking URI or path to an mlflow.db (default: $MLFLOW_TRACKING_URI, else the nearest mlflow.db "
    "in this folder or above, else the per-user store <PTMKIT_HOME>/mlflow.db)"
)
DATA_ROOT_HELP = "folder holding uniptms/ (default: $PTMKIT_DATA or the user cache)"
FORMAT_ARG: dict[str, Any] = {
    "choices": ["text", "markdown", "csv"],
    "default": "text",
    "help": "table format (default text)",
}


def masked_pass_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--context`` and ``--spacing``: how zero-shot scoring forms its masked passes."""
    p.add_argument(
        "--context",
        type=_int_in(8),
        default=1024,
        help=f"{prefix}tokens per pass (default 1024); longer proteins are chunked",
    )
    p.add_argument(
        "--spacing",
        type=_int_in(0),
        default=0,
        help=f"{prefix}mask residues at least this far apart in one pass (faster; 0, default: one per "
        "pass, exact)",
    )


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ptmkit", description="Compose, train and compare PTM site predictors.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action=_Version, help="print the ptmkit, torch, mlflow and python versions")
    sub = p.add_subparsers(dest="command", required=True)

    def recipe_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("recipe", help="recipe YAML file")
        sp.add_argument(
            "--set",
            action="append",
            metavar="PATH=VALUE",
            help="override a recipe value (repeatable)",
        )

    r = sub.add_parser("run", help="train and evaluate a recipe, tracked in MLflow")
    recipe_args(r)
    r.add_argument("--data-root", help="folder holding uniptms/ (default: $PTMKIT_DATA or the user cache)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with N processes on this machine (torchrun --standalone; DDP, see docs/scaling.md)",
    )
    r.set_defaults(func=cmd_run)

    tt = sub.add_parser(
        "task-tokens",
        help="per-task prompt initialisation: k-means centres of a feature at the positive training sites",
    )
    recipe_args(tt)
    tt.add_argument("--feature", required=True, help="a feature the recipe declares (e.g. its ESM-2)")
    tt.add_argument("--length", type=int, default=500, help="tokens per task (MTPrompt-PTM: 500)")
    tt.add_argument("--seed", type=int, default=0, help="k-means seed")
    tt.add_argument("-o", "--output", required=True, help="safetensors file to write")
    tt.add_argument("--data-root", help=DATA_ROOT_HELP)
    tt.set_defaults(func=cmd_task_tokens)

    pt = sub.add_parser(
        "pretrain", help="pretrain a protein language model (kind: pretrain recipe), tracked in MLflow"
    )
    recipe_args(pt)
    pt.add_argument("--out", help="checkpoint and package folder (default: pretrain/<recipe name>)")
    pt.add_argument(
        "--resume", action="store_true", help="continue the checkpoint in --out (same MLflow run)"
    )
    pt.add_argument("--restart", action="store_true", help="discard the checkpoint in --out and start over")
    pt.add_argument("--data-root", help=DATA_ROOT_HELP)
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    pt.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("sweep", help="run the variants of a sweep file as nested runs; print the table")
    s.add_argument("sweep", help="sweep YAML file (base recipe + named variants), or `report`")
    s.add_argument("file", nargs="?", help="with `report`: the sweep file whose table to rebuild")
    s.add_argument("--set", action="append", metavar="PATH=VALUE", help="override every variant")
    s.add_argument("--data-root", help=DATA_ROOT_HELP)
    s.add_argument("--dry-run", action="store_true", help="validate every variant, run nothing")
    s.add_argument("--list", action="store_true", help="print the variant names, one per line (job arrays)")
    s.add_argument("--start", action="store_true", help="split sweep: create the parent run, print its id")
    s.add_argument("--only", metavar="VARIANT", help="split sweep: run this variant under the parent run")
    s.add_argument("--parent-run", metavar="ID", help="split sweep: the parent run (from --start)")
    s.add_argument(
        "--sweep-id", metavar="ID", help="split sweep: find (or, with --start, tag) the parent by this id"
    )
    s.add_argument(
        "--partial", action="store_true", help="report: rebuild the table though variants are missing"
    )
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--format", **FORMAT_ARG)
    s.set_defaults(func=cmd_sweep)

    v = sub.add_parser("validate", help="check a recipe, its data source and its model graph without data")
    recipe_args(v)
    v.add_argument(
        "--filled", action="store_true", help="also print the filled recipe (defaults written out)"
    )
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("data", help="inspect or fetch datasets").add_subparsers(
        dest="data_command", required=True
    )
    dc = d.add_parser("check", help="report counts and defects of a source")
    dc.add_argument(
        "source",
        nargs="+",
        metavar="SOURCE",
        help="a catalogue name (uniptms:C2), a recipe file (its data, split as the run splits it), a "
        "reader mapping ('{reader: csv_sites, files: {train: a.csv, test: b.csv}}' or a YAML/JSON file), "
        "or data files with --reader: SPLIT=FILE (train=a.csv test=b.csv), KEY=FILE for a reader option "
        "(positive=pos.fa negative=neg.fa) or one FILE (unsplit)",
    )
    dc.add_argument("--reader", help="reader plugin of the data files (ptmkit plugins list --kind reader)")
    dc.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="reader option for the files (repeatable)"
    )
    dc.add_argument(
        "--set", action="append", metavar="PATH=VALUE", help="override a recipe SOURCE's value (repeatable)"
    )
    dc.add_argument("--data-root", help=DATA_ROOT_HELP)
    dc.set_defaults(func=cmd_data_check)
    df = d.add_parser("fetch", help="download published datasets and verify their sha256")
    df.add_argument("name", help="uniptms (all) or uniptms:K2")
    df.add_argument("--data-root", help=DATA_ROOT_HELP)
    df.add_argument("--base-url", help="alternative location of the files (e.g. file:///mirror/uniptms/)")
    df.add_argument("--force", action="store_true", help="download even when verified files exist")
    df.set_defaults(func=cmd_data_fetch)

    pl = sub.add_parser("plugins", help="registered plugins").add_subparsers(
        dest="plugins_command", required=True
    )
    pll = pl.add_parser("list", help="kind, name, old names, providing distribution and version")
    pll.add_argument(
        "pattern",
        nargs="?",
        help="only names matching this shell-style pattern, e.g. 'esm*' (quote it)",
    )
    pll.add_argument("--kind", choices=list(KINDS), help="only plugins of this kind")
    pll.add_argument("--format", **FORMAT_ARG)
    pll.set_defaults(func=cmd_plugins_list)
    pln = pl.add_parser("new", help="scaffold a plugin package (pyproject, entry point, plugin, test)")
    pln.add_argument("name", help="distribution name, e.g. ptmkit-hydrophobic (plugin 'hydrophobic')")
    pln.add_argument(
        "--kind",
        choices=["feature", "fusion", "loss"],
        default="feature",
        help="plugin kind (default: feature)",
    )
    pln.add_argument("--dir", default=".", help="folder to create NAME/ in (default: current folder)")
    pln.set_defaults(func=cmd_plugins_new)

    ca = sub.add_parser("cache", help="per-sequence array cache (language-model embeddings)").add_subparsers(
        dest="cache_command", required=True
    )
    cai = ca.add_parser("info", help="entries, models and size of the embedding cache")
    cai.add_argument("--cache-dir", help="cache root (default: $PTMKIT_CACHE or the user cache)")
    cai.set_defaults(func=cmd_cache_info)
    caf = ca.add_parser(
        "fill",
        help="embed a FASTA's proteins into the cache ahead of training or predicting (torchrun: sharded)",
    )
    caf.add_argument("source", metavar="RECIPE|MODEL", help="a recipe file, or a model (folder, run id, URI)")
    caf.add_argument("fasta", help="proteins to embed (FASTA, plain or gzip)")
    caf.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    caf.add_argument("--uri", help="store for run ids, runs:/ and models:/ (a MODEL given by run)")
    caf.add_argument("--quiet", action="store_true", help="no progress bars")
    caf.set_defaults(func=cmd_cache_fill)
    cac = ca.add_parser("clear", help="delete cached embeddings (all, or one model's)")
    cac.add_argument("--cache-dir", help="cache root (default: $PTMKIT_CACHE or the user cache)")
    cac.add_argument("--model", help="only this model id (glob allowed, e.g. 'facebook/esm2*')")
    cac.set_defaults(func=cmd_cache_clear)

    c = sub.add_parser("compare", help="table of tracked runs")
    c.add_argument("--experiment", action="append", help="experiment name (repeatable; default all)")
    c.add_argument(
        "--tag",
        action="append",
        metavar="KEY=VALUE",
        help="filter by tag, e.g. ptmkit.dataset=uniptms:H1",
    )
    c.add_argument(
        "--metrics",
        help="comma-separated metric names as logged (test/mcc, test/tuned_mcc, val_best/ap ...) or "
        "short for test/<name> (mcc, tuned_mcc, auc); default test/mcc,test/auc,test/ap,test/acc,"
        "test/sen,test/spec,test/tuned_mcc; see docs/tracking.md",
    )
    c.add_argument(
        "--params",
        help="comma-separated param columns, in full or by a unique last part (train.epochs or epochs)",
    )
    c.add_argument(
        "--tasks",
        action="store_true",
        help="multi-task runs: each metric also per task (test/<task>/<metric>) and as their mean (macro)",
    )
    c.add_argument("--status", help="only runs with this status: FINISHED, FAILED, KILLED, RUNNING")
    c.add_argument(
        "--sort", help="a column, metric or param to sort by (numbers and times descending, text ascending)"
    )
    c.add_argument(
        "--full-ids",
        action="store_true",
        help="show 32-digit run ids (default: the shortest prefix unique in the store, >= 8 digits)",
    )
    c.add_argument("--limit", type=_int_in(1), default=200, help="show at most this many runs (default 200)")
    c.add_argument("--format", **FORMAT_ARG)
    c.add_argument("--uri", help=STORE_HELP)
    c.set_defaults(func=cmd_compare)

    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    u.add_argument("--port", type=_int_in(1, 65535), default=5000, help="port on 127.0.0.1 (default 5000)")
    u.add_argument("--uri", help=STORE_HELP)
    u.set_defaults(func=cmd_ui)

    uri_help = f"store for run ids, runs:/ and models:/: {STORE_HELP}"
    pr = sub.add_parser(
        "predict",
        help="scan whole proteins (FASTA) with one or more packaged models; write a site table",
        description="Every candidate residue of each model's PTM type in every protein gets a score and "
        "a call. MODEL: a model folder, a run id (or its first 8+ hex digits, as `ptmkit compare` shows "
        "it), runs:/<run_id>/model or models:/<name>@<alias>.",
    )
    pr.add_argument("models", nargs="+", metavar="MODEL", help="one or more models (a multi-PTM scan)")
    pr.add_argument("fasta", metavar="FASTA", help="proteins to scan (plain or .gz)")
    pr.add_argument("-o", "--output", required=True, help="output TSV (a sidecar OUTPUT.json is written too)")
    rules = pr.add_mutually_exclusive_group()
    rules.add_argument(
        "--rule",
        choices=thresholds.RULES,
        default=None,
        help=f"threshold rule (default {thresholds.DEFAULT_RULE}: the validation threshold at 95%% "
        "specificity; val_mcc_bootstrap and val_mcc_smooth: steadier max-MCC rules for small validation "
        "sets)",
    )
    rules.add_argument("--threshold", type=_unit_float, help="one fixed threshold in [0, 1] for every model")
    pr.add_argument("--plot", metavar="DIR", help="write a score-along-sequence PNG per protein into DIR")
    pr.add_argument(
        "--plot-max", type=_int_in(0), default=50, help="plot at most this many proteins (default 50)"
    )
    pr.add_argument(
        "--batch-size", type=_int_in(1), default=2048, help="candidate sites per batch (default 2048)"
    )
    pr.add_argument(
        "--known-sites", action="store_true", help="add a 'known' column from '#' marks in the input"
    )
    pr.add_argument("--threads", type=_int_in(1), help="torch CPU threads (default: torch's choice)")
    pr.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    pr.add_argument("--uri", help=uri_help)
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="metrics of a packaged model on a labelled held-out set")
    ev.add_argument(
        "model",
        help="model folder, run id (or its first 8+ hex digits), runs:/<run_id>/model or "
        "models:/<name>@<alias>",
    )
    ev.add_argument(
        "source", help="annotated file (e.g. '#'-marked FASTA) or a catalogue name like uniptms:K2"
    )
    ev.add_argument(
        "--reader",
        help="reader of the file (default: protein_sites if headers carry '#pos', else musite_fasta)",
    )
    ev.add_argument(
        "--split",
        help="only this split (catalogue sources: e.g. test; for a source without one, such as K1 or C2, "
        "the split the model's run drew, from its data/splits.tsv.gz)",
    )
    ev.add_argument("--option", action="append", metavar="KEY=VALUE", help="extra reader option (repeatable)")
    ev.add_argument(
        "--task",
        help="a multi-task model: the task the source is scored as (default: the task trained on the preset)",
    )
    ev.add_argument("--data-root", help=DATA_ROOT_HELP)
    ev.add_argument("--format", **FORMAT_ARG)
    ev.add_argument("--json", metavar="FILE", help="also write counts, thresholds and metrics as JSON")
    ev.add_argument("--threads", type=_int_in(1), help="torch CPU threads (default: torch's choice)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    ev.add_argument("--uri", help=uri_help)
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument(
        "--zero-shot",
        action="store_true",
        help="MODEL is a language model (found by itself for packages and checkpoint files): score each "
        "site by the probability of its PTM token at the masked residue",
    )
    ev.add_argument(
        "--token", help="zero-shot: score this PTM token (default: the source's PTM on each residue)"
    )
    ev.add_argument("--ptm", help="zero-shot, a file source: the PTM type its sites are (e.g. succinylation)")
    ev.add_argument("--residues", help="zero-shot: the candidate residues (a file source: required, e.g. K)")
    masked_pass_args(ev, "zero-shot: ")
    ev.set_defaults(func=cmd_evaluate)

    zs = sub.add_parser(
        "ptm-scan", help="zero-shot PTM scores of every candidate residue from a PTM-aware language model"
    )
    zs.add_argument("model", help="language-model package folder, its run id, or a released checkpoint file")
    zs.add_argument(
        "fasta", help="proteins (FASTA; '#' marks and '#pos' header sites become the known column)"
    )
    zs.add_argument("-o", "--output", required=True, help="output TSV (one row per residue and PTM token)")
    zs.add_argument(
        "--residues", help="only these residues (default: every residue the model has a PTM token for)"
    )
    zs.add_argument(
        "--token", action="append", help="only this PTM token (repeatable), e.g. '<Phosphoserine>'"
    )
    zs.add_argument(
        "--type", help="the language-model plugin of a checkpoint file (when several are installed)"
    )
    masked_pass_args(zs)
    zs.add_argument("--batch-tokens", type=_int_in(16), default=16384, help="padded tokens per batch")
    zs.add_argument("--threads", type=_int_in(1), help="torch CPU threads")
    zs.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    zs.add_argument("--uri", help=uri_help)
    zs.add_argument("--quiet", action="store_true", help="no progress bar")
    zs.set_defaults(func=cmd_ptm_scan)

    en = sub.add_parser(
        "ensemble",
        help="average several packaged models into one ensemble model folder",
        description="The members (seeds of a recipe, or recipes trained on the same data and split) are "
        "copied into one package whose score is the mean of their probabilities; its thresholds are chosen "
        "on the members' shared validation split. predict, evaluate and the MLflow pyfunc load it like any "
        "other model. MODEL: a model folder, a run id, runs:/<run_id>/model or models:/<name>@<alias>.",
    )
    en.add_argument("models", nargs="+", metavar="MODEL", help="two or more models")
    en.add_argument("-o", "--output", required=True, help="new folder for the ensemble (never overwritten)")
    en.add_argument("--name", help="the ensemble's name (default ensemble-<first member's name>)")
    en.add_argument("--data-root", help=DATA_ROOT_HELP)
    en.add_argument("--threads", type=_int_in(1), help="torch CPU threads (default: torch's choice)")
    en.add_argument("--format", **FORMAT_ARG)
    en.add_argument("--uri", help=uri_help)
    en.add_argument("--quiet", action="store_true", help="no progress bar")
    en.set_defaults(func=cmd_ensemble)

    rg = sub.add_parser("register", help="register a run's model in the MLflow model registry")
    rg.add_argument(
        "run_id", help="id (or its first 8+ hex digits, as `ptmkit compare` shows it) of a finished run"
    )
    rg.add_argument("name", help="registered model name")
    rg.add_argument("--alias", help="alias to point at the new version, e.g. production")
    rg.add_argument("--uri", help=uri_help)
    rg.set_defaults(func=cmd_register)

    ru = sub.add_parser("runs", help="maintain the tracked runs").add_subparsers(
        dest="runs_command", required=True
    )
    rms = ru.add_parser(
        "mark-stale",
        help="end runs left RUNNING by a killed process (no heartbeat for a while) as FAILED",
        description="A run records a heartbeat every minute while it runs; one left RUNNING by SIGKILL, "
        "the OOM killer or a power cut stops beating. This ends every such run FAILED, with "
        "ptmkit.error saying since when it was silent.",
    )
    rms.add_argument(
        "--older-than",
        type=float,
        metavar="SECONDS",
        help="silent for more than this many seconds (default: $PTMKIT_STALE_AFTER_S or 600)",
    )
    rms.add_argument("--dry-run", action="store_true", help="list the stale runs, change nothing")
    rms.add_argument("--uri", help=uri_help)
    rms.set_defaults(func=cmd_runs_mark_stale)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings meant for users read as ``warning: ...``, not as source locations."""
    return f"warning: {message}\n"


def run_command(call: Callable[[], int], *, debug: bool = False, one_line_crashes: bool = True) -> int:
    """Run a command as ptmkit runs every command: SIGTERM unwinds like SIGINT (so runs end
    KILLED), user errors are one line (exit 2), signals exit 130 / 128+N, and an unexpected
    failure is one line too unless ``debug`` (or ``one_line_crashes=False``: it propagates)."""
    from .tracking import sigterm_unwinds

    restore = sigterm_unwinds()
    # one of several torchrun processes: say which one an error comes from
    size = os.environ.get("WORLD_SIZE", "1")
    rank = f"rank {os.environ.get('RANK', '?')} of {size}: " if size.isdigit() and int(size) > 1 else ""
    try:
        return int(call() or 0)
    except PtmkitError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {rank}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted by SIGINT", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(str(exc), file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug or not one_line_crashes:
            raise
        print(
            f"error: {rank}{type(exc).__name__}: {exc}\n(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        restore()


#: Commands that share their work among the processes of a torchrun job; any other refuses to
#: run as one of several (it would run N times over, each writing the same outputs).
DISTRIBUTED = ("run", "pretrain", "predict", "cache fill")


def _refuse_torchrun(args: argparse.Namespace) -> None:
    size = os.environ.get("WORLD_SIZE", "1")
    if not size.isdigit() or int(size) <= 1:
        return
    command = " ".join(str(c) for c in (args.command, getattr(args, "cache_command", None)) if c)
    if command not in DISTRIBUTED:
        raise PtmkitError(
            f"ptmkit {command} does not run under torchrun (WORLD_SIZE={size}); the commands that "
            f"do: {', '.join(DISTRIBUTED)} (docs/scaling.md)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.debug:
        warnings.formatwarning = _one_line_warning

    def command() -> int:
        _refuse_torchrun(args)
        return args.func(args)

    return run_command(command, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
