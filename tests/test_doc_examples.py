"""Every example in README.md and docs/*.md runs, so the documentation cannot rot.

The fenced blocks of each Markdown file run in order in one sandbox folder (``sample_data/``
linked, ``pipelines/`` copied, outputs under ``out/``), README.md first, shared by all files, so
a command shown twice runs once and finds its output up to date:

- ``console`` / ``bash`` / ``sh``: ``dataforge ...`` lines run in this process (click's runner,
  the real command) with ``VAR=value`` prefixes and earlier ``export`` lines as environment; they
  must exit 0, unless the line ends with ``; echo "exit $?"`` (then ``exit N`` joins the output).
  In ``console`` blocks, the lines after a ``$ `` command are expected output: each must appear in
  what the command printed (``...`` stands for lines left out). ``make TARGET`` checks that the
  Makefile has the target; a few harmless commands (``ls``, ``cmp``, ``mkdir``...) run in bash.
  A command whose inputs are placeholders for your own data (``data/``, ``train/``,
  ``table.csv``...; :data:`PLACEHOLDER`) is only parsed by click, which catches renamed options
  and invalid choices.
- ``python``: executed (one namespace per file); ``pycon``: run with doctest, outputs compared.
  ``python signature`` (the generated API reference) is a declaration, not an example.
- ``yaml``: loaded the way dataforge loads it (pipeline, curriculum, noise or normalize file, or
  a fragment of a pipeline merged into a minimal one), input and source paths checked. A block
  whose first line is ``# pipelines/NAME.yaml`` is saved there for the examples that follow.
- ``cron`` lines and the ``ExecStart=`` lines of systemd units (``ini``): their dataforge
  command runs in the sandbox (``/srv/dataforge`` and ``.venv/bin/`` mapped to it).

A block right after ``<!-- not-tested: reason -->`` is not run (a real cluster, ``systemctl``);
its dataforge command lines are still parsed. Other languages (``text``, ``json``) are prose.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
import yaml

from dataforge.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
SHELL = {"console", "bash", "sh", "shell"}
#: Arguments that stand for the reader's own data: such commands are parsed, not run.
PLACEHOLDER = re.compile(r"^(data|train|eval)(/|\.|$)|^'?data/|^(table\.csv|test\.jsonl|probs\.npy)$")
#: Commands other than dataforge that an example may run (in bash, in the sandbox).
BASH_OK = {"ls", "cat", "cp", "cmp", "diff", "mkdir", "echo", "test", "head", "tail", "jq", "sha256sum", "wc"}
NOT_TESTED = re.compile(r"^<!--\s*not-tested:\s*(.+?)\s*-->$")
EXIT_SUFFIX = re.compile(r';\s*echo "exit \$\?"\s*$')


@dataclass
class Block:
    path: str
    line: int
    lang: str
    text: str
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def blocks_of(path: str) -> list[Block]:
    """The fenced blocks of a Markdown file, with the not-tested marker right before each."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)(?: +(\S+))?\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        skip = NOT_TESTED.match(prev)
        lang = m.group(1) if m.group(2) is None else f"{m.group(1)} {m.group(2)}"
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", skip.group(1) if skip else None))
        i += 1
    return out


# --------------------------------------------------------------------------- shell lines


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    buf, first = "", 0
    for k, line in enumerate(text.splitlines()):
        if not buf:
            first = k
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((first, buf + line))
        buf = ""
    return out


def words(line: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The words bash makes of ``line`` (quotes, ``$VAR`` and ``$(...)`` expanded, comments gone)."""
    script = f"set -- {line}\nprintf '%s\\0' \"$@\""
    res = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=30
    )
    return res.stdout.split("\0")[:-1]


def split_env(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
        k, v = argv[0].split("=", 1)
        env[k] = v
        argv = argv[1:]
    return env, argv


def parse_only(args: list[str]) -> None:
    """Parse ``dataforge ARGS`` with click down to the last subcommand, without running it."""
    ctx = cli.make_context("dataforge", list(args))
    cmd: click.Command = cli
    while isinstance(cmd, click.Group):
        protected = getattr(ctx, "_protected_args", None)  # click >= 8.2; before: protected_args
        rest = [*(ctx.protected_args if protected is None else protected), *ctx.args]
        if not rest:
            return
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name!r}"
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub


def trains(args: list[str]) -> bool:
    """``validate`` with a training run (``--train-steps`` other than 0): run in a subprocess."""
    if "validate" not in args:
        return False
    steps = args[args.index("--train-steps") + 1] if "--train-steps" in args[:-1] else "200"
    return steps != "0"


def is_placeholder(args: list[str]) -> bool:
    return any(PLACEHOLDER.search(a) for a in args)


def squash(text: str) -> str:
    return " ".join(text.split())


def printed(expected: str, output: str) -> bool:
    """``expected`` was printed: whitespace collapsed (rich wraps long lines), and ``...`` inside the
    line stands for up to 300 characters left out."""
    pieces = [squash(p) for p in expected.split("...")]
    out = squash(output)
    pattern = r".{0,300}?".join(re.escape(p) for p in pieces)
    return re.search(pattern, out, flags=re.S) is not None


# --------------------------------------------------------------------------- the sandbox


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    namespaces: dict[str, dict] = field(default_factory=dict)
    done: dict[str, list[str]] = field(default_factory=dict)  # file -> failures
    #: (seconds, where, command) of every shell command run: what to look at when the docs get slow
    timings: list[tuple[float, str, str]] = field(default_factory=list)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        old_cwd, old_env = os.getcwd(), dict(os.environ)
        os.chdir(self.root)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)

    # ---------------------------------------------------------------- commands

    def dataforge(self, args: list[str], env: dict[str, str], where: str) -> tuple[int, str]:
        from click.testing import CliRunner

        if is_placeholder(args):
            with self.inside():
                parse_only(args)
            return 0, ""
        with self.inside():
            result = CliRunner().invoke(cli, args, env=env, catch_exceptions=True)
        log = logging.getLogger("dataforge")  # the CLI's handlers wrote to the runner's streams
        for handler in log.handlers:
            handler.close()
        log.handlers.clear()
        log.propagate = True
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            tb = "".join(traceback.format_exception(result.exception))
            pytest.fail(f"{where}: dataforge {shlex.join(args)} raised\n{tb}")
        return result.exit_code, result.output

    def subprocess(self, args: list[str], extra: dict[str, str]) -> tuple[int, str]:
        """``dataforge ARGS`` in its own process, with one OpenMP thread: torch's thread pool on a
        2-core machine shared with other jobs can make the tiny training run 40x slower."""
        res = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "dataforge"), *args],
            cwd=self.root, env={**self.env, **extra, "OMP_NUM_THREADS": "1"}, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        return res.returncode, res.stdout + res.stderr

    def run_line(self, line: str, where: str) -> tuple[int, str, bool]:
        """Run one shell line; (exit code, output, whether a nonzero code is expected)."""
        tolerate = bool(EXIT_SUFFIX.search(line))
        line = EXIT_SUFFIX.sub("", line).strip()
        m = re.match(r"^export ([A-Za-z_]\w*)=(.*)$", line)
        if m:
            (value,) = words(m.group(2), self.env, self.root)
            self.env[m.group(1)] = value
            return 0, "", False
        argv = words(line, self.env, self.root)
        extra, argv = split_env(argv)
        if not argv:
            return 0, "", False
        if argv[0] == "dataforge":
            bare = re.sub(r"\s#.*$", "", line)
            assert not re.search(r"(&&|\|\||[|;&])\s", bare), f"{where}: keep dataforge lines simple: {line}"
            if trains(argv[1:]):
                code, out = self.subprocess(argv[1:], extra)
            else:
                code, out = self.dataforge(argv[1:], {**self.env, **extra}, where)
        elif argv[0] == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
            missing = [t for t in argv[1:] if t not in targets]
            assert not missing, f"{where}: the Makefile has no target {missing}"
            return 0, "", False
        elif argv[0] in BASH_OK:
            res = subprocess.run(
                ["bash", "-c", line], cwd=self.root, env={**self.env, **extra}, capture_output=True,
                text=True, timeout=60, check=False,
            )  # fmt: skip
            code, out = res.returncode, res.stdout + res.stderr
        else:
            pytest.fail(f"{where}: cannot run {argv[0]!r}; mark the block <!-- not-tested: reason -->")
        if tolerate:
            out += f"\nexit {code}\n"
        return code, out, tolerate

    def shell_block(self, block: Block) -> None:
        console = block.lang == "console"
        pending: list[tuple[str, str, list[str]]] = []  # (where, output, expected lines)
        for off, line in logical_lines(block.text):
            where = f"{block.path}:{block.line + 1 + off}"
            if console and not line.startswith("$ "):
                if pending and line.strip():
                    pending[-1][2].append(line)
                continue
            cmd = line[2:] if console else line
            if not cmd.strip() or cmd.lstrip().startswith("#"):
                continue
            t0 = time.perf_counter()
            code, out, tolerate = self.run_line(cmd, where)
            self.timings.append((time.perf_counter() - t0, where, cmd.strip()[:100]))
            assert tolerate or code == 0, f"{where}: `{cmd.strip()}` exited {code}\n{out[-3000:]}"
            pending.append((where, out, []))
        for where, out, expected in pending:
            for exp in expected:
                if exp.strip() != "...":
                    assert printed(exp, out), (
                        f"{where}: expected output line not printed:\n{exp}\n--- got:\n{out[-3000:]}"
                    )

    # ---------------------------------------------------------------- other languages

    def python_block(self, block: Block) -> None:
        ns = self.namespaces.setdefault(block.path, {"__name__": "__doc_example__"})
        code = compile("\n" * (block.line) + block.text, str(ROOT / block.path), "exec")
        with self.inside(), contextlib.redirect_stdout(io.StringIO()):
            exec(code, ns)

    def pycon_block(self, block: Block) -> None:
        import dataforge

        ns = self.namespaces.setdefault(block.path, {"__name__": "__doc_example__"})
        ns.setdefault("dataforge", dataforge)
        test = doctest.DocTestParser().get_doctest(block.text, ns, block.where, block.path, block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report = io.StringIO()
        with self.inside():
            runner.run(test, out=report.write, clear_globs=False)
        assert runner.failures == 0, f"{block.where}: doctest failed\n{report.getvalue()}"

    def yaml_block(self, block: Block) -> None:
        from dataforge.api import noise_yaml_options, normalize_yaml_options
        from dataforge.config import load_pipeline, pipeline_from_dict
        from dataforge.curriculum import load_curriculum
        from dataforge.io.inputs import discover

        data = yaml.safe_load(block.text)
        assert isinstance(data, dict), f"{block.where}: a YAML example must be a mapping"
        save_as = re.match(r"^# (pipelines/[\w.-]+\.yaml)\n", block.text)
        if save_as:  # "save this as pipelines/x.yaml": later examples run it
            path = self.root / save_as.group(1)
            assert not (ROOT / save_as.group(1)).exists(), f"{block.where}: {save_as.group(1)} is in the repo"
        else:  # paths in it resolve like those of pipelines/*.yaml
            slug = re.sub(r"\W", "_", block.where)
            path = self.root / "pipelines" / f"_doc_{slug}.yaml"
        path.write_text(block.text, encoding="utf-8")
        with self.inside():
            rel = path.relative_to(self.root)
            if "stages" in data:
                load_curriculum(rel)
            elif "noise_report" in data:
                noise_yaml_options(rel)
            elif "normalize" in data:
                normalize_yaml_options(rel)
            elif {"input", "output"} <= set(data):
                pipeline = load_pipeline(rel)
                if not save_as:  # a file to save: its inputs come with the commands that follow
                    discover(pipeline.input)
            else:  # a fragment: the sections it shows, in a minimal pipeline
                base = {
                    "input": {"paths": ["../sample_data/news"]},
                    "output": {"path": "../out/_x"},
                    "steps": [],
                }
                pipeline_from_dict({**base, **data}, base_dir=rel.parent)

    def scheduler_line(self, block: Block, off: int, command: str) -> None:
        """A crontab or ExecStart= command: its dataforge part runs in the sandbox."""
        where = f"{block.path}:{block.line + 1 + off}"
        parts = [p.strip() for p in command.split("&&")]
        parts = [p for p in parts if not re.match(r"^cd /srv/dataforge$", p)]
        assert len(parts) == 1, f"{where}: expected `[cd DIR &&] dataforge ...`, got {command}"
        line = re.sub(r"^(/srv/dataforge/)?\.venv/bin/dataforge\b", "dataforge", parts[0])
        assert line.startswith("dataforge "), f"{where}: not a dataforge command: {parts[0]}"
        code, out, _ = self.run_line(line, where)
        assert code == 0, f"{where}: `{line}` exited {code}\n{out[-3000:]}"

    def cron_block(self, block: Block) -> None:
        for off, line in logical_lines(block.text):
            if line.strip() and not line.lstrip().startswith("#"):
                self.scheduler_line(block, off, line.split(None, 5)[5])

    def unit_block(self, block: Block) -> None:
        for off, line in logical_lines(block.text):
            if line.startswith("ExecStart="):
                self.scheduler_line(block, off, line.split("=", 1)[1])

    # ---------------------------------------------------------------- files

    def parse_commands(self, block: Block) -> None:
        """A not-tested block: its dataforge command lines must still parse."""
        for off, line in logical_lines(block.text):
            cmd = re.sub(r"^(\$ |.*?\.venv/bin/|ExecStart=\S*?)", "", line.strip())
            if cmd.startswith("dataforge "):
                args = words(EXIT_SUFFIX.sub("", cmd), self.env, self.root)
                with self.inside():
                    try:
                        parse_only(split_env(args)[1][1:])
                    except click.BadParameter as exc:  # a path on a machine we do not have is fine
                        if "does not exist" not in exc.format_message():
                            pytest.fail(f"{block.path}:{block.line + 1 + off}: {exc.format_message()}")
                    except click.ClickException as exc:
                        pytest.fail(f"{block.path}:{block.line + 1 + off}: {exc.format_message()}")

    def run_file(self, path: str) -> list[str]:
        """Run every block of ``path`` once; returns the failures (``where: message``)."""
        if path in self.done:
            return self.done[path]
        failures: list[str] = []
        handlers = {"python": self.python_block, "pycon": self.pycon_block, "yaml": self.yaml_block,
                    "cron": self.cron_block, "ini": self.unit_block}  # fmt: skip
        for block in blocks_of(path):
            handler = self.shell_block if block.lang in SHELL else handlers.get(block.lang)
            try:
                if block.skip is not None:
                    self.parse_commands(block)
                elif handler is not None:
                    handler(block)
            except Exception as exc:  # every failure of the file is reported
                failures.append(f"{block.where} ({block.lang}): {type(exc).__name__}: {exc}")
        self.done[path] = failures
        return failures


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory) -> Sandbox:
    root = tmp_path_factory.mktemp("docs")
    (root / "sample_data").symlink_to(ROOT / "sample_data")
    shutil.copytree(ROOT / "pipelines", root / "pipelines")
    box = Sandbox(root)
    box.env.pop("DATAFORGE_DEID_SALT", None)  # examples must set what they need
    box.env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{box.env.get('PATH', '')}"
    return box


def _starts_ray(block: Block) -> bool:
    """A block that really starts Ray: a run with ``--executor ray`` whose inputs are not placeholders."""
    if block.skip is not None:
        return False
    if block.lang == "python":
        return 'executor="ray"' in block.text
    if block.lang not in SHELL:
        return False
    for _, line in logical_lines(block.text):
        if "--executor ray" in line:
            args = shlex.split(re.sub(r"^\$ ", "", line), comments=True)
            if not is_placeholder(args):
                return True
    return False


def _marks(path: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.ray] if any(_starts_ray(b) for b in blocks_of(path)) else []


@pytest.mark.parametrize("path", [pytest.param(p, marks=_marks(p), id=p) for p in DOC_FILES])
def test_doc_examples_run(sandbox: Sandbox, path: str) -> None:
    if path != "README.md":
        # later files may use what the README's examples made (e.g. out/demo)
        assert not sandbox.run_file("README.md"), "README.md examples fail; see its test"
    failures = sandbox.run_file(path)
    assert not failures, "\n\n".join(failures)


# --------------------------------------------------------------------------- the harness itself


def test_every_fence_is_closed_and_languages_are_known():
    known = SHELL | {"python", "pycon", "yaml", "cron", "ini", "text", "json", "", "python signature"}
    for path in DOC_FILES:
        fences = [x for x in (ROOT / path).read_text(encoding="utf-8").splitlines() if x.startswith("```")]
        assert len(fences) % 2 == 0, f"{path}: unclosed fence"
        for b in blocks_of(path):
            assert b.lang in known, f"{b.where}: unknown fence language {b.lang!r}"


def test_not_tested_marker_is_rare():
    """The marker is for what cannot run here (a cluster, systemd), not for examples that fail."""
    for path in DOC_FILES:
        blocks = blocks_of(path)
        skipped = [b for b in blocks if b.skip]
        assert len(skipped) <= 3, f"{path}: {len(skipped)} blocks marked not-tested"


def test_parse_only_catches_a_renamed_option():
    with pytest.raises(click.NoSuchOption):
        parse_only(["clean", "data/", "-o", "out/x", "--presett", "c4"])
    with pytest.raises(click.BadParameter):
        parse_only(["dedup", "data/", "-o", "out/x", "--verify", "maybe"])
    parse_only(["normalize", "ehr", "data/", "-o", "out/x", "--source", "fhir"])


def test_readme_tour_covers_every_step():
    tour = (
        (ROOT / "README.md").read_text(encoding="utf-8").split("## 5-minute tour", 1)[1].split("\n## ", 1)[0]
    )
    for command in ("clean", "dedup", "noise-report", "normalize", "curriculum", "validate", "inspect"):
        assert f"$ dataforge {command} " in tour, command
