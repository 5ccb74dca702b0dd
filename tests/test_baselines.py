"""The paper's baselines as methods: counts on ViT-B/32, forward against transformers, training, storage, rows.

Oracles that are not the code under test:
* counts: the per-tensor arithmetic of the CLIP ViT-B/32 architecture, written out below;
* weight baselines (full, bias, proj, partial): transformers' own ``get_text_features`` /
  ``get_image_features`` on a copy of the CLIP whose weights were replaced by the baseline's;
* adapters: the same transformers forward with the adapter added by forward hooks on
  each layer's ``self_attn`` / ``mlp`` (AdaptFormer's form: scale * up(relu(down(x))) on the
  sublayer's own input, added to its output);
* stored bytes: the length of files really written.
"""

from __future__ import annotations

import copy

import pytest
import torch

from vopstore.errors import ConfigError, InvalidCheckpointError, UnknownMethodError

ATOL = 1e-5
TEXTS = ["a dog runs on the grass", "two people cook", "a red car turns left at night"]
WEIGHT = ("full", "bias", "proj", "partial")
ADAPTERS = ("adapter-attn", "adapter-ffn")
ALL = WEIGHT + ADAPTERS
PER_ROW = ("bias", "proj", "adapter-attn", "adapter-ffn")


def pixels(batch: int, frames: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def build(name: str, backbone, seed: int = 0, moved: bool = True):
    """A baseline; ``moved``: every tensor perturbed so that it changes the output (a fresh one does not)."""
    from vopstore.prompts import build_method

    method = build_method(name, backbone, seed=seed)
    if moved:
        gen = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for p in method.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return method.eval()


# --- counts on the real ViT-B/32 architecture -------------------------------------------------------------------


def _block(width: int, mlp: int) -> int:
    return 4 * (width * width + width) + (width * mlp + mlp) + (mlp * width + width) + 2 * 2 * width


def _block_biases(width: int, mlp: int) -> int:
    return 4 * width + mlp + width + 2 * width  # q, k, v, out, fc1, fc2, two LayerNorms


def test_counts_on_vit_b32_match_the_derivation():
    from vopstore.baselines.table import baseline_rows
    from vopstore.prompts.registry import PAPER_FULL_PARAMS, VIT_B32_PARAMS

    rows = {r["name"]: r for r in baseline_rows()}
    vision, text = (768, 3072, 12), (512, 2048, 12)
    expected = {
        "full": VIT_B32_PARAMS - 1,  # the temperature (logit_scale) is stored, not trained
        "proj": 768 * 512 + 512 * 512,
        # final LayerNorms: vision pre + post, text final
        "bias": 12 * _block_biases(768, 3072) + 2 * 768 + 12 * _block_biases(512, 2048) + 512,
        "partial": _block(*vision[:2]) + 2 * 768 + _block(*text[:2]) + 2 * 512,
        # per layer: down D*64 + 64, up 64*D + D
        "adapter-attn": 12 * (768 * 64 + 64 + 64 * 768 + 768) + 12 * (512 * 64 + 64 + 64 * 512 + 512),
    }
    expected["adapter-ffn"] = expected["adapter-attn"]
    assert expected["proj"] == 655_360 and expected["adapter-attn"] == 1_982_976
    assert expected["bias"] == 171_008 and expected["partial"] == 10_242_816
    assert rows["full"]["stored_params"] == VIT_B32_PARAMS == 151_277_313
    for name, count in expected.items():
        assert rows[name]["trainable_params"] == count, name
        assert rows[name]["share"] == pytest.approx(count / VIT_B32_PARAMS)
    # the paper's Table 1 shares (of its 119.8 M "Full") for the two it states exactly
    assert round(100 * expected["proj"] / PAPER_FULL_PARAMS, 3) == 0.547
    assert round(100 * expected["adapter-attn"] / PAPER_FULL_PARAMS, 3) == 1.655


def test_methods_command_lists_both_families_with_stored_bytes(run):
    import json

    code, out, _ = run("methods", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c", *ALL}
    full = rows["full"]
    assert 4 * full["trainable_params"] < full["stored_bytes"] < 4 * full["trainable_params"] + 64_000
    assert {n for n, r in rows.items() if r["co_batch"]} == {"vop", "vop-p", "vop-c", "vop-f", "vop-f+p",
                                                             "vop-f+c", *PER_ROW}
    code, out, _ = run("methods")
    assert code == 0 and "adapter-ffn" in out and "1,982,976" in out and "own model" in out


# --- a fresh baseline is the plain backbone; a moved one is the model it stands for ------------------------------


def _reference_model(name: str, method, backbone):
    """transformers' CLIP with the baseline applied: replaced weights, or adapters added by hooks."""
    model = copy.deepcopy(backbone.model)
    tensors = {n: t.detach() for n, t in method.named_tensors().items()}
    if name in WEIGHT:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        assert not unexpected
        return model
    scale = method.config.scale
    for tower, encoder in (("text", model.text_model.encoder), ("vision", model.vision_model.encoder)):
        for i, layer in enumerate(encoder.layers):
            def adapter(x, tower=tower, i=i):
                down = x @ tensors[f"{tower}.down.weight"][i].T + tensors[f"{tower}.down.bias"][i]
                return scale * (torch.relu(down) @ tensors[f"{tower}.up.weight"][i].T + tensors[f"{tower}.up.bias"][i])

            if name == "adapter-attn":
                layer.self_attn.register_forward_hook(
                    lambda mod, args, kwargs, out, f=adapter: (out[0] + f(kwargs["hidden_states"]), *out[1:]),
                    with_kwargs=True)
            else:
                layer.mlp.register_forward_hook(lambda mod, args, out, f=adapter: out + f(args[0]))
    return model


def _reference(model, backbone, ids, pix):
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids).pooler_output
        frames = model.get_image_features(pixel_values=pix.flatten(0, 1)).pooler_output
    return text, frames.view(*pix.shape[:2], -1)


@pytest.mark.parametrize("name", ALL)
def test_fresh_baseline_equals_transformers_clip(name, tiny_backbone):
    method = build(name, tiny_backbone, moved=False)
    ids, pix = tiny_backbone.tokenize(TEXTS), pixels(2, 3)
    text, frames = _reference(tiny_backbone.model, tiny_backbone, ids, pix)
    with torch.no_grad():
        torch.testing.assert_close(method.encode_text(tiny_backbone, ids), text, atol=ATOL, rtol=0)
        torch.testing.assert_close(method.encode_frames(tiny_backbone, pix), frames, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_moved_baseline_equals_transformers_with_it_applied(name, tiny_backbone):
    method = build(name, tiny_backbone)
    ids, pix = tiny_backbone.tokenize(TEXTS), pixels(2, 3)
    text, frames = _reference(_reference_model(name, method, tiny_backbone), tiny_backbone, ids, pix)
    plain_text, _ = _reference(tiny_backbone.model, tiny_backbone, ids, pix)
    assert not torch.allclose(text, plain_text, atol=1e-3)  # the perturbation does change the output
    with torch.no_grad():
        torch.testing.assert_close(method.encode_text(tiny_backbone, ids), text, atol=ATOL, rtol=0)
        torch.testing.assert_close(method.encode_frames(tiny_backbone, pix), frames, atol=ATOL, rtol=0)


# --- training through the real recipe ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from vopstore.trainer.data import generate_synthetic_task, read_split

    task = generate_synthetic_task(tmp_path_factory.mktemp("baseline-task"), n_train=8, n_test=4, seed=3,
                                   size=32, frames=2)
    return read_split(task.format, task.root, "train")


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


@pytest.mark.parametrize("name", ALL)
def test_training_changes_only_the_baselines_own_tensors(name, tmp_path, toy, tiny_backbone, tiny_backbone_dir):
    from vopstore.trainer import recipe
    from vopstore.trainer.config import TrainConfig

    backbone_before = _snapshot(tiny_backbone.model)
    cfg = TrainConfig(method=name, backbone=str(tiny_backbone_dir), num_frames=2, batch_size=4, max_steps=2,
                      lr=1e-3, warmup_ratio=0.0, checkpoint_every=100, log_every=1)
    run = recipe.setup(cfg, toy, tmp_path / "run", backbone=tiny_backbone)
    start = {n: t.detach().clone() for n, t in run.method.named_tensors().items()}
    recipe.train(run, progress=False)
    after = {n: t.detach() for n, t in run.method.named_tensors().items()}

    for key, value in _snapshot(tiny_backbone.model).items():  # the frozen backbone: bitwise the same
        assert torch.equal(value, backbone_before[key]), key
    changed = {n for n in after if not torch.equal(after[n], start[n])}
    # every tensor that takes part in the loss moved (the temperature is the backbone's in the recipe)
    assert changed == set(after) - {"logit_scale"}, set(after) - changed
    assert {n for n, t in run.method.named_tensors().items() if not t.requires_grad} <= {"logit_scale"}
    if name in WEIGHT:  # they started from the backbone's values
        assert all(torch.equal(start[n], backbone_before[n]) for n in start)


# --- storage ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip_gives_equal_outputs(name, tmp_path, tiny_backbone):
    from vopstore.prompts import encode_text, encode_video, load_prompt_set

    method = build(name, tiny_backbone, seed=1)
    method.save(tmp_path / "b.safetensors", tiny_backbone)
    loaded = load_prompt_set(tmp_path / "b.safetensors", tiny_backbone).eval()
    assert type(loaded) is type(method) and loaded.config == method.config
    ids, pix = tiny_backbone.tokenize(TEXTS), pixels(2, 2)
    with torch.no_grad():
        for encode, batch in ((encode_text, ids), (encode_video, pix)):
            torch.testing.assert_close(encode(tiny_backbone, batch, loaded), encode(tiny_backbone, batch, method),
                                       atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_stored_bytes_are_the_file_size(name, tmp_path, tiny_backbone):
    from vopstore.baselines.footprint import checkpoint_size
    from vopstore.checkpoint import inspect_checkpoint

    path = tmp_path / "b.safetensors"
    build(name, tiny_backbone).save(path, tiny_backbone)
    info = inspect_checkpoint(path)
    shapes = {n: shape for n, (_, shape) in info.tensors.items()}
    assert checkpoint_size(shapes, info.meta) == info.size == path.stat().st_size


@pytest.mark.parametrize("name", ["vop", "vop-p", "vop-c", "vop-f", "vop-f+p", "vop-f+c"])
def test_stored_bytes_of_prompt_sets_are_the_file_size(name, tmp_path, tiny_backbone):
    from vopstore.baselines.footprint import checkpoint_size
    from vopstore.checkpoint import inspect_checkpoint
    from vopstore.prompts import build_method

    path = tmp_path / "p.safetensors"
    build_method(name, tiny_backbone, **({"k_shallow": 2} if "-f" in name else {})).save(path, tiny_backbone)
    info = inspect_checkpoint(path)
    assert checkpoint_size({n: shape for n, (_, shape) in info.tensors.items()}, info.meta) == path.stat().st_size


def test_stored_baseline_round_trips_through_push_and_pull(tmp_path, tiny_backbone):
    from vopstore.prompts import encode_text, load_prompt_set
    from vopstore.store import open_store, pull, push

    method = build("adapter-ffn", tiny_backbone, seed=2)
    method.save(tmp_path / "a.safetensors", tiny_backbone)
    local, remote, elsewhere = (open_store(), open_store((tmp_path / "remote").as_uri()),
                                open_store((tmp_path / "elsewhere").as_uri()))
    info = local.add("msrvtt", tmp_path / "a.safetensors", metrics={"t2v": {"R@1": 1.0}})
    assert (info.method, info.params) == ("adapter-ffn", method.trainable_params())
    push(local, remote, "msrvtt@v1")
    pulled = pull(remote, elsewhere, "msrvtt@v1")
    assert pulled.digest == info.digest
    loaded = load_prompt_set(elsewhere.fetch(pulled), tiny_backbone)
    ids = tiny_backbone.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(encode_text(tiny_backbone, ids, loaded), encode_text(tiny_backbone, ids, method),
                                   atol=1e-6, rtol=0)
        expected = _reference_model("adapter-ffn", method, tiny_backbone).get_text_features(input_ids=ids)
    from vopstore.runtime import Retriever

    served = Retriever(tiny_backbone, store=elsewhere)
    assert served.load("msrvtt@v1").digest == info.digest
    torch.testing.assert_close(served.encode_text(TEXTS, "msrvtt"), getattr(expected, "pooler_output", expected),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_the_store_accepts_every_baseline(name, tmp_path, tiny_backbone):
    from vopstore.store import open_store

    method = build(name, tiny_backbone)
    method.save(tmp_path / "b.safetensors", tiny_backbone)
    info = open_store().add("t", tmp_path / "b.safetensors")
    assert (info.method, info.params) == (name, sum(t.numel() for t in method.named_tensors().values()))


def _tampered(tmp_path, tiny_backbone, name: str, change) -> str:
    from vopstore.checkpoint import PromptSetMeta, save_checkpoint

    method = build(name, tiny_backbone)
    tensors = {n: t.detach().clone() for n, t in method.named_tensors().items()}
    change(tensors)
    meta = PromptSetMeta(method=name, config=method.config.to_dict(), backbone_name="tiny",
                         backbone_fingerprint=tiny_backbone.fingerprint, dtype="float32",
                         params=sum(t.numel() for t in tensors.values()))
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, tensors, meta)
    return path


@pytest.mark.parametrize("name, change, message", [
    ("bias", lambda t: t.pop("text_model.final_layer_norm.bias"), "missing"),
    ("proj", lambda t: t.update({"text_model.final_layer_norm.bias": torch.zeros(32)}), "unexpected"),
    ("partial", lambda t: t.update({"vision_model.post_layernorm.bias": torch.zeros(7)}), "disagrees"),
    ("adapter-attn", lambda t: t.update({"text.down.weight": torch.zeros(3, 8, 32)}), "disagrees"),
    ("proj", lambda t: t["text_projection.weight"].view(-1)[0].fill_(float("nan")), "NaN"),
])
def test_the_store_refuses_a_baseline_that_does_not_fit(name, change, message, tmp_path, tiny_backbone):
    from vopstore.store import open_store

    path = _tampered(tmp_path, tiny_backbone, name, change)
    with pytest.raises(InvalidCheckpointError, match=message):
        open_store().add("t", path)


def test_the_runtime_serves_a_stored_baseline_as_the_model_it_was_trained_as(tmp_path, tiny_backbone):
    from vopstore.runtime import Retriever
    from vopstore.store import open_store

    store = open_store()
    method = build("bias", tiny_backbone, seed=3)
    method.save(tmp_path / "b.safetensors", tiny_backbone)
    store.add("t", tmp_path / "b.safetensors")
    retriever = Retriever(tiny_backbone, store=store)
    retriever.load("t")
    reference = _reference_model("bias", method, tiny_backbone)
    ids = tiny_backbone.tokenize(TEXTS)
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=ids)
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(retriever.encode_text(TEXTS, "t"), expected, atol=1e-5, rtol=0)


# --- mixed-version batches of the co-batchable baselines ---------------------------------------------------------


@pytest.mark.parametrize("name", PER_ROW)
def test_rows_of_different_versions_equal_each_row_alone(name, tiny_backbone):
    from vopstore.baselines import encode_text_rows, encode_video_rows, stack_baselines

    versions = [build(name, tiny_backbone, seed=s) for s in range(3)]
    bank = stack_baselines(versions)
    index = torch.tensor([2, 0, 1, 2, 0])
    texts = TEXTS + ["a cat", "snow falls"]
    ids, pix = tiny_backbone.tokenize(texts), pixels(5, 2, seed=7)
    with torch.no_grad():
        text = encode_text_rows(tiny_backbone, ids, type(versions[0]), versions[0].config, bank, index)
        video = encode_video_rows(tiny_backbone, pix, type(versions[0]), versions[0].config, bank, index)
        for row, s in enumerate(index.tolist()):
            alone_t = versions[s].encode_text(tiny_backbone, tiny_backbone.tokenize([texts[row]]))[0]
            alone_v = versions[s].encode_video(tiny_backbone, pix[row:row + 1])[0]
            torch.testing.assert_close(text[row], alone_t, atol=ATOL, rtol=0)
            torch.testing.assert_close(video[row], alone_v, atol=ATOL, rtol=0)
    assert not torch.allclose(text[0], versions[0].encode_text(tiny_backbone, ids[:1])[0].detach(), atol=1e-3)


@pytest.mark.parametrize("name", ("full", "partial"))
def test_own_model_baselines_are_not_stacked_per_row(name, tiny_backbone):
    from vopstore.baselines import encode_text_rows, stack_baselines
    from vopstore.baselines.registry import get_baseline

    method = build(name, tiny_backbone, moved=False)
    with pytest.raises(InvalidCheckpointError, match="its own model"):
        stack_baselines([method])
    bank = {n: t.detach().unsqueeze(0) for n, t in method.named_tensors().items()}
    with pytest.raises(ConfigError, match="its own model"):
        encode_text_rows(tiny_backbone, tiny_backbone.tokenize(TEXTS), get_baseline(name), method.config, bank,
                         torch.zeros(3, dtype=torch.long))


# --- the registry's seams ---------------------------------------------------------------------------------------


def test_unknown_names_and_settings_are_refused(tiny_backbone):
    from vopstore.baselines.registry import method_class
    from vopstore.prompts import build_method

    with pytest.raises(UnknownMethodError, match="prompt method .* or a baseline"):
        method_class("lora")
    with pytest.raises(ConfigError, match="unknown setting"):
        build_method("bias", tiny_backbone, hidden=8)
    with pytest.raises(ConfigError, match="hidden must be an integer >= 1"):
        build_method("adapter-attn", tiny_backbone, hidden=0)
    assert build_method("adapter-attn", tiny_backbone, hidden=8).trainable_params() == (
        3 * (2 * 32 * 8 + 8 + 32) + 3 * (2 * 64 * 8 + 8 + 64))  # tiny CLIP: 3 layers, text 32, vision 64 wide


def test_schema_names_every_vit_b32_parameter_with_a_consistent_shape():
    from vopstore.baselines.schema import _unify, clip_symbols
    from vopstore.baselines.table import vit_b32_meta_params

    real = {n: tuple(p.shape) for n, p in vit_b32_meta_params().items()}
    symbols = clip_symbols(12, 12)
    assert set(symbols) == set(real)
    assert _unify(real, symbols) is None


def test_cli_trains_evaluates_and_registers_a_baseline(run, tmp_path, tiny_backbone_dir):
    import json

    from vopstore.store import open_store
    from vopstore.trainer.data import generate_synthetic_task

    task = generate_synthetic_task(tmp_path / "task", n_train=8, n_test=4, seed=3, size=32, frames=2)
    code, out, err = run("train", "--task", "toy", "--data", task.root, "--method", "adapter-attn",
                         "--backbone", tiny_backbone_dir, "--batch-size", "4", "--frames", "2", "--max-steps", "2",
                         "--set", "method_config={hidden=8}", "--json")
    assert code == 0, err
    trained = json.loads(out)
    info = open_store().resolve("toy@v1")
    assert (info.method, info.params) == ("adapter-attn", 3 * (2 * 32 * 8 + 8 + 32) + 3 * (2 * 64 * 8 + 8 + 64))
    code, out, err = run("eval", "toy@v1", "--data", task.root, "--json")
    assert code == 0, err
    assert json.loads(out)["metrics"] == trained["metrics"] == info.metrics
