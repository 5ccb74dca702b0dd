"""Every shipped preset loads into a valid TrainConfig; overrides parse and validate."""

from __future__ import annotations

import pytest

from vopstore.errors import ConfigError, NotFoundError
from vopstore.trainer.config import TrainConfig, build_config, list_presets, parse_override

PRESETS = ["activitynet", "didemo", "lsmdc", "msrvtt-7k", "msrvtt-9k"]


def test_shipped_presets_are_the_five_benchmarks():
    assert list_presets() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_carries_the_paper_protocol(name):
    cfg = build_config(name)
    assert (cfg.epochs, cfg.batch_size, cfg.num_frames, cfg.image_size) == (5, 32, 12, 224)
    assert (cfg.weight_decay, cfg.warmup_ratio, cfg.grad_clip, cfg.seed) == (0.2, 0.1, 1.0, 24)
    assert cfg.data_format != "auto" and cfg.train_split and cfg.test_split


@pytest.mark.parametrize("name", PRESETS)
def test_preset_selects_as_the_papers_numbers_imply_and_says_so(name):
    """X-Pool's rule (the harness VoP descends from): best windowed t2v R@1, 10 evaluations per epoch,
    window 5, on the test split; the preset's own text must say that this is optimistic."""
    from importlib import resources

    cfg = build_config(name)
    assert (cfg.select, cfg.select_metric, cfg.evals_per_epoch, cfg.select_window, cfg.val_fraction) == \
        ("best", "t2v/R@1", 10, 5, 0.0)
    text = resources.files("vopstore.trainer").joinpath("presets", f"{name}.toml").read_text()
    assert "TEST split" in text and "optimistic" in text and "val_fraction=0.1" in text


def test_defaults_keep_the_last_step():
    assert (TrainConfig().select, TrainConfig().val_fraction) == ("last", 0.0)


def test_msrvtt_presets_differ_only_in_train_split():
    nine, seven = build_config("msrvtt-9k").to_dict(), build_config("msrvtt-7k").to_dict()
    assert {k for k in nine if nine[k] != seven[k]} == {"train_split"}


def test_overrides_apply_in_order_and_parse_as_toml():
    cfg = build_config("lsmdc", overrides={"lr": 3e-4, "epochs": None},
                       sets=["epochs=2", "method=vop-f", "method_config={k_shallow = 4}"])
    assert (cfg.lr, cfg.epochs, cfg.method, cfg.method_config) == (3e-4, 2, "vop-f", {"k_shallow": 4})


def test_int_given_for_float_field_is_accepted():
    assert build_config(sets=["lr=1"]).lr == 1.0


@pytest.mark.parametrize("bad, match", [
    ("epochs=0", "epochs must be >= 1"), ("lr=-1", "lr and aux_lr must be > 0"),
    ("precision=fp8", "precision must be one of"), ("batch_size=30", "not divisible by grad_accum 4"),
    ("epochs=two", "epochs must be a int"), ("nosuch=1", "unknown training option.*nosuch"),
    ("noequals", "override must look like key=value"),
    ("select=first", "select must be one of last, best"), ("select_metric=t2v/MnR", "select_metric must look"),
    ("val_fraction=0.2", "set select=best too"), ("evals_per_epoch=0", "evals_per_epoch and select_window"),
])
def test_bad_overrides_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_config(sets=[bad, "grad_accum=4"] if bad.startswith("batch_size") else [bad])


def test_unknown_preset_is_a_lookup_error():
    with pytest.raises(NotFoundError):
        build_config("kinetics")


def test_micro_batch_splits_the_global_batch():
    cfg = TrainConfig(batch_size=32, grad_accum=2)
    assert cfg.micro_batch(1) == 16 and cfg.micro_batch(4) == 4
    with pytest.raises(ConfigError, match="does not split over 3 ranks"):
        cfg.micro_batch(3)


def test_parse_override_keeps_bare_strings():
    assert parse_override("backbone=/models/clip") == ("backbone", "/models/clip")
    assert parse_override("test-split=val1") == ("test_split", "val1")


def test_a_task_named_like_a_preset_gets_it_unless_another_is_asked_for():
    from vopstore.trainer.config import preset_for

    assert preset_for("lsmdc", None) == "lsmdc"
    assert preset_for("lsmdc", "didemo") == "didemo"
    assert preset_for("my-own-task", None) is None
    assert build_config(preset_for("lsmdc", None)).data_format == build_config("lsmdc").data_format
