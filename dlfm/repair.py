"""``dlfm runs repair``: mark runs left RUNNING by dead processes as FAILED (the CLI; the logic is in tracking)."""

from __future__ import annotations

from dlfm.entrypoint import ParamParser, typed
from dlfm.errors import ConfigError


def repair(args) -> None:
    """Judge every RUNNING run by its heartbeat, pid and host; end the dead ones FAILED and print what changed."""
    from dlfm.tracking import configure_tracking
    from dlfm.tracking.maintenance import find_dead_runs, mark_failed

    if args.stale_after < 0 or args.other_host_stale_after < 0:
        raise ConfigError("--stale-after and --other-host-stale-after must be >= 0 seconds")
    configure_tracking()
    verdicts = find_dead_runs(args.experiment_name, args.stale_after, args.other_host_stale_after)
    dead = [v for v in verdicts if v.verdict == "dead"]
    for health in verdicts:
        label = health.run_name or health.run_id
        if health.verdict == "dead":
            action = "would mark FAILED" if args.dry_run else "marked FAILED"
            if not args.dry_run:
                mark_failed(health)
            print(f"{action}: run {health.run_id} ({label}, experiment {health.experiment}): {health.reason}")
        else:
            print(f"left RUNNING: run {health.run_id} ({label}, experiment {health.experiment}): {health.reason}")
    if not verdicts:
        print("no RUNNING runs")
    elif not dead:
        print("nothing to repair")


def add_parser(commands) -> None:
    """Register the ``runs`` subcommand group."""
    from dlfm.tracking.maintenance import OTHER_HOST_STALE_AFTER_S, STALE_AFTER_S

    parser = commands.add_parser("runs", help="maintenance of tracked runs")
    sub = parser.add_subparsers(dest="runs_command", required=True, parser_class=ParamParser)
    fix = sub.add_parser("repair", help="mark runs left RUNNING by dead processes (SIGKILL, OOM, reboot) as FAILED")
    fix.add_argument("--experiment-name", dest="experiment_name", default=None,
                     help="only this experiment (default: every active experiment)")
    fix.add_argument("--stale-after", dest="stale_after", type=typed("stale-after", float), default=STALE_AFTER_S,
                     help="seconds without a heartbeat (metric or start) before a run of a dead local process "
                          "is failed (default %(default)s)")
    fix.add_argument("--other-host-stale-after", dest="other_host_stale_after",
                     type=typed("other-host-stale-after", float), default=OTHER_HOST_STALE_AFTER_S,
                     help="seconds without a heartbeat before a run of another host is failed (default %(default)s)")
    fix.add_argument("--dry-run", dest="dry_run", action="store_true", help="print what would change; change nothing")
    fix.set_defaults(func=repair)
