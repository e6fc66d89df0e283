"""The ``dlfm`` command: ``dlfm registry list|promote|adopt|history``, ``dlfm dataset import``, ``dlfm runs repair``,
``dlfm server``, ``dlfm run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlfm.entrypoint import ParamParser, run_entry_point, typed
from dlfm.errors import ConfigError, RegistryError


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned text table."""
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def registry_list(args) -> None:
    from dlfm.tracking import configure_tracking, registry

    configure_tracking()
    rows = []
    for v in registry.list_versions():
        rows.append({
            "version": v.version, "aliases": ",".join(sorted(v.aliases)) or "-", "objective": v.tags.get("objective", "?"),
            "encoder": v.tags.get("encoder", "?"), "val/probe_macro_auc": v.tags.get("val/probe_macro_auc", "")[:6],
            "val/macro_auc": v.tags.get("val/macro_auc", "")[:6], "test/macro_auc": v.tags.get("test/macro_auc", "")[:6],
            "val/accuracy": v.tags.get("val/accuracy", "")[:6], "source run": v.run_id,
            # the corpus it trained on: main's spread registers one version per objective and corpus
            "dataset": v.tags.get("dataset_digest", "?")[:12], "adopted from": v.tags.get(registry.ADOPTED_FROM_TAG, "-"),
        })
    # val/probe_macro_auc first: the one number measured alike for every objective, which main ranks and gates on
    print_table(rows, ["version", "aliases", "objective", "encoder", "val/probe_macro_auc", "val/macro_auc", "test/macro_auc",
                       "val/accuracy", "dataset", "source run", "adopted from"])


def registry_promote(args) -> None:
    from dlfm.tracking import configure_tracking, registry

    configure_tracking()
    if (args.version is None) == (args.run_id is None):
        raise RegistryError("give exactly one of VERSION or --run-id RUN to promote")
    version = args.version if args.version is not None else registry.version_for_run(args.run_id)
    rescored, interval = {}, None
    if args.beyond_noise and not args.probe_set:
        raise ConfigError("--beyond-noise measures the difference's noise on a probe set; pass --probe-set DATASET "
                          "and --if-better val/probe_macro_auc with it")
    if args.probe_set:
        from dlfm.stages.main import PROMOTION_METRIC, gate_evidence

        if args.if_better != PROMOTION_METRIC:
            raise ConfigError(f"--probe-set scores {PROMOTION_METRIC}; pass --if-better {PROMOTION_METRIC} with it")
        if not Path(args.probe_set).exists():
            raise ConfigError(f"--probe-set {args.probe_set} does not exist; pass a labelled dataset directory "
                              "(e.g. a model_ii set under data/)")
        evidence = gate_evidence(version, args.stage, args.probe_set, args.seed, "auto", speaker="[promote]")
        rescored, interval = evidence.rescored, evidence.interval
    outcome = registry.promote(version, args.stage, if_better=args.if_better, reason=args.reason, rescored=rescored,
                               beyond_noise=args.beyond_noise, interval=interval)
    print(outcome.message)
    if args.if_better and not outcome.promoted and outcome.previous != outcome.version:
        sys.exit(1)


def registry_adopt(args) -> None:
    from dlfm.tracking import configure_tracking, registry

    configure_tracking()
    print(registry.adopt(args.version, reason=args.reason).message)


def registry_history(args) -> None:
    from dlfm.tracking import configure_tracking, registry

    configure_tracking()
    rows = registry.promotion_history(args.stage)
    print_table(rows, ["time", "stage", "version", "previous_version", "user", "reason"])
    for stage in sorted({row["stage"] for row in rows}):
        recorded = [row for row in rows if row["stage"] == stage][-1]["version"]
        current = registry.version_for_stage(stage)
        if current != recorded:
            print(f"note: {stage} now points at version {current or 'nothing'}, moved outside dlfm "
                  f"(e.g. in the MLflow UI) after the last recorded promotion to {recorded}")


IMPORT_HINTS = {  # by the imported set's task: what to run on it next
    "classification": "use it with -P dataset={target}",
    "regression": ("regress its columns {targets}: mlflow run . -e evaluate --env-manager local -P tasks=regression "
                   "-P regression_dataset={target} (or -e transfer -P dataset={target})"),
    "unlabelled": "use it as a pretraining corpus: mlflow run . -e autoencoder -P pretrain_dataset={target}",
}


def dataset_import(args) -> None:
    from dlfm.data.importer import import_dataset
    from dlfm.data.user_arrays import UserArrays

    class_names = tuple(name.strip() for name in args.class_names.split(",")) if args.class_names else ()
    spec = UserArrays(images=args.images, labels=args.labels, params=args.params, class_names=class_names,
                      seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      pixel_scale=args.pixel_scale)
    if args.shard_images:
        return import_shards(spec, args)
    target = import_dataset(spec, args.out, force=args.force)
    from dlfm.sources import load_dataset

    dataset = load_dataset(target)  # verified by sha256, as every stage will read it
    sizes = ", ".join(f"{split} {len(dataset.indices(split))}" for split in ("train", "val", "test"))
    print(f"wrote {target}: {len(dataset)} {dataset.image_size}x{dataset.image_size} images, {dataset.task}, "
          f"classes {', '.join(dataset.class_names)} ({sizes}); digest {dataset.digest[:12]}")
    for link in dataset.manifest.get("followed_symlinks", ()):
        print(f"followed symlink: {link}")
    targets = ", ".join(dataset.manifest.get("targets", ()))
    print(IMPORT_HINTS[dataset.task].format(target=target, targets=targets))


def import_shards(spec, args) -> None:
    """``--shard-images K``: stream the images into a sharded corpus (never held whole) and say what was written."""
    from dlfm.data.shard_import import import_sharded
    from dlfm.data.shards import load_sharded_dir

    target = import_sharded(spec, args.out, args.shard_images, force=args.force)
    corpus = load_sharded_dir(target)
    sizes = ", ".join(f"{split} {len(corpus.indices(split))}" for split in ("train", "val", "test"))
    print(f"wrote {target}: {len(corpus)} {corpus.image_size}x{corpus.image_size} images in "
          f"{len(corpus.manifest['shards'])} shards, {corpus.task} ({sizes}); digest {corpus.digest[:12]}")
    print(f"stream it as a pretraining corpus: mlflow run . -e mae -P pretrain_dataset={target}")


def add_dataset_parser(commands) -> None:
    """Register ``dlfm dataset import``; its defaults are UserArrays's."""
    from dlfm.data.user_arrays import UserArrays

    dataset = commands.add_parser("dataset", help="bring your own images: write a verified dataset directory")
    sub = dataset.add_subparsers(dest="dataset_command", required=True, parser_class=ParamParser)
    imp = sub.add_parser("import", help="write a dataset directory (images.npy, labels.npy, params.csv, manifest.json "
                                        "with sha256) from your .npy/.npz images, labels or parameter CSV")
    imp.add_argument("images", help="a .npy stack (N×H×W or N×1×H×W), an .npz (members images, labels, split) or a "
                                    "folder of per-image .npy files: flat, or class subfolders of any names, "
                                    "optionally inside train/ val/ test/")
    imp.add_argument("--out", required=True, help="the dataset directory to write (new, empty, or one dlfm wrote with --force)")
    imp.add_argument("--labels", default="", help="a .npy of one integer or class-name label per image, in image order")
    imp.add_argument("--params", default="", help="a CSV with one row per image (image order, or a `file` column); "
                                                  "without labels: a regression set; a `split` column is your split")
    imp.add_argument("--class-names", dest="class_names", default="",
                     help="comma-separated names of integer labels 0..K-1 or of the sorted class folders")
    imp.add_argument("--seed", type=typed("seed", int), default=UserArrays.seed,
                     help="seed of the stratified split when you give none (default %(default)s)")
    imp.add_argument("--val-fraction", dest="val_fraction", type=typed("val-fraction", float), default=UserArrays.val_fraction,
                     help="share of each class in val when you give no split (default %(default)s)")
    imp.add_argument("--test-fraction", dest="test_fraction", type=typed("test-fraction", float), default=UserArrays.test_fraction,
                     help="share of each class in test when you give no split (default %(default)s)")
    imp.add_argument("--pixel-scale", dest="pixel_scale", type=typed("pixel-scale", float), default=UserArrays.pixel_scale,
                     metavar="ARCSEC", help="arcsec per pixel of your images: an encoder pretrained with pixel_scale "
                                            "then reads them on its grid (default: not stated)")
    imp.add_argument("--force", action="store_true", help="replace a dataset directory dlfm wrote there before")
    imp.add_argument("--shard-images", dest="shard_images", type=typed("shard-images", int), default=0, metavar="K",
                     help="write a sharded corpus (Parquet shards of K images, streamed: never held in memory) "
                          "instead of one images.npy")
    imp.set_defaults(func=dataset_import)


def build_parser() -> argparse.ArgumentParser:
    parser = ParamParser(prog="dlfm", description="dlfm: DeepLense foundation-model registry and tools.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ParamParser)

    reg = commands.add_parser("registry", help="the dlfm-encoder model registry")
    reg_commands = reg.add_subparsers(dest="registry_command", required=True, parser_class=ParamParser)
    reg_commands.add_parser("list", help="versions, aliases, objective, key metrics, source run").set_defaults(func=registry_list)
    promote = reg_commands.add_parser("promote", help="point a stage alias at a version")
    promote.add_argument("version", nargs="?", help="version number to promote")
    promote.add_argument("--run-id", dest="run_id", help="promote the version this training run registered")
    promote.add_argument("--stage", required=True, help="candidate, staging, production or another lowercase name")
    promote.add_argument("--if-better", dest="if_better", metavar="METRIC",
                         help="promote only if this metric beats the current holder's (loss/mse/mae: lower is better)")
    promote.add_argument("--probe-set", dest="probe_set", metavar="DATASET",
                         help="with --if-better val/probe_macro_auc: score both versions on this labelled dataset "
                              "directory first, as main's gate does (needed when they were probed on different sets)")
    promote.add_argument("--beyond-noise", dest="beyond_noise", action="store_true",
                         help="with --probe-set: promote only if the 95%% paired bootstrap interval of the difference "
                              "over the probe set's val images lies above 0 (main's gate=beyond_noise)")
    promote.add_argument("--seed", type=int, default=0, help="the probe's cross-validation seed with --probe-set")
    promote.add_argument("--reason", default="", help="why (kept in the history)")
    promote.set_defaults(func=registry_promote)
    adopt = reg_commands.add_parser(
        "adopt", help="register an older dlfm's version again with this dlfm's code (its weights only, its code never run)",
        description="A version carries the dlfm code that registered it, and promote, evaluate, transfer and serving "
                    "refuse one whose code is not the installed dlfm's: after an upgrade, every earlier version. adopt "
                    "reads the version's weights weights-only (its code never runs), checks they load into this dlfm's "
                    "architecture, and registers them as a new version carrying this dlfm's code, with the old "
                    "version's tags and its source run's val/test numbers (measured by the older code).")
    adopt.add_argument("version", help="the version to adopt")
    adopt.add_argument("--reason", default="", help="why (kept on the adopt run)")
    adopt.set_defaults(func=registry_adopt)
    history = reg_commands.add_parser("history", help="who promoted which version to which stage, and when")
    history.add_argument("--stage", default=None)
    history.set_defaults(func=registry_history)

    # Other command groups live beside the code they drive; each adds its own subparser.
    from dlfm import server, repair

    commands.add_parser("run", help="`mlflow run ARGS`, after checking that the tracking store answers and is writable",
                        add_help=False)
    add_dataset_parser(commands)
    server.add_parser(commands)
    repair.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry of the ``dlfm`` console script."""

    argv = sys.argv[1:] if argv is None else argv

    def run() -> None:
        if argv[:1] == ["run"]:  # `dlfm run ARGS` passes ARGS to `mlflow run` untouched, so argparse never sees them
            from dlfm.launch import launch, print_help

            if argv[1:] in (["-h"], ["--help"]):
                print_help()
                return

            launch(argv[1:])
            return
        args = build_parser().parse_args(argv)
        args.func(args)

    run_entry_point(run)


if __name__ == "__main__":
    main()
