"""make's field-level dependencies: one slice file per step, rewritten only when it changed.

    python -S tools/split.py recipes/m0000.yaml out/m0000/.params

Each file FOLDER/<step>.json holds the recipe fields that step reads; a file whose
content would not change is left alone, so make sees only the steps whose slice
changed as out of date.
"""
import json
import os
import sys

SLICES = {"export": ("model", "inputs", "outputs", "dims", "export"),
          "reference": ("model", "inputs", "outputs", "dims", "parity"),
          "simplify": ("simplify",), "parity": ("tolerances", "outputs"), "engine": ("targets",)}
recipe, folder = sys.argv[1:3]
fields = {}
with open(recipe) as f:
    for line in f:  # the synthetic recipes hold one top-level field per line
        if line[:1].isalpha() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
os.makedirs(folder, exist_ok=True)
for name, keys in SLICES.items():
    text = json.dumps({k: fields.get(k) for k in keys}, sort_keys=True) + "\n"
    path = os.path.join(folder, name + ".json")
    try:
        with open(path) as f:
            if f.read() == text:
                continue
    except OSError:
        pass
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
