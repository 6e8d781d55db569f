"""The arguments and work of `annrec synth`, `annrec build`, `annrec versions` and
`annrec experiment`.

tools/commands/builder.py registers them as sub-commands (with the Kafka and local-stack wiring a
build's announcement needs); nothing here is imported unless one of them runs.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from adapters.item_updates import read_item_updates
from adapters.item_vectors import read_item_vectors
from index_builder import experiments
from index_builder.announce import announce_version
from index_builder.attributes import read_table
from index_builder.inputs import Factors, load_factor_arrays, load_factors, save_factors
from index_builder.publish import BuildOptions, publish_version
from index_builder.settings import BuilderSettings
from index_builder.sharded import build_sharded, dask_map, shard_options
from index_builder.synth import (
    synth_attributes,
    synth_factors,
    synth_interactions,
    write_interactions,
)
from index_builder.targets import DirectoryTarget, ObjectStoreTarget, publish_target
from index_builder.train import Interactions, load_interactions
from index_builder.tune import AlsConfig, EvalOptions, TuneReason, train_evaluated
from schemas.errors import AnnrecError
from schemas.experiments import Experiment
from schemas.layout import DEFAULT_MODEL, version_dir
from schemas.manifest import MANIFEST_NAME, WEIGHTINGS, Manifest, TrainParams

log = structlog.get_logger(__name__)


def add_synth_arguments(synth: argparse.ArgumentParser) -> None:
    _synth_flags(synth)
    synth.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output: .npz factors, or .csv/.parquet interactions",
    )
    synth.add_argument(
        "--per-user", type=int, default=30, help="interactions per user (interactions output only)"
    )


def add_build_arguments(build: argparse.ArgumentParser) -> None:
    src = build.add_mutually_exclusive_group()
    src.add_argument("--factors", type=Path, help=".npz with item_factors, user_factors, ids")
    src.add_argument("--item-factors", type=Path, help=".npy item factors (with --user-factors..)")
    src.add_argument(
        "--interactions",
        type=Path,
        help="CSV/Parquet user,item[,weight][,timestamp]: train ALS, evaluated on a holdout",
    )
    src.add_argument("--synth", action="store_true", help="build from synthetic factors")
    als = build.add_argument_group(
        "ALS training (with --interactions; needs annrec[train]). Logs of at most "
        "ANNREC_TUNE_SMALL_LOG pairs are tuned unless an --als-* parameter is given"
    )
    default = AlsConfig()
    als.add_argument("--als-factors", type=int, help=f"default {default.factors}")
    als.add_argument("--als-regularization", type=float, help=f"default {default.regularization}")
    als.add_argument("--als-alpha", type=float, help=f"default {default.alpha}")
    als.add_argument("--als-iterations", type=int, help=f"default {default.iterations}")
    als.add_argument(
        "--als-weighting",
        choices=WEIGHTINGS,
        help=f"confidence weighting (default {default.weighting})",
    )
    tune = als.add_mutually_exclusive_group()
    tune.add_argument(
        "--tune",
        action="store_true",
        help="search the ALS parameters (from the --als-* ones) on a validation holdout",
    )
    tune.add_argument("--no-tune", action="store_true", help="never tune, even a small log")
    als.add_argument(
        "--tune-budget-s",
        type=float,
        help="wall-time budget of the training (ANNREC_TUNE_BUDGET_S)",
    )
    als.add_argument(
        "--allow-weak-model",
        action="store_true",
        help="publish a model that does not beat popularity on the holdout",
    )
    build.add_argument(
        "--attributes",
        type=Path,
        help="CSV/Parquet item_id + categorical/boolean columns requests can filter on "
        "(--synth: synthetic ones unless this is given)",
    )
    build.add_argument("--user-factors", type=Path, help=".npy user factors")
    build.add_argument("--item-ids", type=Path, help=".npy item ids (default: row numbers)")
    build.add_argument("--user-ids", type=Path, help=".npy user ids (default: row numbers)")
    _synth_flags(build)
    build.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
    _model_flag(build)
    build.add_argument("--trees", type=int, help="angular index trees (ANNREC_N_TREES)")
    build.add_argument("--mips-trees", type=int, help="trees per MIPS band (ANNREC_MIPS_TREES)")
    build.add_argument(
        "--neighbours",
        type=int,
        help="nearest items stored per item for similar items, 0: none (ANNREC_NEIGHBOURS)",
    )
    build.add_argument("--jobs", type=int, help="build threads, -1 = all (ANNREC_BUILD_JOBS)")
    build.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue a build of the same factors and options that stopped after some of its "
        "phases (one also run with --resume), and if this one stops, keep what it finished for "
        "the next --resume (ANNREC_BUILD_RESUME)",
    )
    build.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")
    build.add_argument("--target-recall", type=float, help="recall@10 search_k is tuned for")
    build.add_argument("--min-recall", type=float, help="refuse to publish below this recall@10")
    build.add_argument("--no-quality", action="store_true", help="skip the quality report")
    build.add_argument(
        "--no-item-vectors",
        action="store_true",
        help="do not fold the item-vectors topic (items upserted or removed since the last "
        "build) into this version; by default a build that reads Kafka folds them in",
    )
    shards = build.add_argument_group(
        "sharded build (needs annrec[shard]): items cut by crc32(id) into --shards versions, "
        "<storage>/shard-NN each, built in parallel on a Dask cluster (SCALING.md)"
    )
    shards.add_argument("--shards", type=int, default=1, help="shards (1: one version)")
    shards.add_argument(
        "--cluster", default="local", help="'local' (a LocalCluster here) or a scheduler address"
    )
    shards.add_argument(
        "--cluster-workers", type=int, default=2, help="processes of the local cluster"
    )


def add_versions_arguments(versions: argparse.ArgumentParser) -> None:
    vsub = versions.add_subparsers(dest="versions_action", required=True)
    vlist = vsub.add_parser("list", help="versions in storage, newest last")
    vlist.add_argument("--json", action="store_true")
    gc = vsub.add_parser("gc", help="remove old versions (never LATEST, never recent ones)")
    gc.add_argument("--keep", type=int, required=True, help="newest versions to keep")
    gc.add_argument(
        "--grace-s",
        type=float,
        default=3600.0,
        help="never remove a version younger than this (a worker may be loading it)",
    )
    rollback = vsub.add_parser("rollback", help="point LATEST at an older version")
    rollback.add_argument("version")
    pin = vsub.add_parser(
        "pin", help="keep a version held by every worker and out of gc (requests may pin it)"
    )
    pin.add_argument("version")
    unpin = vsub.add_parser("unpin", help="drop a pin (gc may then remove the version)")
    unpin.add_argument("version")
    for p in (vlist, gc, rollback, pin, unpin):
        p.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
        _model_flag(p)


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment_action", required=True)
    start = sub.add_parser(
        "start", help="split a model's traffic between LATEST and candidate versions"
    )
    start.add_argument("name", help="the experiment's name (also salts the users' assignment)")
    start.add_argument(
        "--candidate",
        action="append",
        required=True,
        metavar="[ARM=]VERSION:PERCENT",
        help="a candidate version and its share in percent (repeatable); LATEST gets the rest",
    )
    status = sub.add_parser("status", help="the running experiment, its arms and LATEST")
    status.add_argument("--json", action="store_true")
    sub.add_parser("stop", help="end the experiment: every user served by LATEST again")
    promote = sub.add_parser("promote", help="LATEST moves to an arm's version; the end")
    promote.add_argument("arm", help="the arm to promote (e.g. candidate)")
    for p in sub.choices.values():
        p.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
        _model_flag(p)


def _model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="the model (its own versions, LATEST and experiment; default: %(default)s)",
    )


def _target(settings: BuilderSettings, model: str) -> DirectoryTarget | ObjectStoreTarget:
    return publish_target(settings.storage, settings.storage_options, settings.build_dir, model)


def run_experiment(args: argparse.Namespace, settings: BuilderSettings) -> int:
    cat = _target(settings, args.model)
    action = args.experiment_action
    if action == "start":
        started = experiments.start(cat, cat.storage, args.model, args.name, args.candidate)
        log.info("experiment_started", model=args.model, **_arms(started))
        print(started.name)
    elif action == "stop":
        stopped = experiments.stop(cat, cat.storage, args.model)
        log.info("experiment_stopped", model=args.model, experiment=stopped.name)
    elif action == "promote":
        promoted = experiments.promote(cat, cat.storage, args.model, args.arm)
        log.info("experiment_promoted", model=args.model, arm=args.arm, latest=promoted)
        print(promoted)
    else:
        running = cat.storage.experiment()
        latest = cat.storage.latest()
        if args.json:
            doc = {
                "model": args.model,
                "latest": latest,
                "experiment": None if running is None else running.model_dump(mode="json"),
            }
            print(json.dumps(doc, indent=2))
        elif running is None:
            print(f"model {args.model}: no experiment; LATEST {latest}")
        else:
            print(f"model {args.model}: experiment {running.name} since {running.started_at}")
            for arm in running.arms:
                served = arm.version or f"LATEST ({latest})"
                print(f"  {arm.name:<16} {arm.share * 100:6.2f}%  {served}")
    return 0


def _arms(experiment: Experiment) -> dict[str, str]:
    return {
        "experiment": experiment.name,
        "arms": ",".join(
            f"{a.name}={a.version or 'LATEST'}:{a.share * 100:g}%" for a in experiment.arms
        ),
    }


def run_versions(args: argparse.Namespace, settings: BuilderSettings) -> int:
    cat = _target(settings, args.model)
    if args.versions_action in ("pin", "unpin"):
        change = experiments.pin if args.versions_action == "pin" else experiments.unpin
        pins = change(cat, cat.storage, args.model, args.version)
        log.info("versions_pinned", model=args.model, pinned=",".join(pins.versions))
        return 0
    if args.versions_action == "gc":
        removed = cat.gc(args.keep, args.grace_s)
        log.info("versions_removed", count=len(removed), versions=removed)
        return 0
    if args.versions_action == "rollback":
        if args.version not in cat.storage.versions():
            raise AnnrecError(f"no version {args.version} in {settings.storage}")
        cat.verify(args.version)  # a damaged version is refused with the reason (issue 21)
        cat.set_latest(args.version, allow_older=True)
        print(args.version)
        return 0
    latest = cat.storage.latest()
    pinned = set(cat.storage.pins().versions)
    running = cat.storage.experiment()
    in_experiment = set(running.candidates) if running else set()
    rows = [(v, v == latest, _evaluation(cat, v)) for v in cat.storage.versions()]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": v,
                        "latest": is_latest,
                        "pinned": v in pinned,
                        "experiment": v in in_experiment,
                        "evaluation": e,
                    }
                    for v, is_latest, e in rows
                ],
                indent=2,
            )
        )
    else:
        for v, is_latest, e in rows:
            marks = "  pinned" * (v in pinned) + "  experiment" * (v in in_experiment)
            print(f"{'*' if is_latest else ' '} {v}{_describe(e)}{marks}")
    return 0


def _evaluation(cat: DirectoryTarget | ObjectStoreTarget, version: str) -> dict[str, Any] | None:
    """The version's holdout evaluation (None: not trained by annrec, or nothing held out)."""
    try:
        if isinstance(cat, DirectoryTarget):
            text = (version_dir(cat.storage.root, version) / MANIFEST_NAME).read_bytes()
        else:  # the manifest alone, not the whole version
            store = cat.storage.store
            text = store.fs.cat_file(store.version_key(version, MANIFEST_NAME))
        manifest = Manifest.model_validate_json(text)
    except (OSError, ValueError, AnnrecError) as exc:
        log.warning("version_unreadable", version=version, error=str(exc))
        return None
    if manifest.training is None or manifest.training.evaluation is None:
        return None
    return manifest.training.evaluation.model_dump(mode="json")


def _describe(evaluation: dict[str, Any] | None) -> str:
    if evaluation is None:
        return ""
    model, popularity, k = evaluation["model"], evaluation["popularity"], evaluation["k"]
    return (
        f"  hit@{k} {model['hit_rate_at_k']:.4f} (popularity {popularity['hit_rate_at_k']:.4f})"
        f"  ndcg@{k} {model['ndcg_at_k']:.4f} ({popularity['ndcg_at_k']:.4f})"
        f"  coverage {model['coverage']:.3f} ({popularity['coverage']:.3f})"
        f"  {evaluation['holdout_users']} users, {evaluation['holdout']} holdout"
    )


def _synth_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--clusters", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)


def synth_from_args(args: argparse.Namespace) -> Factors:
    return synth_factors(args.items, args.users, args.dim, args.clusters, args.seed)


def run_synth(args: argparse.Namespace) -> None:
    if args.out.suffix in (".csv", ".parquet"):
        interactions = synth_interactions(
            args.users, args.items, args.dim, args.per_user, args.seed, n_clusters=args.clusters
        )
        rows = write_interactions(args.out, interactions)
        log.info("interactions_written", path=str(args.out), rows=rows)
    else:
        save_factors(args.out, synth_from_args(args))
    print(args.out)


def builder_settings(args: argparse.Namespace) -> BuilderSettings:
    overrides = {
        "storage": args.storage,
        "n_trees": getattr(args, "trees", None),
        "mips_trees": getattr(args, "mips_trees", None),
        "neighbours": getattr(args, "neighbours", None),
        "build_jobs": getattr(args, "jobs", None),
        "build_resume": getattr(args, "resume", None),
        "target_recall": getattr(args, "target_recall", None),
        "min_recall": getattr(args, "min_recall", None),
        "tune_budget_s": getattr(args, "tune_budget_s", None),
    }
    return BuilderSettings(**{k: v for k, v in overrides.items() if v is not None})


def run_build(
    args: argparse.Namespace, settings: BuilderSettings, kafka_conf: dict[str, str] | None
) -> Manifest:
    factors, source, training, synthetic = _factors(args, settings)
    attributes = None
    if args.attributes:
        attributes = read_table(args.attributes, factors.item_ids.tolist())
    elif synthetic:
        attributes = synth_attributes(len(factors.item_ids), args.seed)
    # Availability changes published since the last build are folded into this version.
    updates = (
        read_item_updates(kafka_conf, settings.topic_item_updates)
        if kafka_conf is not None and attributes is not None
        else None
    )
    # Items added, changed or removed since the last build: folded in by default (workers then
    # empty their fresh segment), so the segment stays small (docs/fresh-items.md).
    vectors = (
        read_item_vectors(kafka_conf, settings.topic_item_vectors)
        if kafka_conf is not None and not getattr(args, "no_item_vectors", False)
        else None
    )

    def announce(manifest: Manifest) -> None:
        assert kafka_conf is not None
        announce_version(kafka_conf, settings.topic_index_versions, manifest, model=args.model)
        log.info(
            "version_announced",
            version=manifest.version,
            model=args.model,
            topic=settings.topic_index_versions,
        )

    target = _target(settings, args.model)
    return publish_version(
        factors,
        target.build_root,
        _build_options(settings, quality=not args.no_quality),
        remote=target.remote,
        source=source,
        training=training,
        announce=announce if kafka_conf is not None else None,
        attributes=attributes,
        item_updates=updates,
        item_vectors=vectors,
    )


def run_sharded_build(args: argparse.Namespace, settings: BuilderSettings) -> dict[str, Any]:
    """`annrec build --shards N`: the factors' items in N versions built on a Dask cluster
    (index_builder/sharded.py). Directory storage only, not announced: each shard's workers
    follow their own LATEST."""
    if args.interactions or args.attributes:
        raise AnnrecError("--shards takes factors (--factors, --item-factors or --synth) only")
    target = _target(settings, args.model)
    if target.remote is not None:
        raise AnnrecError("--shards publishes to a directory (a shared filesystem), not s3://")
    if settings.build_resume:
        # Each shard could continue its own phases, but shards that were published would be
        # built again from scratch (nothing records them across runs yet): a --resume that
        # silently redoes most of the work would mislead.
        raise AnnrecError("--resume continues one version's build, not a sharded one (--shards)")
    factors, source, _, _ = _factors(args, settings)
    options = shard_options(
        _build_options(settings, quality=not args.no_quality),
        args.cluster_workers,
        os.cpu_count() or 1,
    )
    return build_sharded(
        factors,
        target.build_root,
        args.shards,
        options,
        dask_map(args.cluster, args.cluster_workers),
        source=source,
    )


def _factors(
    args: argparse.Namespace, settings: BuilderSettings
) -> tuple[Factors, str, TrainParams | None, bool]:
    """The factors the flags name, where they come from, the ALS training that made them (if
    any), and whether they are synthetic."""
    if args.factors:
        return load_factors(args.factors), str(args.factors), None, False
    if args.interactions:
        factors, training = _train(args, settings, load_interactions(args.interactions))
        return factors, str(args.interactions), training, False
    if args.item_factors:
        factors = load_factor_arrays(
            args.item_factors, args.user_factors, args.item_ids, args.user_ids
        )
        return factors, str(args.item_factors), None, False
    return synth_from_args(args), f"synth(seed={args.seed})", None, True


def _train(
    args: argparse.Namespace, settings: BuilderSettings, interactions: Interactions
) -> tuple[Factors, TrainParams]:
    """ALS with the --als-* parameters (defaults for those not given), tuned with --tune or when
    the log is small and no parameter was given, evaluated against popularity."""
    given = {
        name: getattr(args, f"als_{name}")
        for name in ("factors", "regularization", "alpha", "iterations", "weighting")
        if getattr(args, f"als_{name}") is not None
    }
    tune: TuneReason | None = None
    if args.tune:
        tune = "--tune"
    elif not args.no_tune and not given and interactions.n_interactions <= settings.tune_small_log:
        tune = "small log"
    return train_evaluated(
        interactions,
        replace(AlsConfig(), **given),
        seed=args.seed,
        tune=tune,
        budget_s=settings.tune_budget_s,
        options=EvalOptions(
            fraction=settings.eval_holdout_fraction,
            max_users=settings.eval_max_users,
            seed=args.seed,
            tune_rows=settings.tune_rows,
        ),
        allow_weak=args.allow_weak_model,
    )


def _build_options(settings: BuilderSettings, quality: bool) -> BuildOptions:
    return BuildOptions(
        n_trees=settings.n_trees,
        mips_trees=settings.mips_trees,
        neighbours=settings.neighbours,
        seed=settings.seed,
        n_jobs=settings.build_jobs,
        resume=settings.build_resume,
        quality=quality,
        target_recall=settings.target_recall,
        min_recall=settings.min_recall,
        fold_in_regularization=settings.fold_in_regularization,
        fold_in_alpha=settings.fold_in_alpha,
    )
