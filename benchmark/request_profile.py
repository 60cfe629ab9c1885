"""Time one app request, stage by stage, from the uploaded file to the probabilities on the page.

    python -m benchmark.request_profile                 # default checkpoint, 5 s of real speech as a 48 kHz WAV
    python -m benchmark.request_profile --repeats 30 --output benchmark/results/request_profile.json
    python -m benchmark.request_profile report          # docs/serving.md from the committed results

What is timed is the app's own code path, in this process, with the runtime the app picks by default
(`app.py --runtime auto --precision auto`: onnxruntime for the default checkpoint, int8 where its measured recipe holds
in both modes (serving/quantize.py), with its embeddings, since the page calibrates to the user's voice): Gradio's preprocessing of the upload, decoding, resampling to
16 kHz, the level checks, voice activity (webrtcvad), the model (the log-mel front end is inside the
ONNX graph; PyTorch's log-mel is timed apart for scale), the hand-off to the model worker
(ui/scheduler.py), the calibration to the user's voice, and the outputs (the note, the bars, the
session history) with Gradio's postprocessing. "end to end" is the whole event, `Blocks.process_api`
on the page's /predict event in one page session: everything but HTTP and the queue, and the state
Gradio makes once per page session (or per API client: timed apart). A long clip then times the timeline
and per-window table against its model time.

Each stage runs `--repeats` times after a warm-up; the medians of wall and CPU time (all threads of
this process) are kept. The machine is shared: its load average is recorded before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py serves (set before torch is imported)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("SER_ONNX_THREADS", "1")  # as app.py serves
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmark import serving_report  # noqa: E402

RESULTS = serving_report.PROFILE


def timed(call, repeats: int) -> dict:
    """Return the median wall and CPU milliseconds of `call()` over `repeats` calls, after one warm-up."""
    call()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall_ms": round(1000 * statistics.median(wall), 2), "cpu_ms": round(1000 * statistics.median(cpu), 2),
            "wall_ms_min": round(1000 * min(wall), 2)}


def speech(seconds: float) -> np.ndarray:
    """Return `seconds` of real speech at 16 kHz: EmoDB utterances of one speaker, one after another."""
    from benchmark.latency import five_seconds_of_speech

    return five_seconds_of_speech(seconds)


class Page:
    """The app's page for one checkpoint folder, and a way to run its /predict event as the server does."""

    def __init__(self, checkpoint: Path):
        from app import parse_args
        from serving.recognizer import load_scorer
        from ui.layout import build
        from ui.model_store import ModelStore

        self.args = parse_args([])
        self.name = checkpoint.name
        folder = checkpoint.resolve().parent  # the store the app would serve it from (loaded lazily)
        start = time.perf_counter()
        # as app.py's loader for the default model: embeddings for a model that adapts, runtime auto
        self.store = ModelStore(folder, loader=lambda path: load_scorer(path, runtime="auto", precision="auto",
                                                                        device="cpu", embeddings=True))
        self.scorer = self.store.get(self.name)
        self.load_s = time.perf_counter() - start
        self.demo = build(self.store)
        self.event = next(fn for fn in self.demo.fns.values() if fn.api_name == "predict")
        self.loop = asyncio.new_event_loop()  # one, as the server has: a loop a call would be timed too

    def component(self, elem_id: str):
        return next(b for b in self.demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)

    def upload(self, path: Path) -> str:
        """Return the path of a copy of `path` in Gradio's upload folder, as an upload arrives (read once, deleted)."""
        from ui.uploads import upload_folder

        target = upload_folder() / f"profile-{time.perf_counter_ns()}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return str(target)

    def session(self, voice):
        """Return a new page session's state (what Gradio makes on a page's, or an API client's, first event)."""
        from gradio.state_holder import SessionState

        state = SessionState(self.demo)
        state[self.event.inputs[2]._id] = voice
        return state

    def process(self, path: Path, state) -> list:
        """Run the page's /predict event on an upload of `path` (Blocks.process_api: preprocess, call, postprocess)
        in the page session `state`."""
        payload = {"path": self.upload(path), "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}
        out = self.loop.run_until_complete(self.demo.process_api(self.event, [payload, self.name, None], state=state))
        return out["data"]


def profile_short(page: Page, wav: Path, repeats: int) -> dict:
    """Return each stage's times for one short upload (`wav`, 48 kHz 16-bit as a browser sends)."""
    import gradio as gr
    import soundfile as sf
    import torch
    from gradio.data_classes import FileData

    from audio import checks as audio_checks
    from data_process import _read_soundfile, to_model_rate
    from models.waveform import voiced_frames
    from ui import callbacks, voice as my_voice
    from ui.voice import Voice

    scorer, name = page.scorer, page.name
    raw, rate = _read_soundfile(wav, None)
    audio = to_model_rate(raw, rate)
    learnt = Voice()  # a page that has heard a few recordings of its user: calibration is on
    for other in (speech(3.0), speech(4.0)[::-1].copy(), speech(5.0) * 0.5):
        callbacks.scored_windows(scorer, other, voice=learnt, model=name, remember=True)
    audio_component = page.component("audio-input")
    outputs = list(callbacks.predict(str(wav), name, page.store, voice=learnt))
    comps = [page.component(i) for i in ("result-note", "probabilities", "bars", "timeline", "windows")]
    history = page.component("history")

    def postprocess():
        outputs[2] = callbacks.bars_frame(outputs[1])
        for comp, value in zip(comps, outputs):
            comp.postprocess(value.get("value") if isinstance(value, dict) and "__type__" in value else value)
        frame = callbacks.history_frame(page.store, name, learnt)
        history.postprocess(frame.get("value"))

    embedder = my_voice.embedder(scorer)
    _, embeddings = scorer.probabilities_and_embeddings([audio])
    with torch.inference_mode():
        log_mel = _log_mel(scorer, page)
    arrived = iter([page.upload(wav) for _ in range(repeats + 1)])  # uploads, copied before the timing
    stages = {
        "new page session (Gradio's state)": timed(lambda: page.session(learnt), repeats),
        "upload (Gradio preprocess)": timed(lambda: audio_component.preprocess(FileData(path=next(arrived))), repeats),
        "decode (libsndfile)": timed(lambda: _read_soundfile(wav, callbacks.DEFAULT_MAX_SECONDS), repeats),
        "resample (soxr, to 16 kHz)": timed(lambda: to_model_rate(raw, rate), repeats),
        "level checks": timed(lambda: (np.abs(audio).max(), audio.mean(), audio_checks.loudest_dbfs(audio)), repeats),
        "voice activity (webrtcvad)": timed(lambda: voiced_frames(audio - audio.mean()), repeats),
        "log-mel (PyTorch, for scale)": timed(log_mel(audio), repeats) if log_mel else None,
        "model (log-mel + encoder + head)": timed(lambda: scorer.probabilities_and_embeddings([audio]), repeats),
        "hand-off to the model worker": timed(lambda: callbacks.SCHEDULER.probabilities(embedder, [audio]), repeats),
        "calibration (voice)": timed(lambda: (my_voice.digest(audio),
                                              learnt.judge(scorer, name, embeddings)), repeats),
        "outputs (note, bars, history)": timed(postprocess, repeats),
    }
    stages["hand-off to the model worker"] = subtract(stages["hand-off to the model worker"],
                                                       stages["model (log-mel + encoder + head)"])
    stages = {k: v for k, v in stages.items() if v is not None}
    # gr.Audio(format="wav") would convert every other upload (mp3, ogg, webm) to WAV before the app decodes it;
    # the page's Audio leaves the format alone (format=None): both timed on a 5 s Opus upload
    opus = wav.with_suffix(".ogg")
    sf.write(opus, raw, rate, format="OGG", subtype="OPUS")
    converting = gr.Audio(type="filepath", format="wav")
    uploads = iter([page.upload(opus) for _ in range(2 * repeats + 2)])
    stages_opus = {"as the page (format=None)": timed(lambda: audio_component.preprocess(FileData(path=next(uploads))),
                                                      repeats),
                   "converted to WAV (format='wav')": timed(lambda: converting.preprocess(FileData(path=next(uploads))),
                                                            repeats)}
    state = page.session(learnt)  # one page session: a user's successive recordings
    end_to_end = timed(lambda: page.process(wav, state), repeats)
    return {"stages": stages, "end_to_end": end_to_end, "opus_upload_preprocess": stages_opus}


def subtract(total: dict, part: dict) -> dict:
    """Return `total` less `part` (medians less medians: an estimate, floored at zero)."""
    return {k: round(max(0.0, total[k] - part[k]), 2) for k in total}


def _log_mel(scorer, page: Page):
    """Return a function of a clip that computes the Whisper log-mel in PyTorch, or None for another backbone."""
    import json

    import torch

    config = json.loads((Path(page.store.root) / page.name / "config.json").read_text())
    if config.get("backbone") != "whisper":
        return None
    from models.encoders import WhisperBackbone
    from transformers import AutoConfig

    import models  # noqa: F401  (registers the configuration)

    backbone = WhisperBackbone(AutoConfig.from_pretrained(Path(page.store.root) / page.name))

    def bind(audio):
        tensor = torch.from_numpy(audio)

        def run():
            with torch.inference_mode():
                backbone.log_mel(tensor)
        return run
    return bind


def profile_long(page: Page, seconds: float, repeats: int) -> dict:
    """Return the model's time and the timeline's (frames and Gradio postprocessing) for `seconds` of speech."""
    from ui import callbacks

    audio = speech(seconds)
    windows = callbacks.scored_windows(page.scorer, audio, callbacks.TIMELINE_WINDOW_S, callbacks.TIMELINE_HOP_S)
    analysis = callbacks.Analysis(page.name, dict(zip(page.scorer.labels, windows[0].probs)), windows,
                                  seconds, 0.0)
    labels = page.scorer.labels
    timeline, table = page.component("timeline"), page.component("windows")

    def plots():
        timeline.postprocess(callbacks.timeline_frame(windows, labels))
        table.postprocess(callbacks.windows_table(analysis, labels))

    return {"seconds": seconds, "windows": len(windows),
            "model": timed(lambda: callbacks.scored_windows(page.scorer, audio, callbacks.TIMELINE_WINDOW_S,
                                                             callbacks.TIMELINE_HOP_S), max(1, repeats // 4)),
            "timeline and table": timed(plots, repeats)}


def profile_runtime(path: Path, audio: np.ndarray, repeats: int) -> dict:
    """Return onnxruntime's wall and CPU ms a clip under each setting, on the same clip in this process."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime

    from serving.onnx_recognizer import INPUT

    def session(threads: int | None, spin: bool):
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            options.add_session_config_entry(key, "1" if spin else "0")
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    one, four = {INPUT: audio[None]}, {INPUT: np.stack([audio] * 4)}
    spinning, every, single = session(None, True), session(None, False), session(1, False)
    pool = ThreadPoolExecutor(2)

    def side_by_side():
        list(pool.map(lambda _: single.run(None, one), range(2)))

    per_clip = lambda t, n: {k: round(v / n, 2) for k, v in t.items()}  # noqa: E731
    variants = {"every core, threads spin while idle (onnxruntime's default)": lambda: spinning.run(None, one),
                "every core, no spinning": lambda: every.run(None, one),
                "1 thread, no spinning (app.py)": lambda: single.run(None, one)}
    out = {name: None for name in variants}
    for _ in range(2):  # interleaved twice, so that a change in the machine's load hits every setting alike
        for name, call in variants.items():
            t = timed(call, max(1, repeats // 2))
            out[name] = t if out[name] is None else {k: round((out[name][k] + t[k]) / 2, 2) for k in t}
    out["1 thread, a batch of 4 equal clips (a clip)"] = per_clip(timed(lambda: single.run(None, four),
                                                                       max(1, repeats // 4)), 4)
    out["1 thread, 2 calls side by side (a clip)"] = per_clip(timed(side_by_side, max(1, repeats // 2)), 2)
    pool.shutdown()
    return out


def run(args: argparse.Namespace) -> None:
    import soundfile as sf
    import soxr

    from benchmark.common import machine
    from benchmark.run import git_commit

    load_before = [round(x, 2) for x in os.getloadavg()]
    checkpoint = Path(args.checkpoint)
    page = Page(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech48k.wav"  # what a browser uploads: 48 kHz 16-bit WAV
        sf.write(wav, soxr.resample(speech(args.seconds), 16_000, 48_000), 48_000, subtype="PCM_16")
        short = profile_short(page, wav, args.repeats)
        runtime = (profile_runtime(page.scorer.runtime.path, speech(args.seconds), args.repeats)
                   if getattr(page.scorer, "runtime_name", "") == "onnx" else None)
    long = profile_long(page, args.long_seconds, args.repeats) if args.long_seconds else None
    results = {"command": "python -m benchmark.request_profile " + " ".join(args.argv), "commit": git_commit(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": serving_report.rel(checkpoint),
               "runtime": f"{getattr(page.scorer, 'runtime_name', 'torch')} {getattr(page.scorer, 'precision', 'fp32')}",
               "clip": f"{args.seconds:g} s of EmoDB speech as a 48 kHz 16-bit WAV", "seconds": args.seconds,
               "repeats": args.repeats, "model_load_s": round(page.load_s, 2), "niceness": os.nice(0),
               "load_average_before": load_before, "machine": machine(),
               **short, "onnxruntime_settings": runtime, "long": long, "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    serving_report.write_json(Path(args.output), results)
    print(serving_report.profile_table(results))
    print(f"wrote {args.output}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog="python -m benchmark.request_profile report",
                                         description="Write docs/serving.md from the committed results.")
        parser.add_argument("--doc", default=str(serving_report.DOC))
        args = parser.parse_args(argv[1:])
        serving_report.write_doc(Path(args.doc))
        print(f"wrote {args.doc}")
        return
    parser = argparse.ArgumentParser(prog="python -m benchmark.request_profile", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from serving.recognizer import default_checkpoint

    parser.add_argument("--checkpoint", default=default_checkpoint(), help="checkpoint folder (default: the app's)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the clip (real EmoDB speech)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each stage, after one warm-up")
    parser.add_argument("--long_seconds", type=float, default=60.0,
                        help="length of the clip whose timeline is timed against its model time (0: none)")
    parser.add_argument("--output", default=str(RESULTS), help="results JSON")
    args = parser.parse_args(argv)
    args.argv = argv
    run(args)


if __name__ == "__main__":
    main()
