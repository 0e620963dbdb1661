"""Can the demo's models read the image at all? Two diagnostics on a starting point and a world.

``probe``: is the information in the tower's features? For objects of the world's training
images, a logistic-regression probe (scikit-learn, 80/20 split) predicts each object's colour,
shape and texture from the penultimate-block features of the patch under the object's centre
(the features LLaVA feeds the LLM; ``--neighbourhood 1``: that patch and its 8 neighbours,
concatenated), for the starting point's tower and for a random tower of the same architecture,
next to the majority-class baseline and to the same probe on the raw pixels of a crop around the
object's centre (as many pixels as the patches: what a tower could keep at best).

``learnable``: could the tower encode it at all? The starting point's architecture with random
weights, trained directly to classify each object's ``--target`` (default: shape) from the
penultimate-block feature of its centre patch (a linear head, cross-entropy, AdamW), then
held-out accuracy: if it learns what ``probe`` does not find in the starting point, the
starting point's pretraining, not the architecture, left it out.

``describe``: does the starting point read it out? Its dense captions (stage 1's task, "Describe
the image in detail.") of world images, greedy, scored against the scene: the object count, and
each object's shape and colour word for the object of the same rank (objects are described left
to right), once with the real images and once with every image replaced by the next one's (the
truth stays the scene's own): what the descriptions owe to the image.

``locate``: can it read one named place? The starting point asked ``What is at 57,78?`` for every
object of world images (the grounded captions of its stage 1b), greedy, scored by whether the
answer names the object's colour and shape, with the real images and with shifted ones.

``readout``: where along the way is it lost? Linear probes (80/20 split) of each object's colour
and shape (its centre patch) and of every patch's row and column, at every step of the image's
way into the LM: the tower's penultimate block, the projector's output (the LM's input embeddings
at the image tokens) and each LM layer's hidden state at the image tokens. What the probes still
read late in the LM is there to be attended to; what the descriptions then get wrong (``describe``)
is the attending.

``words``: could the LM answer even from a perfect reading? The world's held-out suite with each
image replaced by its scene's complete description in words (the LM corpus's own format,
``Image: 3 objects: ...``), scored by the suite's own scorers (:func:`covft.eval.generate.evaluate`):
what a checkpoint answers when the image is read out perfectly, the ceiling of any grounding. A
text-only LM checkpoint (the recipe's LM stage) works as well as a full one. Run again with each
unit described by another unit's scenes (the demo's blind control applied to the descriptions),
the gap, the *text gain*, bounds what any image gain of that checkpoint could reach.

``family``: can the model learn to use it? Stage 2 on one task family alone (e.g. ``count``)
from the starting point, then greedy answers on held-out questions of that family with the real
images and with the images shuffled (:func:`covft.eval.generate.shuffle_images`); the gap is the
image gain for that one skill.

    python benchmarks/grounding_check.py probe --world runs/demo/world
    python benchmarks/grounding_check.py family --world runs/demo/world --family count --steps 600
    python benchmarks/grounding_check.py learnable --world runs/demo/world --target shape
    python benchmarks/grounding_check.py describe --world runs/demo/world --images 60
    python benchmarks/grounding_check.py readout --world runs/demo/world --images 300
    python benchmarks/grounding_check.py locate --world runs/demo/world --images 100
    python benchmarks/grounding_check.py words --world runs/demo/world --out runs/words

``--start`` is the starting point (a covft checkpoint; default: the one the package ships).
``family`` writes under ``--out`` (default ``<world>/../grounding/<family>-<method>-<steps>``)
and resumes a finished training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

import covft
from covft.eval.generate import predict, shuffle_images
from covft.recipes.demo.pretrain import SHIPPED
from covft.recipes.world.scene import training_annotations

PROBE_TARGETS = ("color", "shape", "texture")


def _start_options(start: Path) -> dict[str, Any]:
    """The tiny preset's keyword arguments that rebuild the starting point's architecture (random weights)."""
    config = json.loads((start / "covft_config.json").read_text(encoding="utf-8"))
    kwargs = {k: v for k, v in config["base"]["kwargs"].items() if k not in ("vision_weights", "llm_weights")}
    return {**kwargs, "tokenizer_dir": str(start.resolve())}


def _object_scenes(world: Path, limit: int) -> list[dict]:
    """The scene records of the first ``limit`` training images that show objects (kinds
    ``objects`` and ``clutter``; not signs, diagrams or depth scenes)."""
    scenes = training_annotations(world, "the grounding diagnostics need the scenes of a world's images")
    return [a for a in scenes if a["scene"]["kind"] in ("objects", "clutter")][:limit]


def _load_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _asking(sample_id: str, image, question: str = "x") -> dict:
    """A one-turn LLaVA sample asking ``question`` about ``image`` (a PIL image)."""
    return {
        "id": sample_id,
        "image": image,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}],
    }


def _centre_patch(obj: dict, side: int) -> int:
    """Row-major index of the patch under an object's centre on a ``side`` x ``side`` grid."""
    return min(int(obj["y"] * side), side - 1) * side + min(int(obj["x"] * side), side - 1)


def _answers(model, samples: list[dict], max_new_tokens: int) -> list[str]:
    """Greedy answers of ``model`` to one-turn ``samples``."""
    keys = ("input_ids", "attention_mask", "pixel_values")
    inputs = {k: v for k, v in model.collate(samples, for_generation=True).items() if k in keys}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return model.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def centre_features(model, world: Path, annotations: list[dict], batch: int = 64, neighbourhood: int = 0):
    """(features, labels per target): one row per object, the features of its centre patch and
    of the ``neighbourhood`` rings of patches around it (zeros beyond the border), concatenated."""
    import numpy as np

    rows, labels = [], {t: [] for t in PROBE_TARGETS}
    model.eval()
    for start in range(0, len(annotations), batch):
        chunk = annotations[start : start + batch]
        samples = [_asking(a["id"], _load_rgb(world / a["image"])) for a in chunk]
        pixels = model.collate(samples, for_generation=True)["pixel_values"]
        with torch.no_grad():
            hidden = model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        side = int(round(hidden.shape[1] ** 0.5))
        grid = hidden.float().reshape(len(chunk), side, side, -1).numpy()
        ring = neighbourhood
        grid = np.pad(grid, ((0, 0), (ring, ring), (ring, ring), (0, 0)))
        for k, record in enumerate(chunk):
            for obj in record["scene"]["objects"]:
                col, row = min(int(obj["x"] * side), side - 1), min(int(obj["y"] * side), side - 1)
                rows.append(grid[k, row : row + 2 * ring + 1, col : col + 2 * ring + 1].reshape(-1))
                for target in PROBE_TARGETS:
                    labels[target].append(obj[target])
    return np.stack(rows), labels


def pixel_features(model, world: Path, annotations: list[dict], neighbourhood: int = 0):
    """(features, labels per target): one row per object, the raw pixels (0..1) of the square of
    ``2 * neighbourhood + 1`` patches centred on it, at the tower's input size."""
    import numpy as np

    size = model.llava.config.vision_config.image_size
    patch = model.llava.config.vision_config.patch_size
    half = (2 * neighbourhood + 1) * patch // 2
    rows, labels = [], {t: [] for t in PROBE_TARGETS}
    for record in annotations:
        pixels = np.asarray(_load_rgb(world / record["image"]).resize((size, size)), dtype=np.float32) / 255
        pixels = np.pad(pixels, ((half, half), (half, half), (0, 0)))
        for obj in record["scene"]["objects"]:
            x, y = int(obj["x"] * size), int(obj["y"] * size)
            rows.append(pixels[y : y + 2 * half, x : x + 2 * half].reshape(-1))
            for target in PROBE_TARGETS:
                labels[target].append(obj[target])
    return np.stack(rows), labels


def probe(
    world: Path, start: Path = SHIPPED, max_images: int = 1200, neighbourhood: int = 0
) -> dict[str, dict[str, float]]:
    """Probe accuracy per tower and target, plus the majority baseline; prints a table."""
    from sklearn.linear_model import LogisticRegression

    annotations = _object_scenes(world, max_images)
    towers = {
        "starting point": covft.build_model(str(start)),
        "random": covft.build_model("tiny", **_start_options(start)),
        "pixels": None,
    }
    results: dict[str, dict[str, float]] = {}
    for tower, model in towers.items():
        if model is None:
            features, labels = pixel_features(towers["random"], world, annotations, neighbourhood)
        else:
            features, labels = centre_features(model, world, annotations, neighbourhood=neighbourhood)
        split = int(0.8 * len(features))
        results[tower] = {"objects": float(len(features))}
        for target in PROBE_TARGETS:
            y = labels[target]
            classifier = LogisticRegression(max_iter=2000).fit(features[:split], y[:split])
            results[tower][target] = float(classifier.score(features[split:], y[split:]))
            test = y[split:]
            results[tower][f"{target}_majority"] = max(test.count(v) for v in set(test)) / len(test)
    print("| tower | objects | " + " | ".join(f"{t} (majority)" for t in PROBE_TARGETS) + " |")
    print("|---|---:|" + "---:|" * len(PROBE_TARGETS))
    for tower, entry in results.items():
        cells = [f"{100 * entry[t]:.1f} % ({100 * entry[t + '_majority']:.1f} %)" for t in PROBE_TARGETS]
        print(f"| {tower} | {int(entry['objects'])} | " + " | ".join(cells) + " |")
    return results


def learnable(
    world: Path,
    start: Path = SHIPPED,
    *,
    target: str = "shape",
    images: int = 6000,
    steps: int = 400,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out accuracy of the tower trained from random weights to classify ``target`` from each
    object's centre-patch feature (the last sixth of ``images`` held out); prints it per 100 steps."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    annotations = _object_scenes(world, images)
    classes = sorted({obj[target] for a in annotations for obj in a["scene"]["objects"]})
    model = covft.build_model("tiny", **_start_options(start))
    tower = model.vision_tower

    def load(records):
        samples = [_asking(a["id"], _load_rgb(world / a["image"])) for a in records]
        pixels = model.collate(samples, for_generation=True)["pixel_values"]
        side = model.llava.config.vision_config.image_size // model.llava.config.vision_config.patch_size
        where, labels = [], []
        for k, record in enumerate(records):
            for obj in record["scene"]["objects"]:
                where.append((k, _centre_patch(obj, side)))
                labels.append(classes.index(obj[target]))
        return pixels, torch.tensor(where), torch.tensor(labels)

    def logits(pixels, where):
        hidden = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        return head(hidden[where[:, 0], where[:, 1]])

    split = len(annotations) - max(1, len(annotations) // 6)
    train = [load(annotations[i : min(i + batch, split)]) for i in range(0, split, batch)]
    held_out = [load(annotations[i : i + batch]) for i in range(split, len(annotations), batch)]
    head = torch.nn.Linear(tower.config.hidden_size, len(classes))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr)

    def accuracy() -> float:
        tower.eval()
        with torch.no_grad():
            right = sum((logits(p, w).argmax(-1) == y).sum().item() for p, w, y in held_out)
        tower.train()
        return right / sum(len(y) for _, _, y in held_out)

    tower.train()
    for step in range(steps):
        pixels, where, labels = train[step % len(train)]
        loss = F.cross_entropy(logits(pixels, where), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(
                f"step {step + 1}: loss {loss.item():.3f}, held-out {target} accuracy {accuracy():.3f}",
                flush=True,
            )
    counts = torch.bincount(torch.cat([y for _, _, y in held_out]), minlength=len(classes))
    result = {
        "accuracy": accuracy(),
        "majority": counts.max().item() / counts.sum().item(),
        "objects": int(counts.sum()),
    }
    print(f"{target}: held-out accuracy {100 * result['accuracy']:.1f} % (majority {100 * result['majority']:.1f} %, "
          f"{result['objects']} objects) after {steps} steps x {batch} images")  # fmt: skip
    return result


def family(
    world: Path,
    name: str,
    *,
    steps: int,
    start: Path = SHIPPED,
    method: str = "freeze",
    lr: float = 5e-4,
    held_out: int = 100,
    out: Path | None = None,
) -> dict[str, float]:
    """Stage 2 on one family, then accuracy on its held-out questions, real vs shuffled images."""
    from covft.train import train
    from covft.train.config import config_from_dict

    families = {
        a["id"]: a["family"] for a in training_annotations(world, "family needs each sample's family")
    }
    records = [r for r in json.loads((world / "train.json").read_text()) if families.get(r["id"]) == name]
    if len(records) <= held_out:
        raise SystemExit(f"family {name!r} has {len(records)} samples in {world}; need more than {held_out}")
    train_records, test_records = records[:-held_out], records[-held_out:]
    out = out or world.parent / "grounding" / f"{name}-{method}-{steps}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(train_records), encoding="utf-8")
    if not (out / "model" / "train_summary.json").is_file():
        config = {
            "model": "tiny",
            "model_options": _start_options(start),
            "method": method,
            "stage": 2,
            "init_from": str(start.resolve()),
            "output_dir": str(out / "model"),
            "resume": True,
            "name": f"{name} only ({method})",
            "data": {"train": str(out / "train.json"), "image_folder": str(world.resolve())},
            "train": {"max_steps": steps, "batch_size": 16, "lr": lr, "warmup_ratio": 0.03,
                      "lr_scheduler": "cosine", "seed": 0, "save_steps": 0, "report_to": "none"},
        }  # fmt: skip
        train(config_from_dict(config, source="grounding_check"))
    model = covft.build_model(str(out / "model")).eval()
    items = [
        {"id": r["id"], "prompt": r["conversations"][0]["value"].replace("<image>", "").strip(),
         "image": _load_rgb(world / r["image"]), "answer": r["conversations"][1]["value"]}
        for r in test_records
    ]  # fmt: skip
    accuracy = {}
    for kind, batch in (("real", items), ("shuffled", shuffle_images({name: items}, seed=0)[name])):
        predictions = predict(model, batch, batch_size=50, max_new_tokens=8, progress=False)
        right = [p["prediction"].strip().lower() == p["answer"].strip().lower() for p in predictions]
        accuracy[kind] = 100.0 * sum(right) / len(right)
    majority = max(sum(i["answer"] == a for i in items) for a in {i["answer"] for i in items})
    accuracy["majority"] = 100.0 * majority / len(items)
    accuracy["image_gain"] = accuracy["real"] - accuracy["shuffled"]
    print(
        f"{name} ({len(train_records)} training questions, {steps} steps x 16, {method}): held-out accuracy "
        f"{accuracy['real']:.1f} % with the images, {accuracy['shuffled']:.1f} % with them shuffled "
        f"(image gain {accuracy['image_gain']:+.1f}); most frequent answer {accuracy['majority']:.1f} %"
    )
    (out / "result.json").write_text(json.dumps(accuracy, indent=1) + "\n", encoding="utf-8")
    return accuracy


def _score_description(text: str, scene: dict) -> tuple[bool, int, int, int]:
    """(count right, objects compared, shapes right, colours right) of one dense caption."""
    import re

    objects = sorted(scene["objects"], key=lambda o: (o["x"], o["y"]))
    said = re.match(r"\s*(\d+) object", text)
    phrases = text.split(":", 1)[-1].split(";")
    pairs = list(zip(objects, phrases, strict=False))
    return (
        bool(said) and int(said.group(1)) == len(objects),
        len(pairs),
        sum(o["shape"] in phrase for o, phrase in pairs),
        sum(o["color"] in phrase for o, phrase in pairs),
    )


def describe(
    world: Path, start: Path = SHIPPED, images: int = 60, batch: int = 20, max_new_tokens: int = 120
) -> dict[str, dict[str, float]]:
    """Dense-caption accuracy (count, shape, colour) with the real and with shifted images; prints a table."""
    from covft.recipes.world.describe import DENSE_PROMPT

    model = covft.load_pretrained(str(start))
    model.eval()
    scenes = _object_scenes(world, images)
    pictures = [_load_rgb(world / a["image"]) for a in scenes]
    results = {}
    for kind, shift in (("real", 0), ("shifted", 1)):
        tally = [0, 0, 0, 0]
        for begin in range(0, len(scenes), batch):
            rows = range(begin, min(begin + batch, len(scenes)))
            samples = [
                _asking(scenes[i]["id"], pictures[(i + shift) % len(scenes)], DENSE_PROMPT) for i in rows
            ]
            texts = _answers(model, samples, max_new_tokens)
            for i, text in zip(rows, texts, strict=True):
                tally = [
                    t + x for t, x in zip(tally, _score_description(text, scenes[i]["scene"]), strict=True)
                ]
        count, objects, shapes, colours = tally
        results[kind] = {
            "images": len(scenes),
            "objects": objects,
            "count": count / max(1, len(scenes)),
            "shape": shapes / max(1, objects),
            "color": colours / max(1, objects),
        }
    print("| images | count right | shape right (per object) | colour right (per object) |")
    print("|---|---:|---:|---:|")
    for kind, r in results.items():
        print(f"| {kind} | {100 * r['count']:.1f} % | {100 * r['shape']:.1f} % | {100 * r['color']:.1f} % |")
    return results


def locate(
    world: Path, start: Path = SHIPPED, images: int = 100, batch: int = 50
) -> dict[str, dict[str, float]]:
    """Colour and shape named right (share of objects) when asked what is at an object's centre,
    with the real and with shifted images; prints a table."""
    from covft.recipes.world.describe import WHAT_IS_AT, position

    model = covft.load_pretrained(str(start))
    model.eval()
    scenes = _object_scenes(world, images)
    pictures = [_load_rgb(world / a["image"]) for a in scenes]
    asked = [(k, obj) for k, a in enumerate(scenes) for obj in a["scene"]["objects"]]
    results = {}
    for kind, shift in (("real", 0), ("shifted", 1)):
        colours = shapes = 0
        for begin in range(0, len(asked), batch):
            chunk = asked[begin : begin + batch]
            samples = [
                _asking(
                    str(k), pictures[(k + shift) % len(scenes)], WHAT_IS_AT.format(position(o["x"], o["y"]))
                )
                for k, o in chunk
            ]
            texts = _answers(model, samples, max_new_tokens=10)
            for (_, obj), text in zip(chunk, texts, strict=True):
                words = text.split()
                colours += obj["color"] in words
                shapes += obj["shape"] in words
        results[kind] = {
            "objects": len(asked),
            "color": colours / max(1, len(asked)),
            "shape": shapes / max(1, len(asked)),
        }
    print("| images | objects asked | colour right | shape right |")
    print("|---|---:|---:|---:|")
    for kind, r in results.items():
        print(f"| {kind} | {r['objects']} | {100 * r['color']:.1f} % | {100 * r['shape']:.1f} % |")
    return results


def described_suite(world: Path, shuffle_seed: int | None = None) -> dict[str, list[dict]]:
    """The world's suite items with every image replaced by ``Image: <its scene's complete
    description>`` before the prompt (:func:`covft.recipes.world.corpus.scene_text`); with
    ``shuffle_seed``, each scoring unit described by another unit's scenes (the demo's blind
    control, :func:`covft.eval.generate.shuffle_images`, applied before describing)."""
    from covft.eval.benchmarks import load_suite
    from covft.recipes.world.corpus import scene_text
    from covft.recipes.world.scene import Scene

    annotations = world / "annotations" / "suite.jsonl"
    if not annotations.is_file():
        raise FileNotFoundError(
            f"{annotations} is missing: `words` needs the scene of every suite image (a conflict world)"
        )
    lines = annotations.read_text(encoding="utf-8").splitlines()
    scenes = {(world / "suite" / r["image"]).resolve(): r["scene"] for r in map(json.loads, lines)}
    suite = load_suite(world / "suite")
    if shuffle_seed is not None:
        suite = shuffle_images(suite, seed=shuffle_seed)
    items: dict[str, list[dict]] = {}
    for name, suite_items in suite.items():
        items[name] = []
        for item in suite_items:
            if item["image"] is not None:
                scene = scenes.get(Path(item["image"].path).resolve())
                if scene is None:
                    raise KeyError(
                        f"{name} item {item['id']!r}: no scene for {item['image'].path} in {annotations}"
                    )
                text = scene_text(Scene.from_dict(scene))
                item = {**item, "image": None, "prompt": f"{text}\n{item['prompt']}"}
            items[name].append(item)
    return items


def words(world: Path, start: Path = SHIPPED, out: Path | None = None, batch: int = 32) -> dict[str, Any]:
    """:func:`described_suite` answered by ``start`` (greedy, the demo's 16 new tokens) and scored
    by :func:`covft.eval.generate.evaluate` under ``out`` (default ``<world>/../words``), once with
    each unit's own descriptions and once with shuffled ones (seed 0, as the demo's control): per
    kind the per-benchmark scores and the summary (G / K / V / Avg), and the ``text_gain`` (Avg,
    own minus shuffled; what a perfect reading of the images could add at most); prints a table."""
    from covft.eval.generate import evaluate

    model = covft.load_pretrained(str(start))
    model.eval()
    out = out or world.parent / "words"
    result: dict[str, Any] = {}
    for kind, seed in (("own", None), ("shuffled", 0)):
        with torch.no_grad():
            answered = evaluate(model, described_suite(world, seed), out / kind, run_name=f"words-{kind}",
                                batch_size=batch, max_new_tokens=16, progress=False, overwrite=True)  # fmt: skip
        scores = {name: entry["score"] for name, entry in answered["scores"].items()}
        result[kind] = {"scores": scores, "summary": answered["summary"]}
    result["text_gain"] = result["own"]["summary"]["Avg"] - result["shuffled"]["summary"]["Avg"]
    print("| descriptions | " + " | ".join(result["own"]["scores"]) + " | Avg |")
    print("|---|" + "---:|" * (len(result["own"]["scores"]) + 1))
    for kind in ("own", "shuffled"):
        values = " | ".join(f"{v:.1f}" for v in result[kind]["scores"].values())
        print(f"| {kind} | {values} | {result[kind]['summary']['Avg']:.2f} |")
    print(f"text gain (Avg, own minus shuffled): {result['text_gain']:.2f}")
    return result


READOUT_TARGETS = ("color", "shape", "row", "column")


def _readout_features(model, world: Path, scenes: list[dict], batch: int):
    """Per representation (tower, projector, LM layers), the objects' centre-patch rows and every
    patch's row; and the labels: colour and shape per object, row and column per patch."""
    import numpy as np

    image_token = model.llava.config.image_token_id
    objects: dict[str, list] = {}
    patches: dict[str, list] = {}
    labels: dict[str, list] = {t: [] for t in READOUT_TARGETS}
    model.eval()
    for begin in range(0, len(scenes), batch):
        chunk = scenes[begin : begin + batch]
        samples = [_asking(a["id"], _load_rgb(world / a["image"])) for a in chunk]
        inputs = model.collate(samples, for_generation=True)
        with torch.no_grad():
            tower = model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states[-2][
                :, 1:
            ]
            hidden = model.llava(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                pixel_values=inputs["pixel_values"], output_hidden_states=True,
            ).hidden_states  # fmt: skip
        where = inputs["input_ids"] == image_token
        steps = {"tower": tower, "projector": None, **{f"LM layer {d}": None for d in range(1, len(hidden))}}
        for d, name in enumerate(list(steps)[1:]):
            steps[name] = torch.stack([hidden[d][i][where[i]] for i in range(len(chunk))])
        side = int(round(tower.shape[1] ** 0.5))
        for name, states in steps.items():
            states = states.float().numpy()
            patches.setdefault(name, []).append(states.reshape(-1, states.shape[-1]))
            for k, record in enumerate(chunk):
                for obj in record["scene"]["objects"]:
                    objects.setdefault(name, []).append(states[k, _centre_patch(obj, side)])
        for record in chunk:
            for obj in record["scene"]["objects"]:
                labels["color"].append(obj["color"])
                labels["shape"].append(obj["shape"])
        labels["row"].extend(np.repeat(np.arange(side), side).tolist() * len(chunk))
        labels["column"].extend(np.tile(np.arange(side), side).tolist() * len(chunk))
    return (
        {n: np.stack(v) for n, v in objects.items()},
        {n: np.concatenate(v) for n, v in patches.items()},
        labels,
    )


def readout(
    world: Path, start: Path = SHIPPED, images: int = 300, batch: int = 25
) -> dict[str, dict[str, float]]:
    """Probe accuracy per representation and target (and the majority baseline); prints a table."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = covft.load_pretrained(str(start))
    scenes = _object_scenes(world, images)
    objects, patches, labels = _readout_features(model, world, scenes, batch)
    results: dict[str, dict[str, float]] = {}
    for name in objects:
        results[name] = {}
        for target in READOUT_TARGETS:
            features = objects[name] if target in ("color", "shape") else patches[name]
            y = labels[target]
            split = int(0.8 * len(features))
            probe_ = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            results[name][target] = float(
                probe_.fit(features[:split], y[:split]).score(features[split:], y[split:])
            )
    majority = {}
    for target in READOUT_TARGETS:
        test = list(labels[target][int(0.8 * len(labels[target])) :])
        majority[target] = max(test.count(v) for v in set(test)) / len(test)
    results["majority"] = majority
    print(f"| where ({len(scenes)} images) | " + " | ".join(READOUT_TARGETS) + " |")
    print("|---|" + "---:|" * len(READOUT_TARGETS))
    for name, entry in results.items():
        print(f"| {name} | " + " | ".join(f"{100 * entry[t]:.1f} %" for t in READOUT_TARGETS) + " |")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("probe", help="linear probes of the tower's patch features")
    p.add_argument("--max-images", type=int, default=1200)
    p.add_argument(
        "--neighbourhood", type=int, default=0, help="rings of patches around the centre patch (1: 3x3)"
    )
    f = sub.add_parser(
        "family", help="stage 2 on one task family, held-out accuracy with real vs shuffled images"
    )
    f.add_argument("--family", default="count")
    f.add_argument("--steps", type=int, default=600)
    f.add_argument("--method", default="freeze")
    f.add_argument("--lr", type=float, default=5e-4)
    f.add_argument("--held-out", type=int, default=100)
    f.add_argument("--out", type=Path, default=None)
    t = sub.add_parser(
        "learnable", help="train the tower from random weights to classify an object attribute"
    )
    t.add_argument("--target", default="shape", choices=PROBE_TARGETS)
    t.add_argument("--images", type=int, default=6000)
    t.add_argument("--steps", type=int, default=400)
    d = sub.add_parser(
        "describe", help="the starting point's dense captions vs the scenes, real vs shifted images"
    )
    d.add_argument("--images", type=int, default=60)
    d.add_argument("--max-new-tokens", type=int, default=120)
    r = sub.add_parser("readout", help="probes of the image from the tower through every LM layer")
    r.add_argument("--images", type=int, default=300)
    w = sub.add_parser("locate", help="'What is at x,y?' for every object: colour and shape named right")
    w.add_argument("--images", type=int, default=100)
    o = sub.add_parser(
        "words", help="the suite answered from each image's complete description: the LM's ceiling"
    )
    o.add_argument("--out", type=Path, default=None)
    for command in (p, f, t, d, r, w, o):
        command.add_argument("--world", type=Path, default=Path("runs/demo/world"), help="a conflict world")
        command.add_argument(
            "--start", type=Path, default=SHIPPED, help="the starting point (a covft checkpoint)"
        )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.action == "probe":
        probe(args.world, args.start, args.max_images, args.neighbourhood)
    elif args.action == "describe":
        describe(args.world, args.start, images=args.images, max_new_tokens=args.max_new_tokens)
    elif args.action == "locate":
        locate(args.world, args.start, images=args.images)
    elif args.action == "words":
        words(args.world, args.start, out=args.out)
    elif args.action == "readout":
        readout(args.world, args.start, images=args.images)
    elif args.action == "learnable":
        learnable(args.world, args.start, target=args.target, images=args.images, steps=args.steps)
    else:
        family(
            args.world,
            args.family,
            steps=args.steps,
            start=args.start,
            method=args.method,
            lr=args.lr,
            held_out=args.held_out,
            out=args.out,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
