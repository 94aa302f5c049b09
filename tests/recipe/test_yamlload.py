"""The recipe YAML dialect: YAML 1.2 scalars, exact positions, and every surprise refused."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from buildsys.core.errors import RecipeError
from buildsys.recipe import yamlload
from buildsys.recipe.yamlload import load_yaml, parse_yaml

LOADERS = [pytest.param(yaml.SafeLoader, id="python")]
if getattr(yaml, "CSafeLoader", None) is not None:
    LOADERS.insert(0, pytest.param(yaml.CSafeLoader, id="libyaml"))


@pytest.fixture(params=LOADERS, autouse=True)
def loader(request, monkeypatch):
    """Every test runs with libyaml's parser and with PyYAML's pure-Python one."""
    monkeypatch.setattr(yamlload, "_Loader", request.param)


def parse(text: str):
    return parse_yaml(textwrap.dedent(text), "recipes/r.yaml")


def rendered(text: str) -> str:
    with pytest.raises(RecipeError) as exc:
        parse(text)
    return exc.value.render()


def test_values_and_positions():
    doc = parse(
        """\
        export: {opset: 18}
        inputs:
          - name: x
            shape: [batch, 3]
        """
    )
    assert doc.data == {"export": {"opset": 18}, "inputs": [{"name": "x", "shape": ["batch", 3]}]}
    assert doc.positions[("export", "opset")] == (1, 17)
    assert doc.key_positions[("export", "opset")] == (1, 10)
    assert doc.positions[("inputs", 0)] == (3, 5)
    assert doc.positions[("inputs", 0, "name")] == (3, 11)
    assert doc.positions[("inputs", 0, "shape", 1)] == (4, 20)
    # a collection is found at its key, a scalar at its value
    assert doc.locate(("inputs",)) == (2, 1)
    assert doc.locate(("inputs", 0, "shape")) == (4, 5)
    assert doc.locate(("export", "opset")) == (1, 17)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-5", 1e-05),
        ("1.0e-4", 0.0001),
        ("-2.5E+3", -2500.0),
        (".5", 0.5),
        ("3.", 3.0),
        ("18", 18),
        ("-7", -7),
        ("+7", 7),
        ("0", 0),
        ("0x1F", 31),
        ("0o17", 15),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("2024-01-02", "2024-01-02"),
        ("1_000", "1_000"),
        ("'1e-5'", "1e-5"),
        ('"yes"', "yes"),
        ("'010'", "010"),
        ("'12:30'", "12:30"),
        ("models.resnet:resnet18", "models.resnet:resnet18"),
        ("4GiB", "4GiB"),
        # plain names are names: YAML 1.2 and PyYAML both read these as text
        ("y", "y"),
        ("n", "n"),
        ("Y", "Y"),
        ("x", "x"),
        ("yEs", "yEs"),
        # YAML 1.1's booleans load as PyYAML loads them: a boolean where text belongs is
        # reported by the schema check, with the hint to quote it
        ("yes", True),
        ("No", False),
        ("ON", True),
        ("off", False),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_scalars_resolve_as_yaml_1_2(text, value):
    assert parse(f"v: {text}\n").data == {"v": value}
    assert type(parse(f"v: {text}\n").data["v"]) is type(value)


def test_1e_minus_5_is_a_float_not_a_string():
    doc = parse("tolerances:\n  fp32: {atol: 1e-5}\n")
    assert doc.data["tolerances"]["fp32"]["atol"] == 1e-05
    assert isinstance(doc.data["tolerances"]["fp32"]["atol"], float)


def test_utf8_bom_and_unicode_text_are_fine(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_bytes("\ufeffdescription: Modèle über 9000\n".encode("utf-8"))
    assert load_yaml(path, "recipes/r.yaml").data == {"description": "Modèle über 9000"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "on: 1\n",
            "error: recipes/r.yaml:1:1: expected a text key, found the boolean true\n"
            "  hint: quote it: 'on'",
            id="on-as-key",
        ),
        pytest.param(
            "opset: 010\n",
            "error: recipes/r.yaml:1:8: opset: YAML 1.1 reads 010 as the octal number 8\n"
            "  hint: write 10 without the leading zero, or quote it: '010'",
            id="octal",
        ),
        pytest.param(
            "seed: -017\n",
            "error: recipes/r.yaml:1:7: seed: YAML 1.1 reads -017 as the octal number -15\n"
            "  hint: write -17 without the leading zero, or quote it: '-017'",
            id="negative-octal",
        ),
        pytest.param(
            "seed: 09\n",
            "error: recipes/r.yaml:1:7: seed: YAML 1.1 reads 09 as an octal number\n"
            "  hint: write 9 without the leading zero, or quote it: '09'",
            id="leading-zero-not-octal",
        ),
        pytest.param(
            "time: 12:30\n",
            "error: recipes/r.yaml:1:7: time: YAML 1.1 reads 12:30 as a base-60 number\n"
            "  hint: quote it: '12:30'",
            id="sexagesimal",
        ),
        pytest.param(
            "time: 1:20:30.5\n",
            "error: recipes/r.yaml:1:7: time: YAML 1.1 reads 1:20:30.5 as a base-60 number\n"
            "  hint: quote it: '1:20:30.5'",
            id="sexagesimal-float",
        ),
        pytest.param(
            "a: !!python/object/apply:os.system [echo hi]\n",
            "error: recipes/r.yaml:1:4: a: explicit tag !!python/object/apply:os.system is not allowed\n"
            "  hint: recipes hold plain data only; remove the tag (quote the value if you mean text)",
            id="python-tag",
        ),
        pytest.param(
            "name: !!str 18\n",
            "error: recipes/r.yaml:1:7: name: explicit tag !!str is not allowed\n"
            "  hint: recipes hold plain data only; remove the tag (quote the value if you mean text)",
            id="str-tag",
        ),
        pytest.param(
            "model: !custom {factory: a:b}\n",
            "error: recipes/r.yaml:1:8: model: explicit tag !custom is not allowed\n"
            "  hint: recipes hold plain data only; remove the tag (quote the value if you mean text)",
            id="local-tag-on-mapping",
        ),
        pytest.param(
            "a: &base {x: 1}\nb: *base\n",
            "error: recipes/r.yaml:1:4: a: anchor &base is not supported\n"
            "  hint: recipes do not use anchors and aliases; share settings through `extends:` a base file\n"
            "error: recipes/r.yaml:2:4: b: alias *base is not supported\n"
            "  hint: recipes do not use anchors and aliases; share settings through `extends:` a base file\n"
            "2 problems found",
            id="anchor-alias",
        ),
        pytest.param(
            "a:\n  <<: {x: 1}\n  z: 2\n",
            "error: recipes/r.yaml:2:3: a.<<: merge keys (<<) are not supported\n"
            "  hint: share settings through `extends:` a base file",
            id="merge-key",
        ),
        pytest.param(
            "export:\n  opset: 17\n  exporter: dynamo\n  opset: 18\n",
            "error: recipes/r.yaml:4:3: export.opset: duplicate key 'opset' (first at line 2, column 3)\n"
            "  hint: a key may appear once per mapping; remove one of them",
            id="duplicate-key",
        ),
        pytest.param(
            "dims: {batch: {min: 1}, batch: {min: 2}}\n",
            "error: recipes/r.yaml:1:25: dims.batch: duplicate key 'batch' (first at line 1, column 8)\n"
            "  hint: a key may appear once per mapping; remove one of them",
            id="duplicate-flow-key",
        ),
        pytest.param(
            "dims:\n  1: {min: 1}\n",
            "error: recipes/r.yaml:2:3: dims: expected a text key, found integer 1\n"
            "  hint: quote it: '1'",
            id="integer-key",
        ),
        pytest.param(
            "? [a, b]\n: 1\n",
            "error: recipes/r.yaml:1:3: expected a text key, found a list",
            id="list-key",
        ),
        pytest.param(
            "",
            "error: recipes/r.yaml: the file is empty\n"
            "  hint: a recipe is a mapping that starts with `version: 1`",
            id="empty",
        ),
        pytest.param(
            "# only a comment\n\n",
            "error: recipes/r.yaml: the file is empty\n"
            "  hint: a recipe is a mapping that starts with `version: 1`",
            id="only-comments",
        ),
        pytest.param(
            "- version: 1\n",
            "error: recipes/r.yaml:1:1: expected a mapping at the top level, found a list\n"
            "  hint: a recipe is a mapping that starts with `version: 1`",
            id="top-level-list",
        ),
        pytest.param(
            "resnet18\n",
            "error: recipes/r.yaml:1:1: expected a mapping at the top level, found string 'resnet18'\n"
            "  hint: a recipe is a mapping that starts with `version: 1`",
            id="top-level-scalar",
        ),
        pytest.param(
            "a: 1\n---\nb: 2\n",
            "error: recipes/r.yaml:2:1: expected a single YAML document, found a second one\n"
            "  hint: remove the `---` line",
            id="two-documents",
        ),
    ],
)
def test_rejected(text, expected):
    assert rendered(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\nb: 3\n", "error: recipes/r.yaml:2:2: YAML syntax error: while parsing a flow sequence: "),
        ("a:\n  b: 1\n c: 2\n", "error: recipes/r.yaml:3:2: YAML syntax error: while parsing a block mapping: "),
        ('a: "x\n', "error: recipes/r.yaml:2:1: YAML syntax error: while scanning a quoted scalar: "
                    "found unexpected end of stream"),
        ("a: b: c\n", "error: recipes/r.yaml:1:5: YAML syntax error: mapping values are not allowed "),
        ("a:\n\t- 1\n", "error: recipes/r.yaml:2:1: YAML syntax error: while scanning for the next token: "),
    ],
)
def test_syntax_errors_point_at_the_mark(text, expected):
    # the wording after the location comes from the parser (libyaml or PyYAML's own)
    assert rendered(text).startswith(expected)


def test_tabs_get_a_hint():
    assert rendered("a:\n\t- 1\n").endswith("\n  hint: YAML indents with spaces; replace the tabs")


def test_every_problem_of_a_file_is_reported_at_once():
    text = rendered("a: 012\nb: 010\nb: 1\nc: !!int 3\n")
    assert text.splitlines()[-1] == "4 problems found"
    assert [line.split(": ")[0] for line in text.splitlines() if line.startswith("error")] == [
        "error", "error", "error", "error"]
    assert "recipes/r.yaml:1:4: a:" in text and "recipes/r.yaml:2:4: b:" in text
    assert "recipes/r.yaml:3:1: b: duplicate key 'b' (first at line 2, column 1)" in text
    assert "recipes/r.yaml:4:4: c: explicit tag !!int is not allowed" in text


def test_not_utf8(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"version: 1\nname: r\xe9sum\xe9\n")
    with pytest.raises(RecipeError) as exc:
        load_yaml(path, "recipes/r.yaml")
    assert exc.value.render() == (
        "error: recipes/r.yaml:2:8: the file is not UTF-8 text (byte 0xe9)\n  hint: save it as UTF-8")


def test_unreadable(tmp_path: Path):
    with pytest.raises(RecipeError) as exc:
        load_yaml(tmp_path, "recipes/r.yaml")
    assert exc.value.render() == "error: recipes/r.yaml: cannot read the file: Is a directory"


# -- bounds, checked before parsing where parsing itself would cost -------------------------


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"version: 1\ndescription: '" + b"a" * (256 * 1024) + b"'\n")
    with pytest.raises(RecipeError) as exc:
        load_yaml(path, "recipes/r.yaml")
    assert exc.value.render() == (
        f"error: recipes/r.yaml:2:{256 * 1024 - 10}: the file is larger than 256 KiB, "
        "the limit of a recipe file\n"
        "  hint: a recipe describes one model; keep bulk data in the files it names (npy, checkpoint)")
    path.write_bytes(b"version: 1\ndescription: '" + b"a" * (250 * 1024) + b"'\n")
    assert len(load_yaml(path, "recipes/r.yaml").data["description"]) == 250 * 1024


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("model:\n  kwargs: {a: " + "[" * 100_000 + "]" * 100_000 + "}\n", "2:77: model.kwargs: ",
                     id="flow-200KB"),
        pytest.param("a: " + "{b: " * 70 + "1" + "}" * 70 + "\n", "1:260: a: ", id="flow-mappings"),
        pytest.param("a: '" + "[" * 100 + "'\nb: " + "[" * 65 + "]" * 65 + "\n", "2:68: b: ", id="quoted-brackets"),
        pytest.param("a:\n" + "".join("  " * i + "- x:\n" for i in range(70)), "65:127: " + ".".join(["x"] * 64) + ": ", id="block"),
    ],
)
def test_nesting_deeper_than_the_limit_is_refused(text: str, where: str):
    assert rendered(text) == (
        f"error: recipes/r.yaml:{where}nested more than 64 levels deep, the limit of a recipe\n"
        "  hint: recipes are plain settings; flatten the value or keep it in a file the recipe names")


def test_nesting_up_to_the_limit_and_brackets_in_text_are_fine():
    assert parse("a: " + "[" * 64 + "]" * 64 + "\n").data["a"] is not None
    assert parse("d: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['  # [[[[\n"
                 "e: |\n" + "".join(f"  {'[' * 70}\n" for _ in range(3))).data["d"].startswith("[[")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("seed: " + "9" * 5000 + "\n", "seed: the integer of 5000 digits is out of range", id="5000-digits"),
        pytest.param("seed: 9223372036854775808\n", "seed: the integer 9223372036854775808 is out of range",
                     id="2^63"),
        pytest.param("seed: 0x" + "f" * 5000 + "\n", "seed: the integer of 5002 digits is out of range", id="hex"),
        pytest.param("seed: 0" + "7" * 5000 + "\n", "seed: YAML 1.1 reads this 5001-digit text with a leading zero",
                     id="leading-zero"),
    ],
)
def test_integers_fit_in_64_bits(text: str, expected: str):
    assert f"error: recipes/r.yaml:1:7: {expected}" in rendered(text)


def test_a_control_character_is_located():
    assert rendered("a: 1\nb: x\x1by\n") == (
        "error: recipes/r.yaml:2:5: YAML error: character #x001b is not allowed in YAML text\n"
        "  hint: remove it, or write it as an escape inside double quotes (\"\\x1b\")")
