"""Deterministic text for the embedded demo: the extraction task's rows and the base's pretraining text.

Pure Python (no torch): every function takes a seed and returns the same text for the same seed.
The task and the pretraining text share one world of entities (people, items, colours, cities,
days, quantities), so the base model can read the task's inputs before it is fine-tuned; only the
task's JSON schema and its instruction are never in the pretraining text.

The task — structured extraction, as users write it (instruction / input / output):
    instruction: "Extract the order as JSON."
    input:       "Maria ordered 3 blue lamps for delivery to Lisbon on Friday."
    output:      {"name": "Maria", "qty": 3, "item": "lamp", "color": "blue", "city": "Lisbon", "day": "Friday"}
What makes it learnable but not trivial: fourteen sentence shapes put the fields in different
orders, quantities are written as digits or words (the output always has the number), items are
plural in the text and singular in the output, and some sentences name a second city or day that
is not the delivery's (a distractor).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import TypedDict


def _words(text: str) -> list[str]:
    return text.split()


NAMES = _words(
    "Maria Tom Anna Luca Sofia Omar Yuki Ivan Chloe Pedro Nina Kofi Elena Jonas Amara Felix Hana Diego "
    "Lena Ravi Greta Malik Ines Oscar Priya Sven Zara Hugo Mei Tariq Clara Mateo Ada Emil Leila Bruno"
)
ITEMS = dict(  # singular -> plural
    pair.split(":")
    for pair in _words(
        "lamp:lamps chair:chairs table:tables mug:mugs box:boxes bench:benches shelf:shelves rug:rugs "
        "vase:vases clock:clocks pillow:pillows basket:baskets mirror:mirrors kettle:kettles glass:glasses "
        "brush:brushes candle:candles blanket:blankets plate:plates stool:stools"
    )
)
COLORS = _words("red blue green black white yellow grey orange purple brown pink silver")
CITIES = _words(
    "Lisbon Oslo Porto Berlin Madrid Dublin Vienna Prague Warsaw Athens Rome Paris Lyon Munich Zurich "
    "Geneva Milan Seville Krakow Riga Tallinn Helsinki Bergen Ghent Utrecht Bologna Valencia Nantes Leeds Cork"
)
DAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
NUMBER_WORDS = _words("zero one two three four five six seven eight nine ten eleven twelve")
MAX_QTY = 12

INSTRUCTION = "Route the order: answer with JSON (category, size, weekend)."

# The answer is *derived* from the order, not copied from it: the item's department, the order's size
# class from its quantity (digits or words), and whether the delivery day (not a distractor day) falls
# on a weekend. A 3.4M-parameter base pretrained for a minute cannot learn to copy arbitrary spans
# (measured: exact match 0 on a copy-the-fields version of this task), but it can learn these mappings.
CATEGORIES = {
    "lamp": "decor",
    "vase": "decor",
    "clock": "decor",
    "mirror": "decor",
    "candle": "decor",
    "chair": "furniture",
    "table": "furniture",
    "bench": "furniture",
    "shelf": "furniture",
    "stool": "furniture",
    "mug": "kitchen",
    "kettle": "kitchen",
    "glass": "kitchen",
    "plate": "kitchen",
    "brush": "kitchen",
    "rug": "textile",
    "pillow": "textile",
    "blanket": "textile",
    "basket": "textile",
    "box": "textile",
}
WEEKEND = ("Saturday", "Sunday")


def size_class(qty: int) -> str:
    """single (1), small (2-5) or bulk (6 and more)."""
    return "single" if qty == 1 else "small" if qty <= 5 else "bulk"


# Order sentences. {qty} is digits or a word; {items} is the plural (or singular when qty == 1);
# {other_city}/{other_day} are distractors that differ from the delivery's.
ORDER_TEMPLATES = (
    "{name} ordered {qty} {color} {items} for delivery to {city} on {day}.",
    "On {day}, {name} wants {qty} {color} {items} sent to {city}.",
    "Please ship {qty} {color} {items} to {name} in {city} by {day}.",
    "{name} from {other_city} asked for {qty} {color} {items}, to be delivered in {city} on {day}.",
    "Deliver {qty} {color} {items} to {city} on {day} for {name}.",
    "{name} needs {qty} {color} {items} in {city}; {day} is the delivery day.",
    "New order: {qty} {color} {items} for {name}, shipping to {city}, arriving {day}.",
    "{name} called on {other_day} to order {qty} {color} {items} for {city}, delivery on {day}.",
    "Send {name} {qty} {color} {items} on {day}. The address is in {city}.",
    "In {city}, {name} is waiting for {qty} {color} {items} on {day}.",
    "Could you get {qty} {color} {items} to {city} by {day}? They are for {name}.",
    "{qty} {color} {items} were ordered by {name} for delivery to {city} on {day}.",
    "{name} will pick up {qty} {color} {items} in {city} on {day}, not in {other_city}.",
    "Order for {name}: {qty} {color} {items}. Ship on {day} to {city}.",
)


def _qty_text(rng: random.Random, qty: int) -> str:
    return NUMBER_WORDS[qty] if rng.random() < 0.4 else str(qty)


class Order(TypedDict):
    """The fields of one order sentence."""

    name: str
    qty: int
    item: str  # singular; ITEMS[item] is its plural
    color: str
    city: str
    day: str


def order(rng: random.Random) -> tuple[str, Order]:
    """One order: (the sentence, the fields the JSON answer holds)."""
    fields: Order = {
        "name": rng.choice(NAMES),
        "qty": rng.randint(1, MAX_QTY),
        "item": rng.choice(list(ITEMS)),
        "color": rng.choice(COLORS),
        "city": rng.choice(CITIES),
        "day": rng.choice(DAYS),
    }
    template = rng.choice(ORDER_TEMPLATES)
    text = template.format(
        name=fields["name"],
        qty=_qty_text(rng, fields["qty"]),
        color=fields["color"],
        items=fields["item"] if fields["qty"] == 1 else ITEMS[fields["item"]],
        city=fields["city"],
        day=fields["day"],
        other_city=rng.choice([c for c in CITIES if c != fields["city"]]),
        other_day=rng.choice([d for d in DAYS if d != fields["day"]]),
    )
    return text[0].upper() + text[1:], fields


def route(fields: Order) -> dict[str, str | bool]:
    """What the answer holds: the routing derived from an order's fields."""
    return {
        "category": CATEGORIES[fields["item"]],
        "size": size_class(fields["qty"]),
        "weekend": fields["day"] in WEEKEND,
    }


def answer(fields: Order) -> str:
    """The expected output: compact JSON with a fixed key order."""
    return json.dumps(route(fields), ensure_ascii=False)


def task_rows(n_rows: int, seed: int) -> list[dict[str, str]]:
    """`n_rows` distinct instruction/input/output rows (the demo dataset), deterministic in `seed`."""
    rng = random.Random(f"demo-task-{seed}")
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n_rows:
        text, fields = order(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"instruction": INSTRUCTION, "input": text, "output": answer(fields)})
    return rows


# ----------------------------------------------------------------------------------------------
# Pretraining text: varied English-like sentences about the same world, JSON records of *other*
# schemas (so the base knows JSON syntax and the entity words), and short question/answer dialogues.

GENERAL_TEMPLATES = (
    "{name} lives in {city} and works there on {day}s.",
    "On {day}, {name} visited {city} with {qty} friends.",
    "The shop in {city} sold {qty} {color} {items} last week.",
    "{name} bought {qty} {color} {items} at the market in {city}.",
    "The weather in {city} was cold on {day}, so {name} stayed home.",
    "{name} likes {color} {items} more than {color2} ones.",
    "There are {qty} {items} in the kitchen and one {item} in the hall.",
    "Every {day}, the train from {city} to {city2} leaves at {hour} o'clock.",
    "{name} and {name2} met in {city} on {day} to talk about {items}.",
    "A {color} {item} costs {price} euros in {city}.",
    "{name} painted {qty} {items} {color} before {day}.",
    "The museum in {city} is closed on {day}.",
    "{name} sent a letter to {name2} in {city2}.",
    "{qty} people from {city} went to {city2} on {day}.",
    "The {item} in {name}'s room is {color}.",
    "{name} counted {qty} {color} {items} in the store.",
    "{name} said that {city} is beautiful in spring.",
    "The market in {city} opens on {day} and closes on {day2}.",
)
# Questions answered from a context sentence (the answer copies entities from the context).
CONTEXT_QA = (
    ("{name} lives in {city}.", "Where does {name} live?", "{name} lives in {city}."),
    ("The {item} in the hall is {color}.", "What colour is the {item}?", "The {item} is {color}."),
    ("{name} has {qty} {items}.", "How many {items} does {name} have?", "{name} has {qty} {items}."),
    ("The market in {city} opens on {day}.", "When does the market in {city} open?", "On {day}."),
    ("{name} went to {city} on {day}.", "Who went to {city}?", "{name} went to {city}."),
    ("{name} bought a {color} {item} in {city}.", "What did {name} buy?", "A {color} {item}."),
)
# Prose followed by the same facts as a JSON record (schemas other than the task's order schema).
PROSE_RECORDS = (
    ("{name} lives in {city} and is {age} years old.", ("name", "city", "age")),
    ("A {color} {item} costs {price} euros.", ("item", "color", "price")),
    ("{name} starts work at {hour} on {day}.", ("name", "day", "hour")),
    ('{name} wrote "The {color} {item}" in {year}.', ("title", "author", "year")),
)
RECORD_KEYS = (
    ("name", "city", "age"),
    ("city", "country", "population"),
    ("item", "color", "price"),
    ("name", "day", "hour"),
    ("title", "author", "year"),
)
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
EOS = "<|endoftext|>"
SPECIAL_TOKENS = (EOS, USER, ASSISTANT, END)


def chat_text(user: str, assistant: str) -> str:
    """The demo base's chat format, as its tokenizer's chat_template renders it."""
    return f"{USER}\n{user}\n{ASSISTANT}\n{assistant}{END}\n"


def _slots(rng: random.Random) -> dict:
    item = rng.choice(list(ITEMS))
    qty = rng.randint(2, MAX_QTY)
    return {
        "name": rng.choice(NAMES),
        "name2": rng.choice(NAMES),
        "city": rng.choice(CITIES),
        "city2": rng.choice(CITIES),
        "day": rng.choice(DAYS),
        "day2": rng.choice(DAYS),
        "color": rng.choice(COLORS),
        "color2": rng.choice(COLORS),
        "item": item,
        "items": ITEMS[item],
        "qty": _qty_text(rng, qty),
        "hour": rng.randint(1, 12),
        "price": rng.randint(2, 300),
        "age": rng.randint(18, 90),
        "year": rng.randint(1900, 2024),
    }


def _values(rng: random.Random, s: dict) -> dict:
    return {
        "name": s["name"],
        "city": s["city"],
        "age": s["age"],
        "country": "Europe",
        "population": rng.randint(10, 900) * 1000,
        "item": s["item"],
        "color": s["color"],
        "price": s["price"],
        "day": s["day"],
        "hour": s["hour"],
        "title": f"The {s['color']} {s['item']}",
        "author": s["name"],
        "year": s["year"],
    }


def _record(rng: random.Random) -> str:
    keys = rng.choice(RECORD_KEYS)
    values = _values(rng, _slots(rng))
    return json.dumps({k: values[k] for k in keys})


def document(rng: random.Random) -> str:
    """One pretraining document: prose, prose with its JSON record, JSON records, or a dialogue
    answered from its context."""
    kind = rng.random()
    if kind < 0.15:  # orders told as prose (never as the task's JSON)
        return " ".join(order(rng)[0] for _ in range(rng.randint(1, 3)))
    if kind < 0.45:
        sents = [rng.choice(GENERAL_TEMPLATES).format(**_slots(rng)) for _ in range(rng.randint(2, 5))]
        return " ".join(x[0].upper() + x[1:] for x in sents)
    if kind < 0.65:
        prose, keys = rng.choice(PROSE_RECORDS)
        s = _slots(rng)
        values = _values(rng, s)
        return prose.format(**s) + "\n" + json.dumps({k: values[k] for k in keys})
    if kind < 0.75:
        return "\n".join(_record(rng) for _ in range(rng.randint(1, 3)))
    context, q, a = rng.choice(CONTEXT_QA)
    s = _slots(rng)
    return chat_text(f"{context.format(**s)} {q.format(**s)}", a.format(**s)).rstrip("\n")


def corpus(n_docs: int, seed: int) -> Iterator[str]:
    """`n_docs` pretraining documents, deterministic in `seed` (different seeds = disjoint draws)."""
    rng = random.Random(f"demo-corpus-{seed}")
    for _ in range(n_docs):
        yield document(rng)
