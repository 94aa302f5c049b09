"""A generated corpus of malformed recipes: each one gets exit 0 or a located exit 2, never a traceback.

The corpus is made from the sample recipes and the tests' tiny recipe with a fixed
seed: values swapped for other types, huge integers, long strings, NUL bytes, deleted
and duplicated keys and lines, deep nesting, bad unicode, floats where integers
belong, broken `extends` chains and oversized files. Every case goes through
`validate` and `build --dry-run`, driven in-process through `buildsys.cli.main` in
one workspace (a new recipe file per case, so the recipe cache never answers).

`python -m tests.recipe.test_fuzz` prints the counts of the corpus.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import random
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from buildsys.cli import main
from tests.e2e.conftest import FIXTURES, REPO, tiny_recipe

SEED = 20261130
RANDOM_CASES = 420
# Far above what a recipe takes (milliseconds); only a blow-up (a parse that grows
# with the square of the input, a recursion per extends file) comes near it.
SECONDS_PER_CASE = 10.0

_RAW = "zzraw{}zz"  # a placeholder that YAML dumps plain, replaced by raw YAML text afterwards


@dataclass
class Case:
    name: str
    recipe: bytes
    files: dict[str, bytes] = field(default_factory=dict)  # more files, workspace-relative
    links: dict[str, str] = field(default_factory=dict)  # symlinks: path -> target


@dataclass
class Outcome:
    case: str
    command: str
    code: int | None
    seconds: float
    stderr: str
    traceback: str | None = None


def _sources() -> dict[str, str]:
    found = {p.name: p.read_text() for p in sorted((REPO / "recipes").glob("*.yaml")) if not p.name.startswith("_")}
    found["tiny.yaml"] = tiny_recipe()
    return found


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside `node` (mapping keys and list indices)."""
    out = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


def _set(data: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _raw_values(rng: random.Random) -> list[str]:
    """YAML text for one value, each a known way to trip a reader."""
    depth = rng.choice([65, 200, 3000])
    return [
        "9" * 5000, "-" + "9" * 40, "0x" + "f" * 600, "1e999", "-.inf", ".nan", "1_000",
        "no", "yes", "y", "n", "x", "on", "Off", "NO", "true", "~", "''", '""',
        "012", "-017", "09", "12:30", "2024-01-01",
        '"a\\0b"', '"\\0"', '"\\ud800"', '"\\x00\\x01"', '"\\u202e"', "'" + "a" * 300 + "'",
        "'" + "é" * 200 + "'", "'../" * 1 + "x" * 300 + "'", "'/etc/passwd'", "'..'",
        "!!python/object/apply:os.system ['true']", "!!str 5", "!custom x", "&a 1", "*a",
        "[" * depth + "]" * depth, "{a: " * 70 + "1" + "}" * 70, "[1, [2, [3]]]", "{}", "[]",
        "[float32]", "{min: 8.0, opt: 4.0, max: 2.0}", "{min: 1, opt: 2}", "2", "-1", "0", "8.0", "1.5",
        "'float32'", "'4GiB'", "'" + "9" * 400 + "GiB'", "[batch, 3]", "[null]", "[[]]",
    ]


def _mutate_value(rng: random.Random, data: dict, raws: dict[str, str]) -> str:
    paths = _paths(data)
    path = rng.choice(paths)
    old = data
    for part in path:
        old = old[part]
    choice = rng.randrange(6)
    if choice == 0 and isinstance(old, int) and not isinstance(old, bool):
        new: Any = float(old)  # a float where an integer belongs
        label = "float-for-int"
    elif choice == 1:
        new = rng.choice([None, True, False, 0, -3, 2.5, "text", [], {}, [old], {"k": old}])
        label = "type-swap"
    elif choice == 2 and isinstance(path[-1], str):
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
        return f"delete {'.'.join(map(str, path))}"
    else:
        token = _RAW.format(len(raws))
        raws[token] = rng.choice(_raw_values(rng))
        new = token
        label = "raw " + raws[token][:24]
    _set(data, path, new)
    return f"{label} at {'.'.join(map(str, path))}"


def _mutate_text(rng: random.Random, text: str) -> tuple[bytes, str]:
    lines = text.splitlines(keepends=True)
    choice = rng.randrange(8)
    i = rng.randrange(len(lines))
    if choice == 0:
        lines.insert(i, lines[i])
        return "".join(lines).encode(), f"duplicate line {i + 1}"
    if choice == 1:
        del lines[i]
        return "".join(lines).encode(), f"delete line {i + 1}"
    if choice == 2:
        cut = rng.randrange(len(text))
        return text[:cut].encode(), f"truncate at {cut}"
    if choice == 3:
        lines[i] = "\t" + lines[i]
        return "".join(lines).encode(), f"tab on line {i + 1}"
    if choice == 4:
        raw = "".join(lines).encode()
        at = rng.randrange(len(raw))
        return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80", b"\x1b"]) + raw[at:], f"bad byte at {at}"
    if choice == 5:
        indent = " " * rng.randrange(0, 6)
        lines.insert(i, indent + rng.choice(["? [a]\n", "- - x\n", "&x a: 1\n", "<<: {a: 1}\n", "---\n",
                                             "...\n", "%YAML 1.1\n", "name: n\n", "y: 1\n", "no: 1\n"]))
        return "".join(lines).encode(), f"insert at line {i + 1}"
    if choice == 6:
        words = re.findall(r"[A-Za-z_]+", lines[i])
        if words:
            lines[i] = lines[i].replace(rng.choice(words), rng.choice(["", "y", "n", "x" * 300, "0"]), 1)
        return "".join(lines).encode(), f"replace a word on line {i + 1}"
    lines[i] = lines[i].rstrip("\n") + " " + "[" * 100 + "\n"
    return "".join(lines).encode(), f"open brackets on line {i + 1}"


def _dump(data: dict, raws: dict[str, str]) -> bytes:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=4096)
    for token, raw in raws.items():
        text = text.replace(f"'{token}'", raw).replace(token, raw)
    return text.encode("utf-8", "surrogatepass")


def _random_cases(rng: random.Random, n: int) -> list[Case]:
    sources = _sources()
    parsed = {name: yaml.safe_load(text) for name, text in sources.items()}
    base = (REPO / "recipes" / "_base.yaml").read_bytes()
    cases = []
    for k in range(n):
        name = rng.choice(sorted(sources))
        if rng.random() < 0.65:
            data = copy.deepcopy(parsed[name])
            raws: dict[str, str] = {}
            labels = [_mutate_value(rng, data, raws) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
            recipe, label = _dump(data, raws), "; ".join(labels)
        else:
            recipe, label = _mutate_text(rng, sources[name])
        cases.append(Case(f"{k}: {name}: {label}", recipe, {"recipes/_base.yaml": base}))
    return cases


def _tiny(**lines: str) -> bytes:
    text = tiny_recipe()
    for key, value in lines.items():
        text = re.sub(rf"(?m)^{key}:.*\n", "", text) + f"{key}: {value}\n"
    return text.encode()


def _named_cases() -> list[Case]:
    """The shapes of recipe that once ended in a traceback or ran for minutes."""
    tiny = tiny_recipe()
    chain = {f"recipes/_c{i}.yaml": f"extends: _c{i + 1}.yaml\n".encode() for i in range(2000)}
    chain["recipes/_c2000.yaml"] = b"version: 1\n"
    long = "x" * 300
    cases = [
        Case("extends with a NUL byte", b'extends: "_b\\0.yaml"\n' + tiny.encode()),
        Case("extends 300 characters", f"extends: {long}.yaml\n{tiny}".encode()),
        Case("extends through 300-character folders", f"extends: {long}/{long}/b.yaml\n{tiny}".encode()),
        Case("checkpoint 300 characters", tiny.replace("kwargs:", f"checkpoint: {long}.pt, kwargs:").encode()),
        Case("factory module 300 characters", tiny.replace("tm.tiny:tiny", f"{long}.tiny:tiny").encode()),
        Case("factory submodule 300 characters", tiny.replace("tm.tiny:tiny", f"tm.{long}:tiny").encode()),
        Case("npy path 300 characters", tiny.replace("{kind: normal, mean: 0.0, std: 1.0}",
                                                     f"{{kind: npy, path: 'data/{long}/*.npy'}}").encode()),
        Case("images path 300 characters", (tiny + "calibration: {data: {kind: images, path: data/" + long
                                            + "}}\ntargets: [{backend: onnxruntime, precision: int8}]\n").encode()),
        Case("npy of Python objects", tiny.replace("{kind: normal, mean: 0.0, std: 1.0}",
                                                   "{kind: npy, path: data/objects.npy}").encode()),
        Case("dtype as a list", tiny.replace("dtype: float32", "dtype: [float32]").encode()),
        Case("dtype as a mapping", tiny.replace("dtype: float32", "dtype: {a: 1}").encode()),
        Case("dim as an integer with a profile", tiny.replace("batch: {min: 1, opt: 4, max: 8}", "batch: 2").encode()
             + b"profiles: [{batch: {max: 4}}]\n"),
        Case("profile override as a list", tiny.encode() + b"profiles: [{batch: [1, 2]}]\n"),
        Case("profiles as a mapping", tiny.encode() + b"profiles: {batch: 1}\n"),
        Case("dims as floats", tiny.replace("{min: 1, opt: 4, max: 8}", "{min: 8.0, opt: 4.0, max: 2.0}").encode()),
        Case("an integer of 5000 digits", _tiny(parity="{seed: " + "9" * 5000 + "}")),
        Case("a hex integer of 5000 digits", _tiny(parity="{seed: 0x" + "f" * 5000 + "}")),
        Case("extends symlink loop", b"extends: _loop.yaml\n" + tiny.encode(),
             links={"recipes/_loop.yaml": "_loop2.yaml", "recipes/_loop2.yaml": "_loop.yaml"}),
        Case("extends a chain of 2000 files", b"extends: _c0.yaml\n" + tiny.encode(), chain),
        Case("a 200 KB nested list", _tiny(description="[" * 100_000 + "]" * 100_000)),
        Case("a 200 KB nested mapping", _tiny(description="{a: " * 50_000 + "1" + "}" * 50_000)),
        Case("deep block nesting", tiny.encode() + b"profiles:\n" + b"".join(
            b" " * i + b"- \n" for i in range(2000))),
        Case("a 10 MB recipe", tiny.encode() + b"description: '" + b"a" * 10_000_000 + b"'\n"),
        Case("a 3 MB list", tiny.encode() + b"parity: {points: [" + b"min, " * 600_000 + b"]}\n"),
        Case("output named y", tiny.replace("name: scores", "name: y").encode()),
        Case("dim named n", tiny.replace("batch", "n").encode()),
        Case("output named no", tiny.replace("name: scores", "name: no").encode()),
        Case("a lone surrogate", tiny.replace("name: scores", 'name: "\\ud800"').encode()),
    ]
    return cases


def corpus() -> list[Case]:
    return _named_cases() + _random_cases(random.Random(SEED), RANDOM_CASES)


def make_workspace(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "models", root / "models", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data", root / "data")
    shutil.copytree(FIXTURES, root / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "recipes").mkdir()
    np.save(root / "data" / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(root / "data" / "x.npy", np.zeros((4, 4), dtype=np.float32))
    return root


def _run(root: Path, args: list[str]) -> tuple[int | None, str, str | None]:
    # stdout is strict UTF-8 as on a terminal; stderr replaces what it cannot encode, as Python's does.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | None = main(["-C", str(root), *args])
            out.flush()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - every escape is the finding this test looks for
            code, tb = None, traceback.format_exc()
    err.flush()
    return code, err.buffer.getvalue().decode("utf-8", "replace"), tb


def run_case(root: Path, index: int, case: Case) -> list[Outcome]:
    written = []
    for rel, content in case.files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
        written.append(root / rel)
    for rel, target in case.links.items():
        os.symlink(target, root / rel)
        written.append(root / rel)
    recipe = root / "recipes" / f"c{index:04d}.yaml"  # a new file each time: the recipe cache never answers
    recipe.write_bytes(case.recipe)
    written.append(recipe)
    outcomes = []
    try:
        for command in (["validate"], ["build", "--dry-run"]):
            start = time.perf_counter()
            code, err, tb = _run(root, command)
            outcomes.append(Outcome(case.name, " ".join(command), code, time.perf_counter() - start, err, tb))
    finally:
        for p in written:
            p.unlink()
    return outcomes


def run_corpus(root: Path) -> list[Outcome]:
    return [o for i, case in enumerate(corpus()) for o in run_case(root, i, case)]


_LOCATED = re.compile(r"error: recipes/[^\s:]+\.yaml:\d+:\d+: ")
# What has no place in the file: a file with nothing in it, a top-level field that is missing.
_UNPLACED = re.compile(r"error: recipes/[^\s:]+\.yaml: (the file is empty|\w+: required field is missing)")


def _problems(stderr: str) -> list[str]:
    """Each reported problem: its `error:` line and the `hint:` line that follows, if any."""
    return re.findall(r"^error: .*(?:\n  hint: .*)?", stderr, re.M)


def test_the_corpus_is_large_and_fixed():
    cases = corpus()
    assert len(cases) >= 300
    assert [c.recipe for c in cases[-5:]] == [c.recipe for c in corpus()[-5:]]


def test_every_malformed_recipe_gets_exit_0_or_a_located_error(tmp_path: Path):
    outcomes = run_corpus(make_workspace(tmp_path / "ws"))
    crashed = [f"{o.case} [{o.command}]:\n{o.traceback}" for o in outcomes if o.traceback]
    assert not crashed, f"{len(crashed)} tracebacks; the first:\n{crashed[0]}"
    codes = {(o.case, o.command): o.code for o in outcomes}
    wrong = {k: c for k, c in codes.items() if c not in (0, 2)}
    assert not wrong
    slow = [(o.case, o.command, round(o.seconds, 1)) for o in outcomes if o.seconds > SECONDS_PER_CASE]
    assert not slow
    named = {c.name for c in _named_cases()}
    problems = {(o.case, o.command): _problems(o.stderr) for o in outcomes if o.code == 2}
    assert all(problems.values())
    unlocated = [p for found in problems.values() for p in found if not _LOCATED.match(p) and not _UNPLACED.match(p)]
    assert not unlocated
    # the shapes that once crashed or ran for minutes: each problem also says how to fix it
    unhinted = [p for (case, _), found in problems.items() if case in named for p in found if "\n  hint: " not in p]
    assert not unhinted
    # of the named shapes, only the plain names are good recipes
    assert {case for (case, _), code in codes.items() if case in named and code == 0} == {
        "output named y", "dim named n"}
    # validate and the dry run judge a recipe the same way
    for o in outcomes:
        if o.command == "validate":
            assert codes[(o.case, "build --dry-run")] == o.code, o.case
    # the corpus is not all-good or all-bad
    assert 0 < sum(c == 0 for c in codes.values()) < len(codes) // 2


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = run_corpus(make_workspace(Path(tmp) / "ws"))
        total = time.perf_counter() - start
    for command in ("validate", "build --dry-run"):
        mine = [o for o in results if o.command == command]
        print(f"{command}: {len(mine)} cases, exit 0: {sum(o.code == 0 for o in mine)}, "
              f"exit 2: {sum(o.code == 2 for o in mine)}, tracebacks: {sum(o.traceback is not None for o in mine)}, "
              f"other: {sum(o.code not in (0, 2) and o.traceback is None for o in mine)}, "
              f"slowest: {max(o.seconds for o in mine):.2f} s")
    causes: dict[str, list[str]] = {}
    for o in results:
        if o.traceback:
            causes.setdefault(o.traceback.strip().splitlines()[-1][:150], []).append(o.case)
    for cause, names in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(names):4d}  {cause}\n        e.g. {names[0][:120]}")
    print(f"total {total:.1f} s")
