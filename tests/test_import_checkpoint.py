"""`vopstore import-checkpoint`: the authors' release layout, checked against a forward written in OpenAI's layout.

The oracle below is written from the authors' ModelScope code (``ImageEncoder`` and
``TextEncoder`` of ``vop_retrieval/model.py``) on OpenAI's parameter names, with torch's
own multi-head attention over the packed ``in_proj`` weights: none of vopstore's
conversion or forward is used to compute the expected embeddings.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

TEXT_WIDTH, VISION_WIDTH, LAYERS, EMBED, PATCH, IMAGE, VOCAB, CONTEXT = 64, 128, 2, 32, 16, 32, 49408, 77
PREFIX = SUFFIX = 4  # the released split of the 8 text prompts
TEXTS = ["a dog runs on the beach", "two people cooking pasta in a small kitchen", "x"]


def openai_clip_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random small ViT CLIP in OpenAI's state-dict layout (one head per 64 channels)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std):
        return torch.randn(*shape, generator=g) * std

    def norm(name, width):
        return {f"{name}.weight": 1 + rnd(width, std=0.1), f"{name}.bias": rnd(width, std=0.1)}

    def blocks(prefix, width):
        out = {}
        for i in range(LAYERS):
            p = f"{prefix}transformer.resblocks.{i}"
            out.update({f"{p}.attn.in_proj_weight": rnd(3 * width, width, std=width ** -0.5),
                        f"{p}.attn.in_proj_bias": rnd(3 * width, std=0.05),
                        f"{p}.attn.out_proj.weight": rnd(width, width, std=width ** -0.5),
                        f"{p}.attn.out_proj.bias": rnd(width, std=0.05),
                        f"{p}.mlp.c_fc.weight": rnd(4 * width, width, std=width ** -0.5),
                        f"{p}.mlp.c_fc.bias": rnd(4 * width, std=0.05),
                        f"{p}.mlp.c_proj.weight": rnd(width, 4 * width, std=(4 * width) ** -0.5),
                        f"{p}.mlp.c_proj.bias": rnd(width, std=0.05),
                        **norm(f"{p}.ln_1", width), **norm(f"{p}.ln_2", width)})
        return out

    grid = IMAGE // PATCH
    return {
        "token_embedding.weight": rnd(VOCAB, TEXT_WIDTH, std=0.5), "positional_embedding": rnd(CONTEXT, TEXT_WIDTH, std=0.1),
        **blocks("", TEXT_WIDTH), **norm("ln_final", TEXT_WIDTH), "text_projection": rnd(TEXT_WIDTH, EMBED, std=0.1),
        "visual.conv1.weight": rnd(VISION_WIDTH, 3, PATCH, PATCH, std=0.05),
        "visual.class_embedding": rnd(VISION_WIDTH, std=0.5),
        "visual.positional_embedding": rnd(grid * grid + 1, VISION_WIDTH, std=0.1), **norm("visual.ln_pre", VISION_WIDTH),
        **blocks("visual.", VISION_WIDTH), **norm("visual.ln_post", VISION_WIDTH),
        "visual.proj": rnd(VISION_WIDTH, EMBED, std=0.1), "logit_scale": torch.tensor(4.6052),
    }


def released_prompts(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(LAYERS, PREFIX + SUFFIX, TEXT_WIDTH, generator=g) * 0.5,
            torch.randn(LAYERS, 1, 8, VISION_WIDTH, generator=g) * 0.5)


def modelscope_file(path, clip=None, text=None, visual=None, extra=None, drop=()):
    """Write a checkpoint as ModelScope's VoP was saved: DataParallel keys, shared modules saved twice."""
    clip = openai_clip_state() if clip is None else clip
    default_text, default_visual = released_prompts()
    state = {f"module.clip.{k}": v for k, v in clip.items()}
    for shared, key in (("image_encoder.conv1.weight", "visual.conv1.weight"),
                        ("text_encoder.token_embedding.weight", "token_embedding.weight")):
        if key in clip:
            state[f"module.{shared}"] = clip[key]
    state["module.text_prompt_learner.text_prompts"] = default_text if text is None else text
    state["module.visual_prompt_learner.visual_prompts"] = default_visual if visual is None else visual
    state.update(extra or {})
    for key in drop:
        del state[key]
    torch.save({"epoch": 3, "state_dict": state}, path)
    return path


# --- the oracle: OpenAI layout, the authors' prompt placement ------------------------------------------------------


def _ln(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _block(x, sd, p, mask=None):
    width = x.shape[-1]
    y = _ln(x, sd, f"{p}.ln_1").transpose(0, 1)  # (L, N, D), as nn.MultiheadAttention takes it
    attn, _ = F.multi_head_attention_forward(
        y, y, y, width, width // 64, sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"], None, None, False,
        0.0, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"], training=False, need_weights=False,
        attn_mask=mask)
    x = x + attn.transpose(0, 1)
    h = F.linear(_ln(x, sd, f"{p}.ln_2"), sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"])
    return x + F.linear(h * torch.sigmoid(1.702 * h), sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])


def oracle_text(sd, texts, prompts):
    from vopstore.tokenizer import clip_tokenizer

    n = prompts.shape[1]
    ids = torch.zeros(len(texts), CONTEXT - n, dtype=torch.long)  # the authors' tokenizer pads with zeros
    for row, text in enumerate(texts):
        tokens = clip_tokenizer()(text)["input_ids"]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)
    x = sd["token_embedding.weight"][ids]
    batch = x.shape[0]
    for i in range(LAYERS):
        x = torch.cat([x[:, :1], prompts[i, :PREFIX].expand(batch, -1, -1), x[:, 1:]], dim=1)
        x = torch.cat([x[:, :-1], prompts[i, PREFIX:].expand(batch, -1, -1), x[:, -1:]], dim=1)
        if i == 0:
            x = x + sd["positional_embedding"]
        x = _block(x, sd, f"transformer.resblocks.{i}", mask)
        if i + 1 < LAYERS:
            x = torch.cat([x[:, :1], x[:, 1 + PREFIX : -1 - SUFFIX], x[:, -1:]], dim=1)
    x = _ln(x, sd, "ln_final")
    return x[torch.arange(batch), ids.argmax(-1) + n] @ sd["text_projection"]


def oracle_video(sd, pixels, prompts):
    batch, frames = pixels.shape[:2]
    x = F.conv2d(pixels.reshape(batch * frames, 3, IMAGE, IMAGE), sd["visual.conv1.weight"], stride=PATCH)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + sd["visual.positional_embedding"]
    n = prompts.shape[2]
    for i in range(LAYERS):
        x = torch.cat([x[:, :1], prompts[i].expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        if i == 0:
            x = _ln(x, sd, "visual.ln_pre")  # the layer-0 prompts pass through ln_pre
        x = _block(x, sd, f"visual.transformer.resblocks.{i}")
        if i + 1 < LAYERS:
            x = torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)
    per_frame = _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]
    return F.normalize(per_frame, dim=-1).reshape(batch, frames, -1).mean(dim=1)


# --- tests ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    from vopstore.store import open_store

    return open_store((tmp_path / "store").as_uri())


def test_imported_version_embeds_like_the_openai_layout_forward(tmp_path, store):
    from vopstore.importer import import_checkpoint
    from vopstore.runtime import Retriever

    path = modelscope_file(tmp_path / "VoP_msrvtt9k.pth")
    result = import_checkpoint(path, "msrvtt", store=store)
    retriever = Retriever(str(result.backbone_dir), store=store)
    retriever.load("msrvtt@v1")
    sd, (text, visual) = openai_clip_state(), released_prompts()
    pixels = torch.randn(2, 3, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(retriever.encode_text(TEXTS, task="msrvtt"), oracle_text(sd, TEXTS, text),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(retriever.encode_video(pixels, task="msrvtt"), oracle_video(sd, pixels, visual),
                                   atol=1e-5, rtol=1e-5)


def test_load_prompt_set_path_agrees_and_plain_clip_matches_openai(tmp_path, store):
    from vopstore.backbone import load_backbone
    from vopstore.importer import import_checkpoint
    from vopstore.prompts import encode_text, encode_video, load_prompt_set

    result = import_checkpoint(modelscope_file(tmp_path / "ckpt.pth"), "msrvtt", store=store)
    backbone = load_backbone(result.backbone_dir)
    method = load_prompt_set(store.fetch(result.info), backbone)
    sd, (text, visual) = openai_clip_state(), released_prompts()
    pixels = torch.randn(1, 2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ids = backbone.tokenize(TEXTS, method.text_tokens)
        torch.testing.assert_close(encode_text(backbone, ids, method), oracle_text(sd, TEXTS, text),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(encode_video(backbone, pixels, method), oracle_video(sd, pixels, visual),
                                   atol=1e-5, rtol=1e-5)
        # the converted weights alone: no prompts at all is OpenAI CLIP's own image embedding
        frame = pixels[:, 0]
        x = F.conv2d(frame, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
        x = torch.cat([sd["visual.class_embedding"].expand(1, 1, -1), x], 1) + sd["visual.positional_embedding"]
        x = _ln(x, sd, "visual.ln_pre")
        for i in range(LAYERS):
            x = _block(x, sd, f"visual.transformer.resblocks.{i}")
        expected = _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]
        features = backbone.model.get_image_features(pixel_values=frame)  # transformers' own forward
        features = getattr(features, "pooler_output", features)  # v5 wraps the projected features in an output
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_cli_import_registers_a_released_vop_on_its_backbone_folder(tmp_path, run, vopstore_home):
    from vopstore.backbone import load_backbone

    path = modelscope_file(tmp_path / "VoP_msrvtt9k.pth")
    code, out, err = run("import-checkpoint", path, "--task", "msrvtt", "--json")
    assert code == 0, err
    imported = json.loads(out)
    folder = imported["backbone_dir"]
    assert folder.startswith(str(vopstore_home / "backbones" / "clip-"))
    shown = json.loads(run("show", "msrvtt@v1", "--json")[1])
    assert shown["method"] == "vop" and shown["method_config"]["text_layout"] == "released"
    assert (shown["method_config"]["text_prompts"], shown["method_config"]["visual_prompts"]) == (8, 8)
    assert shown["params"] == LAYERS * 8 * (TEXT_WIDTH + VISION_WIDTH)
    assert (shown["backbone_name"], shown["backbone_fingerprint"]) == (folder, load_backbone(folder).fingerprint)
    assert shown["training_config"]["imported_from"]["format"] == "modelscope"
    # importing again is a no-op: the same backbone folder, the same version
    code, out, _ = run("import-checkpoint", path, "--task", "msrvtt", "--json")
    assert code == 0 and json.loads(out)["ref"] == "local/msrvtt@v1" and json.loads(out)["backbone_dir"] == folder
    assert len(list((vopstore_home / "backbones").iterdir())) == 1


def test_backbone_out_is_used_and_a_folder_of_other_weights_is_refused(tmp_path, run):
    path = modelscope_file(tmp_path / "a.pth")
    out_dir = tmp_path / "clip-folder"
    code, out, err = run("import-checkpoint", path, "--task", "t", "--backbone-out", out_dir)
    assert code == 0, err
    assert str(out_dir) in out and (out_dir / "model.safetensors").is_file()
    other = modelscope_file(tmp_path / "b.pth", clip=openai_clip_state(seed=9))
    code, _, err = run("import-checkpoint", other, "--task", "t", "--backbone-out", out_dir)
    assert code == 1 and err.count("\n") == 1 and "already holds another backbone" in err


def _bad_files(tmp_path):
    clip = openai_clip_state()
    text, visual = released_prompts()
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    no_ln_final = {k: v for k, v in clip.items() if k != "ln_final.weight"}
    return {
        "notes.pth": ("not a PyTorch checkpoint", None),
        "no-visual.pth": ("visual_prompt_learner.visual_prompts", dict(drop=["module.visual_prompt_learner.visual_prompts"])),
        "odd-text.pth": ("even number of prompts", dict(text=text[:, :7])),
        "flat-visual.pth": ("(layers, 1, prompts, width)", dict(visual=visual[:, 0])),
        "wide-text.pth": ("width 64", dict(text=torch.zeros(LAYERS, 8, 96))),
        "deep-visual.pth": ("has 2 layers", dict(visual=torch.zeros(LAYERS + 1, 1, 8, VISION_WIDTH))),
        "vop-f.pth": ("only basic VoP", dict(extra={"module.frame_position_embedding": torch.zeros(12, 128)})),
        "no-clip.pth": ("no 'clip.*' weights", dict(clip={})),
        "clip-missing.pth": ("missing ln_final.weight", dict(clip=no_ln_final)),
        "clip-shape.pth": ("text_projection", dict(clip={**clip, "text_projection": torch.zeros(TEXT_WIDTH + 1, EMBED)})),
        "resnet.pth": ("ResNet", dict(clip={**clip, "visual.layer1.0.conv1.weight": torch.zeros(1)})),
        "clip-extra.pth": ("'visual.transformer.resblocks.0.attn.scale' is no part", dict(
            clip={**clip, "visual.transformer.resblocks.0.attn.scale": torch.zeros(1)})),
        "clip-partial.pth": ("missing visual.transformer.resblocks.0.mlp.c_fc.weight", dict(
            clip={k: v for k, v in clip.items() if not k.startswith("visual.transformer.resblocks.0.")})),
    }


def test_files_that_are_not_such_checkpoints_fail_in_one_line(tmp_path, run):
    for name, (expected, spec) in _bad_files(tmp_path).items():
        path = tmp_path / name
        if spec is not None:
            modelscope_file(path, **spec)
        code, out, err = run("import-checkpoint", path, "--task", "t")
        assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert expected in err, (name, err)
    assert run("ls", "--json")[1].strip() == "[]"


def test_unknown_format_and_missing_file_fail_in_one_line(tmp_path, run):
    path = modelscope_file(tmp_path / "a.pth")
    code, _, err = run("import-checkpoint", path, "--task", "t", "--format", "openclip")
    assert code == 1 and "choose one of modelscope" in err and err.count("\n") == 1
    code, _, err = run("import-checkpoint", tmp_path / "missing.pth", "--task", "t")
    assert code == 1 and "no such checkpoint file" in err and err.count("\n") == 1


def test_conversion_maps_every_openai_tensor_once():
    from vopstore.openai_clip import to_transformers

    sd = openai_clip_state()
    mapped = to_transformers(sd)
    assert sum(t.numel() for t in mapped.values()) == sum(t.numel() for t in sd.values())
    q, k, v = sd["transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
    assert torch.equal(mapped["text_model.encoder.layers.1.self_attn.k_proj.weight"], k)
    assert torch.equal(mapped["visual_projection.weight"], sd["visual.proj"].t())
    assert torch.equal(mapped["text_projection.weight"], sd["text_projection"].t())


def test_vit_b32_shapes_give_the_vit_b32_config():
    """OpenAI's ViT-B/32 tensor shapes (on the meta device) read back as transformers' ViT-B/32 config."""
    from transformers import CLIPConfig, CLIPModel

    from vopstore.openai_clip import clip_config, to_transformers

    def block_shapes(prefix, width, layers):
        return {f"{prefix}transformer.resblocks.{i}.{name}": shape for i in range(layers) for name, shape in (
            ("attn.in_proj_weight", (3 * width, width)), ("attn.in_proj_bias", (3 * width,)),
            ("attn.out_proj.weight", (width, width)), ("attn.out_proj.bias", (width,)),
            ("mlp.c_fc.weight", (4 * width, width)), ("mlp.c_fc.bias", (4 * width,)),
            ("mlp.c_proj.weight", (width, 4 * width)), ("mlp.c_proj.bias", (width,)),
            ("ln_1.weight", (width,)), ("ln_1.bias", (width,)), ("ln_2.weight", (width,)), ("ln_2.bias", (width,)))}

    shapes = {"token_embedding.weight": (49408, 512), "positional_embedding": (77, 512), "ln_final.weight": (512,),
              "ln_final.bias": (512,), "text_projection": (512, 512), "visual.conv1.weight": (768, 3, 32, 32),
              "visual.class_embedding": (768,), "visual.positional_embedding": (50, 768), "visual.ln_pre.weight": (768,),
              "visual.ln_pre.bias": (768,), "visual.ln_post.weight": (768,), "visual.ln_post.bias": (768,),
              "visual.proj": (768, 512), "logit_scale": (), **block_shapes("", 512, 12),
              **block_shapes("visual.", 768, 12)}
    weights = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    config, reference = clip_config(weights), CLIPConfig()
    for ours, theirs in ((config.text_config, reference.text_config), (config.vision_config, reference.vision_config)):
        for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act"):
            assert getattr(ours, field) == getattr(theirs, field), field
    assert (config.vision_config.image_size, config.vision_config.patch_size, config.projection_dim) == (224, 32, 512)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIPModel(reference).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in to_transformers(weights).items()} == expected
