"""The page: components and their wiring to the plain functions of ui/callbacks.py."""
from __future__ import annotations

from functools import partial

import gradio as gr

from ui import callbacks, compare, live
from ui.callbacks import DEFAULT_MAX_SECONDS, LONG_AUDIO_S
from ui.model_store import ModelStore
from ui.voice import Voice

SWEEP_CACHE = (600, 3600)  # every 10 min, delete the app's temporary files older than 1 h

INTRO = """# Speech emotion recognition
Record with the microphone or upload speech (wav, flac, mp3, ogg, webm; up to {limit}). The model
gives the probability of each emotion it knows. Audio longer than {long:.0f} s also gets a timeline.
The live microphone shows them while you speak (up to {limit} a recording).
The models learned from acted speech; the list shows each one's accuracy on corpora it never heard
(other languages, rooms and microphones): expect about that on your own recordings."""

CALIBRATION = """Heard alone, a recording is compared with the voices the model learned from. Your own voice,
language, room and microphone shift what it hears more than emotion does. By default every recording
you analyse teaches the page your voice (kept in this page only, never stored), and the next ones are
judged against it: that helped simulated new users by about {gain} points of accuracy once they had
recorded a few clips of different emotions (docs/adaptation.md); the table under the results shows each
of your recordings re-judged as the page learns. Reset when someone else speaks."""

MODEL_INFO = ("UA: the mean recall over emotions on corpora (languages, rooms, microphones) left out of its training, "
              "each clip judged alone; adapted: once a speaker's clips are judged together. The figure on new speakers "
              "of the corpora it learned from is higher, and partly flattered by text cues: see About this model.")
CALIBRATION_GAIN = 4  # simulated users, every earlier recording vs each clip alone: 0.518 vs 0.477 (docs/adaptation.md)
LIVE_LABEL = "Live microphone: the last {window:g} s, every {every:g} s while you speak"


def _limit_text(max_seconds: float) -> str:
    return f"{max_seconds / 60:g} min" if max_seconds >= 60 else f"{max_seconds:g} s"


def build(store: ModelStore, max_seconds: float = DEFAULT_MAX_SECONDS) -> gr.Blocks:
    """Return the app's Blocks for the checkpoints of `store`, accepting audio up to `max_seconds`."""
    default = store.default
    description, confusion, card = callbacks.model_panel(store, default)
    predict = callbacks.predict_endpoint(store, max_seconds)  # named, with a docstring: the /predict API docs
    select = partial(callbacks.select_model, store=store, max_seconds=max_seconds)

    # uploads are deleted once read (ui/uploads.py); this sweep removes what no event read (an upload
    # sent without a request) and the app's own temporary files, an hour after they were made
    with gr.Blocks(title="Speech emotion recognition", analytics_enabled=False, delete_cache=SWEEP_CACHE) as demo:
        gr.Markdown(INTRO.format(limit=_limit_text(max_seconds), long=LONG_AUDIO_S))
        active = gr.State(default)  # the model in use; the dropdown returns to it if a load fails
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Speech",
                                 elem_id="audio-input")
                analyse = gr.Button("Analyse", variant="primary", elem_id="analyse")
                compare_all = gr.Button("Compare all models on this recording", elem_id="compare")
                # not inside a gr.Tab: a streaming Audio mounted in a hidden tab ignores stream_every (gradio 6.31)
                microphone = gr.Audio(sources=["microphone"], streaming=True, type="filepath",
                                      label=LIVE_LABEL.format(every=live.LIVE_EVERY_S, window=live.LIVE_WINDOW_S),
                                      elem_id="live-input")
                live_state = gr.State()
                model = gr.Dropdown(store.choices(), value=default, label="Model (name — UA on corpora it never heard)",
                                    info=MODEL_INFO,
                                    interactive=bool(store.checkpoints), elem_id="model-choice")
                voice = gr.State(Voice())  # this page session's calibration to its user (ui/voice.py)
                with gr.Accordion("Calibrate to my voice and microphone", open=False, elem_id="calibration"):
                    gr.Markdown(CALIBRATION.format(gain=CALIBRATION_GAIN))
                    voice_note = gr.Markdown(callbacks.voice_note(store, default, None), elem_id="voice-note")
                    adapt = gr.Checkbox(True, label="Adapt to my voice over this page's recordings",
                                        elem_id="adapt")
                    reset = gr.Button("Reset: forget my recordings", elem_id="reset-voice")
            with gr.Column(scale=1):
                note = gr.Markdown(elem_id="result-note")
                label = gr.Label(label="Emotions, most likely first", elem_id="probabilities")
                bars = gr.BarPlot(x="emotion", y="probability", sort="-y", y_lim=[0, 1], height=260,
                                  label="Probabilities", elem_id="bars")
        timeline = gr.LinePlot(x="time (s)", y="probability", color="emotion", y_lim=[0, 1],
                               label="Emotions over time (4 s windows)", visible=False, elem_id="timeline")
        table = gr.Dataframe(label="Per-window probabilities", visible=False, interactive=False,
                             elem_id="windows")
        history = gr.Dataframe(label="Your recordings in this page: each re-judged with the others as the page "
                                     "learns your voice", visible=False, interactive=False, elem_id="history")
        compare_note = gr.Markdown(elem_id="compare-note")
        compare_table = gr.Dataframe(label="Every model's answer to this recording", visible=False, interactive=False,
                                     elem_id="compare-table")
        compare_bars = gr.Plot(label="Every model's probabilities", visible=False, elem_id="compare-bars")
        with gr.Accordion("About this model", open=False, elem_id="about-model"):
            with gr.Row():
                info = gr.Markdown(description, elem_id="model-info")
                matrix = gr.Image(confusion, label="Confusion matrix (held out: on corpora it never heard where measured)", type="pil",
                                  interactive=False, height=360, elem_id="confusion")
            with gr.Accordion("Model card", open=False):
                model_card = gr.Markdown(card, elem_id="model-card")

        results = [note, label, bars, timeline, table]
        scored = [audio, model, voice]
        judged = [*results, voice, voice_note, history]
        analyse.click(predict, scored, judged, api_name="predict")
        audio.upload(predict, scored, judged, api_visibility="private")
        audio.stop_recording(predict, scored, judged, api_visibility="private")
        audio.clear(callbacks.cleared, None, results, api_visibility="private")
        compared = [compare_note, compare_table, compare_bars]
        compare_all.click(compare.compare_endpoint(store, max_seconds), [audio, model, voice],
                          [*compared, voice, voice_note, history], api_name="compare")
        audio.change(compare.cleared, None, compared, api_visibility="private")  # a new recording: not compared yet
        # a live microphone holds a slot of its own group for as long as it streams (time_limit)
        microphone.start_recording(live.started, None, [live_state, *results], show_progress="hidden",
                                   api_visibility="private")
        microphone.stream(partial(live.update, store=store), [microphone, model, live_state, voice], [live_state, *results],
                          stream_every=live.LIVE_EVERY_S, time_limit=int(max_seconds), concurrency_id="live",
                          concurrency_limit=live.LIVE_SESSIONS, show_progress="hidden", api_visibility="private")
        # .change, not .input: .input fires twice per choice; the echo of a reverted choice is a no-op
        model.change(select, [model, active, audio, voice], [model, active, info, matrix, model_card, *results,
                                                             voice_note, history], api_visibility="private")
        adapt.change(partial(callbacks.set_adapting, store=store), [adapt, model, voice], [voice, voice_note, history],
                     api_visibility="private")
        reset.click(partial(callbacks.reset_voice, store=store), [model, voice], [voice, voice_note, history],
                    api_visibility="private")
    return demo
