"""Every fenced block of README.md and docs/*.md is executed (or explicitly not) and its shown output
checked, so the documentation cannot drift from the code (issue 16).

How a block is treated is decided by its fence language and by an optional marker, an HTML comment
on the line(s) right before the fence (invisible when rendered). The rules are written down for doc
authors in docs/docs-tests.md:

- ```bash / ```sh / ```shell: run as one bash script (``set -euo pipefail``); it must exit 0.
- ```console: each ``$ `` line is a command (a trailing ``\\`` continues it on the next line); the
  lines up to the next ``$ `` are its expected output, compared structurally (see ``normalize``:
  numbers, ids and table padding are normalised, the lines must match in order; a line ``...``
  matches any number of lines). A command with no output shown is run but its output is not
  checked. A command ending in `` &`` runs in the background until its expected output has
  appeared; it is stopped at the end of the file.
- ```python: run with the venv's python; it must exit 0.
- ```text (and yaml, toml, json, jsonl, ini, html, markdown, diff, csv): shown, not run: usage synopses,
  output listings, diagrams, config samples.
- a fence without a language is an error (say ```text for a synopsis).

Markers (``<!-- doc-test: TOKENS -->``):
- ``skip REASON...``: not run; the reason is reported (the test of that block is skipped with it).
- ``slow``, ``pool``, ``shared``: pytest markers; a file with any of them runs its marked blocks only
  in the ``slow`` item of the file (``shared`` blocks also skip without ../shared/data).
- ``file=PATH``: write the block's text to PATH in the working folder (config samples used later).
- ``output``: on a text block: the expected output of the previous python/bash block.
- ``timeout=SECONDS``: per command (default 300).
- ``setup`` then code on the following lines: prepended to the block (python) or run before it
  (bash/console) but not shown to readers.
- lines ``replace: OLD => NEW`` below the first line: the block runs with OLD replaced by NEW (a
  regeneration command run at a small size).

All runnable blocks of one file run in order in one fresh working folder (so a router trained in
one block is routed in the next), with ``.venv/bin`` first on PATH, the repository's scripts,
benchmarks and Makefile linked in, ``../shared/data`` linked to the shared data, exported variables
carried from one command to the next, and a private local-pool folder (``caproute pool down`` runs
at the end if a block started a pool).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _procgroups import stop_group  # noqa: E402

DAEMON_GRACE_S = 2.0  # SIGTERM to SIGKILL for what a finished command left running

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAPROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGS = {"bash", "sh", "shell", "console", "python"}
SHOW_LANGS = {"text", "yaml", "toml", "json", "jsonl", "ini", "html", "markdown", "diff", "csv"}
PYTEST_MARKS = ("slow", "pool", "shared")
DEFAULT_TIMEOUT = 300

_FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"<!--\s*doc-test:(.*?)-->", re.S)


class DocFormatError(Exception):
    pass


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marks: set = field(default_factory=set)
    skip: str | None = None
    file: str | None = None
    output: bool = False
    timeout: int = DEFAULT_TIMEOUT
    setup: str = ""
    replace: list = field(default_factory=list)  # [(old, new)] applied before running
    generated: bool = False  # output shows model-generated text: quoted text with a space is opaque

    @property
    def runnable(self) -> bool:
        return self.lang in RUN_LANGS and self.skip is None

    def label(self) -> str:
        return f"{self.doc}:{self.line} ({self.lang})"


def _parse_marker(body: str, where: str) -> dict:
    body = body.strip()
    first, _, rest = body.partition("\n")
    tokens = first.split()
    out: dict = {"marks": set()}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "skip":
            out["skip"] = " ".join(tokens[i + 1:]) + (" " + rest.strip() if rest.strip() else "")
            out["skip"] = out["skip"].strip() or None
            if not out["skip"]:
                raise DocFormatError(f"{where}: 'skip' needs a reason")
            return out
        if t == "setup":
            if tokens[i + 1:]:
                raise DocFormatError(f"{where}: 'setup' must be last on its line; the code follows below it")
            code = [x for x in rest.splitlines() if not x.strip().startswith("replace:")]
            out["setup"] = "\n".join(code).strip("\n")
            rest = "\n".join(x for x in rest.splitlines() if x.strip().startswith("replace:"))
            break
        if t in PYTEST_MARKS:
            out["marks"].add(t)
        elif t == "output":
            out["output"] = True
        elif t == "generated":
            out["generated"] = True
        elif t.startswith("file="):
            out["file"] = t[5:]
        elif t.startswith("timeout="):
            out["timeout"] = int(t[8:])
        else:
            raise DocFormatError(f"{where}: unknown doc-test marker token '{t}'")
        i += 1
    for line in rest.splitlines():
        if not line.strip():
            continue
        if not line.strip().startswith("replace:") or "=>" not in line:
            raise DocFormatError(f"{where}: marker line {line.strip()!r}: expected 'replace: OLD => NEW' "
                                 "(or code after a 'setup' marker)")
        old, new = line.strip()[len("replace:"):].split("=>", 1)
        out.setdefault("replace", []).append((old.strip(), new.strip()))
    return out


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file with their markers (errors name the file and line)."""
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{ticks}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        if i == len(lines):
            raise DocFormatError(f"{rel}:{start + 1}: fence is never closed")
        i += 1
        where = f"{rel}:{start + 1}"
        if not lang:
            raise DocFormatError(f"{where}: fence without a language: use ```text for a synopsis or output, "
                                 "```bash/```console/```python for something to run (docs/docs-tests.md)")
        if lang not in RUN_LANGS | SHOW_LANGS:
            raise DocFormatError(f"{where}: unknown fence language '{lang}' (known: "
                                 f"{sorted(RUN_LANGS | SHOW_LANGS)})")
        # markers: consecutive comment lines right above the fence (blank lines not allowed between)
        above = "\n".join(lines[max(0, start - 40):start])
        spec: dict = {"marks": set()}
        tail = above.rstrip()
        mm = list(_MARKER.finditer(tail))
        if mm and tail.endswith("-->") and mm[-1].end() == len(tail):
            spec = _parse_marker(mm[-1].group(1), where)
        b = Block(rel, start + 1, lang, "\n".join(body) + "\n", marks=spec["marks"], skip=spec.get("skip"),
                  file=spec.get("file"), output=spec.get("output", False),
                  timeout=spec.get("timeout", DEFAULT_TIMEOUT), setup=spec.get("setup", ""),
                  replace=spec.get("replace", []), generated=spec.get("generated", False))
        for a, _ in b.replace:
            if a not in b.text:
                raise DocFormatError(f"{where}: 'replace: {a} => ...' but the block has no '{a}'")
        if b.output and (lang != "text" or not blocks or blocks[-1].lang not in ("python", "bash", "sh", "shell")):
            raise DocFormatError(f"{where}: 'output' goes on a ```text block right after a python/bash block")
        if b.output:  # checked together with the block it belongs to
            b.marks, b.skip = set(blocks[-1].marks), blocks[-1].skip
        blocks.append(b)
    return blocks


# -- structural comparison of printed output -----------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9_-]{20,}|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_NUM = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?%?")
_BOX = re.compile(r"[─━═]+")


def normalize(line: str) -> str:
    """One output line with ids (long tokens, hex digests), numbers (sign, decimals, exponent,
    percent) and the padding of tables made uniform: what remains is the line's shape."""
    s = _ID.sub("ID", line)
    s = _NUM.sub("9", s)
    s = _BOX.sub("─", s)
    return " ".join(s.split())


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')


def opaque_text(line: str) -> str:
    """``line`` with every quoted literal that contains a space (a model's sampled answer, whose
    words change with the CPU's kernels) replaced by 'TEXT'; names and empty strings are kept, so
    the model names and that an answer is present are still compared."""
    return _QUOTED.sub(lambda m: "'TEXT'" if " " in m.group(0) else m.group(0), line)


def output_mismatch(expected: list[str], actual: list[str], *, generated: bool = False) -> str | None:
    """None if ``actual`` has the shape of ``expected`` ('...' matches any lines), else why not.
    ``generated``: quoted text with a space is compared only for being there (:func:`opaque_text`)."""
    if generated:
        expected, actual = [opaque_text(x) for x in expected], [opaque_text(x) for x in actual]
    exp = [normalize(x) for x in expected if x.strip()]
    act = [normalize(x) for x in actual if x.strip()]

    def match(i: int, j: int) -> bool:
        while i < len(exp):
            if exp[i] == "...":
                return any(match(i + 1, k) for k in range(j, len(act) + 1))
            if j >= len(act) or exp[i] != act[j]:
                return False
            i, j = i + 1, j + 1
        return j == len(act)

    if match(0, 0):
        return None
    # first differing line, for the message
    for k, (e, a) in enumerate(zip(exp, act, strict=False)):
        if e != a and e != "...":
            return f"line {k + 1}: expected shape\n    {e}\n  got\n    {a}"
    return f"expected {len(exp)} lines, got {len(act)}"


def parse_console(text: str) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] of a console block."""
    out: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if out:
                out[-1][1].append(lines[i])
            elif lines[i].strip():
                raise DocFormatError(f"console block starts with output, not a '$ ' command: {lines[i]!r}")
            i += 1
            continue
        cmd = lines[i][2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1].rstrip() + " " + lines[i].lstrip("> ").strip()
        out.append((cmd.strip(), []))
        i += 1
    return out


# -- running a file's blocks ---------------------------------------------------------------------------


class Session:
    """One markdown file's working folder, environment and background processes."""

    def __init__(self, root: Path):
        self.root = root
        self.work = root / "work"
        self.state = root / "state"
        self.work.mkdir(parents=True)
        self.state.mkdir()
        (root / "shared").mkdir()
        if SHARED_DATA.is_dir():
            (root / "shared" / "data").symlink_to(SHARED_DATA)
        for name in ("scripts", "benchmarks", "Makefile", "pyproject.toml", "src", ".venv", "tests"):
            if (REPO / name).exists():
                (self.work / name).symlink_to(REPO / name)
        for d in sorted(p for p in (REPO / "docs").rglob("*") if p.is_dir()):  # an empty docs/ tree for outputs
            (self.work / d.relative_to(REPO)).mkdir(parents=True, exist_ok=True)
        (self.work / "docs").mkdir(exist_ok=True)
        (self.state / "env.sh").write_text("")
        (self.state / "cwd").write_text(str(self.work))
        self.pool_dir = root / "pool"
        self.env = dict(os.environ)
        self.env.update({
            "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CAPROUTE_POOL_DIR": str(self.pool_dir),
            # `make demo` in a doc: STAMP empty = the install step has nothing to do (the test uses
            # the repository's venv, linked in; it never reinstalls it)
            "MAKEFLAGS": "STAMP=", "PYTHONUNBUFFERED": "1",
            # a `ray start` in a doc keeps its session files here, not in the machine-wide /tmp/ray
            # (where any other `ray.init()` on the machine would find and join it); short: socket paths
            "RAY_TMPDIR": tempfile.mkdtemp(prefix="dt-ray-", dir="/tmp"),
        })
        self.groups: list[int] = []  # process groups of every command (daemons they left are stopped)
        self.env["COLUMNS"] = "160"  # a wide terminal: rich wraps at 80 columns when output is not one
        self.background: list[subprocess.Popen] = []
        self.n = 0

    def _script(self, body: str, strict: bool = True) -> str:
        st = shlex.quote(str(self.state))
        head = "set -euo pipefail\n" if strict else ""
        return (f"source {st}/env.sh >/dev/null 2>&1 || true\ncd \"$(cat {st}/cwd)\"\n{head}"
                f"{body}\n__rc=$?\nexport -p > {st}/env.sh\npwd > {st}/cwd\nexit $__rc\n")

    def bash(self, body: str, timeout: int, label: str) -> str:
        self.n += 1
        log = self.state / f"out-{self.n}.log"
        with open(log, "wb") as fh:
            p = subprocess.Popen(["bash", "-c", self._script(body)], stdout=fh, stderr=subprocess.STDOUT,
                                 env=self.env, start_new_session=True)
            self.groups.append(p.pid)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_group(p.pid)
                pytest.fail(f"{label}: still running after {timeout} s:\n{body}\n--- output\n{_tail(log)}")
        if p.returncode != 0:
            pytest.fail(f"{label}: exit status {p.returncode}:\n{body}\n--- output\n{_tail(log)}")
        return log.read_text(errors="replace")

    def start_background(self, cmd: str, expected: list[str], timeout: int, label: str) -> None:
        self.n += 1
        log = self.state / f"out-{self.n}.log"
        with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
            p = subprocess.Popen(["bash", "-c", self._script(cmd, strict=False)], stdout=fh,
                                 stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.background.append(p)
        want = [x for x in expected if x.strip()]
        deadline = time.monotonic() + timeout
        while True:
            exited = p.poll() is not None  # read the output after this, so nothing printed is missed
            got = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
            if len(got) >= len(want):
                why = output_mismatch(want, got[:len(want)])
                if why:
                    pytest.fail(f"{label}: `{cmd}` printed something else:\n{why}\n--- output\n{_tail(log)}")
                return
            if exited:
                pytest.fail(f"{label}: background `{cmd}` exited with {p.returncode} before printing its "
                            f"output:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{label}: `{cmd}` did not print its expected output in {timeout} s:\n{_tail(log)}")
            time.sleep(0.3)

    def close(self) -> None:
        if (self.pool_dir / "pool-state.json").exists():
            subprocess.run([str(REPO / ".venv" / "bin" / "caproute"), "pool", "down"], env=self.env,
                           capture_output=True, timeout=120)
        # daemons a command left (ray start): nothing of theirs is checked any more, and Ray's ignore
        # SIGTERM (they used up the whole 20 s grace every time), so a short grace, then SIGKILL
        for pgid in self.groups:
            stop_group(pgid, grace_s=DAEMON_GRACE_S)
        for p in self.background:  # servers in the background: the usual grace to shut down cleanly
            stop_group(p.pid)
        for p in self.background:
            p.wait(10)
        shutil.rmtree(self.env["RAY_TMPDIR"], ignore_errors=True)


def _tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def run_block(s: Session, b: Block, last_output: str | None) -> str | None:
    """Run one block in the session; returns its printed output (for an ``output`` block after it)."""
    label = b.label()
    if b.file:
        dest = s.work / b.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(b.text)
    if b.output:
        assert last_output is not None, f"{label}: no output to compare with"
        why = output_mismatch(b.text.splitlines(), last_output.splitlines(), generated=b.generated)
        if why:
            pytest.fail(f"{label}: the output shown differs from the real one:\n{why}\n--- real output\n"
                        f"{last_output}")
        return None
    if b.lang not in RUN_LANGS:
        return None
    text = b.text
    for a, z in b.replace:
        text = text.replace(a, z)
    if b.lang == "python":
        script = s.work / f".doc_block_{b.line}.py"
        script.write_text((b.setup + "\n" if b.setup else "") + text)
        return s.bash(f"python {shlex.quote(str(script))}", b.timeout, label)
    if b.setup:
        s.bash(b.setup, b.timeout, f"{label} (setup)")
    if b.lang in ("bash", "sh", "shell"):
        return s.bash(text, b.timeout, label)
    for cmd, expected in parse_console(text):
        if cmd.endswith("&"):
            s.start_background(cmd[:-1].strip(), expected, b.timeout, label)
            continue
        out = s.bash(cmd, b.timeout, label)
        if any(x.strip() for x in expected):
            why = output_mismatch(expected, out.splitlines(), generated=b.generated)
            if why:
                pytest.fail(f"{label}: `{cmd}` printed output of another shape than the doc shows:\n{why}\n"
                            f"--- real output\n{out}")
    return None


# -- the tests -----------------------------------------------------------------------------------------


def _doc_id(p: Path) -> str:
    return str(p.relative_to(REPO))


def test_every_fence_is_classified():
    """Fast check without running anything: every block of every doc has a known language and its
    markers parse (an unlabelled fence would silently escape execution)."""
    errors = []
    for p in DOC_FILES:
        try:
            parse_blocks(p)
        except DocFormatError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


def _has_marked(p: Path) -> bool:
    try:
        return any(b.marks and b.runnable for b in parse_blocks(p))
    except DocFormatError:
        return False


def _run_doc(path: Path, tmp_path: Path, with_marked: bool) -> None:
    try:
        blocks = parse_blocks(path)
    except DocFormatError as e:
        pytest.fail(str(e))
    todo = [b for b in blocks if (b.runnable or b.file or b.output) and not b.skip]
    if not with_marked:
        todo = [b for b in todo if not b.marks]
    if "shared" in {m for b in todo for m in b.marks} and not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CAPROUTE_SHARED_DATA)")
    skipped = [f"{b.label()}: {b.skip}" for b in blocks if b.skip]
    if not any(b.runnable for b in todo):
        pytest.skip("nothing to run here" + ("; not run: " + "; ".join(skipped) if skipped else ""))
    s = Session(tmp_path / "doc")
    try:
        last = None  # printed output of the block just before (for an `output` block)
        for b in blocks:
            out = run_block(s, b, last) if b in todo else None
            last = out if b.lang in ("python", "bash", "sh", "shell") else None
    finally:
        s.close()


def _doc_timeout(p: Path, with_marked: bool) -> int:
    """The pytest timeout of one doc's test: its blocks' own timeouts added up, plus a minute."""
    try:
        blocks = [b for b in parse_blocks(p) if b.runnable and (with_marked or not b.marks)]
    except DocFormatError:
        return 300
    return 60 + sum(b.timeout * max(1, len(parse_console(b.text)) if b.lang == "console" else 1) for b in blocks)


def _doc_params(paths: list[Path], with_marked: bool) -> list:
    return [pytest.param(p, marks=pytest.mark.timeout(_doc_timeout(p, with_marked)), id=_doc_id(p)) for p in paths]


@pytest.mark.parametrize("path", _doc_params(DOC_FILES, False))
def test_doc_blocks(path, tmp_path):
    """The blocks of a doc that have no slow/pool/shared marker."""
    _run_doc(path, tmp_path, with_marked=False)


@pytest.mark.slow
@pytest.mark.parametrize("path", _doc_params([p for p in DOC_FILES if _has_marked(p)], True))
def test_doc_blocks_all(path, tmp_path):
    """Every runnable block of a doc, in order (real pool, shared data, longer runs)."""
    _run_doc(path, tmp_path, with_marked=True)


# -- the harness itself ----------------------------------------------------------------------------------


def test_normalize_and_compare():
    assert normalize("│ * smollm2-135m     │ 0.0000 │ -0.0034 │") == normalize("│ * smollm2-135m │ 0.0674 │ 1.5 │")
    assert normalize("policy dars-knn-aa892f8a9d9b: lambda = 4.15545") == normalize(
        "policy dars-knn-0123456789ab: lambda = 0")
    assert normalize("┏━━━━┳━━┓") == normalize("┏━┳━━━━━━┓")
    assert output_mismatch(["a 1", "...", "z"], ["a 2", "b", "c", "z"]) is None
    assert output_mismatch(["a 1", "z"], ["a 2", "b", "z"]) is not None
    # model text: words may differ, the model name and a non-empty answer may not
    shown = ["smollm2-135m -> 'There are 3 legs of the total'", "m -> (streamed) \"It's 56 for sure\""]
    assert output_mismatch(shown, ["smollm2-135m -> 'There are 9 legs: two of them.'",
                                   "m -> (streamed) 'Seven times eight is fifty-six'"], generated=True) is None
    assert output_mismatch(shown, ["smollm2-135m -> 'There are 9 legs: two of them.'",
                                   "m -> (streamed) 'Seven times eight'"]) is not None
    assert output_mismatch(shown[:1], ["gemma3-270m -> 'There are 9 legs'"], generated=True) is not None
    assert output_mismatch(shown[:1], ["smollm2-135m -> ''"], generated=True) is not None
    assert output_mismatch(["knn trained: 3 models"], ["mirt trained: 3 models"]) is not None
    assert output_mismatch(["x"], ["x", "extra"]) == "expected 1 lines, got 2"


def test_parse_markers_and_console(tmp_path):
    md = tmp_path / "d.md"
    md.write_text(
        "```text\ncaproute x [--y]\n```\n\n<!-- doc-test: skip needs a GPU cluster -->\n```bash\nray start\n```\n"
        "<!-- doc-test: slow pool timeout=60 -->\n```console\n$ a \\\n  --b\nout 1\n$ c &\n```\n"
        "<!-- doc-test: setup\nx = 1\n-->\n```python\nprint(x)\n```\n<!-- doc-test: output -->\n```text\n1\n```\n")
    b = parse_blocks(md)
    assert [x.lang for x in b] == ["text", "bash", "console", "python", "text"]
    assert b[1].skip == "needs a GPU cluster" and not b[1].runnable
    assert b[2].marks == {"slow", "pool"} and b[2].timeout == 60
    assert parse_console(b[2].text) == [("a --b", ["out 1"]), ("c &", [])]
    assert b[3].setup == "x = 1" and b[4].output
    md.write_text("```\nplain\n```\n")
    with pytest.raises(DocFormatError, match="without a language"):
        parse_blocks(md)
    md.write_text("<!-- doc-test: sloww -->\n```bash\nx\n```\n")
    with pytest.raises(DocFormatError, match="unknown doc-test marker token 'sloww'"):
        parse_blocks(md)


def test_harness_runs_a_small_doc(tmp_path):
    """The mechanism end to end on a small doc: files, exports carried over, replace, console output
    compared by shape, a background command, python output; and a wrong output fails."""
    md = tmp_path / "small.md"
    md.write_text(
        "<!-- doc-test: file=conf.yaml -->\n```yaml\nname: demo\n```\n"
        "```bash\nexport GREETING=hello\ngrep -q 'name: demo' conf.yaml\n```\n"
        "<!-- doc-test: timeout=60\nreplace: sleep 600 => sleep 0.1\n-->\n"
        "```console\n$ echo \"$GREETING world 42\"\nhello world 7\n$ sleep 600; echo server up &\nserver up\n"
        "$ printf 'a\\nb\\nc\\n'\na\n...\n```\n"
        "```python\nimport os\nprint(os.environ['GREETING'], 3.5)\n```\n<!-- doc-test: output -->\n```text\nhello 1\n```\n")
    _run_doc(md, tmp_path / "ok", with_marked=True)
    md.write_text("```console\n$ echo one two\none three\n```\n")
    with pytest.raises(pytest.fail.Exception, match="another shape"):
        _run_doc(md, tmp_path / "bad", with_marked=True)
