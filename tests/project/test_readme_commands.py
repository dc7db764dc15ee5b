"""Every command the README and docs/ print works exactly as printed.

The fenced ```bash blocks of README.md and docs/*.md are split into simple commands (continuations joined,
comments dropped, `&&`, `;`, `|`, `&` and `$(...)` separated) and each is checked without running the pipeline:

- `make X`: X is a Makefile target;
- s1flow, dvc, prefect, mlflow and Ray's `ray` and `serve`: the command line is parsed by the tool's own parser
  (subcommands, options, arguments), in a subprocess per tool family, all side by side;
- `python SCRIPT ...` / `python -m MODULE ...`: the script or module exists and defines every `--flag` given;
- any other `.venv/bin/` command exists and its `--help` names every `--flag` given;
- the cheap s1flow commands (`--help`, `stages`, `validate`, `dvc-yaml`) run for real (`validate` of a profile that cannot
  run in the test's checkout must still pass its params check).

Commands of other programs (docker, curl, git, export) are not checked, but their repo paths are. ```python
blocks compile, and the README's import only names that exist. Repo paths in backticks and in commands exist,
and every relative link in README.md and docs/*.md resolves, #anchors included. Commands are found in the venv
that runs the tests (`.venv/bin/X` is `sys.executable`'s sibling X), so the test works from any checkout.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
VENV_PREFIXES = (".venv/bin/", ".venv-vllm/bin/")
PARSED = {"s1flow": "light", "dvc": "light", "prefect": "prefect", "mlflow": "mlflow", "ray": "ray", "serve": "ray"}
RUN_FOR_REAL = {"--help", "stages", "validate", "dvc-yaml"}  # s1flow commands that only read
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SUBST = re.compile(r"\$\(([^()]*)\)")
REPO_PATH = re.compile(r"^(components|flows|docs|infra|benchmarks|tests|releases)/|^(params|dvc|prefect)\.yaml$")
PLACEHOLDER = re.compile(r"[<>*{}$…]|\.\.\.|/[A-Z][A-Z_]*(\.\w+)?(/|$)")  # <profile>, *.png, benchmarks/NAME.py
SEPARATORS = {";", "&", "&&", "|", "||"}
MARK = "@@readme-commands@@"

# Runs in a subprocess per tool family: parses each command line with the tool's own parser, runs nothing.
CHECKER = r"""
import contextlib, io, json, sys


def click_root(tool):
    if tool == "s1flow":
        import typer.main
        from flows.cli import app
        return typer.main.get_command(app)
    if tool == "mlflow":
        from mlflow.cli import cli
    elif tool == "serve":
        from ray.serve.scripts import cli
    else:
        from ray.scripts.scripts import cli
    return cli


def parse_click(tool, argv):
    # click's own classes, or typer's copy of them (s1flow): walked by what they have, not by their type
    cmd, name, args, ctx = click_root(tool), tool, list(argv), None
    try:
        while True:
            ctx = cmd.make_context(name, args, parent=ctx)  # parses and checks, invokes nothing
            if not hasattr(cmd, "resolve_command"):  # a command, not a group
                return
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                raise ValueError("missing command")
            name, cmd, args = cmd.resolve_command(ctx, rest)
    except Exception as e:  # Exit(0) is --help
        if type(e).__name__ != "Exit" or e.exit_code:
            raise


def parse(tool, argv):
    if tool == "dvc":
        from dvc.cli import parse_args
        parse_args(argv)
    elif tool == "prefect":
        from prefect.cli._app import _app  # the cyclopts app that `prefect` (prefect.cli:app) runs
        _app.parse_args(argv, exit_on_error=False, print_error=False)
    else:
        parse_click(tool, argv)


errors = []
for tool, argv in json.load(sys.stdin):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            parse(tool, argv)
        errors.append(None)
    except SystemExit as e:
        errors.append(None if e.code in (0, None) else f"exit {e.code}: {out.getvalue().strip()[:800]}")
    except Exception as e:
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        errors.append(f"{type(e).__name__}: {message} {out.getvalue().strip()[:800]}".strip())
print(sys.argv[1] + json.dumps(errors))  # after a mark: imports may print too
"""


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    argv: tuple[str, ...]

    @property
    def tool(self) -> str:
        for prefix in VENV_PREFIXES:
            if self.argv[0].startswith(prefix):
                return self.argv[0][len(prefix):]
        return self.argv[0]

    @property
    def in_venv(self) -> bool:
        return self.argv[0].startswith(VENV_PREFIXES[0])

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _blocks(doc: Path, languages: tuple[str, ...]) -> list[tuple[int, str]]:
    """(first line number, text) of each fenced block in one of ``languages``."""
    text = doc.read_text()
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) in languages]


def _simple_commands(line: str) -> list[list[str]]:
    """A shell line as simple commands: `$(...)` substitutions first, then the line split at its separators,
    leading VAR=value assignments and redirections dropped."""
    out = [cmd for inner in SUBST.findall(line) for cmd in _simple_commands(inner)]
    lexer = shlex.shlex(SUBST.sub("SUBSTITUTED", line), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    current: list[str] = []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                current.pop(0)
            if current:
                out.append(current)
            current = []
        elif current[-1:] in ([">"], [">>"], ["<"]):
            current.pop()
        else:
            current.append(token)
    return out


def _commands(doc: Path) -> list[Command]:
    out = []
    for first, block in _blocks(doc, ("bash", "sh", "shell")):
        pending, start = "", first
        for i, raw in enumerate(block.splitlines()):
            if not pending:
                start = first + i
            pending += raw + "\n"
            if raw.endswith("\\"):
                continue
            try:
                commands = _simple_commands(pending.replace("\\\n", " "))
            except ValueError:  # a quoted string goes on over the next line
                continue
            out += [Command(_rel(doc), start, tuple(argv)) for argv in commands]
            pending = ""
        assert not pending, f"{_rel(doc)}:{start}: unterminated command"
    return out


COMMANDS = [c for doc in DOCS for c in _commands(doc)]
CHECKED = [c for c in COMMANDS if c.tool in ("make", "python", "python3") or c.tool in PARSED or c.in_venv]
PYTHON_BLOCKS = [(_rel(doc), line, code) for doc in DOCS for line, code in _blocks(doc, ("python",))]


def _imports(code: str) -> list[str]:
    """The import statements of a python block (none when it does not parse: test_python_block_compiles says so)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


# The README python blocks' import statements alone: run, they fail on any name that does not exist.
README_IMPORTS = "\n".join(line for doc, _, code in PYTHON_BLOCKS if doc == "README.md" for line in _imports(code))


def _long_flags(args) -> list[str]:
    return [a.split("=")[0] for a in args if a.startswith("--") and len(a) > 2]


def _help_key(cmd: Command) -> tuple[str, ...]:
    """The tool and its subcommand words (`lm_eval run`): whose `--help` lists the options."""
    words = []
    for arg in cmd.argv[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", arg):
            break
        words.append(arg)
    return (cmd.tool, *words)


def _runs_for_real(cmd: Command) -> bool:
    return cmd.tool == "s1flow" and (cmd.argv[1:2] and cmd.argv[1] in RUN_FOR_REAL or "--help" in cmd.argv)


def _start(argv: list[str], stdin: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    proc.stdin.write(stdin or "")
    proc.stdin.close()
    return proc


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    """(returncode, output) once the process ends."""
    out = proc.stdout.read()
    return proc.wait(timeout=180), out


@dataclass
class Checks:
    parsed: dict  # (tool, args) -> None or the parser's error
    helps: dict  # (tool, subcommand words) -> its --help text
    runs: dict  # s1flow args -> (returncode, output)
    imports: tuple  # (returncode, output) of the README python blocks' imports


@pytest.fixture(scope="module")
def checks() -> Checks:
    """Every subprocess the commands need, started at once: one parser process per tool family, `--help` of the
    other venv commands, the s1flow commands run for real."""
    jobs: dict[str, list] = {}
    for tool, args in sorted({(c.tool, c.argv[1:]) for c in CHECKED if c.tool in PARSED}):
        jobs.setdefault(PARSED[tool], []).append((tool, args))
    parsers = [(batch, _start([sys.executable, "-c", CHECKER, MARK], json.dumps(batch))) for batch in jobs.values()]
    other = {_help_key(c) for c in CHECKED if c.in_venv and c.tool not in PARSED and not c.tool.startswith("python")}
    helps = {key: _start([str(BIN / key[0]), *key[1:], "--help"]) for key in sorted(other) if (BIN / key[0]).exists()}
    runs = {c.argv[1:]: _start([str(BIN / "s1flow"), *c.argv[1:]]) for c in CHECKED if _runs_for_real(c)}
    imports = _start([sys.executable, "-c", README_IMPORTS])
    parsed = {}
    for batch, proc in parsers:
        _, out = _finish(proc)
        assert MARK in out, f"the parser process failed:\n{out[-3000:]}"
        parsed.update({(tool, tuple(args)): err for (tool, args), err in zip(batch, json.loads(out.split(MARK)[-1]))})
    return Checks(parsed, {key: _finish(p)[1] for key, p in helps.items()},
                  {args: _finish(p) for args, p in runs.items()}, _finish(imports))


MAKE_TARGETS = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))


def _check_python(cmd: Command) -> None:
    args = list(cmd.argv[1:])
    if args[:1] == ["-c"]:
        compile(args[1], str(cmd), "exec")
        return
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        script = REPO / (module.replace(".", "/") + ".py")
        if not script.is_file():
            assert importlib.util.find_spec(module) is not None, f"{cmd}: no module {module}"
            return
    else:
        script, rest = REPO / args[0], args[1:]
    assert script.is_file(), f"{cmd}: no file {script}"
    source = script.read_text()
    missing = [f for f in _long_flags(rest) if f'"{f}"' not in source and f"'{f}'" not in source]
    assert not missing, f"{cmd}: {_rel(script)} defines no {missing}"


@pytest.mark.parametrize("cmd", CHECKED, ids=lambda c: f"{c.doc}:{c.line}:{c.tool}")
def test_command_works_as_printed(cmd: Command, checks: Checks) -> None:
    assert not cmd.in_venv or (BIN / cmd.tool).exists(), f"{cmd}: no {cmd.tool} in {BIN}"
    if cmd.tool == "make":
        targets = [a for a in cmd.argv[1:] if not a.startswith("-") and "=" not in a]
        assert targets and set(targets) <= MAKE_TARGETS, f"{cmd}: Makefile targets are {sorted(MAKE_TARGETS)}"
    elif cmd.tool.startswith("python"):
        _check_python(cmd)
    elif cmd.tool in PARSED:
        error = checks.parsed[(cmd.tool, cmd.argv[1:])]
        assert error is None, f"{cmd}: {error}"
        if cmd.argv[1:] in checks.runs:
            code, out = checks.runs[cmd.argv[1:]]
            # validate may find that the checkout running the tests cannot run a cluster profile (keys, GPU packages): that is
            # its job there; its params check must still pass
            refused_here = cmd.argv[1] == "validate" and code == 2 and "params OK" in out and "cannot run here" in out
            assert code == 0 or refused_here, f"{cmd} exited {code}:\n{out[-2000:]}"
    else:
        missing = [f for f in _long_flags(cmd.argv[1:])
                   if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", checks.helps[_help_key(cmd)])]
        assert not missing, f"{cmd}: `{' '.join(_help_key(cmd))} --help` names no {missing}"


def test_readme_sets_up_with_exactly_two_commands() -> None:
    text = README.read_text()
    section = text.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    block = FENCE.search(section)
    assert block and block.group(1) == "bash", "the set-up section starts with a bash block"
    commands = [argv for line in block.group(2).splitlines() for argv in _simple_commands(line)]
    assert commands == [["make", "demo"], ["make", "test"]]


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200, "README.md is for users: 200 lines at most; move detail to docs/"


@pytest.mark.parametrize("doc,line,code", PYTHON_BLOCKS, ids=[f"{d}:{n}" for d, n, _ in PYTHON_BLOCKS])
def test_python_block_compiles(doc: str, line: int, code: str) -> None:
    compile(code, f"{doc}:{line}", "exec")


def test_readme_python_imports_exist(checks: Checks) -> None:
    assert "from openai import OpenAI" in README_IMPORTS, "the README shows how to call the served model"
    code, out = checks.imports
    assert code == 0, f"the README's python imports fail:\n{README_IMPORTS}\n{out[-2000:]}"


def _outside_code(text: str) -> str:
    return INLINE.sub("", FENCE.sub("", text))


def _repo_path(token: str) -> str | None:
    token = token.strip("[](),;:'\"").split("=")[-1]
    return token if REPO_PATH.match(token) and not PLACEHOLDER.search(token) else None


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_repo_paths_exist(doc: Path) -> None:
    spans = INLINE.findall(FENCE.sub("", doc.read_text()))
    tokens = [t for span in spans for t in span.split()]
    tokens += [t for c in COMMANDS if c.doc == _rel(doc) for t in c.argv]
    missing = sorted({p for t in tokens if (p := _repo_path(t)) and not (REPO / p).exists()})
    assert not missing, f"{_rel(doc)} names paths that do not exist: {missing}"


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    anchors, counts = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", doc.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        counts[slug] = counts.get(slug, -1) + 1
        anchors.add(f"{slug}-{counts[slug]}" if counts[slug] else slug)
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_outside_code(doc.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {_rel(file)})")
    assert not broken, f"{_rel(doc)}: broken links: {broken}"
