"""Dataset readers on small fixture folders in each format, with real (tiny) mp4 files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vopstore.errors import ConfigError, DataError, FileMissingError
from vopstore.trainer.data import detect_format, read_split


def put(clips, dest: Path, *names: str) -> None:
    """Copy fixture clips to ``dest/<name>`` (the extension of the name is kept; it is just bytes)."""
    for clip, name in zip(clips, names):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip.path, dest / name)


@pytest.fixture
def msrvtt(tmp_path, synthetic_clips):
    put(synthetic_clips, tmp_path / "videos" / "all", "video0.mp4", "video1.webm", "video2.mp4", "video3.mp4")
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\n")
    (tmp_path / "MSRVTT_train.7k.csv").write_text("video_id\nvideo1\n")
    sentences = [{"video_id": "video0", "caption": "a cat", "sen_id": 0},
                 {"video_id": "video1", "caption": "a dog ", "sen_id": 1},
                 {"video_id": "video0", "caption": "a kitten", "sen_id": 2},
                 {"video_id": "video2", "caption": "not in train", "sen_id": 3}]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences, "videos": []}))
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr2,video2,a man sings\nret1,msr3,video3,a car drives\n")
    return tmp_path


def test_msrvtt_train_has_all_captions_and_webm_fallback(msrvtt):
    assert detect_format(msrvtt) == "msrvtt"
    train = read_split("msrvtt", msrvtt, "train")
    assert [(s.video_id, s.caption) for s in train] == [("video0", "a cat"), ("video1", "a dog"),
                                                          ("video0", "a kitten")]
    assert train[1].video_path.suffix == ".webm"
    assert [s.video_id for s in read_split("msrvtt", msrvtt, "train-7k")] == ["video1"]
    test = read_split("auto", msrvtt, "test")
    assert [(s.video_id, s.caption) for s in test] == [("video2", "a man sings"), ("video3", "a car drives")]
    assert test[0].video_path == msrvtt / "videos" / "all" / "video2.mp4"


def test_missing_video_skip_and_count_or_raise(msrvtt):
    (msrvtt / "videos" / "all" / "video3.mp4").unlink()
    test = read_split("msrvtt", msrvtt, "test", on_error="skip")
    assert [s.video_id for s in test] == ["video2"]
    assert len(test.skipped) == 1 and test.skipped[0].line == 3
    assert "1 samples, 1 skipped (1x video not found)" == test.summary()
    with pytest.raises(DataError, match=r"MSRVTT_JSFUSION_test.csv:3: video not found: .*video3\.mp4"):
        read_split("msrvtt", msrvtt, "test", on_error="raise")


def test_lsmdc_rows_layouts_and_malformed_lines(tmp_path, synthetic_clips):
    ids = ["1001_Movie_A_00.00.01.000-00.00.02.000", "1001_Movie_A_00.00.03.000-00.00.04.000",
           "2002_Other_00.01.00.000-00.01.05.000"]
    put(synthetic_clips, tmp_path / "avi", f"1001_Movie_A/{ids[0]}.avi", f"1001_Movie_A/{ids[1]}.avi",
        f"flat/{ids[2]}.mp4")
    rows = [f"{ids[0]}\t1\t2\t1\t2\tSOMEONE opens a door.", f"{ids[1]}\t3\t4\t3\t4\tSOMEONE sits.",
            "broken row with\tonly three\tfields", f"{ids[0]}\t1\t2\t1\t2\tSOMEONE smiles.",
            f"{ids[2]}\t0\t5\t0\t5\tA car passes."]
    (tmp_path / "LSMDC16_annos_training.csv").write_text("\n".join(rows) + "\n")
    assert detect_format(tmp_path) == "lsmdc"
    train = read_split("lsmdc", tmp_path, "train")
    assert [s.caption for s in train] == ["SOMEONE opens a door.", "SOMEONE sits.", "SOMEONE smiles.",
                                          "A car passes."]  # duplicate clip ids are kept
    assert train[0].video_path.parent.name == "1001_Movie_A" and train[3].video_path.suffix == ".mp4"
    assert [str(s) for s in train.skipped] == [
        f"{tmp_path / 'LSMDC16_annos_training.csv'}:3: malformed row: expected 6 tab-separated fields "
        "(clip_id ... sentence), got 3"]
    with pytest.raises(DataError, match=r"LSMDC16_annos_training.csv:3: malformed row"):
        read_split("lsmdc", tmp_path, "train", on_error="raise")
    with pytest.raises(FileMissingError, match="LSMDC16_challenge_1000_publictect.csv"):
        read_split("lsmdc", tmp_path, "test")


def test_didemo_joins_descriptions_per_video(tmp_path, synthetic_clips):
    put(synthetic_clips, tmp_path / "videos", "111@N00_1.mp4", "222@N00_2.mp4")
    (tmp_path / "test_list.txt").write_text("111@N00_1.mov\n222@N00_2.mp4\n333@N00_3.mp4\n")
    data = [{"video": "111@N00_1.mov", "description": "a man enters.", "times": [[0, 1]]},
            {"video": "222@N00_2.mp4", "description": "dog barks", "times": [[2, 3]]},
            {"video": "111@N00_1.mov", "description": " he waves ", "times": [[1, 2]]}]
    (tmp_path / "test_data.json").write_text(json.dumps(data))
    assert detect_format(tmp_path) == "didemo"
    test = read_split("didemo", tmp_path, "test")
    assert [(s.video_id, s.caption) for s in test] == [("111@N00_1.mov", "a man enters. he waves"),
                                                       ("222@N00_2.mp4", "dog barks")]
    assert test[0].video_path.name == "111@N00_1.mp4"  # a re-encoded copy matches by stem
    assert "test_list.txt:3: video 333@N00_3.mp4 has no description" in str(test.skipped[0])


def test_didemo_bad_json_names_file_and_line(tmp_path):
    (tmp_path / "train_list.txt").write_text("a.mp4\n")
    (tmp_path / "train_data.json").write_text('[\n {"video": "a.mp4",\n  "description": oops}\n]')
    with pytest.raises(DataError, match=r"train_data.json:3: invalid JSON"):
        read_split("didemo", tmp_path, "train")


def test_activitynet_paragraphs_any_extension(tmp_path, synthetic_clips):
    put(synthetic_clips, tmp_path / "clips", "abcdefghijk.mkv", "zzzzzzzzzzz.mp4")
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_abcdefghijk", "v_zzzzzzzzzzz", "v_nothere0000"]))
    ann = {"v_abcdefghijk": {"duration": 10.0, "timestamps": [[0, 5], [5, 10]],
                             "sentences": ["A man runs.", " He jumps. "]},
           "v_zzzzzzzzzzz": {"duration": 4.0, "timestamps": [[0, 4]], "sentences": ["Rain falls."]},
           "v_nothere0000": {"duration": 4.0, "timestamps": [[0, 4]], "sentences": ["Gone."]}}
    (tmp_path / "val_1.json").write_text(json.dumps(ann))
    assert detect_format(tmp_path) == "activitynet"
    for split in ("val1", "test"):
        test = read_split("activitynet", tmp_path, split)
        assert [(s.video_id, s.caption) for s in test] == [("v_abcdefghijk", "A man runs. He jumps."),
                                                           ("v_zzzzzzzzzzz", "Rain falls.")]
        assert test[0].video_path.suffix == ".mkv"
        assert "video not found" in test.skipped[0].reason and "v_nothere0000" in test.skipped[0].reason


def test_generic_jsonl_bad_lines(tmp_path, synthetic_clips):
    put(synthetic_clips, tmp_path / "data" / "clips", "a.mp4", "b.mp4")
    lines = ['{"video": "clips/a.mp4", "caption": "first"}', '{"video": "clips/b.mp4", "caption": }',
             '{"video": "clips/b.mp4"}', "", '{"video": "clips/missing.mp4", "caption": "gone"}',
             '{"video": "clips/b.mp4", "caption": "second", "extra": 1}']
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert detect_format(tmp_path / "data") == "generic"
    train = read_split("generic", tmp_path / "data", "train")
    assert [(s.video_id, s.caption) for s in train] == [("clips/a.mp4", "first"), ("clips/b.mp4", "second")]
    assert [(s.line, s.reason.split(":")[0]) for s in train.skipped] == [
        (2, "invalid JSON"), (3, "malformed row"), (5, "video not found")]
    with pytest.raises(DataError, match=r"train.jsonl:2: invalid JSON"):
        read_split("generic", tmp_path / "data", "train", on_error="raise")


def test_generic_csv_wrong_field_count(tmp_path, synthetic_clips):
    put(synthetic_clips, tmp_path, "a.mp4")
    (tmp_path / "test.csv").write_text('video,caption\na.mp4,"a, quoted caption"\na.mp4\na.mp4,x,extra\n')
    test = read_split("auto", tmp_path, "test")
    assert [s.caption for s in test] == ["a, quoted caption"]
    assert [s.line for s in test.skipped] == [3, 4]
    with pytest.raises(DataError, match=r"test.csv:3: malformed row: expected 2 fields"):
        read_split("generic", tmp_path, "test", on_error="raise")


def test_bad_arguments(tmp_path, msrvtt):
    with pytest.raises(ConfigError, match="unknown dataset format 'kinetics'"):
        read_split("kinetics", msrvtt, "train")
    with pytest.raises(ConfigError, match="no split 'val'"):
        read_split("msrvtt", msrvtt, "val")
    with pytest.raises(ConfigError, match="on_error"):
        read_split("msrvtt", msrvtt, "test", on_error="ignore")
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path / "videos" / "all")
    with pytest.raises(FileMissingError):
        read_split("generic", tmp_path / "nope", "train")
    with pytest.raises(ConfigError, match="split names"):
        read_split("generic", msrvtt, "../secrets")


def test_check_videos_drops_undecodable_files(tmp_path, synthetic_clips):
    from vopstore.trainer.data import check_videos

    put(synthetic_clips, tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "b.mp4").write_bytes(b"\x00" * 2048)  # exists, but is no video
    (tmp_path / "train.jsonl").write_text(
        '{"video": "a.mp4", "caption": "one"}\n{"video": "b.mp4", "caption": "two"}\n'
        '{"video": "b.mp4", "caption": "three"}\n{"video": "c.mp4", "caption": "four"}\n')
    listed = read_split("generic", tmp_path, "train")
    assert [s.caption for s in listed] == ["one", "two", "three"] and len(listed.skipped) == 1
    ok = check_videos(listed)
    assert [s.caption for s in ok] == ["one"]
    assert [s.reason.split(":")[0] for s in ok.skipped] == ["video not found", "undecodable video"]
    assert ok.summary() == "1 samples, 2 skipped (1x video not found; 1x undecodable video)"
    with pytest.raises(DataError, match=r"b\.mp4.*cannot decode video"):
        check_videos(listed, on_error="raise")
