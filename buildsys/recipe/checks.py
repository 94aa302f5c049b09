"""The semantic checks of a recipe document: what its JSON Schema cannot express.

Dim order, declared and used axes, unique input/output names, int8 targets with
calibration, profiles over declared dims, data that fits its input's dtype, the
factory's module found without importing it, and files that stay inside the
workspace and exist (a checkpoint; an npy glob matches at least one file, refused from
its text when it would leave the workspace; an images folder holds an image). Each
check skips values the schema already rejected, so one mistake is reported once;
`validate` runs the schema's checks (validate.py) and these, in that order.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import sys
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from buildsys.core.datafiles import MAX_WALKED, DataPathError, GlobTooWide, npy_files, pattern_problem
from buildsys.core.errors import Problem
from buildsys.recipe.limits import parse_size, unusable_path
from buildsys.recipe.validate import IDENT, NAME_PATTERN, Document, FieldPath, number_text, schema_problems, suggest

_INT_DTYPES = {"int64", "int32", "int8", "uint8", "bool"}
_SIZE_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)? ?(B|[KMGT]B|[KMGT]iB)")  # the schema's; what it accepts is parsed


def semantic_problems(doc: Document, workspace: Path, default_name: str) -> list[Problem]:
    """What the schema cannot say; each check skips values the schema already rejected."""
    ws = workspace.resolve()
    out: list[Problem] = []
    for check in (_check_finite, _check_dims, _check_axes, _check_names, _check_targets,
                  _check_profiles, _check_data, _check_unordered):
        out.extend(check(doc))
    out.extend(_check_factory(doc, ws))
    out.extend(_check_paths(doc, ws))
    out.extend(_check_npy_contents(doc, ws))
    out.extend(check_model_kind(doc, ws))
    if "name" not in doc.data and not _valid_name(default_name):
        out.append(Problem(doc.file, None, None, "name",
                           f"the file name gives the recipe name '{default_name}', which is not a valid name",
                           f"set name: {_slug(default_name)} in the recipe, or rename the file"))
    return out


def validate(doc: Document, workspace: Path, default_name: str) -> list[Problem]:
    """Every problem of the document: schema first, then the semantic checks."""
    problems = schema_problems(doc) + semantic_problems(doc, workspace, default_name)
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file != doc.file, p.file, p.line or 0, p.column or 0))


def _valid_name(name: str) -> bool:
    return bool(re.fullmatch(NAME_PATTERN, name)) and len(name) <= 64


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "recipe"


def _check_finite(doc: Document) -> list[Problem]:
    out: list[Problem] = []

    def walk(node: Any, path: FieldPath) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            out.append(doc.problem(path, f"expected a finite number, found {number_text(node)}",
                                   "recipes hold JSON numbers; .inf and .nan have no JSON form"))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(doc.data, ())
    return out


def _ints(mapping: Any, names: tuple[str, ...]) -> bool:
    return isinstance(mapping, dict) and all(
        isinstance(mapping.get(n), int) and not isinstance(mapping.get(n), bool) for n in names)


def _order_problems(sizes: dict[str, int]) -> list[str]:
    out = []
    if sizes["min"] > sizes["opt"]:
        out.append(f"min ({sizes['min']}) > opt ({sizes['opt']})")
    if sizes["opt"] > sizes["max"]:
        out.append(f"opt ({sizes['opt']}) > max ({sizes['max']})")
    return out


def _dims(doc: Document) -> dict[str, Any]:
    dims = doc.data.get("dims", {})
    return dims if isinstance(dims, dict) else {}


def _check_dims(doc: Document) -> list[Problem]:
    out = [doc.problem(("dims", name), message, "sizes must satisfy min <= opt <= max")
           for name, d in _dims(doc).items() if _ints(d, ("min", "opt", "max"))
           for message in _order_problems(d)]
    for name, d in _dims(doc).items():
        step = _multiple(d) or 0
        for point in ("min", "opt", "max") if step else ():
            if _ints(d, (point,)) and d[point] % step:
                out.append(doc.problem(("dims", name, point), *_not_a_multiple(d[point], step, f"dims.{name}")))
    return out


def _multiple(d: Any) -> int | None:
    """A dim's `multiple_of` where it is a usable integer above 1 (the schema names any other value)."""
    step = d.get("multiple_of") if isinstance(d, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step > 1 else None


def _not_a_multiple(size: int, step: int, where: str) -> tuple[str, str]:
    below, above = size // step * step, -(-size // step) * step
    near = " or ".join(str(x) for x in (below, above) if x >= 1)
    return (f"{size} is not a multiple of {step} ({where}.multiple_of)",
            f"the model takes only multiples of {step}: use {near}, or change multiple_of")


def _inputs(doc: Document) -> list[tuple[int, dict]]:
    inputs = doc.data.get("inputs")
    return [(i, x) for i, x in enumerate(inputs) if isinstance(x, dict)] if isinstance(inputs, list) else []


def _check_axes(doc: Document) -> list[Problem]:
    declared, used, out = [d for d in _dims(doc) if re.fullmatch(IDENT, d)], set(), []
    complete = isinstance(doc.data.get("inputs"), list)
    for i, inp in _inputs(doc):
        shape = inp.get("shape")
        if not isinstance(shape, list):
            complete = False
            continue
        for j, axis in enumerate(shape):
            if not isinstance(axis, str):
                continue
            used.add(axis)
            if axis not in declared:
                hint = suggest(axis, declared) or f"declare it: dims: {{{axis}: {{min: 1, opt: 1, max: 1}}}}"
                out.append(doc.problem(("inputs", i, "shape", j), f"axis '{axis}' is not declared in dims", hint))
    if complete:
        out.extend(doc.problem(("dims", name), "declared but not used in any input shape",
                               "remove it, or use it in an input's shape") for name in declared if name not in used)
    return out


def _check_names(doc: Document) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[str, dict[str, int]] = {"inputs": {}, "outputs": {}}
    for section, noun in (("inputs", "input"), ("outputs", "output")):
        items = doc.data.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen[section]:
                out.append(doc.problem((section, i, "name"),
                                       f"duplicate {noun} name '{name}' (also {section}.{seen[section][name]})",
                                       f"every {noun} needs its own name"))
            elif section == "outputs" and name in seen["inputs"]:
                out.append(doc.problem((section, i, "name"),
                                       f"'{name}' is also the name of inputs.{seen['inputs'][name]}",
                                       "ONNX graph inputs and outputs need distinct names"))
            seen[section].setdefault(name, i)
    return out


def _check_targets(doc: Document) -> list[Problem]:
    targets = doc.data.get("targets")
    out: list[Problem] = []
    ids: dict[str, int] = {}
    for i, t in enumerate(targets if isinstance(targets, list) else []):
        if not isinstance(t, dict) or not isinstance(t.get("backend"), str):
            continue
        precision = t.get("precision", "fp32")
        provider = t.get("provider") if t.get("provider") not in (None, "cpu") else None
        if not all(isinstance(x, str) for x in (precision, provider or "")):
            continue  # a precision or provider of the wrong type: the schema names it
        size = t.get("workspace")
        if isinstance(size, str) and _SIZE_PATTERN.fullmatch(size):
            try:
                parse_size(size)
            except ValueError as exc:
                out.append(doc.problem(("targets", i, "workspace"), str(exc),
                                       "write the TensorRT workspace limit as a size like 4GiB"))
        tid = ("torchscript" if t["backend"] == "torchscript"
               else "-".join(x for x in (t["backend"], provider, precision) if x))
        if tid in ids:
            out.append(doc.problem(("targets", i), f"duplicate target {tid} (also targets.{ids[tid]})",
                                   "each target builds one artifact; remove one of them"))
        ids.setdefault(tid, i)
    return out


def _check_profiles(doc: Document) -> list[Problem]:
    profiles, dims, out = doc.data.get("profiles"), _dims(doc), []
    for k, profile in enumerate(profiles if isinstance(profiles, list) else []):
        for name, over in profile.items() if isinstance(profile, dict) else ():
            if name not in dims:
                hint = suggest(name, list(dims)) or "a profile overrides dims declared under dims:"
                out.append(doc.problem(("profiles", k, name), f"dim '{name}' is not declared in dims", hint, key=True))
                continue
            merged = {**dims[name], **over} if isinstance(over, dict) and isinstance(dims[name], dict) else None
            valid_base = _ints(dims[name], ("min", "opt", "max")) and not _order_problems(dims[name])
            if valid_base and merged is not None and _ints(merged, ("min", "opt", "max")):
                out.extend(doc.problem(("profiles", k, name), f"{m} after applying this profile to dims.{name}",
                                       "sizes must satisfy min <= opt <= max") for m in _order_problems(merged))
            step = _multiple(dims[name]) or 0
            for point in ("min", "opt", "max") if step and isinstance(over, dict) else ():
                if _ints(over, (point,)) and over[point] % step:
                    out.append(doc.problem(("profiles", k, name, point),
                                           *_not_a_multiple(over[point], step, f"dims.{name}")))
    return out


def _check_unordered(doc: Document) -> list[Problem]:
    """parity.unordered names outputs of the recipe."""
    parity, outputs = doc.data.get("parity"), doc.data.get("outputs")
    listed = parity.get("unordered") if isinstance(parity, dict) else None
    if not isinstance(listed, list) or not isinstance(outputs, list):
        return []
    names = [o["name"] for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)]
    if len(names) != len(outputs):
        return []  # an output without a usable name: the schema names it
    return [doc.problem(("parity", "unordered", i),
                        f"'{x}' is not an output of the recipe (outputs: {', '.join(names)})",
                        suggest(x, names) or "list outputs named under outputs:, those that share their first axis")
            for i, x in enumerate(listed) if isinstance(x, str) and x not in names]


def _data_specs(doc: Document) -> list[tuple[FieldPath, dict, str | None]]:
    """(path, data mapping, dtype of its input) for every data block written."""
    found: list[tuple[FieldPath, dict, str | None]] = [
        (("inputs", i, "data"), inp["data"], inp.get("dtype")) for i, inp in _inputs(doc)
             if isinstance(inp.get("data"), dict)]
    cal = doc.data.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("data"), dict):
        found.append((("calibration", "data"), cal["data"], None))
    return found


def _text(value: Any) -> str | None:
    """`value` where it is text; None for anything else (the schema reports those)."""
    return value if isinstance(value, str) else None


def _check_data(doc: Document) -> list[Problem]:
    out: list[Problem] = []
    for i, inp in _inputs(doc):
        if _text(inp.get("dtype")) in _INT_DTYPES and "data" not in inp:
            out.append(doc.problem(("inputs", i, "dtype"),
                                   f"dtype {inp['dtype']} needs data: the default (kind uniform) gives fractions",
                                   "add data: {kind: randint, low: 0, high: N} (high exclusive)"))
    for path, data, dtype in _data_specs(doc):
        kind = data.get("kind", "uniform")
        if _text(dtype) in _INT_DTYPES and kind in ("uniform", "normal", "images"):
            out.append(doc.problem((*path, "kind") if "kind" in data else path,
                                   f"expected one of randint, npy for dtype {dtype}, found \"{kind}\"",
                                   "token ids and masks take {kind: randint, low: 0, high: N} (high exclusive)"))
        low, high = data.get("low", 0), data.get("high", 1)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        given = kind == "uniform" or (kind == "randint" and "high" in data)
        if given and numbers and low >= high:
            hint = "randint's high is exclusive: it must exceed low" if kind == "randint" else "low must be below high"
            out.append(doc.problem(path, f"low ({low}) >= high ({high})", hint))
    return out


# -- files the recipe names ------------------------------------------------------------


def _inside(path: Path, ws: Path) -> bool:
    try:
        return path.resolve().is_relative_to(ws)
    except (OSError, ValueError):  # a symlink loop, a NUL in the name: not a usable path
        return False


def _check_paths(doc: Document, ws: Path) -> list[Problem]:
    out: list[Problem] = []
    ckpt = doc.get(("model", "checkpoint"))
    if isinstance(ckpt, str) and ckpt:
        target = ws / ckpt
        if (unusable := unusable_path(ckpt)) is not None:
            out.append(doc.problem(("model", "checkpoint"), unusable,
                                   "name the state_dict file, relative to the project root"))
        elif not _inside(target, ws):
            out.append(doc.problem(("model", "checkpoint"), f"'{ckpt}' is outside the workspace",
                                   "keep checkpoints inside the project so their content is tracked"))
        elif target.is_dir():
            out.append(doc.problem(("model", "checkpoint"), f"expected a file, found the folder '{ckpt}'"))
        elif not target.is_file():
            out.append(doc.problem(("model", "checkpoint"), f"file not found: '{ckpt}'",
                                   "checkpoint paths are relative to the project root, not to the recipe"))
    for path, data, _ in _data_specs(doc):
        where = data.get("path")
        if data.get("kind") in ("npy", "images") and isinstance(where, str) and where:
            if (unusable := unusable_path(where)) is not None:
                out.append(doc.problem((*path, "path"), unusable,
                                       "data paths are relative to the project root and must stay inside it"))
            elif os.path.isabs(where) or not _inside(ws.joinpath(*_until_glob(Path(where).parts)), ws):
                out.append(doc.problem((*path, "path"), f"'{where}' is outside the workspace",
                                       "data paths are relative to the project root and must stay inside it"))
            elif (refused := pattern_problem(where)) is not None:
                out.append(doc.problem((*path, "path"), f"'{where}' {refused}",
                                       "data paths are relative to the project root and must stay inside it, "
                                       "outside out/, .venv/ and .git/"))
            elif data.get("kind") == "npy":
                out.extend(_npy_glob_problems(doc, (*path, "path"), where, ws))
            else:
                out.extend(_images_problems(doc, (*path, "path"), where, ws))
    return out


def _npy_glob_problems(doc: Document, at: FieldPath, where: str, ws: Path) -> list[Problem]:
    try:
        if npy_files(ws, where):
            return []
    except GlobTooWide as exc:
        return [doc.problem(at, str(exc), "name the folder the data is in (data/calib/*.npy rather than **/*.npy)")]
    except DataPathError as exc:
        return [doc.problem(at, f"'{where}' {exc}", "data files must be inside the project: copy them in")]
    return [doc.problem(at, f"no file matches '{where}'",
                        "the glob is relative to the project root, not to the recipe's folder")]


# What Pillow opens, by name; a file with another name counts when its first bytes are an image's.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp", ".tif",
                            ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".jpx",
                            ".qoi", ".psd", ".pcx", ".sgi", ".ras", ".dds", ".icns"})
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"qoif",
                b"\x00\x00\x00\x0cjP  ")
_IMAGE_HEADERS_READ = 1000  # files of one folder whose first bytes validate reads


def _images_problems(doc: Document, at: FieldPath, where: str, ws: Path) -> list[Problem]:
    """An images folder that is missing, is a file, or holds no image (the files the steps read: no sub-folders)."""
    folder = ws / where
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        return [doc.problem(at, f"expected a folder of images at '{where}', found {found}",
                            "the folder is relative to the project root, not to the recipe's folder")]
    files = read = 0
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if files >= MAX_WALKED:
                    break
                if not e.is_file():
                    continue
                files += 1
                if Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                    return []
                if read < _IMAGE_HEADERS_READ:
                    read += 1
                    if _image_header(e.path):
                        return []
    except OSError as exc:
        return [doc.problem(at, f"cannot list the folder '{where}': {exc.strerror or exc}")]
    holds = "no file" if not files else f"{files} file{'s' if files != 1 else ''}, none of them an image"
    return [doc.problem(at, f"the folder '{where}' holds no image ({holds})",
                        "calibration images are JPEG, PNG, BMP, GIF, WebP or TIFF files directly in the folder")]


def _image_header(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


_NPY_HEADERS_READ = 1000  # files of one glob whose header validate reads; the steps check them all


def _check_npy_contents(doc: Document, ws: Path) -> list[Problem]:
    """A `.npy` that holds Python objects can never be read (steps load without pickle): say so here."""
    out: list[Problem] = []
    for path, data, _ in _data_specs(doc):
        where = data.get("path")
        if data.get("kind") != "npy" or not isinstance(where, str) or unusable_path(where) is not None:
            continue
        try:
            npys = [m for m in npy_files(ws, where) if m.endswith(".npy")][:_NPY_HEADERS_READ]
        except (OSError, ValueError):
            continue  # _check_paths names what is wrong with the glob
        for found in npys:
            rel = os.path.relpath(found, ws)
            reason = _unreadable_npy(Path(found))
            if reason is not None:
                out.append(doc.problem((*path, "path"), f"'{rel}' {reason}",
                                       "buildsys reads numeric arrays without pickle: "
                                       "np.save(path, array.astype('float32'))"))
                break
    return out


def _unreadable_npy(file: Path) -> str | None:
    """Why the steps could not load this .npy file, from its header alone; None when they can
    (or when the header is not one: the steps name what is wrong with such a file)."""
    import numpy as np  # only for recipes with npy data

    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read(f)
    except (OSError, ValueError):
        return None
    if dtype.hasobject:
        return f"holds Python objects (dtype {dtype}), which cannot be loaded without pickle"
    return None


def _until_glob(parts: tuple[str, ...]) -> list[str]:
    fixed = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return fixed or ["."]


def _check_factory(doc: Document, ws: Path) -> list[Problem]:
    factory = doc.get(("model", "factory"))
    if not isinstance(factory, str) or not re.fullmatch(rf"{IDENT}(\.{IDENT})*:{IDENT}", factory):
        return []
    module = factory.partition(":")[0]
    unusable = unusable_path(module.replace(".", "/") + ".py")
    if unusable is not None:
        return [doc.problem(("model", "factory"), f"module '{module}' cannot be a file: {unusable}",
                            "the factory's module must be importable from the project root")]
    missing = _missing_module(module, ws)
    if missing is None:
        return []
    return [doc.problem(("model", "factory"), missing[0], missing[1])]


def _missing_module(module: str, ws: Path) -> tuple[str, str] | None:
    """None when `module` can be found without importing it; else (message, hint)."""
    parts = module.split(".")
    if (ws / parts[0]).is_dir() or (ws / f"{parts[0]}.py").is_file():
        as_file = ws.joinpath(*parts[:-1], f"{parts[-1]}.py")
        as_package = ws.joinpath(*parts, "__init__.py")
        if as_file.is_file() or as_package.is_file():
            return None
        rel = "/".join(parts)
        hint = _module_suggestion(parts, ws) or f"create {rel}.py (or {rel}/__init__.py) in the project"
        return f"module '{module}' not found: no {rel}.py or {rel}/__init__.py in the workspace", hint
    if parts[0] in sys.builtin_module_names:
        return None
    # The workspace was looked at above; the current folder is not where steps import from.
    here = {"", os.getcwd()}
    spec = PathFinder.find_spec(parts[0], [p for p in sys.path if p not in here])
    for depth in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            break  # a plain module: what follows may be an attribute, known only by importing
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), list(spec.submodule_search_locations))
    if spec is not None:
        return None
    return (f"module '{module}' not found in the workspace or on the Python path",
            "the factory's module must be importable from the project root (a file under it, or an installed package)")


def _module_suggestion(parts: list[str], ws: Path) -> str | None:
    """'did you mean ...?' for the first part of a dotted module path that is missing."""
    folder = ws
    for depth, part in enumerate(parts):
        if depth < len(parts) - 1 and (folder / part).is_dir():
            folder = folder / part
            continue
        names = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
        names += [p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
        close = [c for c in difflib.get_close_matches(part, names, n=2, cutoff=0.6) if c != part]
        return f"did you mean '{'.'.join([*parts[:depth], close[0]])}'?" if close else None
    return None


# -- models that are not PyTorch factories ----------------------------------------------

_KINDS = ("factory", "onnx", "tensorflow")


def check_model_kind(doc: Document, ws: Path) -> list[Problem]:
    """Exactly one of factory / onnx / tensorflow; its files inside the workspace; no PyTorch-only fields."""
    model = doc.get(("model",))
    if not isinstance(model, dict):
        return []
    given = [k for k in _KINDS if k in model]
    if not given:
        return [doc.problem(("model", "factory"), "required field is missing")]
    if len(given) > 1:
        return [doc.problem(("model", given[1]), f"model.{given[0]} and model.{given[1]} are both given",
                            "a model is one of: factory (PyTorch), onnx (an ONNX file), tensorflow", key=True)]
    if given[0] == "factory":
        return []
    out = [doc.problem(("model", k), f"'{k}' is for a PyTorch factory, not for model.{given[0]}",
                       f"remove it; the {given[0]} model is used as it is", key=True)
           for k in ("kwargs", "checkpoint") if k in model]
    targets = doc.get(("targets",))
    for i, t in enumerate(targets if isinstance(targets, list) else []):
        if isinstance(t, dict) and t.get("backend") == "torchscript":
            out.append(doc.problem(("targets", i, "backend"), f"torchscript compiles a PyTorch model; this recipe's "
                                   f"model is model.{given[0]}", "remove the torchscript target"))
    if given[0] == "onnx":
        out.extend(_model_file(doc, ws, ("model", "onnx"), folder=False))
    elif isinstance(model["tensorflow"], dict):
        absent = [m for m in ("tensorflow", "tf2onnx") if not _importable(m)]
        if absent:
            out.append(doc.problem(("model", "tensorflow"), f"needs the tensorflow extra ({' and '.join(absent)} "
                                   "not installed)", "pip install 'buildsys[tensorflow]'", key=True))
        for k in ("saved_model", "keras"):
            if k in model["tensorflow"]:
                out.extend(_model_file(doc, ws, ("model", "tensorflow", k), folder=k == "saved_model"))
    return out


def _importable(module: str) -> bool:
    """Whether a top-level module can be found, without importing it."""
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _model_file(doc: Document, ws: Path, path: FieldPath, folder: bool) -> list[Problem]:
    where = doc.get(path)
    if not isinstance(where, str) or not where:
        return []
    target = ws / where
    if not _inside(target, ws):
        return [doc.problem(path, f"'{where}' is outside the workspace",
                            "keep model files inside the project so their content is tracked")]
    if folder and not target.is_dir():
        return [doc.problem(path, f"folder not found: '{where}'" if not target.exists()
                            else f"expected a SavedModel folder, found the file '{where}'",
                            "the path is relative to the project root, not to the recipe")]
    if not folder and not target.is_file():
        return [doc.problem(path, f"file not found: '{where}'" if not target.exists()
                            else f"expected a file, found the folder '{where}'",
                            "the path is relative to the project root, not to the recipe")]
    return []
