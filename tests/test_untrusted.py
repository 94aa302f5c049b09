"""untrusted: every value a shared cache entry or a cluster answer holds is checked before it is used."""
from __future__ import annotations

import pytest

from buildsys.storage.untrusted import (
    MAX_FILE_BYTES,
    MAX_NAME_CHARS,
    Rejected,
    check_deps,
    check_entry,
    check_outputs,
    declared_files,
)

D = "0" * 64
GOOD = {"out": [["a.txt", D, 1]]}


def rejected(call, *args) -> str:
    with pytest.raises(Rejected) as err:
        call(*args)
    return str(err.value)


def test_declared_files_are_the_last_component_of_each_output_path():
    assert declared_files({"model": "r/model.onnx", "result": "r/parity/fp32.json", "top": "x"}) == {
        "model": "model.onnx", "result": "fp32.json", "top": "x"}


def test_a_sound_entry_passes_with_or_without_deps_and_verdict():
    check_entry({"out": "a.txt"}, {"outputs": GOOD})
    check_entry({"out": "a.txt"}, {"outputs": GOOD, "deps": {}, "verdict": None})
    check_entry({"out": "a.txt"}, {"outputs": GOOD, "deps": {"files": {"tm/tiny.py": D}, "dists": {"torch": "2.1"}},
                                   "verdict": {"passed": True}})
    check_outputs({"m": "model.onnx"}, {"m": [("model.onnx", D, 0), ("model.onnx.data", "f" * 64, MAX_FILE_BYTES)]})
    check_outputs({"m": "model.onnx"}, {"m": [["model.ort", D, 5]]})  # the stem in another format
    check_outputs({"m": "model"}, {"m": [["model.bin", D, 5]]})


@pytest.mark.parametrize(("entry", "message"), [
    (None, "expected an object, found null"),
    ([], "expected an object, found list"),
    ({"outputs": GOOD, "verdict": "passed"}, "verdict: expected an object or null, found str"),
    ({"outputs": GOOD, "verdict": []}, "verdict: expected an object or null, found list"),
    ({"outputs": GOOD, "deps": []}, "deps: expected an object, found list"),
    ({}, "outputs: expected an object, found null"),
])
def test_entries_of_the_wrong_shape(entry, message):
    assert rejected(check_entry, {"out": "a.txt"}, entry) == message


@pytest.mark.parametrize(("outputs", "message"), [
    ([], "outputs: expected an object, found list"),
    ({}, "outputs: the step declares ['out'], the entry has []"),
    ({"out": [["a.txt", D, 1]], "extra": []}, "outputs: the step declares ['out'], the entry has ['extra', 'out']"),
    ({"out": []}, "outputs.out: expected a non-empty list of files, found list"),
    ({"out": "a.txt"}, "outputs.out: expected a non-empty list of files, found str"),
    ({"out": [["a.txt", D]]}, "outputs.out.0: expected [file name, digest, size], found " + repr(["a.txt", D])),
    ({"out": ["a.txt"]}, "outputs.out.0: expected [file name, digest, size], found 'a.txt'"),
    ({"out": [["a.txt", D, 1, 2]]}, "outputs.out.0: expected [file name, digest, size], found "
     + repr(["a.txt", D, 1, 2])[:79] + "…"),
    ({"out": [["a.txt", D, 1], ["a.txt", D, 1]]}, "outputs.out.1: the file 'a.txt' is listed twice"),
    ({"out": [["a.txt", "A" * 64, 1]]}, f"outputs.out.0: digest '{'A' * 64}' is not 64 lowercase hex characters"),
    ({"out": [["a.txt", D[:63], 1]]}, f"outputs.out.0: digest '{D[:63]}' is not 64 lowercase hex characters"),
    ({"out": [["a.txt", 7, 1]]}, "outputs.out.0: digest 7 is not 64 lowercase hex characters"),
    ({"out": [["a.txt", D, -1]]}, f"outputs.out.0: size -1 is not a whole number of bytes between 0 and {MAX_FILE_BYTES}"),
    ({"out": [["a.txt", D, MAX_FILE_BYTES + 1]]},
     f"outputs.out.0: size {MAX_FILE_BYTES + 1} is not a whole number of bytes between 0 and {MAX_FILE_BYTES}"),
    ({"out": [["a.txt", D, True]]}, f"outputs.out.0: size True is not a whole number of bytes between 0 and "
     f"{MAX_FILE_BYTES}"),
    ({"out": [["a.txt", D, 1.0]]}, f"outputs.out.0: size 1.0 is not a whole number of bytes between 0 and "
     f"{MAX_FILE_BYTES}"),
])
def test_outputs_that_do_not_fit_the_step(outputs, message):
    assert rejected(check_outputs, {"out": "a.txt"}, outputs) == message


@pytest.mark.parametrize("name", ["../a.txt", "sub/a.txt", "a\\txt", "a\0.txt", ".", "..", ".a.txt", "a\n.txt",
                                  "x" * (MAX_NAME_CHARS + 1)])
def test_file_names_that_are_not_plain(name):
    assert rejected(check_outputs, {"out": "a.txt"}, {"out": [[name, D, 1]]}) == (
        f"outputs.out.0: file name {name!r:.79}{'…' if len(repr(name)) > 80 else ''} is not a plain file name"
        if len(repr(name)) > 80 else f"outputs.out.0: file name {name!r} is not a plain file name")


def test_a_name_of_255_characters_is_plain_and_not_a_name_is_refused():
    long = "a" * (MAX_NAME_CHARS - 4) + ".txt"
    check_outputs({"out": long}, {"out": [[long, D, 1]]})
    assert rejected(check_outputs, {"out": "a.txt"}, {"out": [["", D, 1]]}) == "outputs.out.0: file name '' is not a name"
    assert rejected(check_outputs, {"out": "a.txt"}, {"out": [[3, D, 1]]}) == "outputs.out.0: file name 3 is not a name"


@pytest.mark.parametrize(("files", "message"), [
    ([["b.txt", D, 1]], "outputs.out.0: the first file must be the declared 'a.txt' (or its stem with another "
                        "extension), found 'b.txt'"),
    ([["a", D, 1]], "outputs.out.0: the first file must be the declared 'a.txt' (or its stem with another "
                    "extension), found 'a'"),
    ([["a.txt", D, 1], ["a.txt.bin", D, 1]], "outputs.out.1: a companion file must be 'a.txt.data', found 'a.txt.bin'"),
    ([["a.txt", D, 1], ["a.data", D, 1]], "outputs.out.1: a companion file must be 'a.txt.data', found 'a.data'"),
])
def test_the_first_file_is_the_declared_one_and_the_others_its_external_data(files, message):
    assert rejected(check_outputs, {"out": "a.txt"}, {"out": files}) == message


@pytest.mark.parametrize(("deps", "message"), [
    ("x", "deps: expected an object, found str"),
    ({"files": {}, "env": {}}, "deps: unknown field 'env'"),
    ({"files": []}, "deps.files: expected an object, found list"),
    ({"files": {"": D}}, "deps.files: '' is not a path inside the workspace"),
    ({"files": {"/etc/passwd": D}}, "deps.files: '/etc/passwd' is not a path inside the workspace"),
    ({"files": {"tm\\x.py": D}}, "deps.files: 'tm\\\\x.py' is not a path inside the workspace"),
    ({"files": {"tm/\0.py": D}}, "deps.files: 'tm/\\x00.py' is not a path inside the workspace"),
    ({"files": {"tm//x.py": D}}, "deps.files: 'tm//x.py' is not a path inside the workspace"),
    ({"files": {"./x.py": D}}, "deps.files: './x.py' is not a path inside the workspace"),
    ({"files": {"tm/../../x.py": D}}, "deps.files: 'tm/../../x.py' is not a path inside the workspace"),
    ({"files": {"tm/x.py": "nope"}}, "deps.files.tm/x.py: digest 'nope' is not 64 lowercase hex characters"),
    ({"dists": []}, "deps.dists: expected an object of package versions"),
    ({"dists": {"torch": 2}}, "deps.dists: expected an object of package versions"),
])
def test_deps_that_name_paths_outside_the_workspace_or_are_malformed(deps, message):
    assert rejected(check_deps, deps) == message


def test_long_values_are_cut_in_the_message():
    digest = "x" * 200
    msg = rejected(check_outputs, {"out": "a.txt"}, {"out": [["a.txt", digest, 1]]})
    assert msg == f"outputs.out.0: digest '{'x' * 78}… is not 64 lowercase hex characters"
    exact = "y" * 78  # repr is 80 characters: shown whole
    assert rejected(check_outputs, {"out": "a.txt"}, {"out": [["a.txt", exact, 1]]}) == (
        f"outputs.out.0: digest '{exact}' is not 64 lowercase hex characters")


def test_the_stem_of_a_dotted_name_is_all_but_its_last_extension():
    check_outputs({"m": "model.int8.onnx"}, {"m": [["model.int8.ort", D, 1]]})
    assert rejected(check_outputs, {"m": "model.int8.onnx"}, {"m": [["model.ort", D, 1]]}) == (
        "outputs.m.0: the first file must be the declared 'model.int8.onnx' (or its stem with another extension), "
        "found 'model.ort'")
