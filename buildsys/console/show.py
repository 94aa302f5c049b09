"""What the commands print once the engine has answered: build results, status tables, explanations, the graph.

It imports only the standard library at its top: a no-op `build` or `status`
answered from the recorded answer prints through it.
"""
from __future__ import annotations

import json
import sys


def build(result, as_json: bool) -> None:
    """A finished build (engine.session.BuildResult): its steps and exit status, then what the trim removed."""
    build_result(result.steps(), result.code, [pr.render() for pr in result.problems], as_json)
    if result.trim_plan is not None:
        if result.trim_note:
            print(result.trim_note, file=sys.stderr)
        print(result.trim_plan, file=sys.stderr)


def build_result(steps: list[dict], code: int, problems: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"steps": steps, "exit": code, "problems": problems}, indent=1))
        return
    counts: dict[str, int] = {}
    for s in steps:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{len(steps)} steps: {summary or 'nothing to do'}", file=sys.stderr)
    from buildsys.core.verdict import Verdict  # not at the top, which imports the standard library only

    parity_failed = [s["id"] for s in steps if (verdict := Verdict.from_json(s)) is not None and not verdict]
    if parity_failed:
        print(f"parity failed: {', '.join(parity_failed)}", file=sys.stderr)


def status(rows: list[tuple[str, str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"steps": [{"id": s, "status": st, "reason": d} for s, st, d in rows]}, indent=1))
        return
    width = max((len(s) for s, _, _ in rows), default=10)
    lines = [f"{sid:<{width}}  {st:<11}  {detail}".rstrip() for sid, st, detail in rows]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")  # one write: hundreds of recipes print thousands of lines


def explanation(rows) -> None:
    """`explain`: each (step id, status word, detail, outcome); a stale step's reasons one per line."""
    for sid, word, detail, o in rows:
        if word == "up to date":
            print(f"{sid}: up to date")
        elif word == "stale":
            print(f"{sid}: would re-run because")
            for reason in o.reasons or (detail,):
                print(f"  - {reason}")
        else:
            print(f"{sid}: {word}: {detail}")
        if o.verdict is not None:
            print(f"  {o.verdict.said}")


def graph(g, form: str) -> None:
    """The dependency graph as text (one step and its inputs a line), Mermaid or Graphviz dot."""
    steps = g.steps.values()
    if form == "text":
        for s in steps:
            ups = ", ".join(sorted(s.upstream))
            print(f"{s.id}" + (f"  <- {ups}" if ups else ""))
    elif form == "mermaid":
        print("flowchart LR")
        ids = {s.id: f"s{i}" for i, s in enumerate(steps)}
        for s in steps:
            print(f'  {ids[s.id]}["{s.id}"]')
        for s in steps:
            for ref in s.inputs.values():
                print(f"  {ids[ref.partition('#')[0]]} --> {ids[s.id]}")
            for gate in s.gates:
                print(f"  {ids[gate]} -. gate .-> {ids[s.id]}")
    else:
        print("digraph buildsys {\n  rankdir=LR;")
        for s in steps:
            for ref in s.inputs.values():
                print(f'  "{ref.partition("#")[0]}" -> "{s.id}";')
            for gate in s.gates:
                print(f'  "{gate}" -> "{s.id}" [style=dashed, label=gate];')
        print("}")
