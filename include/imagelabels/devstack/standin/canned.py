"""Fixed, plausible Rekognition answers (a dog on the grass in a park, a sign, one face).

They have every field the real answers have (Instances with bounding boxes, Parents, Aliases,
Categories), so code that reads Rekognition's shapes is exercised without a model. Confidences
are spread over 55..99 so that MinConfidence and MaxLabels visibly cut the list.
"""

from __future__ import annotations

from typing import Any

LABEL_MODEL_VERSION = "3.0"
MODERATION_MODEL_VERSION = "7.0"
TEXT_MODEL_VERSION = "3.0"


def _box(left: float, top: float, width: float, height: float) -> dict[str, float]:
    return {"Width": width, "Height": height, "Left": left, "Top": top}


def _label(
    name: str,
    confidence: float,
    *,
    parents: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    instances: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "Name": name,
        "Confidence": confidence,
        "Instances": list(instances),
        "Parents": [{"Name": p} for p in parents],
        "Aliases": [{"Name": a} for a in aliases],
        "Categories": [{"Name": c} for c in categories],
    }


def _instance(confidence: float, box: dict[str, float]) -> dict[str, Any]:
    return {"BoundingBox": box, "Confidence": confidence, "DominantColors": []}


LABELS: list[dict[str, Any]] = [
    _label(
        "Dog",
        98.7,
        parents=("Animal", "Canine", "Mammal", "Pet"),
        categories=("Animals and Pets",),
        aliases=("Puppy",),
        instances=(_instance(98.7, _box(0.31, 0.42, 0.28, 0.39)),),
    ),
    _label("Animal", 98.7, categories=("Animals and Pets",)),
    _label("Canine", 98.7, parents=("Animal", "Mammal"), categories=("Animals and Pets",)),
    _label("Mammal", 98.7, parents=("Animal",), categories=("Animals and Pets",)),
    _label("Pet", 98.7, parents=("Animal",), categories=("Animals and Pets",)),
    _label("Grass", 93.4, parents=("Plant",), categories=("Plants and Flowers",)),
    _label("Plant", 93.4, categories=("Plants and Flowers",)),
    _label("Outdoors", 88.1, categories=("Nature and Outdoors",)),
    _label("Nature", 88.1, categories=("Nature and Outdoors",)),
    _label(
        "Person",
        79.6,
        categories=("Person Description",),
        aliases=("Human",),
        instances=(_instance(79.6, _box(0.66, 0.12, 0.17, 0.71)),),
    ),
    _label("Park", 71.2, parents=("Outdoors", "Nature"), categories=("Travel and Adventure",)),
    _label("Tree", 64.5, parents=("Plant",), categories=("Plants and Flowers",)),
    _label(
        "Ball",
        57.9,
        parents=("Sport",),
        categories=("Sports",),
        instances=(_instance(57.9, _box(0.12, 0.78, 0.05, 0.06)),),
    ),
    _label("Sport", 57.9, categories=("Sports",)),
]

IMAGE_PROPERTIES: dict[str, Any] = {
    "Quality": {"Brightness": 71.4, "Sharpness": 89.2, "Contrast": 63.0},
    "DominantColors": [
        {
            "Red": 92,
            "Green": 131,
            "Blue": 58,
            "HexCode": "#5C833A",
            "CSSColor": "olivedrab",
            "SimplifiedColor": "green",
            "PixelPercent": 46.3,
        },
    ],
    "Foreground": {"Quality": {"Brightness": 68.9, "Sharpness": 92.6}, "DominantColors": []},
    "Background": {"Quality": {"Brightness": 73.8, "Sharpness": 81.0}, "DominantColors": []},
}

# Safe by default: a moderation answer lists nothing unless configured (StandInConfig.canned).
MODERATION_LABELS: list[dict[str, Any]] = []


def _text(text: str, kind: str, ident: int, parent: int | None, confidence: float) -> dict[str, Any]:
    left, top, width, height = 0.18 + 0.2 * (ident - 1 if ident else 0), 0.07, 0.62, 0.05
    detection: dict[str, Any] = {
        "DetectedText": text,
        "Type": kind,
        "Id": ident,
        "Confidence": confidence,
        "Geometry": {
            "BoundingBox": _box(left, top, width, height),
            "Polygon": [
                {"X": left, "Y": top},
                {"X": left + width, "Y": top},
                {"X": left + width, "Y": top + height},
                {"X": left, "Y": top + height},
            ],
        },
    }
    if parent is not None:
        detection["ParentId"] = parent
    return detection


TEXT_DETECTIONS: list[dict[str, Any]] = [
    _text("DOG PARK", "LINE", 0, None, 99.1),
    _text("DOG", "WORD", 1, 0, 99.4),
    _text("PARK", "WORD", 2, 0, 98.8),
]


def _landmark(kind: str, x: float, y: float) -> dict[str, Any]:
    return {"Type": kind, "X": x, "Y": y}


FACE_DETAIL: dict[str, Any] = {
    "BoundingBox": _box(0.69, 0.15, 0.08, 0.14),
    "Confidence": 99.8,
    "Landmarks": [
        _landmark("eyeLeft", 0.71, 0.20),
        _landmark("eyeRight", 0.75, 0.20),
        _landmark("mouthLeft", 0.715, 0.26),
        _landmark("mouthRight", 0.745, 0.26),
        _landmark("nose", 0.73, 0.23),
    ],
    "Pose": {"Roll": -2.1, "Yaw": 6.4, "Pitch": 3.3},
    "Quality": {"Brightness": 76.2, "Sharpness": 83.1},
}

# Attributes added when DetectFaces asks for them (Attributes ["ALL"] or their names).
FACE_ATTRIBUTES: dict[str, tuple[str, Any]] = {
    "AGE_RANGE": ("AgeRange", {"Low": 26, "High": 34}),
    "SMILE": ("Smile", {"Value": True, "Confidence": 93.5}),
    "EYEGLASSES": ("Eyeglasses", {"Value": False, "Confidence": 97.9}),
    "SUNGLASSES": ("Sunglasses", {"Value": False, "Confidence": 99.2}),
    "GENDER": ("Gender", {"Value": "Female", "Confidence": 96.4}),
    "BEARD": ("Beard", {"Value": False, "Confidence": 95.1}),
    "MUSTACHE": ("Mustache", {"Value": False, "Confidence": 98.0}),
    "EYES_OPEN": ("EyesOpen", {"Value": True, "Confidence": 97.3}),
    "MOUTH_OPEN": ("MouthOpen", {"Value": True, "Confidence": 71.8}),
    "EMOTIONS": ("Emotions", [{"Type": "HAPPY", "Confidence": 91.7}, {"Type": "CALM", "Confidence": 5.2}]),
    "FACE_OCCLUDED": ("FaceOccluded", {"Value": False, "Confidence": 99.0}),
    "EYE_DIRECTION": ("EyeDirection", {"Yaw": 2.4, "Pitch": -4.1, "Confidence": 98.6}),
}
