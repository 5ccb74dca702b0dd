"""Mixed-task throughput side by side, in one run: plain CLIP, PEFT's per-row mixed LoRA, vopstore.

Used by ``bench_runtime.py`` (run that). Rows, text and images, at 1 / 16 / 64 tasks:

* plain CLIP: transformers' ``CLIPModel.get_text_features`` / ``get_image_features``, and
  vopstore's own rows without a task;
* PEFT per-row mixed LoRA: r=2 on q_proj/v_proj of both towers (122,880 parameters on
  ViT-B/32, as many as a ``vop`` prompt set), one adapter per task, every row with its own
  adapter in one forward. PEFT serves such a batch only through ``PeftModel.forward``'s
  ``adapter_names``; ``get_text_features`` / ``get_image_features`` accept ``adapter_names``
  and silently apply the active adapter to every row instead (checked below). So the batch
  runs inside the forward-hook context ``PeftModel.forward`` itself uses,
  ``model._enable_peft_forward_hooks(adapter_names=...)``, which hands each LoRA layer the
  per-row names (its ``_mixed_batch_forward``: one sub-batch per adapter present);
* vopstore, three forwards of the same mixed batch: "every prompt row" (the forward before
  issue 12: prompt tokens through every layer), ``precompute=False`` (fresh prompts enter as
  keys/values only, the training path), and ``precompute=True`` (task-only keys/values cached
  at load: a request runs only its own tokens).

Every call includes tokenisation where it applies (the same tokenizer for all). Each figure is
the median over interleaved rounds of wall time. Two more ratios follow, because on a shared
machine other work only ever adds time, unevenly (and many tiny parallel regions, such as
PEFT's per-adapter sub-batches, suffer most from it): the ratio of the best (fastest) rounds,
and the ratio of the process's CPU time (all threads; with ``--threads 1`` the measure least
affected by other load).
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

def clocked_medians(calls: dict, rounds: int) -> dict:
    """{name: (median wall s, best wall s, median CPU s)} per call, the calls run in turn every round."""
    for fn in calls.values():  # warm-up
        fn()
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {name: (statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name])) for name in calls}


@contextmanager
def every_prompt_row():
    """The runtime's forward as it was before precomputing: every prompt token through every layer."""
    from vopstore.runtime import precompute

    text, video = precompute.text_prompts, precompute.video_prompts

    def full(make):
        def wrapped(*args):
            prompts = make(*args)
            prompts.full_rows = True
            return prompts
        return wrapped

    precompute.text_prompts, precompute.video_prompts = full(text), full(video)
    try:
        yield
    finally:
        precompute.text_prompts, precompute.video_prompts = text, video


def peft_model(backbone_dir, count: int):
    """A PEFT CLIP with ``count`` LoRA adapters a0..a{count-1} (random, so that they differ)."""
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPModel

    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(CLIPModel.from_pretrained(str(backbone_dir)).eval(), config, adapter_name="a0")
    for i in range(1, count):
        model.add_adapter(f"a{i}", config)
    return model.eval()


def peft_features(model, tower: str, inputs: dict, names: list[str]):
    """PEFT's per-row mixed batch: row b with adapter ``names[b]`` (PeftModel.forward's hook context)."""
    with model._enable_peft_forward_hooks(adapter_names=names):
        return getattr(model.base_model.model, f"get_{tower}_features")(**inputs).pooler_output


def check_peft_rows(model, ids) -> tuple[bool, bool]:
    """(hook route is per row, get_text_features' adapter_names is per row) on 3 rows of 3 adapters."""
    import torch

    names = ["a0", "a1", "a2"]
    alone = []
    for name in names:
        model.set_adapter(name)
        alone.append(model.get_text_features(input_ids=ids[:3]).pooler_output)
    model.set_adapter("a0")
    per_row = torch.stack([alone[i][i] for i in range(3)])
    hooked = peft_features(model, "text", {"input_ids": ids[:3]}, names)
    kwarg = model.get_text_features(input_ids=ids[:3], adapter_names=names).pooler_output
    return bool(torch.allclose(hooked, per_row, atol=1e-4)), bool(torch.allclose(kwarg, per_row, atol=1e-4))


VARIANTS = (("peft", "PEFT per-row mixed LoRA (hook route)"), ("every row", "vopstore, every prompt row"),
            ("precompute=False", "vopstore precompute=False"), ("precompute", "vopstore precompute"))


def _row_names(rows: int, tasks: list[str], count: int) -> tuple[list[str], list[str]]:
    """(vopstore task, PEFT adapter) of each row: row i uses task i mod ``count``."""
    picked = [i % count for i in range(rows)]
    return [tasks[i] for i in picked], [f"a{i}" for i in picked]


def _every_row(encode, batch, rows):
    with every_prompt_row():
        return encode(batch, tasks=rows)


def text_calls(backbone, peft, pre, off, tasks: list[str], texts: list[str], counts) -> dict:
    """{"clip" | "no task" | (variant, tasks): callable} over one batch of texts."""
    tokenize = backbone.tokenize
    calls = {"clip": lambda: backbone.model.get_text_features(input_ids=tokenize(texts)).pooler_output,
             "no task": lambda: pre.encode_text(texts)}
    for d in counts:
        rows, names = _row_names(len(texts), tasks, d)
        calls[("peft", d)] = lambda names=names: peft_features(peft, "text", {"input_ids": tokenize(texts)}, names)
        calls[("every row", d)] = lambda rows=rows: _every_row(off.encode_text, texts, rows)
        calls[("precompute=False", d)] = lambda rows=rows: off.encode_text(texts, tasks=rows)
        calls[("precompute", d)] = lambda rows=rows: pre.encode_text(texts, tasks=rows)
    return calls


def image_calls(backbone, peft, pre, off, tasks: list[str], images, counts) -> dict:
    """The same over one batch of images (B, 3, H, W), each a one-frame video for vopstore."""
    video = images.unsqueeze(1)
    calls = {"clip": lambda: backbone.model.get_image_features(pixel_values=images).pooler_output,
             "no task": lambda: pre.encode_video(video)}
    for d in counts:
        rows, names = _row_names(images.shape[0], tasks, d)
        calls[("peft", d)] = lambda names=names: peft_features(peft, "image", {"pixel_values": images}, names)
        calls[("every row", d)] = lambda rows=rows: _every_row(off.encode_video, video, rows)
        calls[("precompute=False", d)] = lambda rows=rows: off.encode_video(video, tasks=rows)
        calls[("precompute", d)] = lambda rows=rows: pre.encode_video(video, tasks=rows)
    return calls


def report(title: str, unit: str, rows: int, results: dict) -> dict:
    """Print one table of ``rows``-row batches; return {key: (median, best, CPU) throughput ratio to plain CLIP}."""
    clip = results["clip"]
    print(f"  {title}: {unit}/s (median), then [throughput ratio to plain CLIP: median / best round / CPU time]")
    ratios = {key: tuple(c / t for c, t in zip(clip, times)) for key, times in results.items()}
    for key, label in (("clip", "plain CLIP (transformers)"), ("no task", "vopstore, rows without a task")):
        print(f"    {label:38s} {rows / results[key][0]:8.1f} [{_ratios(ratios[key])}]")
    counts = sorted({key[1] for key in results if isinstance(key, tuple)})
    for variant, label in VARIANTS:
        cells = "".join(f"  {d:2d} tasks {rows / results[(variant, d)][0]:6.1f} [{_ratios(ratios[(variant, d)])}]"
                        for d in counts)
        print(f"    {label:38s}{cells}")
    return ratios


def run(backbone, store, refs: list[str], texts: list[str], rounds: int = 5, image_rows: int = 16) -> None:
    """Load ``refs`` (64 vop sets) with and without precompute and into PEFT; print the tables and the goal."""
    import torch

    from vopstore import Retriever

    tasks = [ref.split("@")[0] for ref in refs]
    counts = [d for d in (1, 16, 64) if d <= len(tasks)]
    pre, off = Retriever(backbone, store=store), Retriever(backbone, store=store, precompute=False)
    pre.load_many(refs)
    off.load_many(refs)
    peft = peft_model(backbone.name, len(tasks))
    hooked, kwarg = check_peft_rows(peft, backbone.tokenize(texts[:3]))
    print(f"side by side ({len(tasks)} tasks loaded; PEFT hook route per row: {hooked}; PEFT "
          f"get_text_features(adapter_names=...) per row: {kwarg}, i.e. {'honoured' if kwarg else 'silently ignored'})")
    memory = pre.memory[tasks[0]]
    print(f"  vop set on this backbone: {memory['prompts'] / 1024:.0f} KiB prompts + {memory['cache'] / 1024:.0f} KiB "
          "precomputed keys/values per task (counted by max_bytes)")
    ids = backbone.tokenize(texts)
    text = clocked_medians(text_calls(backbone, peft, pre, off, tasks, texts, counts), rounds)
    ratios = {"text": report(f"text, {len(texts)} texts x {ids.shape[1]} tokens", "texts", len(texts), text)}
    images = torch.randn(image_rows, 3, backbone.image_size, backbone.image_size,
                         generator=torch.Generator().manual_seed(0))
    small = [d for d in counts if d <= image_rows]
    found = clocked_medians(image_calls(backbone, peft, pre, off, tasks, images, small), rounds)
    ratios["images"] = report(f"images, {image_rows} images", "images", image_rows, found)
    for d in [d for d in counts if d > image_rows]:  # as many images as tasks, so that each names its own
        many = images.repeat(d // image_rows + 1, 1, 1, 1)[:d]
        found = clocked_medians(image_calls(backbone, peft, pre, off, tasks, many, [d]), max(3, rounds // 2))
        ratios[f"images{d}"] = report(f"images, {d} images", "images", d, found)
    summarise(ratios)


def _ratios(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def summarise(ratios: dict) -> None:
    """The goal at 16 tasks: precompute >= 1.1x PEFT per-row mixed and >= 0.95x plain CLIP."""
    print("  goal, 16 tasks mixed: vopstore precompute >= 1.1x PEFT per-row mixed and >= 0.95x plain CLIP "
          "(ratio of median / best round / CPU time)")
    for kind in ("text", "images"):
        r = ratios[kind]
        if ("precompute", 16) not in r:
            continue
        for variant, label in (("precompute", "precompute"), ("every row", "every prompt row (before)")):
            vs_peft = [mine / peft for mine, peft in zip(r[(variant, 16)], r[("peft", 16)])]
            vs_clip = r[(variant, 16)]
            met = " / ".join("met" if p >= 1.1 and c >= 0.95 else "missed" for p, c in zip(vs_peft, vs_clip))
            vs_own = [mine / plain for mine, plain in zip(r[(variant, 16)], r["no task"])]
            print(f"    {kind:6s} {label:26s} {_ratios(vs_peft)}x PEFT, {_ratios(vs_clip)}x plain CLIP -> {met} "
                  f"({_ratios(vs_own)}x vopstore's rows without a task)")
