"""Score audio files with a trained checkpoint: one row per file, the probability of every emotion.

    python infer.py clip.wav folder/                               # default checkpoint, CSV on standard output
    python infer.py --checkpoint checkpoints/whisper-base-std-linear --output out.csv clip.wav folder/
    python infer.py --format jsonl --top_k 3 --output - folder/    # JSON lines, the 3 likeliest emotions
    python infer.py --embeddings emb.npy --output out.csv folder/  # also one pooled embedding per file
    python infer.py --checkpoint owner/model --device cuda --batch_size 32 --output out.jsonl folder/
    python infer.py --engine ray --output out.csv archive/         # Ray Data actors; RAY_ADDRESS=... for a cluster

Each row: `path` (as found from the INPUT given), `label` (top emotion), each emotion's probability
(with --top_k K: the K likeliest as label_1, prob_1, ...), `error` (why a file was not scored: the
same sentence the app shows) and `reason` (one word: too_short, silent, no_speech, truncated,
unreadable, too_long, out_of_range, dc_offset, not_finite, directory, ...). Audio longer than the
model's window is scored in half-overlapping windows whose probabilities are averaged (--segments
also writes each window); a window without speech is not scored nor averaged (its segment row says
no_speech), and a window with speech is scored on its speech. Windows of files of similar length
are batched together.

Rows are written in input order and flushed one file at a time. An interrupted run (Ctrl-C, SIGTERM)
leaves a valid file; the same command again skips the files already in it (--overwrite starts over).
Off a terminal, progress is printed as plain lines on standard error.

This file is the command line only: the files are scored through the Python API the app uses too
(serving/recognizer.py), by the local engine (serving/local_engine.py) or Ray's (serving/ray_engine.py),
and written by serving/writers.py.
"""
from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from audio import checks as audio_checks
from serving import local_engine
from serving.local_engine import GROUPINGS, Progress, expand_inputs, group_statistics_pass
from serving.recognizer import RUNTIMES, Scorer, default_checkpoint, load_scorer
from serving.writers import FORMATS, Embeddings, complete_lines

DEFAULT_MAX_SECONDS = 3600.0  # longest file scored by default: an hour is 230 MB of 16 kHz samples


def run(checkpoint: str | None, output: str, inputs: list[str], segments: bool = False, fmt: str | None = None,
        device: str = "auto", batch_size: int = 8, top_k: int | None = None, embeddings: str | None = None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS, allow_nonspeech: bool = False, overwrite: bool = False,
        runtime: str = "torch", scorer: Scorer | None = None, normalize: str = "none",
        speaker_pattern: str | None = None, engine: str = "local", precision: str = "auto",
        ray_options: dict | None = None) -> int:
    """Score every audio file under `inputs` into `output` ("-": standard output); return how many failed.

    engine "ray": scored by Ray Data actors (serving/ray_engine.py; `ray_options`: its actors, cpus_per_actor,
    gpus_per_actor, address), the same rows in the same order; `scorer` then only gives the labels.
    """
    checkpoint = checkpoint or default_checkpoint()
    if scorer is None:
        if checkpoint is None:
            raise SystemExit("no --checkpoint given and no default in checkpoints/default.txt")
        scorer = RUNTIMES[runtime](checkpoint, device, batch_size)
    fmt = fmt or ("jsonl" if output.lower().endswith((".jsonl", ".json", ".ndjson")) else "csv")
    writer = FORMATS[fmt](scorer.labels, top_k, segments)
    files = expand_inputs(inputs)
    if not files:
        raise SystemExit("no INPUT given")
    to_stdout = output == "-"
    target = Path(output)
    done: list[str] = []
    if not to_stdout and target.is_file() and target.stat().st_size and not overwrite:
        try:
            done = writer.done(complete_lines(target))
        except ValueError as err:
            raise SystemExit(f"cannot resume into {output}: {err}. Use --overwrite to replace it, or another --output")
    if embeddings and not hasattr(scorer, "embedding_dim"):
        raise SystemExit(f"--embeddings: the {runtime} runtime gives no embeddings")
    store = Embeddings(embeddings, scorer.embedding_dim if embeddings else 0, len(done), resume=bool(done))
    skip = set(done)
    todo = [f for f in files if f not in skip]
    if done:
        print(f"infer: resuming {output}: {len(files) - len(todo)} of {len(files)} files are in it already",
              file=sys.stderr)
    ready = {}  # --normalize: every file was scored in a first pass, with its group's statistics
    if normalize != "none":
        if engine == "ray":
            raise SystemExit(f"--normalize {normalize} needs every file's embedding before any row: "
                             "not with --engine ray")
        if not getattr(scorer, "normalizes", False):
            raise SystemExit(f"--normalize {normalize}: this checkpoint standardises nothing (it was not trained with "
                             "--embedding_norm, or an .onnx file's checkpoint folder is not at hand: give the folder); "
                             "it scores each file alone")
        if normalize == "speaker" and not speaker_pattern:
            raise SystemExit("--normalize speaker needs --speaker_pattern, a regular expression whose first group is "
                             "the speaker in a file name (e.g. '^(\\d\\d)' for EmoDB's 03a01Fa.wav)")
        ready = group_statistics_pass(scorer, files, normalize, speaker_pattern, max_seconds, allow_nonspeech)
    handle = sys.stdout if to_stdout else open(target, "a" if done else "w", newline="", encoding="utf-8")
    if not done:
        handle.write(writer.header())
        handle.flush()
    progress = Progress(len(files), len(files) - len(todo))
    failed = 0
    if engine == "ray":  # the same records, scored by Ray Data actors (serving/ray_engine.py), in input order
        from serving import ray_engine

        records = ray_engine.records(checkpoint, todo, runtime=runtime, precision=precision, device=device,
                                     batch_size=batch_size, embeddings=bool(embeddings), max_seconds=max_seconds,
                                     allow_nonspeech=allow_nonspeech, **(ray_options or {}))
    else:
        records = local_engine.records(scorer, todo, ready, batch_size, max_seconds, allow_nonspeech, bool(embeddings))
    try:
        for record in records:
            failed += bool(record.error)
            with SIGNALS.held():  # a file's rows and its embedding, or neither
                handle.write(writer.encode(record))  # one write per file: a killed run leaves whole rows
                handle.flush()
                store.add(record)
            progress.update()
    finally:
        records.close()
        store.save()
        if not to_stdout:
            handle.close()
        progress.close()
    where = "standard output" if to_stdout else output
    print(f"infer: wrote {len(todo) - failed} scored and {failed} failed file(s) to {where}", file=sys.stderr)
    return failed


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that the output is closed and the embeddings saved."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """Once installed, SIGINT and SIGTERM raise Interrupted, but never inside `held()`: there they wait for its end."""

    def __init__(self):
        self.holding, self.pending = False, None

    def install(self) -> dict:
        """Install the handlers; return the previous ones (for `restore`)."""
        return {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def restore(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.holding:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)


SIGNALS = Signals()


def main(argv: list[str] | None = None) -> None:
    summary, details = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file or folder (searched recursively)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder written by train.py, or a Hugging Face Hub id (owner/name); "
                             "default: the one named in checkpoints/default.txt")
    parser.add_argument("--output", default="-", help="file to write, or - for standard output (default)")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None,
                        help="csv or jsonl (JSON lines); default: jsonl for a .jsonl/.json output, else csv")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 or mps")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="windows scored at once, across files, grouped by similar length (default 8)")
    parser.add_argument("--top_k", type=int, default=None, help="write only the K likeliest emotions of each file")
    parser.add_argument("--embeddings", default=None, metavar="OUT.npy",
                        help="also save one pooled embedding per file (the vector the classifier reads), rows in "
                             "output order; NaN rows for files that were not scored")
    parser.add_argument("--segments", action="store_true", help="also write each window of long audio")
    parser.add_argument("--max_seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help=f"longer files get an error row, found before decoding all of them "
                             f"(default {DEFAULT_MAX_SECONDS:g}; 0: no limit)")
    parser.add_argument("--allow_nonspeech", action="store_true",
                        help="score audio the checks refuse as too short (down to "
                             f"{audio_checks.MIN_SCORABLE_SECONDS} s), silent or without speech")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over; without it, a rerun skips the files already in --output")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), default="torch",
                        help="what runs the model: torch (PyTorch), onnx (onnxruntime on the CPU; a checkpoint folder "
                             "is exported once into $SER_CACHE/onnx), auto (onnx where the checkpoint exports and runs "
                             "on the CPU, else torch); --normalize and --embeddings work with each")
    parser.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                        help="auto: the int8 graph (onnxruntime, serving/quantize.py) where the checkpoint's int8.json shows "
                             "it meets the drift bound (>= 99%% top-1 agreement with float32, <= 0.5 point of UA "
                             "lost on real clips, for clips judged alone and, with --normalize, adapted), else float32 "
                             "in --runtime; fp32: always float32; int8: int8 even where it was not measured")
    parser.add_argument("--normalize", choices=["none", *GROUPINGS], default="none",
                        help="with a checkpoint trained with --embedding_norm (the default model): standardise each "
                             "file's embedding with the statistics of its group rather than judging it alone. folder: "
                             "the files of one folder (one speaker or one recording setup); speaker: the files whose "
                             "names --speaker_pattern gives the same speaker. Same voice and microphone, fewer "
                             "confident mistakes: docs/benchmarks.md measures it (leave-one-corpus-out)")
    parser.add_argument("--speaker_pattern", default=None, metavar="REGEX",
                        help="with --normalize speaker: a regular expression searched in each file name; its first "
                             "group (else the whole match) is the speaker, e.g. '^(\\d\\d)' for EmoDB")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: Ray Data actors that each load the model once, on a local Ray "
                             "instance, or on the cluster named by the RAY_ADDRESS environment variable (e.g. "
                             "ray://head:10001; every node must see INPUT at the same paths, and the checkpoint "
                             "unless it lies in this folder or is a Hub id). Same rows, same order, same resume "
                             "(serving/ray_engine.py)")
    parser.add_argument("--ray_actors", type=int, default=None, metavar="N",
                        help="--engine ray: scoring actors (default: as many as the cluster's CPUs allow, leaving one "
                             "CPU free for Ray's own work; with --ray_gpus_per_actor, the cluster's GPUs)")
    parser.add_argument("--ray_cpus_per_actor", type=float, default=1.0, metavar="C",
                        help="--engine ray: CPUs each actor reserves, and its torch threads (default 1)")
    parser.add_argument("--ray_gpus_per_actor", type=float, default=0.0, metavar="G",
                        help="--engine ray: GPUs each actor reserves (e.g. 1, or 0.5 to share one), on GPU nodes; "
                             "above 0 the actors score on cuda (default 0: CPU)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.top_k is not None and args.top_k < 1):
        parser.error("--batch_size and --top_k must be at least 1")
    if args.engine == "ray" and ((args.ray_actors is not None and args.ray_actors < 1) or args.ray_cpus_per_actor <= 0
                                 or args.ray_gpus_per_actor < 0):
        parser.error("--ray_actors must be at least 1, --ray_cpus_per_actor above 0, --ray_gpus_per_actor at least 0")
    previous = SIGNALS.install()
    try:
        checkpoint = args.checkpoint or default_checkpoint()
        if checkpoint is None:
            parser.error("no --checkpoint given and no default named in checkpoints/default.txt")
        try:  # with --engine ray this one only gives the labels: on this machine's CPU; the actors score
            scorer = load_scorer(checkpoint, args.runtime, args.precision,
                                 "cpu" if args.engine == "ray" else args.device, args.batch_size,
                                 embeddings=bool(args.embeddings) or args.normalize != "none")
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"infer: {err}") from None
        ray_options = {"actors": args.ray_actors, "cpus_per_actor": args.ray_cpus_per_actor,
                       "gpus_per_actor": args.ray_gpus_per_actor}
        run(checkpoint, args.output, args.inputs, args.segments, args.format, args.device, args.batch_size,
            args.top_k, args.embeddings, args.max_seconds or None, args.allow_nonspeech, args.overwrite, args.runtime,
            scorer=scorer, normalize=args.normalize, speaker_pattern=args.speaker_pattern, engine=args.engine,
            precision=args.precision, ray_options=ray_options)
    except KeyboardInterrupt as err:
        where = ("" if args.output == "-"
                 else f"; {args.output} holds every file finished so far: the same command resumes")
        print(f"infer: interrupted{where}", file=sys.stderr)
        raise SystemExit(128 + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)) from None
    finally:
        SIGNALS.restore(previous)


if __name__ == "__main__":
    main()
