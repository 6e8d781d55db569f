"""The arguments and work of `annrec synth`, `annrec build` and `annrec versions`.

tools/commands/builder.py registers them as sub-commands (with the Kafka and local-stack wiring a
build's announcement needs); nothing here is imported unless one of them runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import structlog

from adapters.item_updates import read_item_updates
from index_builder.announce import announce_version
from index_builder.attributes import read_table
from index_builder.inputs import Factors, load_factor_arrays, load_factors, save_factors
from index_builder.publish import BuildOptions, publish_version
from index_builder.settings import BuilderSettings
from index_builder.synth import (
    synth_attributes,
    synth_factors,
    synth_interactions,
    write_interactions,
)
from index_builder.targets import DirectoryTarget, ObjectStoreTarget, publish_target
from index_builder.train import load_interactions, train_als
from schemas.errors import AnnrecError
from schemas.manifest import Manifest, TrainParams

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
    src.add_argument("--interactions", type=Path, help="CSV/Parquet user,item[,weight]: train ALS")
    src.add_argument("--synth", action="store_true", help="build from synthetic factors")
    als = build.add_argument_group("ALS training (with --interactions; needs annrec[train])")
    als.add_argument("--als-factors", type=int, default=64)
    als.add_argument("--als-regularization", type=float, default=0.01)
    als.add_argument("--als-alpha", type=float, default=1.0)
    als.add_argument("--als-iterations", type=int, default=15)
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
    build.add_argument("--trees", type=int, help="angular index trees (ANNREC_N_TREES)")
    build.add_argument("--mips-trees", type=int, help="trees per MIPS band (ANNREC_MIPS_TREES)")
    build.add_argument("--jobs", type=int, help="build threads, -1 = all (ANNREC_BUILD_JOBS)")
    build.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")
    build.add_argument("--target-recall", type=float, help="recall@10 search_k is tuned for")
    build.add_argument("--min-recall", type=float, help="refuse to publish below this recall@10")
    build.add_argument("--no-quality", action="store_true", help="skip the quality report")


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
    for p in (vlist, gc, rollback):
        p.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")


def _target(settings: BuilderSettings) -> DirectoryTarget | ObjectStoreTarget:
    return publish_target(settings.storage, settings.storage_options, settings.build_dir)


def run_versions(args: argparse.Namespace, settings: BuilderSettings) -> int:
    cat = _target(settings)
    if args.versions_action == "gc":
        removed = cat.gc(args.keep, args.grace_s)
        log.info("versions_removed", count=len(removed), versions=removed)
        return 0
    if args.versions_action == "rollback":
        if args.version not in cat.storage.versions():
            raise AnnrecError(f"no version {args.version} in {settings.storage}")
        cat.set_latest(args.version, allow_older=True)
        print(args.version)
        return 0
    latest = cat.storage.latest()
    rows = [{"name": v, "latest": v == latest} for v in cat.storage.versions()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{'*' if row['latest'] else ' '} {row['name']}")
    return 0


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
        "build_jobs": getattr(args, "jobs", None),
        "target_recall": getattr(args, "target_recall", None),
        "min_recall": getattr(args, "min_recall", None),
    }
    return BuilderSettings(**{k: v for k, v in overrides.items() if v is not None})


def run_build(
    args: argparse.Namespace, settings: BuilderSettings, kafka_conf: dict[str, str] | None
) -> Manifest:
    factors, source, training, synthetic = _factors(args)
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

    def announce(manifest: Manifest) -> None:
        assert kafka_conf is not None
        announce_version(kafka_conf, settings.topic_index_versions, manifest)
        log.info("version_announced", version=manifest.version, topic=settings.topic_index_versions)

    target = _target(settings)
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
    )


def _factors(args: argparse.Namespace) -> tuple[Factors, str, TrainParams | None, bool]:
    """The factors the flags name, where they come from, the ALS training that made them (if
    any), and whether they are synthetic."""
    if args.factors:
        return load_factors(args.factors), str(args.factors), None, False
    if args.interactions:
        factors, training = train_als(
            load_interactions(args.interactions),
            factors=args.als_factors,
            regularization=args.als_regularization,
            alpha=args.als_alpha,
            iterations=args.als_iterations,
            seed=args.seed,
        )
        return factors, str(args.interactions), training, False
    if args.item_factors:
        factors = load_factor_arrays(
            args.item_factors, args.user_factors, args.item_ids, args.user_ids
        )
        return factors, str(args.item_factors), None, False
    return synth_from_args(args), f"synth(seed={args.seed})", None, True


def _build_options(settings: BuilderSettings, quality: bool) -> BuildOptions:
    return BuildOptions(
        n_trees=settings.n_trees,
        mips_trees=settings.mips_trees,
        seed=settings.seed,
        n_jobs=settings.build_jobs,
        quality=quality,
        target_recall=settings.target_recall,
        min_recall=settings.min_recall,
        fold_in_regularization=settings.fold_in_regularization,
        fold_in_alpha=settings.fold_in_alpha,
    )
