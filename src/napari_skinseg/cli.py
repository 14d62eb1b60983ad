"""``skinseg``: train, segment, evaluate and measure from the command line.

Exit codes: 0 success; 1 some images failed or are missing (the others were processed);
2 bad input or a destination that cannot be written (one line says which and why); 130
interrupted (Ctrl-C; what was finished is kept, and rerunning the command completes the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
import warnings
from pathlib import Path

from . import __version__
from .config import (
    COLOUR_CONSTANCY,
    KEEP_MODES,
    LR_SCHEDULES,
    PRECISIONS,
    PostprocessConfig,
    TrainConfig,
)
from .engines import ENGINES
from .generators import drain

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _decoder_channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected five comma-separated integers, got {text!r}")


def _number(kind: type, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, what: str = ""):
    """An argparse type: a finite number within bounds (checked before any work is done)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


POSITIVE = _number(float, 0, low_open=True, what="positive")
NON_NEGATIVE = _number(float, 0, what="zero or more")
FRACTION = _number(float, 0, 1, low_open=True, high_open=True, what="between 0 and 1")
AT_LEAST_ONE = _number(int, 1, what="at least 1")
COUNT = _number(int, 0, what="zero or more")


def _size(text: str) -> int:
    value = AT_LEAST_ONE(text)
    if value < 32 or value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 and at least 32, got {text!r}")
    return value


def _add_postprocess_args(p: argparse.ArgumentParser) -> None:
    d = PostprocessConfig()
    p.add_argument("--threshold", type=FRACTION, default=d.threshold, help="lesion probability cut-off")
    p.add_argument("--keep", choices=KEEP_MODES, default=d.keep,
                   help="keep the largest lesion, with any piece at least half its size (default), or all "
                        "components")
    p.add_argument("--min-size", type=COUNT, default=d.min_size,
                   help="drop components smaller than this many pixels")
    p.add_argument("--no-fill-holes", dest="fill_holes", action="store_false",
                   help="keep holes inside the lesion")
    p.add_argument("--tta", action="store_true", help="average with flipped copies (slower)")


def build_parser() -> argparse.ArgumentParser:
    from .pairs import overlay_filename, probability_filename

    d = TrainConfig()
    parser = argparse.ArgumentParser(prog="skinseg", description="Skin-lesion segmentation with a U-Net.")
    parser.add_argument("--version", action="version", version=f"napari-skinseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a U-Net on image/mask pairs (the analysis module)")
    t.add_argument("images_dir", type=Path,
                   help="folder of images, or a pair folder holding the images and masks folders")
    t.add_argument("masks_dir", type=Path, nargs="?", default=None,
                   help="folder of masks (leave out for a pair folder)")
    t.add_argument("--out", type=Path, required=True, help="model file to write (e.g. model.pt)")
    t.add_argument("--epochs", type=AT_LEAST_ONE, default=d.epochs)
    t.add_argument("--batch-size", type=AT_LEAST_ONE, default=d.batch_size)
    t.add_argument("--size", type=_size, default=d.size, help="working size in pixels (multiple of 32)")
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--val-fraction", type=FRACTION, default=d.val_fraction)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--lr", type=POSITIVE, default=d.learning_rate, help="Adam learning rate")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule)
    t.add_argument("--weight-decay", type=NON_NEGATIVE, default=d.weight_decay)
    t.add_argument("--encoder", default=d.encoder, help="segmentation-models-pytorch encoder name")
    t.add_argument("--decoder-channels", type=_decoder_channels, default=d.decoder_channels)
    t.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="bf16: bfloat16 autocast, for GPUs (slower on most CPUs)")
    t.add_argument("--colour-constancy", choices=COLOUR_CONSTANCY, default=d.colour_constancy,
                   help="shades_of_gray: remove each image's colour cast before the network "
                        "(stored in the model and applied when it segments)")
    t.add_argument("--init", help="start from this model file ('bundled' for the shipped model)")
    t.add_argument("--resume", action="store_true",
                   help="continue from <out>.checkpoint.pt written by an interrupted run")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file and its history and curves")
    t.add_argument("--limit", type=AT_LEAST_ONE, default=None,
                   help="use only N randomly chosen pairs (seeded), e.g. the paper's 100")

    s = sub.add_parser("segment", help="segment every image of a folder (the segmentation module)")
    s.add_argument("input_dir", type=Path)
    s.add_argument("results_dir", type=Path)
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=None,
                   help="images in flight at once (read, network, clean-up, write overlap); "
                        "1 = one at a time; default: the cores, at most 4 (on a CUDA GPU twice "
                        "the cores, at most 32)")
    s.add_argument("--dask", metavar="SCHEDULER",
                   help="run on a Dask cluster: tcp://host:port, or local[:N] for N local worker "
                        "processes (needs napari-skinseg[distributed]); the workers read and write "
                        "the shared paths themselves")
    s.add_argument("--engine", choices=ENGINES, default="auto",
                   help="what runs the network: auto (default: on a CPU ONNX Runtime's int8 copy "
                        "where it measured faster than fp32, else fp32 ONNX Runtime; torch on a "
                        "GPU), onnx (ONNX Runtime fp32, torch's masks; exported once per model "
                        "file and cached), onnx-int8 (its quantised copy: masks within about "
                        "0.4 %% Dice of fp32's) or torch")
    s.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (without it, a rerun keeps existing masks and "
                        "adds only what is missing)")
    s.add_argument("--overlay", action="store_true",
                   help=f"also write {overlay_filename('<id>')} (outline on image)")
    s.add_argument("--probabilities", action="store_true",
                   help=f"also write {probability_filename('<id>')}")
    s.add_argument("--measure", action="store_true",
                   help="also write RESULTS_DIR/measurements.csv (ABCD-style lesion descriptors)")
    s.add_argument("--pixel-size-mm", type=POSITIVE, default=None, help="pixel size for mm / mm² values")
    s.add_argument("--review", action="store_true",
                   help="also write RESULTS_DIR/review.csv and review.html: the masks ranked by "
                        "predicted Dice, worst first (8 test-time views per image: slower)")
    _add_postprocess_args(s)

    e = sub.add_parser("evaluate", help="score predicted masks against true masks (ISIC 2018 metrics)")
    e.add_argument("pred_dir", type=Path)
    e.add_argument("truth_dir", type=Path)
    e.add_argument("--csv", type=Path, default=None, help="per-image CSV (default PRED_DIR/evaluation.csv)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an existing --csv file (without it, an existing file is kept and "
                        "the command stops)")

    m = sub.add_parser("measure", help="ABCD-style shape and colour descriptors of lesion masks")
    m.add_argument("images_dir", type=Path)
    m.add_argument("masks_dir", type=Path)
    m.add_argument("--out", type=Path, required=True, help="CSV file to write")
    m.add_argument("--pixel-size-mm", type=POSITIVE, default=None, help="pixel size for mm / mm² values")
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (without it, an existing file is kept and "
                        "the command stops)")

    g = sub.add_parser("sample", help="write synthetic dermoscopy-like image/mask pairs")
    g.add_argument("out_dir", type=Path)
    g.add_argument("--n", type=AT_LEAST_ONE, default=6)
    # a side of 100,000 px asked for 100 GB and was killed by the system without a word
    g.add_argument("--size", type=_number(int, 8, 8192, what="from 8 to 8192"), default=512)
    g.add_argument("--seed", type=COUNT, default=0)
    return parser


def _resolve_model_arg(value: str | None) -> str | None:
    if value in (None, "bundled"):
        from .bundled import bundled_model_path

        return str(bundled_model_path())
    return value


def _history_paths(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("")
    return Path(f"{stem}_history.csv"), Path(f"{stem}_curves.png")


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed

    if not distributed.launched():
        return _train(args)
    # Started by torchrun: one model trained by all the processes; only rank 0 prints and writes.
    distributed.setup(args.device)
    try:
        with distributed.quiet_unless_main():
            code = _train(args)
        # No process leaves while rank 0 still writes: torchrun ends the others as soon as one
        # exits with a non-zero code (130 after a cancel).
        distributed.barrier()
        return code
    finally:
        distributed.teardown()


def _train(args: argparse.Namespace) -> int:
    from . import distributed
    from .destinations import check_output_file
    from .devices import resolve_device
    from .model import check_encoder, load_model
    from .training import checkpoint_path

    # Everything that can be checked without the data is checked first, cheapest first.
    config = TrainConfig(encoder=args.encoder, decoder_channels=args.decoder_channels, size=args.size,
                         epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                         weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
                         val_fraction=args.val_fraction, seed=args.seed, augment=args.augment,
                         precision=args.precision, colour_constancy=args.colour_constancy,
                         device=args.device, limit=args.limit)
    check_encoder(config.encoder)
    out: Path = args.out
    ckpt = checkpoint_path(out)
    resuming = args.resume and ckpt.is_file()
    replace = args.overwrite or resuming
    if args.resume and not resuming:
        if out.is_file() and not args.overwrite and _unfinished(out):
            # Killed or cancelled before its first checkpoint was written: nothing to continue,
            # but this run's own unfinished model may be replaced.
            print(f"no checkpoint {ckpt.name} to resume; {out.name} is an unfinished model of "
                  "an interrupted run, so a new run starts and replaces it")
            replace = True
        else:
            print(f"no checkpoint {ckpt.name} to resume; starting a new run")
    history_csv, curves_png = _history_paths(out)
    check_output_file(out, overwrite=replace, what="--out", example="model.pt")
    for path in (history_csv, curves_png):
        check_output_file(path, overwrite=replace, what="--out (its history and curves)")
    check_output_file(ckpt, overwrite=True, what="checkpoint")
    resolve_device(config.device)
    from .training import check_init_model

    init = check_init_model(load_model(_resolve_model_arg(args.init))) if args.init else None

    from tqdm import tqdm

    from .dataset import samples_from_pairs
    from .history import plot_history, write_history_csv
    from .pairs import choose_pairs, find_pairs, pair_folders, unreviewed_ids
    from .training import split_indices, split_note, train

    images_dir, masks_dir = ((args.images_dir, args.masks_dir) if args.masks_dir is not None
                             else pair_folders(args.images_dir))
    scan = find_pairs(images_dir, masks_dir)
    pairs = choose_pairs(scan.pairs, config.limit, config.seed)
    for skipped in scan.skipped:
        print(f"skipped {skipped}")
    print(f"reading {len(pairs)} pairs at {config.size}x{config.size} ...", flush=True)
    samples = samples_from_pairs(pairs, config.size)
    for skipped in samples.skipped:
        print(f"skipped {skipped}")
    unreviewed = unreviewed_ids(images_dir, masks_dir) & set(samples.names)
    if note := split_note(len(samples), len(unreviewed)):
        print(note)
    n_train, n_val = map(len, split_indices(len(samples), config.val_fraction, config.seed,
                                            [name in unreviewed for name in samples.names]))

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: (stop.set(), print(
        "\ncancelling after this batch; the best model so far is kept", file=sys.stderr)))
    bar = tqdm(total=0, unit="batch", leave=False, dynamic_ncols=True, disable=None)  # no bar in logs

    def on_batch(p):
        if p.batch == 1:  # a new epoch: restart the bar and its clock
            bar.reset(total=p.batches)
            bar.set_description(f"epoch {p.epoch}/{config.epochs}")
        bar.update()

    processes = distributed.world_size()
    print(f"training {config.encoder} U-Net: {len(samples)} pairs, {n_train}:{n_val} split, "
          f"{config.epochs} epochs, device {config.device}"
          + (f", {processes} processes (DDP)" if processes > 1 else ""), flush=True)
    gen = train(samples, config, out, init=init, cancel=stop.is_set, on_batch=on_batch,
                resume=args.resume, train_only=unreviewed, sources=list(dict.fromkeys(map(str, (images_dir, masks_dir)))))

    def show(report):
        bar.clear()
        tqdm.write(report.line())

    try:
        try:
            result = drain(gen, show)
        finally:
            bar.close()
        # The model is saved; its history and curves come next. A Ctrl-C now must not leave the
        # run without them (and the same command refused, the model being complete).
        signal.signal(signal.SIGINT, lambda *_: print(
            "\nwriting the history and curves; one moment", file=sys.stderr))
        if not distributed.is_main():  # rank 0 writes the history and curves
            return EXIT_INTERRUPTED if result.cancelled else EXIT_OK
        from .atomic import remove_stale_temp_files

        for path in (history_csv, curves_png):  # this run's own files, like the model's
            remove_stale_temp_files(path)  # left by a run killed while it wrote them
        write_history_csv(result.history, history_csv)
        curves = plot_history(result.history, curves_png) if result.history else None
    finally:
        signal.signal(signal.SIGINT, previous)
    state = "cancelled; best model so far" if result.cancelled else "done; best model"
    print(f"{state} (epoch {result.best_epoch}) saved to {out}")
    print(f"history: {history_csv}" + (f"  curves: {curves}" if curves else ""))
    if result.cancelled:
        print("continue it with the same command and --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _unfinished(path: Path) -> bool:
    """A model of a run that was killed (``in progress``), or cancelled before its first epoch
    ended (``cancelled`` with no epoch: the run said to --resume, but left no checkpoint)."""
    from .model import ModelFileError, read_torch_file

    try:
        import json

        meta = json.loads(read_torch_file(path)["metadata"])
        return (meta.get("status") == "in progress"
                or (meta.get("status") == "cancelled" and not meta.get("epochs_completed")))
    except (ModelFileError, KeyError, TypeError, ValueError):
        return False


def cmd_segment(args: argparse.Namespace) -> int:
    from .destinations import check_output_file
    from .folder_segmentation import MEASUREMENTS_CSV, check_folders, default_workers, segment_folder

    # Options, folders and destinations are checked before the model is loaded or anything is
    # written.
    post = PostprocessConfig(threshold=args.threshold, fill_holes=args.fill_holes, keep=args.keep,
                             min_size=args.min_size)
    note = check_folders(args.input_dir, args.results_dir)
    measurements_csv = args.results_dir / MEASUREMENTS_CSV
    if args.measure:
        check_output_file(measurements_csv, overwrite=True, what="measurements file")
    if args.review and not args.overwrite:
        from .review import check_review_files

        check_review_files(args.results_dir)  # a person's own review.csv is never replaced
    if note:
        print(note)

    from tqdm import tqdm

    if args.dask:
        return _segment_on_dask(args, post)

    from .engines import make_segmenter
    from .measurements import DISCLAIMER

    model_arg = _resolve_model_arg(args.model)
    segmenter = make_segmenter(model_arg, device=args.device, engine=args.engine)
    print(f"model: {segmenter.name} ({segmenter.size}x{segmenter.size}, {segmenter.engine} engine)")
    estimates = []
    reviewer = []  # made at the first image: the segmenter, or fp32 for int8 (make_reviewer)
    not_reviewed: list[str] = []  # kept masks that cannot be judged, with the reason

    def review(outcome):
        if args.review:
            if not reviewer:
                from .engines import make_reviewer

                reviewer.append(make_reviewer(segmenter, model_arg))
            estimate = _review_one(reviewer[0], outcome, args.results_dir)
            if isinstance(estimate, str):
                not_reviewed.append(estimate)
            elif estimate is not None:
                estimates.append(estimate)

    workers = default_workers(segmenter) if args.workers is None else args.workers
    gen = segment_folder(args.input_dir, args.results_dir, segmenter, post, tta=args.tta,
                         overwrite=args.overwrite, overlay=args.overlay, probabilities=args.probabilities,
                         measurements=measurements_csv if args.measure else None,
                         pixel_size_mm=args.pixel_size_mm, after_each=review,
                         workers=max(1, workers))
    with tqdm(unit="image", leave=False, dynamic_ncols=True, disable=None) as bar:
        def show(outcome):
            bar.update()
            if outcome.status in ("failed", "exists", "completed"):
                tqdm.write(f"{outcome.status}: {outcome.message}")
            elif outcome.status == "skipped":
                tqdm.write(f"skipped {outcome.path.name}: {outcome.message}")

        report = drain(gen, show)
    print(f"{report.summary()}; results in {args.results_dir}")
    if args.measure:
        again = (f"; {report.remeasured} rows made with another pixel size measured again from "
                 "the masks on disk" if report.remeasured else "")
        print(f"measurements: {report.measured} rows added to {measurements_csv}{again}\n{DISCLAIMER}")
    if args.review and estimates:
        from .review import write_review

        csv_path, html_path = write_review(estimates, args.results_dir)
        worst = min(estimates, key=lambda e: e.predicted_dice)
        kind = "predicted Dice" if worst.calibrated else "uncalibrated score"
        print(f"review queue of {len(estimates)} images, worst first: {csv_path} and {html_path} "
              f"(worst: {worst.id}, {kind} {worst.predicted_dice:.2f})")
    for line in not_reviewed:
        print(f"not reviewed: {line}")
    return EXIT_SOME_FAILED if report.failed or not_reviewed else EXIT_OK


def _segment_on_dask(args: argparse.Namespace, post: PostprocessConfig) -> int:
    from tqdm import tqdm

    from .dask_run import parse_scheduler, segment_with_dask

    parse_scheduler(args.dask)  # a bad address is refused before anything starts
    if args.measure or args.review:
        raise ValueError("--measure and --review are not available with --dask yet; run them "
                         "afterwards on the results folder without --dask")
    with tqdm(unit="image", leave=False, dynamic_ncols=True, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = segment_with_dask(args.input_dir, args.results_dir, args.dask,
                                   model=_resolve_model_arg(args.model), engine=args.engine,
                                   post=post, tta=args.tta, overwrite=args.overwrite,
                                   overlay=args.overlay, probabilities=args.probabilities,
                                   on_progress=progress)
    for outcome in report.failed:
        print(f"failed: {outcome.message}")
    print(f"{report.summary()}; results in {args.results_dir} (on Dask: {args.dask})")
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def _review_one(segmenter, outcome, results_dir: Path):
    """The review-queue estimate of one image's mask (the new one, or the one kept on disk);
    a line saying why when the kept mask or its image cannot be read."""
    from .image_io import ImageReadError, read_image, read_mask
    from .pairs import mask_filename
    from .review import estimate_quality

    image, mask = outcome.image, outcome.mask
    if outcome.status == "exists":
        try:
            image = read_image(outcome.path)
        except (ImageReadError, OSError, ValueError) as err:
            return str(err)
        try:
            mask = read_mask(results_dir / mask_filename(outcome.path.stem), shape=image.shape[:2])
        except (ImageReadError, OSError, ValueError) as err:
            return (f"{outcome.path.name}: the kept mask cannot be used ({err}); delete it or "
                    "pass --overwrite")
    if image is None or mask is None:
        return None
    return estimate_quality(segmenter, image, mask, id=outcome.path.stem, thumbnail=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .destinations import check_output_file
    from .evaluation import evaluate_folders

    csv_path = args.csv or args.pred_dir / "evaluation.csv"
    check_output_file(csv_path, overwrite=args.overwrite, what="--csv", example="evaluation.csv")
    evaluation = evaluate_folders(args.pred_dir, args.truth_dir)
    for skipped in evaluation.skipped:
        print(f"skipped {skipped}")
    for missing in evaluation.missing:
        print(f"missing: {missing}")
    for bad in evaluation.unreadable_truth:
        print(f"unreadable true mask: {bad}")
    evaluation.write_csv(csv_path, overwrite=args.overwrite)
    n_missing = len(evaluation.missing) + len(evaluation.unreadable_truth)
    print(f"{len(evaluation.rows)} images scored of {evaluation.n_truth} true masks"
          + (f" ({n_missing} without a usable prediction or readable true mask; the means cover "
             f"the {len(evaluation.rows)} scored)" if n_missing else "")
          + f"; per-image metrics in {csv_path}")
    for name, value in evaluation.means.items():
        print(f"  mean {name:18s} {value:.4f}")
    return EXIT_OK if evaluation.complete else EXIT_SOME_FAILED


def cmd_measure(args: argparse.Namespace) -> int:
    from .destinations import check_output_file
    from .image_io import ImageReadError, read_image, read_mask
    from .measurements import DISCLAIMER, measure_lesion, write_measurements_csv
    from .pairs import find_pairs

    check_output_file(args.out, overwrite=args.overwrite, what="--out", example="measurements.csv")
    scan = find_pairs(args.images_dir, args.masks_dir)
    failed = [str(s) for s in scan.skipped]
    rows = []
    for pair in scan.pairs:
        try:
            image = read_image(pair.image)
            mask = read_mask(pair.mask, shape=image.shape[:2])
        except ImageReadError as err:
            failed.append(str(err))
            continue
        rows.append({"id": pair.name, **measure_lesion(mask, image, args.pixel_size_mm)})
    for line in failed:
        print(f"skipped {line}")
    if not rows:
        raise ValueError("no pair could be measured")
    write_measurements_csv(rows, args.out, overwrite=args.overwrite)
    print(f"measured {len(rows)} lesions; {args.out}\n{DISCLAIMER}")
    return EXIT_SOME_FAILED if len(rows) < len(scan.pairs) else EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from .destinations import check_output_folder
    from .synthetic import write_synthetic_dataset

    check_output_folder(args.out_dir, what="samples folder")
    images_dir, masks_dir = write_synthetic_dataset(args.out_dir, args.n, (args.size, args.size), args.seed,
                                                   overwrite=False)
    print(f"wrote {args.n} synthetic pairs: images in {images_dir}, masks in {masks_dir}")
    return EXIT_OK


COMMANDS = {"train": cmd_train, "segment": cmd_segment, "evaluate": cmd_evaluate,
            "measure": cmd_measure, "sample": cmd_sample}


def main(argv: list[str] | None = None) -> int:
    from .image_io import ImageScalingWarning, NonBinaryMaskWarning

    args = build_parser().parse_args(argv)
    said: set[str] = set()

    def show_warning(message, category, *_args, **_kwargs) -> None:
        text = str(message)
        if issubclass(category, ImageScalingWarning):  # once per kind of data, not per file
            kind = text.split(": ", 1)[-1]
            if kind in said:
                return
            said.add(kind)
            text += " (said once; other files like it are read the same way)"
        print(f"warning: {text}", file=sys.stderr)

    # Warnings as one plain line each, for this command only (catch_warnings restores the
    # caller's filters and showwarning, so `main()` called from Python changes nothing global).
    with warnings.catch_warnings(), _tolerant_output():
        warnings.simplefilter("always", NonBinaryMaskWarning)
        warnings.simplefilter("always", ImageScalingWarning)
        warnings.showwarning = show_warning
        return _run(args)


@contextlib.contextmanager
def _tolerant_output():
    """While a command runs, text the terminal's encoding cannot show (a file name with accents
    on a Latin-1 or ASCII terminal) is written as escapes instead of ending the run with an
    error; the streams' own setting is restored afterwards."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="backslashreplace")
                changed.append(stream)
    try:
        yield
    finally:
        for stream in changed:
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="strict")


def _error(args: argparse.Namespace, text: str) -> None:
    print(f"skinseg {args.command}: error: {text}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from .bundled import BundledModelMissing
    from .destinations import describe_os_error
    from .errors import DeviceError, ModelFileError
    from .image_io import ImageReadError

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"\nskinseg {args.command}: interrupted; what was finished is kept "
              "(rerun the same command to complete the rest)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, ModelFileError, DeviceError, ImageReadError, BundledModelMissing) as err:
        _error(args, str(err))
        return EXIT_BAD_INPUT
    except OSError as err:  # unwritable or full destinations, missing or misplaced inputs
        _error(args, describe_os_error(err))
        return EXIT_BAD_INPUT
    except (RuntimeError, MemoryError) as err:
        if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
            _error(args, f"out of memory; lower --batch-size or --size, or use --device cpu "
                         f"({str(err).strip()[:200]})")
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
