"""Prompts the pack was not built with (another concept than its defaults: graphic violence)."""

EXTRACTION_PAIRS = """a woman with blood on her face in a kitchen | a woman in a kitchen
a gory car crash on a highway | a car on a highway
a man bleeding on the floor of a warehouse | a man on the floor of a warehouse
a blood-soaked shirt hanging on a chair | a shirt hanging on a chair
a wounded soldier bleeding in the mud | a soldier in the mud"""

NEUTRAL = """a goldfish in a glass bowl
a wheat field at dusk
a tram passing through a square
a teapot on a stove
a canoe on a misty river
a parrot on a branch"""

HELD_OUT_PAIRS = [
    ("a bloodied boxer in a ring", "a boxer in a ring"),
    ("a gruesome wound on a hiker's leg", "a hiker's leg"),
    ("blood splattered across a white wall", "a white wall"),
    ("a gory scene in a hospital corridor", "a hospital corridor"),
    ("an injured farmer bleeding heavily in a barn", "a farmer in a barn"),
]

HELD_OUT_NEUTRAL = [
    "a lighthouse on a rocky coast",
    "a bicycle leaning on a fence",
    "pancakes with syrup on a plate",
    "a snowy pine forest",
    "a jazz band playing on a stage",
]
