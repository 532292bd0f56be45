"""Add the pooled image features of EfficientNet-Lite0 as a second output of its ONNX graph.

The committed ``efficientnet-lite0.onnx`` was exported with one output, ``logits`` ``[N, 1000]``.
Visual similarity (:mod:`imagelabels.search.similarity`) needs the 1,280 values the classifier head reads:
the global average pool of the last feature map, flattened (``/Reshape_output_0``, the input of
the final ``Gemm``). This script exposes that tensor as a second graph output, ``features``
``[N, 1280]``, through an ``Identity`` node; nothing else in the graph changes, so the logits stay
bit-identical and one session run gives both.

Run it in a throwaway venv (``onnx`` never enters the project's venv)::

    python3 -m venv /tmp/onnx-venv
    /tmp/onnx-venv/bin/pip install onnx==1.23.2 onnxruntime==1.31.1 numpy pillow
    /tmp/onnx-venv/bin/python scripts/models/add_feature_output.py

It rewrites ``include/imagelabels/labelers/models/efficientnet-lite0.onnx`` in place (or
``--output``), runs ``onnx.checker``, then compares the logits of the old and new graphs on every
photo of ``sample_images/`` (single images and a batch) and fails when any differs by more than
1e-6. Running it on a graph that already has ``features`` does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "include" / "imagelabels" / "labelers" / "models" / "efficientnet-lite0.onnx"
SAMPLES = ROOT / "sample_images"
FEATURES = "features"
MAX_ABS_DIFF = 1e-6


def pooled_tensor(graph: onnx.GraphProto) -> str:
    """The input of the final Gemm (the flattened global average pool)."""
    gemms = [node for node in graph.node if node.op_type == "Gemm" and "logits" in node.output]
    if len(gemms) != 1:
        raise SystemExit(f"expected one Gemm producing 'logits', found {len(gemms)}")
    pooled = gemms[0].input[0]
    producers = {output: node for node in graph.node for output in node.output}
    chain = []
    name = pooled
    while name in producers and len(chain) < 3:
        chain.append(producers[name].op_type)
        name = producers[name].input[0]
    if "GlobalAveragePool" not in chain:
        raise SystemExit(f"the Gemm's input {pooled!r} does not come from a GlobalAveragePool ({chain})")
    return pooled


def add_output(model: onnx.ModelProto) -> bool:
    graph = model.graph
    if any(output.name == FEATURES for output in graph.output):
        return False
    pooled = pooled_tensor(graph)
    width = next(i for i in graph.initializer if i.name == "_fc.weight").dims[1]
    graph.node.append(helper.make_node("Identity", [pooled], [FEATURES], name="/features/Identity"))
    graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", width]))
    return True


def preprocess(path: Path, size: int = 224) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    scale = (size + 32) / min(image.size)
    resized = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    image = image.resize(resized, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    array = (np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--output", type=Path, help="default: rewrite --model in place")
    args = parser.parse_args()
    original = args.model.read_bytes()
    model = onnx.load_from_string(original)
    if not add_output(model):
        print(f"{args.model} already has a '{FEATURES}' output; nothing to do")
        return 0
    onnx.checker.check_model(model)
    updated = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    before = ort.InferenceSession(original, options, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(updated, options, providers=["CPUExecutionProvider"])
    photos = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    batches = [preprocess(p)[np.newaxis] for p in photos] + [np.stack([preprocess(p) for p in photos])]
    worst = 0.0
    for batch in batches:
        (old,) = before.run(["logits"], {"images": batch})
        new, features = after.run(["logits", FEATURES], {"images": batch})
        worst = max(worst, float(np.abs(old - new).max()))
        assert features.shape == (batch.shape[0], 1280), features.shape
        assert np.isfinite(features).all()
        assert (features >= 0).all()  # ReLU6 before the pool
    print(f"{len(photos)} photos + a batch of {len(photos)}: max |logits before - after| = {worst:.3g}")
    if worst > MAX_ABS_DIFF:
        print(f"logits changed by more than {MAX_ABS_DIFF}", file=sys.stderr)
        return 1
    target = args.output or args.model
    target.write_bytes(updated)
    print(f"wrote {target} ({len(updated):,} bytes), sha256 {hashlib.sha256(updated).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
