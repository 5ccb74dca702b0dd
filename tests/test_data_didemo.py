"""DiDeMo as released: exact file names whatever the extension, bare-dot names, repeated lines, the 30 s window."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vopstore.errors import ConfigError, DataError
from vopstore.trainer.data import check_videos, read_split
from vopstore.trainer.data.sample import skip_report
from tests.test_data_readers import put

# Names in the style of the released lists: a Flickr user id, a photo id and a secret, then whatever
# extension the upload had, or a bare dot when it had none.
MOV = "10015567@N08_3655084291_d8b58466fa.mov"
WMV = "12090392@N02_13482799053_87ef417396.wmv"
G2 = "49755147@N00_3758467785_e0a2a7e6b5.3g2"
BARE = "26490016@N08_4549473452_cfb49fb87f."
TWIN_MTS, TWIN_MP4 = "13146366@N00_2880216097_7e0e39dd40.mts", "13146366@N00_2880216097_7e0e39dd40.mp4"
LOST_WMV, LOST_MP4 = "72384723@N00_5214455215_2a4e9be7c8.wmv", "72384723@N00_5214455215_2a4e9be7c8.mp4"


def write_split(root: Path, split: str, lines: list[str], moments: dict[str, list[str]]) -> None:
    """``{split}_list.txt`` and ``{split}_data.json`` in the released layout (one object per moment)."""
    (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    data = [{"video": video, "description": text, "times": [[k, k], [k, k + 1]], "annotation_id": n,
             "dl_link": "https://www.flickr.com/video_download.gne?id=0"}
            for n, (video, texts) in enumerate(moments.items()) for k, text in enumerate(texts)]
    (root / f"{split}_data.json").write_text(json.dumps(data))


@pytest.fixture
def released(tmp_path, synthetic_clips):
    """Six test videos: odd extensions, a bare-dot name, two names that differ only in extension (both
    present), two such names of which only the .mp4 exists, and a repeated list line."""
    put(synthetic_clips, tmp_path / "videos", MOV, WMV, G2, BARE, TWIN_MTS, TWIN_MP4)
    put(synthetic_clips, tmp_path / "videos" / "more", LOST_MP4)
    names = [MOV, WMV, G2, BARE, TWIN_MTS, TWIN_MP4, WMV, LOST_WMV, LOST_MP4]
    moments = {n: [f"{n[:8]} first moment.", f"{n[:8]} second moment."] for n in names}
    write_split(tmp_path, "test", names, moments)
    return tmp_path


def test_every_annotated_name_gets_its_own_file_whatever_the_extension(released):
    test = read_split("didemo", released, "test")
    ids = [s.video_id for s in test]
    assert ids == [MOV, WMV, G2, BARE, TWIN_MTS, TWIN_MP4, LOST_MP4]  # the repeated WMV line counts once
    for s in test:  # each annotated name is read from the file of exactly that name
        assert s.video_path.name == s.video_id
    assert len({s.video_path for s in test}) == len(test)  # no two paragraphs on one video
    assert test[0].caption == f"{MOV[:8]} first moment. {MOV[:8]} second moment."
    assert [str(r).split(": ", 1)[1] for r in test.skipped] == [
        f"video not found: no file named {LOST_WMV!r} under {released} "
        "(1 file(s) share its stem, but so does another listed video)"]
    assert test.skipped[0].line == 8
    assert len(check_videos(test)) == len(test)  # the bytes decode whatever the name says


def test_frames_come_from_the_first_30_seconds_unless_asked_otherwise(released):
    assert {s.end_s for s in read_split("didemo", released, "test")} == {30.0}
    assert {s.end_s for s in read_split("didemo", released, "test", seconds=None)} == {None}
    with pytest.raises(ConfigError, match="format 'msrvtt' takes no option seconds"):
        read_split("msrvtt", released, "test", seconds=30)


def test_a_reencoded_copy_is_used_only_when_no_other_name_claims_its_stem(tmp_path, synthetic_clips):
    put(synthetic_clips, tmp_path / "mp4", "aaa@N00_1.mp4", "bbb@N00_2.mp4", "ccc@N00_3.mp4", "ccc@N00_3.webm")
    write_split(tmp_path, "test", ["aaa@N00_1.avi", "bbb@N00_2.mts", "ccc@N00_3.wmv"],
                {"aaa@N00_1.avi": ["a"], "bbb@N00_2.mts": ["b"], "ccc@N00_3.wmv": ["c"]})
    write_split(tmp_path, "train", ["bbb@N00_2.mp4"], {"bbb@N00_2.mp4": ["another video"]})
    test = read_split("didemo", tmp_path, "test")
    assert [(s.video_id, s.video_path.name) for s in test] == [("aaa@N00_1.avi", "aaa@N00_1.mp4")]
    reasons = [s.reason for s in test.skipped]
    assert "so does another listed video" in reasons[0]  # bbb@N00_2.mp4 is a training video's own name
    assert "2 files share its stem: ccc@N00_3.mp4, ccc@N00_3.webm" in reasons[1]


def test_strict_turns_a_skip_into_an_error_and_the_report_counts_reasons(released):
    test = read_split("didemo", released, "test")
    assert skip_report(test) == {"kept": 7, "skipped": 1, "reasons": {"video not found": 1}}
    with pytest.raises(DataError, match=r"--strict: split 'test' skipped 1 item\(s\) \(7 samples, 1 skipped "
                                        r"\(1x video not found\)\); first: .*test_list.txt:8"):
        test.require_complete("split 'test'")
    shutil.copy(released / "videos" / "more" / LOST_MP4, released / "videos" / LOST_WMV)
    complete = read_split("didemo", released, "test")
    complete.require_complete("split 'test'")  # nothing skipped: no error
    assert skip_report(complete) == {"kept": 8, "skipped": 0, "reasons": {}}
