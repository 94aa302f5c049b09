"""`buildsys view RECIPE[:ARTIFACT]`: an artifact the recipe built, served in Netron on loopback.

The artifact is named by its path under out/<recipe>/ (`model.int8.onnx`,
`engines/onnxruntime-fp32.ort`) or by the step that built it (`export`,
`simplify`, `quantize[onnxruntime]`, `engine[onnxruntime-fp32]`); the default is
the model the engines are built from (the simplified one when simplify runs).
"""
from __future__ import annotations

from pathlib import Path

from buildsys.core.errors import UsageError

VIEWABLE = (".onnx", ".ort")


def artifacts(graph, recipe: str) -> dict[str, str]:
    """Viewable outputs of a recipe's steps: path under out/ by step name, in build order."""
    found = {}
    for step in graph.steps.values():
        if step.recipe != recipe:
            continue
        for path in step.outputs.values():
            if path.endswith(VIEWABLE):
                found[step.name] = path
    return found


def choose(graph, recipe: str, artifact: str | None) -> str:
    """The path under out/ of the artifact to show."""
    found = artifacts(graph, recipe)
    if artifact is None:
        for name in ("simplify", "export", "check", "convert"):
            if name in found:
                return found[name]
    if artifact in found:
        return found[artifact]
    by_path = {p.partition("/")[2]: p for p in found.values()}
    if artifact in by_path:
        return by_path[artifact]
    by_name = {p.rpartition("/")[2]: p for p in found.values()}
    if artifact in by_name:  # a parity report names its candidate by file name
        return by_name[artifact]
    listed = ", ".join(sorted(by_path))
    raise UsageError(f"{recipe} builds no artifact {artifact!r}; it builds {listed}",
                     hint=f"name one of them, or a step: {', '.join(found)}")


def serve(path: Path, port: int, browse: bool) -> str:
    """Start Netron on 127.0.0.1 for `path`; the URL it answers on."""
    import logging

    import netron

    logging.getLogger("netron").setLevel(logging.WARNING)
    try:
        host, bound = netron.serve(str(path), None, ("127.0.0.1", port), browse=browse)
    except OSError as exc:
        raise UsageError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}",
                         hint="choose another --port, or --port 0 for any free one") from None
    return f"http://{host}:{bound}"


def wait() -> None:
    import netron

    netron.wait()


def check_node(path: Path, node: str) -> None:
    """UsageError unless `node` names a node (or a node's output) of the ONNX model at `path`."""
    import difflib

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
    if node not in names:
        close = difflib.get_close_matches(node, sorted(names), n=1)
        raise UsageError(f"{path.name} has no node {node!r}",
                         hint=f"did you mean {close[0]!r}?" if close else "the parity report names the node")


def show(loaded, root: Path, target: str, port: int, browse: bool, node: str | None) -> None:
    """`buildsys view`: serve the artifact `target` names (RECIPE[:ARTIFACT]) of the loaded recipe until interrupted."""
    _, _, artifact = target.partition(":")
    name = loaded.recipes[0].name
    rel = choose(loaded.graph, name, artifact or None)
    path = root / "out" / rel
    if not path.is_file():
        raise UsageError(f"out/{rel} is not built", hint=f"run buildsys build {name}")
    if node and path.suffix == ".onnx":
        check_node(path, node)
    url = serve(path, port, browse)
    print(f"serving out/{rel} at {url}", flush=True)
    if node:
        print(f"node {node}: find it with Ctrl+F in the view", flush=True)
    print("press Ctrl+C to stop", flush=True)
    wait()
