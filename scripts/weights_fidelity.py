"""What each weight layout costs in quality: greedy agreement with the original file, and a short QA set.

For each --weights layout (the original file first), on the llama.cpp engine in-process:
- agreement: 60 prompts, greedy, --max-tokens each; per prompt the share of tokens generated before the first
  token that differs from the original's (1.0 = identical), and how many prompts are identical throughout;
- forced: the same 60 prompts, each layout fed the original's own greedy text; the share of positions where the
  layout's most likely next token is the original's. Free-running text parts at the first near-tie and never
  meets again; this counts each position on its own;
- QA: 30 short questions of our own, greedy, 24 tokens; an answer counts when it holds an accepted word;
- JSON: 48 requests for a JSON object under the json_object grammar, greedy, 120 tokens; counts the objects that
  close within them.
Speed is measured by scripts/bench_compare.py, against llama-server, not here.

    python scripts/weights_fidelity.py [--layouts original,q4_0,q8_0,iq4_nl,f16] [--json FILE]
    python scripts/weights_fidelity.py --layouts original,q4_0/q8_0,q4_0/q5_0,q4_0/iq4_nl,q4_0/q4_0 --json FILE
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.structured import grammar_from
from slmserve.models import weights
from slmserve.models.registry import resolve_model_path
from slmserve.settings import Settings

TOPICS = ["the sea", "a cat", "Paris", "rain", "computers", "music", "a forest", "the moon", "bread", "trains"]
ASKS = [
    "Write a paragraph about {}.",
    "Give three facts about {}.",
    "Explain {} to a child.",
    "Write a short poem about {}.",
    "What is the most interesting thing about {}?",
    "Describe {} in two sentences.",
]
PROMPTS = [ask.format(topic) for topic in TOPICS for ask in ASKS]  # 60

# (question, accepted words: any one, matched as a whole word, any case)
QA = [
    ("What is the capital of France?", ["Paris"]),
    ("What is the capital of Japan?", ["Tokyo"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("What is the capital of Germany?", ["Berlin"]),
    ("What is the capital of the United Kingdom?", ["London"]),
    ("What is the capital of Spain?", ["Madrid"]),
    ("What is 2 + 2?", ["4", "four"]),
    ("What is 10 times 10?", ["100", "hundred"]),
    ("How many days are in a week?", ["7", "seven"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many continents are there?", ["7", "seven"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color are bananas when they are ripe?", ["yellow"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the chemical symbol for water?", ["H2O"]),
    ("What gas do plants absorb from the air?", ["carbon dioxide", "CO2"]),
    ("What is the freezing point of water in Celsius?", ["0", "zero"]),
    ("Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "Vinci"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the tallest mountain in the world?", ["Everest"]),
    ("What animal is known as the king of the jungle?", ["lion"]),
    ("What do bees make?", ["honey"]),
    ("What is the first letter of the English alphabet?", ["A"]),
    ("In which country are the pyramids of Giza?", ["Egypt"]),
    ("What language is spoken in Brazil?", ["Portuguese"]),
    ("How many hours are in a day?", ["24", "twenty-four"]),
    ("What is the boiling point of water in Celsius?", ["100", "hundred"]),
]


# JSON: asked for an object under response_format json_object (the grammar holds the syntax), greedy, 120 tokens;
# counts when the object closes before the limit. A small model that loops ("species": ..., "species": ...) never
# closes it: that, not the syntax, is what the layout can change.
JSON_ASKS = [
    "Describe a cat as a JSON object with name and age.",
    "Give a JSON object describing a dog.",
    "Return a JSON object with a city and its country.",
    "Describe a book as JSON with title and author.",
    "Give a JSON object for a person with a name and an email.",
    "Return a JSON object with the keys color and size for a red ball.",
    "Describe a car as JSON with make, model and year.",
    "Give a JSON object with a product name and its price.",
    "Return a JSON object describing today's weather.",
    "Describe a movie as a JSON object with title and year.",
    "Give a JSON object for a recipe with a name and a list of ingredients.",
    "Return a JSON object with a planet's name and its number of moons.",
    "Give a JSON object describing a laptop with brand and memory.",
    "Return a JSON object for a song with title and artist.",
    "Describe a house as a JSON object with rooms and color.",
    "Give a JSON object with a country and its capital.",
    "Return a JSON object describing a bird with name and wingspan.",
    "Describe a student as JSON with name, grade and school.",
    "Give a JSON object for an order with an id and a total.",
    "Return a JSON object with a fruit and its color.",
    "Describe a tree as a JSON object with species and height.",
    "Give a JSON object describing a phone with model and price.",
    "Return a JSON object for a user with a username and an age.",
    "Describe a restaurant as JSON with name and cuisine.",
    "Give a JSON object with a language and the year it was created.",
    "Return a JSON object describing a river with name and length.",
    "Describe a bicycle as a JSON object with color and gears.",
    "Give a JSON object for an event with a name and a date.",
    "Return a JSON object with a month and its number of days.",
    "Describe a teacher as JSON with name and subject.",
    "Give a JSON object describing a mountain with name and height.",
    "Return a JSON object for a flight with a number and a destination.",
    "Describe a game as a JSON object with title and players.",
    "Give a JSON object with an animal and its sound.",
    "Return a JSON object describing a shirt with size and color.",
    "Describe a company as JSON with name and founding year.",
    "Give a JSON object for a hotel with a name and a star rating.",
    "Return a JSON object with a number and its square.",
    "Describe a flower as a JSON object with name and color.",
    "Give a JSON object describing a train with a line and a speed.",
    "Return a JSON object for a contact with a name and a phone number.",
    "Describe a painting as JSON with title and painter.",
    "Give a JSON object with a sport and the number of players on a team.",
    "Return a JSON object describing a lake with name and depth.",
    "Describe a camera as a JSON object with brand and megapixels.",
    "Give a JSON object for a task with a title and a done flag.",
    "Return a JSON object with an element's name and its symbol.",
    "Describe a cake as JSON with flavor and number of layers.",
]
JSON_TOKENS = 120


def closed_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def correct(answer: str, accepted: list[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", answer, re.IGNORECASE) for word in accepted)


def settings_for(layout: str, scratch: Path) -> tuple[Settings, str | None]:
    """(what loads `layout`, its label or None for the engine's own). TARGET/HEAD, e.g. q4_0/q8_0: the bundled
    file requantized to TARGET with its token embeddings / LM head in HEAD, made into scratch."""
    common = {"max_running": 32, "ctx_size": 32 * 512}
    if "/" not in layout:
        return Settings(weights=layout, **common), None
    target, head = layout.split("/")
    out = scratch / f"{target}-head_{head}.gguf"
    weights.requantize(resolve_model_path(Settings().model), out, target, head)
    return Settings(model=str(out), weights="original", **common), f"{target}, head {head}"


def run_layout(layout: str, max_tokens: int, reference: list[list[int]] | None, scratch: Path) -> dict:
    settings, label = settings_for(layout, scratch)
    model = load_model(settings)
    enc = lambda text: model.tokenizer.encode(  # noqa: E731
        model.chat_template.render([{"role": "user", "content": text}]), add_special=False
    )
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    prompts = [enc(p) for p in PROMPTS]
    tokens = model.engine.generate({str(i): ids for i, ids in enumerate(prompts)}, greedy)
    qa_params = SamplingParams(max_tokens=24, temperature=0)
    answers = model.engine.generate({str(i): enc(q) for i, (q, _) in enumerate(QA)}, qa_params)
    json_params = SamplingParams(max_tokens=JSON_TOKENS, temperature=0, grammar=grammar_from("json_object"))
    objects = model.engine.generate({str(i): enc(ask) for i, ask in enumerate(JSON_ASKS)}, json_params)
    json_texts = [model.tokenizer.decode(objects[str(i)]) for i in range(len(JSON_ASKS))]
    reference = reference or [tokens[str(i)] for i in range(len(PROMPTS))]
    hits = 0  # scored last: score() clears the KV cache behind the engine's back (its slots' cached prefixes)
    for ids, want in zip(prompts, reference, strict=True):
        hits += int((model.runner.score(ids + want[:-1], len(ids) - 1).argmax(1) == want).sum())
    texts = [model.tokenizer.decode(answers[str(i)]) for i in range(len(QA))]
    out = {
        "layout": layout,
        "weights": label or model.weights,
        "tokens": [tokens[str(i)] for i in range(len(PROMPTS))],
        "forced": hits / sum(len(t) for t in reference),
        "qa_score": sum(correct(t, ok) for t, (_, ok) in zip(texts, QA, strict=True)),
        "qa_answers": texts,
        "json_score": sum(closed_object(t) for t in json_texts),
        "json_answers": json_texts,
    }
    model.close()
    return out


def agreement(ref: list[list[int]], got: list[list[int]]) -> tuple[float, int]:
    """(mean share of tokens before the first difference, prompts identical throughout)."""
    shares = []
    for a, b in zip(ref, got, strict=True):
        first = next((k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        shares.append(first / len(a))
    return sum(shares) / len(shares), sum(s == 1.0 for s in shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layouts",
        default="original,q4_0,q8_0,iq4_nl,f16",
        help="--weights values, or TARGET/HEAD (e.g. q4_0/q8_0): TARGET with the embeddings / LM head in HEAD",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=Path("docs/bench/weights_fidelity.json"))
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    assert layouts[0] == "original", "the original file comes first: it is the reference"
    with tempfile.TemporaryDirectory() as scratch:
        results = [run_layout(layouts[0], args.max_tokens, None, Path(scratch))]
        ref = results[0]["tokens"]
        results += [run_layout(layout, args.max_tokens, ref, Path(scratch)) for layout in layouts[1:]]
    print(f"\n{len(PROMPTS)} prompts x {args.max_tokens} greedy tokens; QA: {len(QA)} questions\n")
    print("| weights | agreement with the original | identical prompts | forced agreement | QA score | JSON closed |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for r in results:
        share, same = agreement(ref, r["tokens"])
        rows.append({**{k: v for k, v in r.items() if k != "tokens"}, "agreement": share, "identical": same})
        forced, qa = r["forced"], r["qa_score"]
        closed = f"{r['json_score']}/{len(JSON_ASKS)}"
        print(f"| {r['weights']} | {share:.3f} | {same}/{len(PROMPTS)} | {forced:.3f} | {qa}/{len(QA)} | {closed} |")
    questions = [q for q, _ in QA]
    doc = {"prompts": len(PROMPTS), "max_tokens": args.max_tokens, "qa_questions": questions, "json_asks": JSON_ASKS}
    doc["rows"] = rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
