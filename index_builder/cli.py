"""`annrec synth` and `annrec build`: registered on the root parser by worker/cli.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog

from index_builder.announce import announce_version
from index_builder.inputs import Factors, load_factors, save_factors
from index_builder.publish import BuildOptions, publish_version
from index_builder.settings import BuilderSettings
from index_builder.synth import synth_factors
from schemas.manifest import Manifest

log = structlog.get_logger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    synth = sub.add_parser("synth", help="write synthetic MF factors (.npz)")
    _synth_flags(synth)
    synth.add_argument("--out", type=Path, required=True, help="output .npz")

    build = sub.add_parser("build", help="build, verify, publish and announce an index version")
    src = build.add_mutually_exclusive_group()
    src.add_argument("--factors", type=Path, help=".npz with item_factors, user_factors, ids")
    src.add_argument("--synth", action="store_true", help="build from synthetic factors")
    _synth_flags(build)
    build.add_argument("--storage", type=Path, help="storage root (ANNREC_STORAGE)")
    build.add_argument("--trees", type=int, help="Annoy trees per index (ANNREC_N_TREES)")
    build.add_argument("--jobs", type=int, help="build threads, -1 = all (ANNREC_BUILD_JOBS)")
    build.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")
    build.add_argument("--target-recall", type=float, help="recall@10 search_k is tuned for")
    build.add_argument("--min-recall", type=float, help="refuse to publish below this recall@10")
    build.add_argument("--no-quality", action="store_true", help="skip the quality report")


def _synth_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--clusters", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)


def synth_from_args(args: argparse.Namespace) -> Factors:
    return synth_factors(args.items, args.users, args.dim, args.clusters, args.seed)


def run_synth(args: argparse.Namespace) -> None:
    save_factors(args.out, synth_from_args(args))
    print(args.out)


def builder_settings(args: argparse.Namespace) -> BuilderSettings:
    overrides = {
        "storage": args.storage,
        "n_trees": args.trees,
        "build_jobs": args.jobs,
        "target_recall": args.target_recall,
        "min_recall": args.min_recall,
    }
    return BuilderSettings(**{k: v for k, v in overrides.items() if v is not None})


def run_build(
    args: argparse.Namespace, settings: BuilderSettings, kafka_conf: dict[str, str] | None
) -> Manifest:
    if args.factors:
        factors, source = load_factors(args.factors), str(args.factors)
    else:
        factors, source = synth_from_args(args), f"synth(seed={args.seed})"

    def announce(manifest: Manifest) -> None:
        assert kafka_conf is not None
        announce_version(kafka_conf, settings.topic_index_versions, manifest)
        log.info("version_announced", version=manifest.version, topic=settings.topic_index_versions)

    options = BuildOptions(
        n_trees=settings.n_trees,
        seed=settings.seed,
        n_jobs=settings.build_jobs,
        quality=not args.no_quality,
        target_recall=settings.target_recall,
        min_recall=settings.min_recall,
    )
    return publish_version(
        factors,
        settings.storage,
        options,
        source=source,
        announce=announce if kafka_conf is not None else None,
    )
