"""Each method's config completes itself from the backbone's sizes and the clip length; unknown names fail early."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vopstore.baselines.configs import AdapterConfig
from vopstore.errors import ConfigError, UnknownMethodError
from vopstore.prompts.configs import (Dims, VopCConfig, VopConfig, VopFConfig, VopFPConfig, VopPConfig,
                                      complete_settings, config_class)


def _dims(vision_layers: int) -> Dims:
    return Dims(text_layers=4, text_width=32, vision_layers=vision_layers, vision_width=64)


# K^s keeps the paper's 8 of 12 intra-frame layers, worked out by hand: 2/3 of L rounded, within 1..L-1.
@pytest.mark.parametrize("layers, k_shallow", [(12, 8), (24, 16), (6, 4), (3, 2), (2, 1)])
def test_vop_f_keeps_the_papers_share_of_intra_frame_layers(layers, k_shallow):
    config = VopFConfig.for_backbone(_dims(layers), frames=5)
    assert (config.k_shallow, config.num_frames) == (k_shallow, 5)


def test_the_users_settings_win_over_the_completed_ones():
    config = VopFPConfig.for_backbone(_dims(12), frames=5, settings={"k_shallow": 3, "num_frames": 9})
    assert (config.k_shallow, config.num_frames) == (3, 9)


def test_only_the_settings_a_method_has_are_completed():
    assert VopConfig.for_backbone(_dims(3), frames=7) == VopConfig()
    assert VopCConfig.for_backbone(_dims(3), frames=7) == VopCConfig()
    assert VopPConfig.for_backbone(_dims(3), frames=7) == VopPConfig(num_frames=7)


def test_a_completed_config_is_checked_against_the_backbone():
    with pytest.raises(ConfigError, match="k_shallow must be between 1 and 2"):
        VopFConfig.for_backbone(_dims(3), frames=4, settings={"k_shallow": 3})
    with pytest.raises(ConfigError, match="visual_depth must be between 1 and 3"):
        VopConfig.for_backbone(_dims(3), frames=4, settings={"visual_depth": 4})
    with pytest.raises(ConfigError, match="unknown setting"):
        VopConfig.for_backbone(_dims(3), frames=4, settings={"k_shallow": 2})


def test_complete_settings_covers_prompt_methods_and_passes_baselines_through():
    assert complete_settings("vop-f+c", _dims(6), 4, {"cmm_hidden": 5}) == {
        "text_prompts": 8, "text_depth": None, "text_layout": "prefix", "init_std": 0.02, "visual_depth": None,
        "generic_prompts": 4, "generated_prompts": 4, "cmm_hidden": 5, "k_shallow": 4, "video_prompts": 8,
        "num_frames": 4}
    assert complete_settings("adapter-attn", _dims(6), 4, {"hidden": 8}) == {"hidden": 8}
    assert config_class("adapter-attn") is AdapterConfig and config_class("vop-p") is VopPConfig


def test_an_unknown_method_names_every_choice_without_importing_torch():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'lora'; choose a prompt method \(vop, .*vop-f\+c\) "
                                                 r"or a baseline \(full, .*adapter-ffn\)"):
        config_class("lora")
    code = ("import sys\nfrom vopstore.prompts.configs import config_class\n"
            "try:\n    config_class('lora')\nexcept LookupError:\n    print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "False\n", done.stderr
