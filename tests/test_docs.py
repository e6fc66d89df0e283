"""The docs stay true: the generated reference page, the site's strict build, and every command they show.

Every ``mlflow run … -e X … -P k=v`` / ``dlfm run …`` in README.md and docs/**/*.md names an entry point and
params that dlfm/project_spec.py has; every ``dlfm …`` command names a real subcommand and options, and
each distinct subcommand's ``--help`` exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO, run_script

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_reference_page_is_what_the_generator_renders():
    from dlfm.docs_reference import PAGE, render_entry_points

    assert (REPO / PAGE).read_text() == render_entry_points(), \
        f"{PAGE} is stale: run python -m dlfm.docs_reference > {PAGE}"


def test_reference_page_lists_every_declared_param():
    import yaml

    page = (REPO / "docs/reference/entry-points.md").read_text()
    for entry, spec in yaml.safe_load((REPO / "MLproject").read_text())["entry_points"].items():
        section = page.split(f"## `{entry}`\n", 1)[1].split("\n## ", 1)[0]
        for name, value in spec["parameters"].items():
            shown = f"`{value['default']}`" if value["default"] else "(empty)"
            assert f"| `{name}` | {shown} |" in section, (entry, name)


def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing nav page or a bad config fails the suite (≈ 2 s)."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "entry-points" / "index.html").exists()


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250, "the README gets a user started; the rest lives in docs/"


# --- the commands the docs show -------------------------------------------------------------------------------


def code_texts(markdown: str) -> list[str]:
    """Fenced code lines (continuations joined, comments cut) and inline code spans of ``markdown``."""
    texts, fenced = [], False
    joined = re.sub(r"\\\n\s*", " ", markdown)
    for line in joined.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            texts.append(re.split(r"\s#\s", line)[0])
        else:
            texts += line.split("`")[1::2]
    return texts


def commands(markdown: str) -> list[tuple[str, list[str]]]:
    """[("mlflow", args after `mlflow run`) | ("dlfm", args after `dlfm`)] of every command in ``markdown``."""
    found = []
    for text in code_texts(markdown):
        # mlflow run anywhere in a command line (after `time`, `timeout 60`, …); dlfm only where a command starts
        for match in re.finditer(r"(?:^|[;&|(]|\s)(mlflow run)\s+([^;&|)]*)|(?:^\s*|[;&|(]\s*)(dlfm)\s+([^;&|)]*)", text):
            program, rest = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
            try:
                args = shlex.split(rest)
            except ValueError:
                args = rest.split()
            if program == "mlflow run":
                found.append(("mlflow", args))
            elif args and re.fullmatch(r"[a-z]+", args[0]):
                found.append(("dlfm", args))
    return found


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """{name: parser} of ``parser``'s subcommands."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001 - argparse has no public walk
    return dict(actions[0].choices) if actions else {}


def check_mlflow_run(args: list[str]) -> list[str]:
    """Problems of one ``mlflow run`` argument list: an unknown entry point or param."""
    from dlfm.docs_reference import declared_params
    from dlfm.project_spec import UNDECLARED

    accepted = declared_params()
    entry = "main"  # MLflow's default entry point
    for flag, value in zip(args, args[1:]):
        if flag in ("-e", "--entry-point"):
            entry = value
    if not re.fullmatch(r"\w+", entry):
        return []  # a placeholder such as <entry point>
    if entry not in accepted:
        return [f"unknown entry point {entry!r} in: mlflow run {' '.join(args)}"]
    problems = []
    for flag, value in zip(args, args[1:]):
        if flag in ("-P", "--param-list"):
            name = value.split("=", 1)[0]
            if name not in accepted[entry] - set(UNDECLARED):
                problems.append(f"entry point {entry!r} has no param {name!r}: mlflow run {' '.join(args)}")
    return problems


def check_dlfm(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(the subcommand path, problems) of one ``dlfm`` argument list: an unknown subcommand or option."""
    from dlfm.cli import build_parser

    if args[0] == "run":
        return ("run",), check_mlflow_run(args[1:])
    parser, path = build_parser(), []
    rest = list(args)
    while (choices := subparsers(parser)) and rest and not rest[0].startswith("-"):
        if rest[0] not in choices:
            return tuple(path), [f"no subcommand {' '.join([*path, rest[0]])!r}: dlfm {' '.join(args)}"]
        path.append(rest.pop(0))
        parser = choices[path[-1]]
    if subparsers(parser):
        return tuple(path), []  # a command group named in prose (`dlfm registry`)
    options = set(parser._option_string_actions)  # noqa: SLF001
    ours = rest[:rest.index("--")] if "--" in rest else rest
    problems = [f"dlfm {' '.join(path)} has no option {arg.split('=')[0]!r}: dlfm {' '.join(args)}"
                for arg in ours if arg.startswith("-") and arg.split("=")[0] not in options and not re.fullmatch(r"-\d.*", arg)]
    return tuple(path), problems


def check_docs(markdown: str) -> tuple[set[tuple[str, ...]], list[str]]:
    """(every dlfm subcommand path, every problem) of the commands in ``markdown``."""
    paths, problems = set(), []
    for kind, args in commands(markdown):
        if kind == "mlflow":
            problems += check_mlflow_run(args)
        else:
            path, found = check_dlfm(args)
            problems += found
            if path and not found:
                paths.add(path)
    return paths, problems


def test_the_extractor_sees_the_docs_commands():
    paths, _ = check_docs((REPO / "README.md").read_text())
    assert {("run",), ("registry", "promote"), ("dataset", "import")} <= paths
    found = commands((REPO / "docs" / "pretraining.md").read_text())
    assert ("mlflow", ["-e", "tune", "--env-manager", "local", "-P", "storage=env:OPTUNA_STORAGE", "-P", "study_name=fm-v1",
                       "-P", "n_trials=48", "-P", "n_workers=2"]) in [(k, a[1:]) for k, a in found], "continued lines are joined"


@pytest.mark.parametrize("planted, expected", [
    ("```\nmlflow run . -e multitask --env-manager local -P epochz=3\n```", "has no param 'epochz'"),
    ("Run `mlflow run . -e multitask -P experiment_name=x` to …", "has no param 'experiment_name'"),
    ("```\nmlflow run . -e pretrainn --env-manager local\n```", "unknown entry point 'pretrainn'"),
    ("```\ndlfm run . -e evaluate -P budget=10\n```", "has no param 'budget'"),
    ("```\ndlfm registry promote 4 --stage production --if-bettter val/probe_macro_auc\n```", "has no option '--if-bettter'"),
    ("`dlfm registry demote 3`", "no subcommand 'registry demote'"),
])
def test_the_checker_fails_on_a_planted_mistake(planted, expected):
    _, problems = check_docs("Some prose.\n\n" + planted + "\n")
    assert len(problems) == 1 and expected in problems[0], problems


def test_every_command_in_readme_and_docs_names_real_entry_points_params_and_options():
    problems = [f"{path.relative_to(REPO)}: {problem}" for path in DOC_FILES for problem in check_docs(path.read_text())[1]]
    assert not problems, "\n".join(problems)


@pytest.mark.slow  # one real `dlfm … --help` process per subcommand: ≈ 14 s on 2 cores
def test_every_dlfm_subcommand_in_the_docs_has_a_help_that_exits_0(tmp_path):
    paths = set().union(*(check_docs(path.read_text())[0] for path in DOC_FILES))
    assert ("run",) in paths
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(paths, pool.map(lambda p: run_script(["-m", "dlfm.cli", *p, "--help"], cwd=tmp_path, timeout=120),
                                           paths)))
    for path, result in results.items():
        assert result.returncode == 0 and "usage" in result.stdout.lower(), (path, result.stdout[-500:], result.stderr[-1500:])
    assert "Usage: python -m mlflow run" in results[("run",)].stdout, "dlfm run --help shows mlflow run's options"


def test_readmes_encoder_snippet_is_part_of_the_one_that_runs():
    """The README's short PyTorch block is lines of docs/registry.md's block, which test_project runs as written."""
    def block(path, heading):
        text = (REPO / path).read_text()
        return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1).splitlines()

    short, full = block("README.md", "## Compare, promote and transfer"), block("docs/registry.md", "## Using a registered encoder")
    assert [line for line in short if line.strip()] and all(line in full for line in short if line.strip())
