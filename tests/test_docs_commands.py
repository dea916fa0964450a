"""Every command the documentation shows runs past argparse: the script exists and takes the flags shown.

A reader copies commands from README.md and docs/*.md; a renamed script or flag must break a test, not the
reader's first try. The pages are scanned when the tests are collected, so pages added later are covered.

What counts as a command: a line in a fenced code block (or an inline code span) that runs ``python X.py`` with a
relative path, or ``python -m M`` where M belongs to this project (``experiments``, ``export``, ``core``).
Shell around it is understood: ``$`` prompts, ``\\`` continuations, ``# comments``, ``&&``/``;``/``|``,
``VAR=value`` prefixes and ``nice``/``time``/``timeout`` wrappers. Placeholders (``<DIR>``, ``$VAR``, or an
upper-case metavar such as ``N`` where the flag needs a number or a choice) get a value the flag accepts; ``...`` is
dropped.

How a command is checked: the script's own parser (``get_args_parser()`` or a similarly named builder) parses
the shown arguments, subcommands included, with abbreviations refused (a doc must name a flag exactly). A
script without a parser builder is run once with ``--help`` and its listed flags are the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("experiments", "export", "core")
PARSER_BUILDERS = ("get_args_parser", "build_parser", "make_parser", "get_parser", "create_parser")
PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
PLACEHOLDER = re.compile(r"^(<[^<>]+>|\$\{?[A-Za-z_]\w*\}?)$")  # <DIR>, $N, ${COUNT}
METAVAR = re.compile(r"^[A-Z][A-Z0-9_]*$")
OPERATORS = {"&&", "||", ";", "|", "&"}
WRAPPERS = {"time", "/usr/bin/time", "nice", "timeout", "env"}


@dataclass(frozen=True)
class DocCommand:
    doc: str  # page, relative to the repository root
    line: int  # 1-based line where the command starts
    script: str  # path of the script relative to the root, as the command names it
    args: tuple[str, ...]
    text: str  # the command as shown (continuations joined)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


class RejectedArgumentsError(Exception):
    """argparse's error, raised instead of exiting."""


# ---------------------------------------------------------------- finding commands in Markdown
def code_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced code line, continuations joined, plus every inline code span."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(markdown.splitlines(), start=1):
        stripped = raw.strip()
        opener = re.match(r"^(`{3,}|~{3,})", stripped)
        if fence is None and opener:
            fence = opener.group(1)
            continue
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                fence, pending = None, None
                continue
            start, text = pending if pending else (number, "")
            text = f"{text} {raw.strip()}" if text else raw.strip()
            if text.endswith("\\"):
                pending = (start, text[:-1].rstrip())
            else:
                pending = None
                found.append((start, text))
            continue
        for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", raw):
            found.append((number, span.strip()))
    return found


def _segments(tokens: list[str]) -> list[list[str]]:
    segments, current = [], []
    for token in tokens:
        if token in OPERATORS:
            segments.append(current)
            current = []
        elif token.endswith(";") and len(token) > 1:
            current.append(token[:-1])
            segments.append(current)
            current = []
        else:
            current.append(token)
    return [*segments, current]


def _strip_shell(tokens: list[str]) -> list[str]:
    """Drop redirections, VAR=value prefixes and wrappers (nice -n 10, /usr/bin/time -v, timeout 60)."""
    kept, skip_next = [], False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif re.match(r"^\d*[<>]{1,2}&?\d*$", token):  # '>' 'out' / '2>&1'
            skip_next = not token.endswith(tuple("0123456789"))
        elif re.match(r"^\d*>{1,2}\S", token):  # '>out.txt'
            continue
        else:
            kept.append(token)
    while kept and (re.match(r"^[A-Za-z_]\w*=", kept[0]) or kept[0] in WRAPPERS):
        wrapper = kept.pop(0)
        if wrapper in WRAPPERS:
            while kept and (kept[0].startswith("-") or kept[0].isdigit()):
                kept.pop(0)
    return kept


def _script_of(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The project script a ``python ...`` command runs and its arguments, or None when it runs something else."""
    if len(tokens) < 2 or not PYTHON.match(tokens[0]):
        return None
    if tokens[1] == "-m" and len(tokens) > 2:
        module = tokens[2]
        if module.split(".")[0] not in OUR_PACKAGES:
            return None  # python -m pytest / pip / ...
        path = Path(*module.split("."))
        script = path / "__main__.py" if (ROOT / path).is_dir() else path.with_suffix(".py")
        return script.as_posix(), tokens[3:]
    if tokens[1].endswith(".py") and not tokens[1].startswith(("/", "..", "~", "$")):
        return tokens[1].removeprefix("./"), tokens[2:]
    return None


def commands_in(markdown: str, doc: str) -> list[DocCommand]:
    commands = []
    for line, text in code_lines(markdown):
        text = re.sub(r"^\$\s+", "", text)
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError:
            continue  # not shell (an unbalanced quote in prose or output)
        for segment in _segments(tokens):
            hit = _script_of(_strip_shell(segment))
            if hit:
                script, args = hit
                args = tuple(a for a in args if a not in ("...", "…"))
                # usage syntax for an optional flag, "[--resume entity/project/id]": checked as the flag itself
                args = tuple(a[1:] if a.startswith("[-") else a for a in args)
                args = tuple(a[:-1] if a.endswith("]") and "[" not in a else a for a in args)
                commands.append(DocCommand(doc, line, script, args, text))
    return commands


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_commands() -> list[DocCommand]:
    return [c for page in doc_pages() if page.exists()
            for c in commands_in(page.read_text(encoding="utf-8"), page.relative_to(ROOT).as_posix())]


# ---------------------------------------------------------------- checking arguments against a parser
def _raise(message: str):
    raise RejectedArgumentsError(message)


def _exit(status: int = 0, message: str | None = None):
    raise RejectedArgumentsError(message or f"exit {status}")


def _subparser_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _strict(parser: argparse.ArgumentParser) -> None:
    """Errors raise instead of exiting; abbreviations are refused (a doc must name a flag exactly)."""
    parser.error = _raise  # type: ignore[method-assign]
    parser.exit = _exit  # type: ignore[method-assign]
    parser.allow_abbrev = False
    for action in _subparser_actions(parser):
        for sub in action.choices.values():
            _strict(sub)


def _accepts(action: argparse.Action, value: str) -> bool:
    try:
        converted = action.type(value) if callable(action.type) else value
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return not action.choices or converted in action.choices or value in action.choices


def _fill(action: argparse.Action | None, token: str) -> str:
    """A value ``action`` accepts in place of a placeholder token; real values are left alone."""
    if action is None or not (PLACEHOLDER.match(token) or (METAVAR.match(token) and not _accepts(action, token))):
        return token
    candidates = [str(c) for c in action.choices or ()]
    if action.default is not None and not isinstance(action.default, (bool, list, tuple)):
        candidates.append(str(action.default))
    candidates += ["1", "0.5", token.strip("<>").lower(), "x"]
    return next((c for c in candidates if _accepts(action, c)), token)


def _takes_values(action: argparse.Action) -> int | str:
    if action.nargs is None:
        return 0 if isinstance(action, (argparse._StoreConstAction, argparse._CountAction,
                                        argparse._HelpAction, argparse._VersionAction)) else 1
    return action.nargs


def fill_placeholders(parser: argparse.ArgumentParser, args: list[str]) -> tuple[list[str], list[str]]:
    """(arguments with placeholders filled, flags the parser does not define), walking into subcommands."""
    out, unknown = [], []
    positionals = [a for a in parser._actions if not a.option_strings]
    index, i = 0, 0
    while i < len(args):
        token = args[i]
        i += 1
        if token.startswith("-") and len(token) > 1 and not re.match(r"^-\d", token):
            name, eq, value = token.partition("=")
            action = parser._option_string_actions.get(name)
            if action is None:
                unknown.append(name)
                out.append(token)
                continue
            if eq:
                out.append(f"{name}={_fill(action, value)}")
                continue
            out.append(token)
            wanted = _takes_values(action)
            limit = wanted if isinstance(wanted, int) else (1 if wanted == "?" else len(args))
            for _ in range(limit):
                if i >= len(args) or (args[i].startswith("-") and not re.match(r"^-\d", args[i])):
                    break
                out.append(_fill(action, args[i]))
                i += 1
            continue
        action = positionals[index] if index < len(positionals) else None
        if isinstance(action, argparse._SubParsersAction):
            out.append(token)
            sub = action.choices.get(token)
            if sub is None:
                out += args[i:]
                return out, unknown
            rest, sub_unknown = fill_placeholders(sub, args[i:])
            return out + rest, unknown + sub_unknown
        out.append(_fill(action, token))
        if action is not None and action.nargs not in ("*", "+", argparse.REMAINDER):
            index += 1
    return out, unknown


def check_args(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """None when ``parser`` takes ``args`` as a reader would type them, else why not."""
    _strict(parser)
    filled, unknown = fill_placeholders(parser, list(args))
    if unknown:
        return f"unknown flag(s) {unknown}"
    if any(a in ("-h", "--help") for a in filled):
        return None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(filled)
    except RejectedArgumentsError as err:
        return f"argparse: {err} (parsed {filled})"
    return None


@functools.cache
def reference_for(script: str) -> argparse.ArgumentParser | frozenset[str]:
    """The script's parser, or (no builder) the flags its ``--help`` lists."""
    path = ROOT / script
    module_name = ".".join(Path(script).with_suffix("").parts).removesuffix(".__main__")
    if Path(script).parts[0] in OUR_PACKAGES:
        module = importlib.import_module(module_name)
        assert Path(module.__file__).resolve() == path.resolve(), \
            f"import {module_name} gives {module.__file__}, not {path}: run the tests from the checkout"
        for name in PARSER_BUILDERS:
            builder = getattr(module, name, None)
            if callable(builder):
                parser = builder()
                if isinstance(parser, argparse.ArgumentParser):
                    return parser
    done = subprocess.run([sys.executable, str(path), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{script} --help exited {done.returncode}: {done.stderr.strip()[-500:]}"
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", done.stdout))


def problem_with(command: DocCommand) -> str | None:
    if not (ROOT / command.script).is_file():
        return f"{command.script} does not exist"
    reference = reference_for(command.script)
    if isinstance(reference, argparse.ArgumentParser):
        return check_args(reference, list(command.args))
    unknown = [a.split("=")[0] for a in command.args if a.startswith("-") and a.split("=")[0] not in reference]
    return f"flags not in {command.script} --help: {unknown}" if unknown else None


# ---------------------------------------------------------------- the tests
COMMANDS = all_commands()


def _runs_help(script: str) -> bool:
    """True when the script's flags come from running its ``--help`` (a process: the test is ``slow``)."""
    path = ROOT / script
    return path.is_file() and (Path(script).parts[0] not in OUR_PACKAGES
                               or not any(f"def {name}(" in path.read_text() for name in PARSER_BUILDERS))


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if _runs_help(c.script) else c
                                     for c in COMMANDS], ids=[f"{c.where} {c.script}" for c in COMMANDS])
def test_documented_command_names_a_real_script_and_real_flags(command: DocCommand):
    problem = problem_with(command)
    assert problem is None, f"{command.where}: `{command.text}`: {problem}"


def test_the_scan_finds_the_front_door_commands():
    readme = [c for c in COMMANDS if c.doc == "README.md"]
    scripts = {c.script for c in readme}
    assert "experiments/partA_sweep.py" in scripts, f"the main job is not among README's commands: {scripts}"
    assert len(readme) >= 9, f"README shows every script of the tour; found only {len(readme)} commands"


def test_a_flag_that_does_not_exist_is_caught():
    page = ("```bash\n"
            "python experiments/partA_count.py --filters 32 --no-such-flag 3\n"
            "python experiments/partA_count.py --filt 32          # an abbreviation is not the flag's name\n"
            "python experiments/not_a_script.py --help\n"
            "python experiments/benchmark.py nosuchsection --quick\n"
            "python experiments/partA_count.py --filters many\n"
            "```\n")
    problems = [problem_with(c) for c in commands_in(page, "probe.md")]
    assert len(problems) == 5 and all(problems), problems
    assert "--no-such-flag" in problems[0] and "--filt" in problems[1], problems
    assert "does not exist" in problems[2] and "invalid choice" in problems[3], problems
    assert "invalid int value" in problems[4], problems


def test_shell_syntax_and_placeholders_are_understood():
    page = ("Run `python experiments/partA_count.py --filters 8` or:\n"
            "```console\n"
            "$ OMP_NUM_THREADS=1 nice -n 10 python experiments/partA_count.py --filters 16 \\\n"
            "      --kernel-size 3 --dense <UNITS>   # a comment --not-a-flag\n"
            "pip install -e . && python -m pytest -q; python -m experiments.partA_count --json > out.json\n"
            "python experiments/benchmark.py <SECTION> --repeats N ... --out-dir <DIR> --threads $THREADS\n"
            "```\n"
            "```python\nprint('python experiments/x.py is not run from here')\n```\n")
    commands = commands_in(page, "probe.md")
    assert [(c.line, c.script, c.args) for c in commands] == [
        (1, "experiments/partA_count.py", ("--filters", "8")),
        (3, "experiments/partA_count.py", ("--filters", "16", "--kernel-size", "3", "--dense", "<UNITS>")),
        (5, "experiments/partA_count.py", ("--json",)),
        (6, "experiments/benchmark.py", ("<SECTION>", "--repeats", "N", "--out-dir", "<DIR>", "--threads", "$THREADS")),
    ], [(c.line, c.script, c.args) for c in commands]
    assert [problem_with(c) for c in commands] == [None] * 4


def test_subcommands_are_followed():
    parser = argparse.ArgumentParser()
    parser.add_argument("--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--epochs", type=int, required=True)
    run.add_argument("target", choices=["cpu", "cuda"])
    sub.add_parser("list").add_argument("--all", action="store_true")
    assert check_args(parser, ["--verbose", "run", "--epochs", "<N>", "<TARGET>"]) is None
    assert check_args(parser, ["list", "--all"]) is None
    assert "--all" in (check_args(parser, ["run", "--epochs", "2", "cpu", "--all"]) or "")
    assert "--epochs" in (check_args(parser, ["list", "--epochs", "2"]) or "")
    assert "invalid choice" in (check_args(parser, ["build"]) or "")
    assert "required" in (check_args(parser, ["run", "cpu"]) or "")
