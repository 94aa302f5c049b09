"""INT8 through buildsys: ONNX Runtime latency and accuracy of the quantized models, as medians.

    .venv/bin/python benchmarks/bench_int8.py                # build, then measure
    .venv/bin/python benchmarks/bench_int8.py --runs 40      # more timed runs per figure

Builds two recipes with the installed `buildsys` in benchmarks/.work/int8 (the
repository's recipes/, models/ and data/ copied there):

- ResNet-18 (`models.resnet:resnet18`, random init, opset 18) with an int8 target,
  calibrated on seeded uniform data: ONNX Runtime fp32 (`model.sim.onnx`) against
  int8 (`model.int8.onnx`, the onnxruntime flavour) at batch 1 and batch 8,
  224x224, and the int8 model's cosine similarity to PyTorch eager.
- `recipes/efficientnet_lite0_int8.yaml` (pretrained weights, calibrated on the 8
  photographs of data/calibration/): top-1 agreement of int8 with fp32 on those
  photographs and on the other photographs scikit-image ships (when installed),
  each also mirrored.

Every session has 2 intra-op threads and no spinning (the steps' own settings).
Latencies are medians over `--runs` runs, the models timed in turn within each
round so that a busy machine slows all of them alike.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work" / "int8"
BUILDSYS = [str(Path(sys.executable).with_name("buildsys"))]
THREADS = 2
RESNET_INT8 = """
calibration: {data: {kind: uniform, low: 0.0, high: 1.0}, samples: 32, method: minmax}
targets:
  - {backend: onnxruntime, precision: fp32}
  - {backend: onnxruntime, precision: int8}
"""
# Photographs bundled with scikit-image beyond the eight of data/calibration/ (held out).
HELD_OUT = ["immunohistochemistry", "retina", "moon", "clock", "grass", "gravel", "cell"]

sys.path.insert(0, str(REPO))


def workspace() -> Path:
    if WORK.exists():
        shutil.rmtree(WORK / "recipes", ignore_errors=True)
    (WORK / "recipes").mkdir(parents=True, exist_ok=True)
    for folder in ("models", "data"):
        shutil.copytree(REPO / folder, WORK / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("_base.yaml", "efficientnet_lite0_int8.yaml"):
        shutil.copy(REPO / "recipes" / name, WORK / "recipes" / name)
    resnet = (REPO / "recipes" / "resnet18.yaml").read_text()
    resnet = resnet.replace("batch:  {min: 1, opt: 2, max: 4}", "batch:  {min: 1, opt: 2, max: 8}")
    (WORK / "recipes" / "resnet18.yaml").write_text(resnet + RESNET_INT8)
    return WORK


def build(ws: Path) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([*BUILDSYS, "-C", str(ws), "build", "--json", "resnet18", "efficientnet_lite0_int8"],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"buildsys build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    steps = json.loads(proc.stdout)["steps"]
    print(f"build: {time.perf_counter() - t0:.0f}s")
    for s in steps:
        if s["id"].split(":")[1].startswith(("calibrate", "quantize", "parity[int8]")):
            print(f"  {s['id']:45s} {s['state']:8s} {s['seconds']:6.1f}s  {s.get('summary', '')}")


def session(path: Path, simulate: bool = False):
    import onnxruntime as ort

    from buildsys.steps.sessions import cpu_session, session_options

    so = session_options(THREADS)
    if simulate:  # Q/DQ evaluated as written (no integer kernels): the arithmetic a Q/DQ model specifies
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return cpu_session(path, THREADS, so)


def latencies(models: dict[str, Path], x, runs: int, stat=statistics.median, clock=time.perf_counter
              ) -> dict[str, float]:
    sessions = {name: session(p) for name, p in models.items()}
    name0 = next(iter(sessions))
    feed = {sessions[name0].get_inputs()[0].name: x}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feed)
    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            t0 = clock()
            s.run(None, feed)
            times[name].append(clock() - t0)
    return {name: stat(t) * 1e3 for name, t in times.items()}


def cosine(a, b) -> list[float]:
    import numpy as np

    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    return list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def softmax(z):
    import numpy as np

    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def pytorch_outputs(ws: Path, recipe: str, x):
    import torch

    from buildsys.recipe import load_recipe
    from buildsys.recipe.resolve import model_params
    from buildsys.steps.modelload import load_model

    torch.set_num_threads(THREADS)
    r = load_recipe(ws / "recipes" / f"{recipe}.yaml", ws)
    model, _ = load_model(model_params(r), ws, {})
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def bench_resnet(ws: Path, runs: int) -> None:
    import numpy as np

    out = ws / "out" / "resnet18"
    models = {"fp32": out / "model.sim.onnx", "int8": out / "model.int8.onnx"}
    print("\nResNet-18, ONNX Runtime CPU, 2 threads, 224x224 (median ms)")
    print(f"  {'batch':>5}  {'fp32':>8}  {'int8':>8}  speed-up")
    for batch, n in ((1, runs), (8, max(5, runs // 3))):
        x = np.random.default_rng(batch).uniform(0, 1, (batch, 3, 224, 224)).astype(np.float32)
        ms = latencies(models, x, n)
        print(f"  {batch:>5}  {ms['fp32']:8.1f}  {ms['int8']:8.1f}  {ms['fp32'] / ms['int8']:.2f}x")
    x = np.random.default_rng(8).uniform(0, 1, (8, 3, 224, 224)).astype(np.float32)
    ref = pytorch_outputs(ws, "resnet18", x)
    got = session(models["int8"]).run(None, {"input": x})[0]
    cos = cosine(got, ref)
    top1 = float((got.argmax(1) == ref.argmax(1)).mean())
    parity = json.loads((out / "parity" / "int8.json").read_text())
    points = {r["point"]: r["outputs"]["logits"]["cosine"] for r in parity["results"]}
    print(f"  int8 vs PyTorch, 8 uniform inputs: cosine min {min(cos):.5f}, median {statistics.median(cos):.5f}; "
          f"top-1 agreement {top1:.0%}")
    print("  int8 vs PyTorch, parity[int8] (min/opt/max): "
          + ", ".join(f"{p} {c:.5f}" for p, c in points.items()))


def photographs(tmp: Path) -> tuple[list[Path], list[Path]]:
    """(calibration photographs, held-out photographs) as files."""
    calib = sorted((REPO / "data" / "calibration").iterdir())
    held = []
    try:
        import skimage.data
        from PIL import Image
    except ImportError:
        print("  (scikit-image is not installed, so no held-out photographs: "
              "`.venv/bin/pip install scikit-image` adds them)")
        return calib, held
    for name in HELD_OUT:
        path = tmp / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path)
        held.append(path)
    path = tmp / "motorcycle.png"
    Image.fromarray(skimage.data.stereo_motorcycle()[0]).save(path)
    held.append(path)
    return calib, held


def bench_efficientnet(ws: Path, runs: int) -> None:
    import numpy as np

    from buildsys.steps.calibrate import imagenet_image

    out = ws / "out" / "efficientnet_lite0_int8"
    print("\nEfficientNet-Lite0 (pretrained), int8 vs fp32 ONNX on photographs, each also mirrored")
    with tempfile.TemporaryDirectory() as tmp:
        calib, held = photographs(Path(tmp))
        views = {}
        for group, paths in (("calibration", calib), ("held out", held)):
            if not paths:
                continue
            arrays = [imagenet_image(p, 224, 224, Path(tmp)) for p in paths]
            views[group] = np.ascontiguousarray(np.stack(arrays + [a[:, :, ::-1] for a in arrays]), dtype=np.float32)
    fp32 = session(out / "model.sim.onnx")
    candidates = {"int8 (onnxruntime flavour)": session(out / "model.int8.onnx"),
                  "int8 tensorrt flavour, Q/DQ simulated": session(out / "model.int8.tensorrt.onnx", simulate=True)}
    for label, s in candidates.items():
        for group, x in views.items():
            if not len(x):
                continue
            ref = fp32.run(None, {"input": x})[0]
            got = s.run(None, {"input": x})[0]
            agree = (got.argmax(1) == ref.argmax(1))
            cos = cosine(got, ref)
            sure = softmax(ref).max(1) >= 0.5  # photographs fp32 itself is sure about
            print(f"  {label:40s} {group:12s} {len(x):3d} images: top-1 agreement {agree.mean():6.1%} "
                  f"({int(agree.sum())}/{len(x)}; {int(agree[sure].sum())}/{int(sure.sum())} where fp32 p>=0.5), "
                  f"cosine median {statistics.median(cos):.4f} min {min(cos):.4f}")
    x = views["calibration"][:1]
    ms = latencies({"fp32": out / "model.sim.onnx", "int8": out / "model.int8.onnx"}, x, runs)
    print(f"  latency batch 1, 224x224: fp32 {ms['fp32']:.1f} ms, int8 {ms['int8']:.1f} ms "
          f"({ms['fp32'] / ms['int8']:.2f}x)")


def held_out_views(paths: list[Path], per_image: int = 6, seed: int = 1234):
    """Views the calibration never saw: seeded random crops (60-90% of the short side), mirrors, brightness."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    from buildsys.steps.inputs import IMAGENET_MEAN as _IMAGENET_MEAN
    from buildsys.steps.inputs import IMAGENET_STD as _IMAGENET_STD

    rng = np.random.default_rng(seed)
    views = []
    for path in paths:
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
        for _ in range(per_image):
            w, h = img.size
            side = int(min(w, h) * rng.uniform(0.6, 0.9))
            left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            view = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                view = ImageOps.mirror(view)
            view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.7, 1.3)))
            arr = (np.asarray(view, dtype=np.float32) / 255.0 - np.asarray(_IMAGENET_MEAN, dtype=np.float32)) \
                / np.asarray(_IMAGENET_STD, dtype=np.float32)
            views.append(arr.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(views), dtype=np.float32)


def bench_flavours(ws: Path, runs: int) -> None:
    """EfficientNet-Lite0: each CPU class, with and without the recipe's fp32 nodes, on held-out views."""
    import numpy as np

    from buildsys.steps.quantize import flavour_for, quantize

    out = ws / "out" / "efficientnet_lite0_int8"
    calib = json.loads((out / "calib.json").read_text())
    fallback = out / "fallback.json"
    kept = json.loads(fallback.read_text())["kept_fp32"] if fallback.exists() else []
    from buildsys.recipe import load_recipe

    pinned = list(load_recipe(ws / "recipes" / "efficientnet_lite0_int8.yaml", ws).quantization.exclude)
    exclude = tuple(pinned + kept)
    x = held_out_views(sorted((REPO / "data" / "calibration").iterdir()))
    fp32 = session(out / "model.sim.onnx")
    ref = np.concatenate([fp32.run(None, {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)])
    decided = np.sort(softmax(ref), 1)
    decided = (decided[:, -1] - decided[:, -2]) >= 0.1
    print(f"\nEfficientNet-Lite0 int8 vs fp32 ONNX on {len(x)} held-out views of the 8 calibration photographs "
          f"(seeded crops, mirrors, brightness; fp32 decided on {int(decided.sum())})")
    # Latency at batch 1: the fastest of `runs` interleaved runs, which a busy shared machine
    # disturbs least, then the ratio of medians; and the ratio of the least CPU time per run (both
    # threads; no spinning), which other processes competing for the cores inflate least.
    print(f"  {'flavour':6} {'fp32 nodes':>10}  {'top-1':>6}  {'decided':>8}  {'cos med':>7}  {'cos min':>7}  "
          f"{'int8 ms':>7}  {'fp32 ms':>7}  speed-up: best of {runs}; median; CPU time")
    with tempfile.TemporaryDirectory() as tmp:
        for cpu in ("vnni", "avx2"):
            for ex in ((), exclude) if exclude else ((),):
                folder = Path(tempfile.mkdtemp(dir=tmp))
                quantize(out / "model.sim.onnx", calib, flavour_for("onnxruntime", cpu), True, folder / "m.onnx",
                         folder, ex)
                s = session(folder / "m.onnx")
                got = np.concatenate([s.run(None, {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)])
                agree = got.argmax(1) == ref.argmax(1)
                cos = cosine(got, ref)
                pair = {"fp32": out / "model.sim.onnx", "int8": folder / "m.onnx"}
                ms = latencies(pair, x[:1], runs, stat=min)
                med = latencies(pair, x[:1], max(5, runs // 4))
                work = latencies(pair, x[:1], runs, stat=min, clock=time.process_time)
                print(f"  {cpu:6} {len(ex):>10}  {agree.mean():6.1%}  {agree[decided].mean():8.1%}  "
                      f"{statistics.median(cos):7.4f}  {min(cos):7.4f}  {ms['int8']:7.2f}  {ms['fp32']:7.2f}  "
                      f"{ms['fp32'] / ms['int8']:.2f}x; {med['fp32'] / med['int8']:.2f}x; "
                      f"{work['fp32'] / work['int8']:.2f}x")
    if exclude:
        print(f"  fp32 nodes: {', '.join(exclude)}")


# How the sample recipe quantized EfficientNet-Lite0 before (the "before" row): ranges from the
# centre crops of all 8 photographs alone, one depthwise convolution kept in fp32, and each Pad
# run in float between a DequantizeLinear and a QuantizeLinear (no integer_pad).
BEFORE_EXCLUDE = ("/_blocks.8/_depthwise_conv/Conv",)


def main_int8(out: Path) -> Path:
    """The int8 model the build's parity judged and its engine is made of (fallback's, when it ran)."""
    fallback = out / "model.int8.fallback.onnx"
    return fallback if fallback.exists() else out / "model.int8.onnx"


def before_efficientnet(ws: Path, folder: Path) -> Path:
    """EfficientNet-Lite0 int8 as the sample recipe made it before: centre crops of all 8 photographs, one node fp32."""
    import numpy as np

    from buildsys.steps.calibrate import collect_ranges, imagenet_image, stage_model
    from buildsys.steps.quantize import flavour_for, quantize

    fp32 = ws / "out" / "efficientnet_lite0_int8" / "model.sim.onnx"
    photos = sorted((REPO / "data" / "calibration").iterdir())
    batches = [(lambda g=photos[i:i + 2]: {"input": np.stack([imagenet_image(p, 224, 224, REPO) for p in g])})
               for i in range(0, len(photos), 2)]
    (folder / "calib").mkdir()
    ranges = collect_ranges(stage_model(fp32, folder / "calib"), "minmax", batches, THREADS, folder / "calib")
    calib = {"format": 1, "qat": False, "method": "minmax", "random_data": False,
             "tensors": {k: {"min": lo, "max": hi} for k, (lo, hi) in ranges.items()}}
    (folder / "q").mkdir()
    before = dataclasses.replace(flavour_for("onnxruntime", "vnni"), integer_pad=False)
    quantize(fp32, calib, before, True, folder / "before.onnx", folder / "q", BEFORE_EXCLUDE)
    return folder / "before.onnx"


def op_profile(path: Path, feeds: dict, runs: int = 20) -> dict[str, tuple[float, int]]:
    """ONNX Runtime's profiler at 1 thread: op type -> (ms per run, nodes), over `runs` runs."""
    import collections

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    time, nodes = collections.Counter(), collections.defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            time[op] += e["dur"]
            nodes[op].add(e["name"])
    return {op: (t / runs / 1e3, len(nodes[op])) for op, t in time.most_common()}


def fmt_profile(prof: dict[str, tuple[float, int]]) -> str:
    total = sum(t for t, _ in prof.values())
    int8 = sum(t for op, (t, _) in prof.items() if op.startswith("QLinear") or op in ("QGemm", "MatMulInteger"))
    qdq = sum(t for op, (t, _) in prof.items() if op in ("QuantizeLinear", "DequantizeLinear"))
    floats = sum(t for op, (t, _) in prof.items() if op in ("Conv", "FusedConv", "Gemm", "MatMul"))
    top = ", ".join(f"{op} {t:.2f} ms ({n})" for op, (t, n) in list(prof.items())[:7])
    return (f"int8 kernels {int8:.2f} ms, float conv/gemm {floats:.2f} ms, Q/DQ {qdq:.2f} ms of {total:.2f} ms "
            f"(profiled); top: {top}")


def bench_engines(ws: Path, seconds: float) -> None:
    """fp32 engine, fp32 sim and int8 engine of both models, batch 1, 224x224: CPU time per run at 1 thread."""
    import numpy as np

    from buildsys.steps.latency import compare, ort_format
    from buildsys.steps.reference import read_reference

    eff = ws / "out" / "efficientnet_lite0_int8"
    manifest, arrays = read_reference(eff / "reference.npz")
    photo = next(arrays[e["inputs"]["input"]] for e in manifest if e["point"] == "opt")[:1]
    noise = np.random.default_rng(1).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    print("\nint8 engine against the fp32 engine, batch 1, 224x224: process CPU time per run at 1 intra-op thread, "
          "median (min) of interleaved runs (steps.latency, as parity[int8] measures)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = before_efficientnet(ws, tmp)
        for name, x, extra in (("resnet18", noise, {}), ("efficientnet_lite0_int8", photo, {"int8 engine, before": before})):
            out = ws / "out" / name
            int8 = main_int8(out)
            engines = {"fp32 engine": ort_format(out / "model.sim.onnx", tmp / f"{name}-fp32.ort", 1),
                       "fp32 sim (model.sim.onnx)": out / "model.sim.onnx",
                       **{k: ort_format(v, tmp / f"{name}-before.ort", 1) for k, v in extra.items()},
                       f"int8 engine ({int8.name})": ort_format(int8, tmp / f"{name}-int8.ort", 1)}
            res = compare(engines, {"input": np.ascontiguousarray(x)}, THREADS, budget_s=seconds, min_runs=60)
            base = res["cpu_ms"]["fp32 engine"]["median"]
            print(f"\n  {name}: {res['runs']} runs each")
            print(f"  | artifact | CPU time, median (min) | vs fp32 engine | wall at {THREADS} threads, median |")
            print("  |---|---|---|---|")
            for k in engines:
                c, w = res["cpu_ms"][k], res["wall_ms"][k]
                print(f"  | {k} | {c['median']:.2f} ms ({c['min']:.2f}) | {base / c['median']:.2f}x | {w['median']:.2f} ms |")
            for k, path in engines.items():
                if k.startswith("int8"):
                    print(f"  profile of {k}: {fmt_profile(op_profile(path, {'input': np.ascontiguousarray(x)}))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per latency figure (batch 8: a third)")
    ap.add_argument("--no-build", action="store_true", help="measure what benchmarks/.work/int8 holds")
    ap.add_argument("--only-views", action="store_true",
                    help="only EfficientNet-Lite0's CPU classes and fp32 fallback on held-out views")
    ap.add_argument("--only-engines", action="store_true",
                    help="only the engine table: fp32 engine, fp32 sim, int8 engine (before and after) of both models")
    ap.add_argument("--seconds", type=float, default=30.0, help="measuring time per model in the engine table")
    args = ap.parse_args()
    ws = WORK if args.no_build else workspace()
    if not args.no_build:
        build(ws)
    bench_engines(ws, args.seconds)
    if args.only_engines:
        return
    if not args.only_views:
        bench_resnet(ws, args.runs)
        bench_efficientnet(ws, args.runs)
    bench_flavours(ws, args.runs)


if __name__ == "__main__":
    main()
