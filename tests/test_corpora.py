"""Tests of corpora.py: the shared real corpora, and tiny generated trees for every other reader."""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import corpora  # noqa: E402
from data.corpora import CANONICAL, Utterance, read_corpus  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The real corpora in ../shared/corpora
# ---------------------------------------------------------------------------------------------
def shared(name: str) -> Path:
    """Return the shared corpus folder `name`; skip (fail under CI=true) when it is absent."""
    folder = corpora.corpora_root() / name
    if not folder.is_dir():
        reason = f"shared corpus {folder} is absent (set SER_CORPORA to the folder holding emodb, ravdess, urdu)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


@pytest.mark.parametrize("name, files, speakers, labels", [
    ("emodb", 535, 10, 7),
    ("ravdess", 1200, 20, 8),
    ("urdu", 400, 29, 4),
    ("ased", 2474, 65, 5),
    ("emotiontts_ko", 300, 15, 4),
])
def test_shared_corpus_counts(name, files, speakers, labels):
    shared(name)
    rows = read_corpus(name)
    assert len(rows) == files
    assert len({r.speaker for r in rows}) == speakers
    assert len({r.label for r in rows}) == labels
    assert all(r.corpus == name and r.speaker.startswith(name + ":") and r.session is None for r in rows)
    assert all(r.label in CANONICAL and Path(r.path).is_absolute() for r in rows)
    assert rows == sorted(rows, key=lambda r: r.path)


def test_shared_emodb_examples():
    root = shared("emodb")
    rows = {Path(r.path).name: r for r in read_corpus("emodb")}
    path = str((root / "wav" / "03a01Fa.wav").resolve())
    assert rows["03a01Fa.wav"] == Utterance(path, "happy", "emodb:03", "emodb")
    assert rows["08a04Wc.wav"].label == "angry" and rows["08a04Wc.wav"].speaker == "emodb:08"
    assert rows["13b03Lb.wav"].label == "boredom"
    assert {r.speaker[6:] for r in rows.values()} == {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
    assert set(Counter(r.label for r in rows.values())) == set(CANONICAL) - {"calm", "surprised"}


def test_shared_ravdess_examples():
    root = shared("ravdess")
    rows = {Path(r.path).name: r for r in read_corpus(f"ravdess={root}")}
    path = str((root / "Actor_12" / "03-01-05-01-02-01-12.flac").resolve())
    assert rows["03-01-05-01-02-01-12.flac"] == Utterance(path, "angry", "ravdess:12", "ravdess")
    assert rows["03-01-02-01-01-01-01.flac"].label == "calm"
    assert rows["03-01-08-01-01-01-17.flac"].label == "surprised"
    assert Counter(r.label for r in rows.values())["neutral"] == 80  # no strong-intensity neutral


def test_shared_urdu_examples():
    shared("urdu")
    rows = read_corpus("urdu")
    by_name = {Path(r.path).name: r for r in rows}
    assert by_name["SM1_F10_A010.flac"].label == "angry"
    assert by_name["SM1_F10_A010.flac"].speaker == "urdu:SM1"
    assert Counter(r.label for r in rows) == {"angry": 100, "happy": 100, "neutral": 100, "sad": 100}
    # the folder name is the label too: the two agree for every file
    assert all(Path(r.path).parent.name.lower() == r.label for r in rows)
    assert not any(r.path.endswith(".md") for r in rows)


def test_shared_ased_and_korean_examples():
    shared("ased")
    shared("emotiontts_ko")
    ased = {Path(r.path).name: r for r in read_corpus("ased")}
    assert ased["a5-03-01-02-50.opus"].label == "angry" and ased["a5-03-01-02-50.opus"].speaker == "ased:50"
    assert ased["S4-04-02-01-29.opus"].label == "sad"  # the one capitalised name
    # a speaker number that occurs with both gender codes is one speaker
    assert {n.split("-")[3] for n, r in ased.items() if r.speaker == "ased:09"} == {"01", "02"}
    assert all(Path(r.path).parent.name[2:].lower().startswith(r.label[:3]) for r in ased.values())
    common = read_corpus("ased:common_texts")
    assert {Path(r.path).name.split("-")[1] for r in common} == {"01", "02"} and len(common) == 624
    korean = {Path(r.path).name: r for r in read_corpus("emotiontts_ko")}
    assert (korean["nea00203.opus"].label, korean["nea00203.opus"].speaker) == ("sad", "emotiontts_ko:nea")
    assert Counter(r.label for r in korean.values()) == {"neutral": 75, "happy": 75, "sad": 75, "angry": 75}


def test_corpora_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SER_CORPORA", str(tmp_path))
    assert corpora.corpora_root() == tmp_path
    with pytest.raises(ValueError, match=str(tmp_path / "emodb")):
        read_corpus("emodb")
    monkeypatch.delenv("SER_CORPORA")
    assert corpora.corpora_root() == Path(corpora.__file__).resolve().parents[2] / "shared" / "corpora"


# ---------------------------------------------------------------------------------------------
# Tiny generated trees in each corpus's own naming scheme
# ---------------------------------------------------------------------------------------------
def tone(path: Path, seconds: float = 0.2, sr: int = 16_000) -> Path:
    """Write a short sine to `path` (any soundfile format by suffix) and return it."""
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    opus = dict(format="OGG", subtype="OPUS") if path.suffix == ".opus" else {}
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype("float32"), sr, **opus)
    return path


def tree(root: Path, names: list[str]) -> Path:
    """Create audio files (and any non-audio name as a text file) below `root`; return root."""
    for name in names:
        path = root / name
        if path.suffix in (".wav", ".flac", ".opus"):
            tone(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not audio")
    return root


def summary(rows):
    """Return [(file name, label, speaker)] of `rows`."""
    return [(Path(r.path).name, r.label, r.speaker) for r in rows]


def test_ased(tmp_path):
    root = tree(tmp_path / "ASED_V1", ["01Neutral/n1-01-01-01-01.opus", "02Fearful/f2-03-02-02-09.opus",
                                       "04Sad/S4-04-02-01-29.opus", "05Angry/a5-07-01-01-09.opus",
                                       "03Happy/h3-02-01-02-65.opus", "03Happy/readme.txt", "03Happy/h3-x.opus"])
    rows = read_corpus(f"ased={root}")
    assert summary(rows) == [
        ("n1-01-01-01-01.opus", "neutral", "ased:01"), ("f2-03-02-02-09.opus", "fearful", "ased:09"),
        ("h3-02-01-02-65.opus", "happy", "ased:65"), ("S4-04-02-01-29.opus", "sad", "ased:29"),
        ("a5-07-01-01-09.opus", "angry", "ased:09")]  # speaker 09 with both gender codes is one voice
    assert summary(read_corpus(f"ased={root}:common_texts")) == [
        ("n1-01-01-01-01.opus", "neutral", "ased:01"), ("h3-02-01-02-65.opus", "happy", "ased:65")]


def test_emotiontts_ko(tmp_path):
    root = tree(tmp_path / "ko", ["ema/ema00001.opus", "ema/ema00100.opus", "ema/ema00101.opus", "nea/nea00203.opus",
                                  "nea/nea00301.opus", "nea/nea00400.opus", "nea/nea00401.opus", "nea/notes.txt"])
    rows = read_corpus(f"emotiontts_ko={root}")
    # 201-300 is sad and 301-400 angry: the corpus's own README has those two swapped (../shared/README.md)
    assert summary(rows) == [
        ("ema00001.opus", "neutral", "emotiontts_ko:ema"), ("ema00100.opus", "neutral", "emotiontts_ko:ema"),
        ("ema00101.opus", "happy", "emotiontts_ko:ema"), ("nea00203.opus", "sad", "emotiontts_ko:nea"),
        ("nea00301.opus", "angry", "emotiontts_ko:nea"), ("nea00400.opus", "angry", "emotiontts_ko:nea")]
    assert {r.corpus for r in rows} == {"emotiontts_ko"}


def test_cremad(tmp_path):
    root = tree(tmp_path / "crema", ["AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1001_IEO_HAP_HI.wav",
                                     "AudioWAV/1091_TIE_NEU_XX.wav", "AudioWAV/1002_WSI_FEA_LO.wav",
                                     "AudioWAV/1003_ITS_DIS_MD.wav", "AudioWAV/1003_ITH_SAD_XX.wav", "README.txt"])
    rows = read_corpus(f"cremad={root}")
    assert summary(rows) == [
        ("1001_DFA_ANG_XX.wav", "angry", "cremad:1001"), ("1001_IEO_HAP_HI.wav", "happy", "cremad:1001"),
        ("1002_WSI_FEA_LO.wav", "fearful", "cremad:1002"), ("1003_ITH_SAD_XX.wav", "sad", "cremad:1003"),
        ("1003_ITS_DIS_MD.wav", "disgust", "cremad:1003"), ("1091_TIE_NEU_XX.wav", "neutral", "cremad:1091")]
    assert {r.corpus for r in rows} == {"cremad"}


def test_tess(tmp_path):
    root = tree(tmp_path / "tess", ["OAF_angry/OAF_back_angry.wav", "OAF_Fear/OAF_bath_fear.wav",
                                    "YAF_pleasant_surprise/YAF_back_ps.wav", "YAF_disgust/YAF_chat_disgust.wav",
                                    "YAF_pleasant_surprised/YAF_chair_pleasant_surprised.wav",
                                    "OAF_neutral/OAF_dog_neutral.wav", "YAF_happy/YAF_date_happy.wav",
                                    "YAF_sad/YAF_dime_sad.wav"])
    rows = {Path(r.path).name: r for r in read_corpus(f"tess={root}")}
    assert {n: (r.label, r.speaker) for n, r in rows.items()} == {
        "OAF_back_angry.wav": ("angry", "tess:OAF"), "OAF_bath_fear.wav": ("fearful", "tess:OAF"),
        "OAF_dog_neutral.wav": ("neutral", "tess:OAF"), "YAF_back_ps.wav": ("surprised", "tess:YAF"),
        "YAF_chair_pleasant_surprised.wav": ("surprised", "tess:YAF"),
        "YAF_chat_disgust.wav": ("disgust", "tess:YAF"),
        "YAF_date_happy.wav": ("happy", "tess:YAF"), "YAF_dime_sad.wav": ("sad", "tess:YAF")}


def test_casia(tmp_path):
    root = tree(tmp_path / "CASIA", ["liuchanhg/angry/201.wav", "liuchanhg/surprise/202.wav",
                                     "ZhaoZuoxiang/fear/203.wav", "wangzhe/neutral/204.wav", "wangzhe/sad/205.wav",
                                     "zhaoquanyin/happy/206.wav", "zhaoquanyin/happy/notes.txt"])
    assert summary(read_corpus(f"casia={root}")) == [  # sorted by path: upper case first
        ("203.wav", "fearful", "casia:ZhaoZuoxiang"),
        ("201.wav", "angry", "casia:liuchanhg"), ("202.wav", "surprised", "casia:liuchanhg"),
        ("204.wav", "neutral", "casia:wangzhe"),
        ("205.wav", "sad", "casia:wangzhe"), ("206.wav", "happy", "casia:zhaoquanyin")]
    tree(root, ["wangzhe/puzzled/207.wav"])
    with pytest.raises(ValueError, match="unknown emotion 'puzzled'"):
        read_corpus(f"casia={root}")


IEMOCAP_EVAL = {
    "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt": [
        ("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M001", "exc"), ("Ses01F_impro01_F002", "xxx"),
        ("Ses01F_impro01_M003", "hap"), ("Ses01F_impro01_F004", "fru")],
    "Session2/dialog/EmoEvaluation/Ses02M_script01_1.txt": [
        ("Ses02M_script01_1_M000", "ang"), ("Ses02M_script01_1_F001", "sad"), ("Ses02M_script01_1_F002", "sur"),
        ("Ses02M_script01_1_M003", "oth")],
}


@pytest.fixture
def iemocap(tmp_path) -> Path:
    """Return a raw IEMOCAP tree: wavs under Session*/sentences/wav, labels in EmoEvaluation files."""
    root = tmp_path / "IEMOCAP_full_release"
    for txt, utterances in IEMOCAP_EVAL.items():
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for n, (utt, code) in enumerate(utterances):
            lines += [f"[{n}.1000 - {n}.9000]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
                      "C-E1:\tNeutral state;\t()", "A-E2:\tval 3; act 2; dom  2;\t()", ""]
            tone(root / txt.split("/")[0] / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav")
        (root / txt).parent.mkdir(parents=True, exist_ok=True)
        (root / txt).write_text("\n".join(lines))
    categorical = root / "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e2_cat.txt"
    categorical.parent.mkdir()
    categorical.write_text("Ses01F_impro01_F002 :Anger; ()\n")
    return root


def test_iemocap(iemocap):
    rows = read_corpus(f"iemocap={iemocap}")
    assert [(Path(r.path).stem, r.label, r.speaker, r.session) for r in rows] == [
        ("Ses01F_impro01_F000", "neutral", "iemocap:Ses01F", "Session1"),
        ("Ses01F_impro01_M003", "happy", "iemocap:Ses01M", "Session1"),
        ("Ses02M_script01_1_F001", "sad", "iemocap:Ses02F", "Session2"),
        ("Ses02M_script01_1_F002", "surprised", "iemocap:Ses02F", "Session2"),
        ("Ses02M_script01_1_M000", "angry", "iemocap:Ses02M", "Session2")]
    merged = read_corpus(f"iemocap={iemocap}:merge_excited")
    assert len(merged) == 6 and {r.label for r in merged if "M001" in r.path} == {"happy"}
    four = corpora.read_corpora([f"iemocap={iemocap}:merge_excited"], keep=["neutral", "happy", "sad", "angry"])
    assert Counter(r.label for r in four) == {"neutral": 1, "happy": 2, "sad": 1, "angry": 1}
    with pytest.raises(ValueError, match="merge_excited"):  # "excited" is not a label: point at the option
        corpora.read_corpora([f"iemocap={iemocap}"], merge=corpora.parse_merge("excited:happy"))


def test_iemocap_without_labels(tmp_path):
    tree(tmp_path, ["Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"])
    with pytest.raises(ValueError, match="EmoEvaluation"):
        read_corpus(f"iemocap={tmp_path}")


def test_folder(tmp_path):
    root = tree(tmp_path / "mine", ["Anger/a.wav", "happiness/take2/b.flac", "Sad/c.wav", "JOY/d.wav",
                                    "bored/e.wav", "calm/f.wav", "notes.txt", "loose.wav", ".hidden/g.wav"])
    rows = read_corpus(f"folder={root}:canonical")  # emotion aliases -> the canonical names
    assert [(Path(r.path).name, r.label) for r in rows] == [
        ("a.wav", "angry"), ("d.wav", "happy"), ("c.wav", "sad"), ("e.wav", "boredom"), ("f.wav", "calm"),
        ("b.flac", "happy")]
    assert {(r.speaker, r.corpus) for r in rows} == {("folder:unknown", "folder")}
    as_named = read_corpus(f"folder={root}")  # by default, the folder names are the labels
    assert [r.label for r in as_named] == ["Anger", "JOY", "Sad", "bored", "calm", "happiness"]
    tree(root, ["Confused/x.wav", "meh/y.wav"])
    assert {r.label for r in read_corpus(f"folder={root}")} >= {"Confused", "meh"}
    with pytest.raises(ValueError, match=r"unknown emotion folder\(s\) \['Confused', 'meh'\]"):
        read_corpus(f"folder={root}:canonical")


def test_csv(tmp_path):
    audio = tree(tmp_path / "clips", ["one.wav", "two.flac", "sub/three.wav"])
    absolute = tone(tmp_path / "elsewhere" / "four.wav")
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,speaker\n../clips/one.wav,Anger,spk1\n../clips/two.flac,neutral,spk2\n"
                        f"../clips/sub/three.wav,fear,\n{absolute},surprise,spk1\n../clips/notes.txt,sad,spk1\n")
    rows = read_corpus(f"csv={manifest}:canonical")
    assert summary(rows) == [("one.wav", "angry", "csv:spk1"), ("three.wav", "fearful", "csv:unknown"),
                             ("two.flac", "neutral", "csv:spk2"), ("four.wav", "surprised", "csv:spk1")]
    assert rows[0].path == str((audio / "one.wav").resolve())
    assert [r.label for r in read_corpus(f"csv={manifest}")] == ["Anger", "fear", "neutral", "surprise"]  # as written
    bare = tmp_path / "bare.csv"
    bare.write_text("path,label\nclips/one.wav, frustrated \nclips/two.flac,bonafide\n")
    assert summary(read_corpus(f"csv={bare}")) == [("one.wav", "frustrated", "csv:unknown"),
                                                   ("two.flac", "bonafide", "csv:unknown")]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nclips/one.wav,confused\nclips/missing.wav,sad\nclips/two.flac,\n")
    with pytest.raises(ValueError, match=r"line 2: unknown label 'confused'; line 3: no file .*missing.wav; "
                                         r"line 4: no label"):
        read_corpus(f"csv={bad}:canonical")
    with pytest.raises(ValueError, match=r"^[^;]*line 3: no file .*missing.wav; line 4: no label$"):
        read_corpus(f"csv={bad}")  # any name is a label, but a missing file or label is still an error
    (tmp_path / "nolabel.csv").write_text("file,emotion\nclips/one.wav,sad\n")
    with pytest.raises(ValueError, match="needs the columns path,label"):
        read_corpus(f"csv={tmp_path / 'nolabel.csv'}")


def test_readers_list_without_decoding(tmp_path):
    (tmp_path / "1001_DFA_ANG_XX.wav").write_bytes(b"definitely not a wave file")
    assert summary(read_corpus(f"cremad={tmp_path}")) == [("1001_DFA_ANG_XX.wav", "angry", "cremad:1001")]


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets, built locally (Audio(decode=False): decoding needs torchcodec)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """Return `datasets`, with its cache and the SER audio cache redirected into tmp_path."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    monkeypatch.setenv("SER_CACHE", str(tmp_path / "ser_cache"))
    return datasets


def test_hf_iemocap_audio_layout(hf_env, tmp_path):
    """Splits session1..: the split is the session and, lacking a speaker column, the speaker."""
    datasets = hf_env
    names = ["ang", "hap", "neu", "sad", "exc", "fru"]
    clips = [tone(tmp_path / "clips" / f"{i}.wav", seconds=0.1 + 0.01 * i) for i in range(6)]

    def split(files, labels):
        ds = datasets.Dataset.from_dict({"audio": [{"bytes": None, "path": str(f)} for f in files], "label": labels})
        ds = ds.cast_column("audio", datasets.Audio(decode=False))  # cast, not encode: encoding needs torchcodec
        return ds.cast_column("label", datasets.ClassLabel(names=names))

    folder = tmp_path / "IEMOCAP_Audio"
    layout = datasets.DatasetDict(session1=split(clips[:3], [0, 4, 5]), session2=split(clips[3:], [1, 2, 3]))
    layout.save_to_disk(str(folder))
    as_named = read_corpus(f"hf={folder}")  # the ClassLabel names as written, every class a label
    assert sorted((r.label, r.session) for r in as_named) == [
        ("ang", "Session1"), ("exc", "Session1"), ("fru", "Session1"), ("hap", "Session2"), ("neu", "Session2"),
        ("sad", "Session2")]
    rows = read_corpus(f"hf={folder}:canonical")  # canonical emotions; xxx, oth, fru and exc dropped
    assert sorted((r.label, r.speaker, r.session) for r in rows) == [
        ("angry", "hf:Session1", "Session1"), ("happy", "hf:Session2", "Session2"),
        ("neutral", "hf:Session2", "Session2"), ("sad", "hf:Session2", "Session2")]
    # save_to_disk embeds the audio: the bytes come back as files in the SER cache, keyed by content
    by_label = {r.label: Path(r.path) for r in rows}
    assert by_label["angry"].parent == tmp_path / "ser_cache" / "hf_audio"
    assert by_label["angry"].read_bytes() == clips[0].read_bytes()
    assert read_corpus(f"hf={folder}:canonical") == rows  # deterministic, files written once
    merged = read_corpus(f"hf={folder}:split=session1,merge_excited")
    assert sorted(r.label for r in merged) == ["angry", "happy"] and {r.session for r in merged} == {"Session1"}
    with pytest.raises(ValueError, match=r"no split\(s\) \['session9'\]; has \['session1', 'session2'\]"):
        read_corpus(f"hf={folder}:split=session1+session9")
    with pytest.raises(ValueError, match=r"no column\(s\) \['emotion'\]"):
        read_corpus(f"hf={folder}:label=emotion")


def test_hf_local_data_folder(hf_env, tmp_path):
    """A folder of CSV files that load_dataset reads: string paths, relative to the folder."""
    folder = tmp_path / "my_hf"
    tree(folder, ["clips/a.wav", "clips/b.flac", "clips/c.wav"])
    (folder / "train.csv").write_text("file,emotion,who\nclips/a.wav,Anger,s1\nclips/b.flac,joy,s2\n")
    (folder / "test.csv").write_text("file,emotion,who\nclips/c.wav,neu,s1\n")
    rows = read_corpus(f"hf={folder}:audio=file,label=emotion,speaker=who,canonical")
    assert summary(rows) == [("a.wav", "angry", "hf:s1"), ("b.flac", "happy", "hf:s2"), ("c.wav", "neutral", "hf:s1")]
    assert rows[0].path == str((folder / "clips" / "a.wav").resolve()) and rows[0].session is None
    test_split = read_corpus(f"hf={folder}:audio=file,label=emotion,split=test")
    assert summary(test_split) == [("c.wav", "neu", "hf:unknown")]
    (folder / "test.csv").write_text("file,emotion,who\nclips/c.wav,confused,s1\n")
    assert [r.label for r in read_corpus(f"hf={folder}:audio=file,label=emotion,split=test")] == ["confused"]
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['confused'\]"):
        read_corpus(f"hf={folder}:audio=file,label=emotion,split=test,canonical")
    (folder / "test.csv").write_text("file,emotion,who\nclips/c.wav,,s1\n")
    with pytest.raises(ValueError, match=r"1 row\(s\) of split\(s\) \['test'\] have no label in column 'emotion'"):
        read_corpus(f"hf={folder}:audio=file,label=emotion,split=test")


def test_hf_missing_folder(hf_env, tmp_path):
    with pytest.raises(ValueError, match="nowhere: Hugging Face dataset folder does not exist"):
        read_corpus(f"hf={tmp_path / 'nowhere'}")


# ---------------------------------------------------------------------------------------------
# Specs, errors, label selection
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["emodb", "ravdess", "urdu", "ased", "emotiontts_ko", "cremad", "tess", "casia",
                                  "iemocap", "folder"])
def test_missing_and_empty_roots(tmp_path, name):
    with pytest.raises(ValueError, match=f"{tmp_path / 'absent'}: corpus folder does not exist"):
        read_corpus(f"{name}={tmp_path / 'absent'}")
    tree(tmp_path / "empty", ["readme.txt"])
    with pytest.raises(ValueError, match=str(tmp_path / "empty")):
        read_corpus(f"{name}={tmp_path / 'empty'}")


def test_wrong_naming_scheme_is_named(tmp_path):
    tree(tmp_path, ["03a01Fa.wav"])
    with pytest.raises(ValueError, match=r"no file follows the ravdess naming scheme \(e.g. 03a01Fa.wav\)"):
        read_corpus(f"ravdess={tmp_path}")


@pytest.mark.parametrize("spec, message", [
    ("nosuch", "unknown corpus 'nosuch'"),
    ("nosuch=/data", "unknown corpus 'nosuch'"),
    ("csv", "'csv' needs a folder: csv=PATH"),
    ("emodb=", "names no path"),
    ("emodb=/data:fast", r"unknown option\(s\) \['fast'\]; emodb takes none"),
    ("iemocap=/data:merge_exited", r"unknown option\(s\) \['merge_exited'\]; iemocap takes \['merge_excited'\]"),
])
def test_bad_specs_list_the_valid_forms(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        read_corpus(spec)
    if "option" not in message:
        assert "valid corpus specs" in str(err.value) and "hf=NAME_OR_PATH" in str(err.value)


def test_spec_colons_in_paths_are_not_options(tmp_path):
    root = tree(tmp_path / "a:b" / "c", ["1001_DFA_ANG_XX.wav"])
    assert len(read_corpus(f"cremad={root}")) == 1  # ":b/c" holds a "/" so it is part of the path
    assert len(read_corpus(f"cremad={root.parent}")) == 1  # "a:b" exists, so ":b" is no option
    assert corpora.CORPORA["cremad"] is corpora.read_cremad and set(corpora.CORPORA) >= {"csv", "hf", "folder"}


@pytest.fixture
def mixed(tmp_path) -> list[str]:
    """Return specs of two tiny corpora: EmoDB-named and RAVDESS-named files."""
    emodb = tree(tmp_path / "emodb", ["wav/03a01Fa.wav", "wav/03a01Nc.wav", "wav/08a04Wc.wav", "wav/13b03Lb.wav"])
    ravdess = tree(tmp_path / "ravdess", ["Actor_01/03-01-02-01-01-01-01.flac", "Actor_02/03-01-01-01-01-01-02.flac",
                                          "Actor_02/03-01-08-02-02-02-02.flac", "Actor_03/03-02-05-01-01-01-03.flac"])
    return [f"emodb={emodb}", f"ravdess={ravdess}"]


def test_read_corpora_merge_then_keep(mixed):
    rows = corpora.read_corpora(mixed)
    assert [r.corpus for r in rows] == ["emodb"] * 4 + ["ravdess"] * 3  # the song file (channel 02) is skipped
    assert {r.speaker for r in rows} == {"emodb:03", "emodb:08", "emodb:13", "ravdess:01", "ravdess:02"}
    picked = corpora.read_corpora(mixed, keep=["neutral", "angry"], merge=corpora.parse_merge("calm:neutral"))
    assert summary(picked) == [("03a01Nc.wav", "neutral", "emodb:03"), ("08a04Wc.wav", "angry", "emodb:08"),
                               ("03-01-02-01-01-01-01.flac", "neutral", "ravdess:01"),
                               ("03-01-01-01-01-01-02.flac", "neutral", "ravdess:02")]
    with pytest.raises(ValueError, match=r"--labels: unknown label\(s\) \['boredom'\]: in neither the data nor "
                                         r"the merges; the labels of the data are: calm, neutral, surprised"):
        corpora.read_corpora(mixed[1:], keep=["boredom"])
    with pytest.raises(ValueError, match="no corpus given"):
        corpora.read_corpora([])


def test_select_labels():
    rows = [Utterance("/a.wav", "calm", "x:1", "x"), Utterance("/b.wav", "sad", "x:1", "x"),
            Utterance("/c.wav", "happy", "x:2", "x", "Session1")]
    assert corpora.select_labels(rows) == rows
    merged = corpora.select_labels(rows, keep=["neutral", "happy"], merge={"calm": "neutral"})
    assert merged == [Utterance("/a.wav", "neutral", "x:1", "x"), rows[2]]
    assert rows[0].label == "calm"  # the input is untouched
    with pytest.raises(ValueError, match=r"--labels: unknown label\(s\) \['anger'\]"):
        corpora.select_labels(rows, keep=["anger"])
    with pytest.raises(ValueError, match=r"--merge: unknown label\(s\) \['clam'\]: not in the data, whose labels "
                                         r"are: calm, happy, sad"):
        corpora.select_labels(rows, merge={"clam": "neutral"})
    with pytest.raises(ValueError, match=r"--labels: unknown label\(s\) \['calm'\]: .* the labels after the merges "
                                         r"are: happy, neutral, sad"):  # merged away
        corpora.select_labels(rows, keep=["calm"], merge={"calm": "neutral"})


def test_any_label_names():
    """Labels outside the canonical nine: merged, kept, matched ignoring case, with hints for near misses."""
    rows = [Utterance(f"/{i}.wav", label, "csv:s", "csv") for i, label in
            enumerate(["frustrated", "Low", "mid", "high", "angry", "bonafide"])]
    picked = corpora.select_labels(rows, keep=["aroused", "calm_ish", "frustrated"],
                                   merge=corpora.parse_merge("high:aroused, Mid:aroused, low:calm_ish"))
    assert [r.label for r in picked] == ["frustrated", "calm_ish", "aroused", "aroused"]
    assert [r.label for r in corpora.select_labels(rows, keep=["LOW", "Bonafide"])] == ["Low", "bonafide"]
    assert corpora.label_map({"a", "b"}, keep=["B"], merge={"A": "b"}) == {"a": "b", "b": "b"}
    with pytest.raises(ValueError, match=r"\['anger'\]: .*\('anger' is 'angry' here\)"):
        corpora.select_labels(rows, keep=["anger"])
    with pytest.raises(ValueError, match=r"--merge: unknown label\(s\) \['excited'\].*merge_excited"):
        corpora.select_labels(rows, merge={"excited": "happy"})


def test_parse_merge():
    assert corpora.parse_merge("calm:neutral, Excited:happy") == {"calm": "neutral", "Excited": "happy"}
    assert corpora.parse_merge("") == {}
    with pytest.raises(ValueError, match="FROM:TO"):
        corpora.parse_merge("calm=neutral")


def test_label_corpora_counts_clips_per_corpus():
    from data.corpora import Utterance, label_corpora

    rows = [Utterance(f"{c}{i}.wav", label, f"{c}:1", c) for i, (c, label) in
            enumerate([("emodb", "sad"), ("emodb", "sad"), ("ravdess", "sad"), ("ravdess", "calm")])]
    assert label_corpora(rows) == {"sad": {"emodb": 2, "ravdess": 1}, "calm": {"ravdess": 1}}
