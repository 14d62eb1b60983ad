"""``skinseg``: train, segment, evaluate and measure from the command line.

Exit codes: 0 success, 1 some images failed (the others were processed), 2 bad input.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from pathlib import Path

from . import __version__
from .config import KEEP_MODES, LR_SCHEDULES, PostprocessConfig, TrainConfig
from .generators import drain

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _decoder_channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected five comma-separated integers, got {text!r}")


def _add_postprocess_args(p: argparse.ArgumentParser) -> None:
    d = PostprocessConfig()
    p.add_argument("--threshold", type=float, default=d.threshold, help="lesion probability cut-off")
    p.add_argument("--keep", choices=KEEP_MODES, default=d.keep,
                   help="keep the largest lesion (default) or all components")
    p.add_argument("--min-size", type=int, default=d.min_size,
                   help="drop components smaller than this many pixels")
    p.add_argument("--no-fill-holes", dest="fill_holes", action="store_false",
                   help="keep holes inside the lesion")
    p.add_argument("--tta", action="store_true", help="average with flipped copies (slower)")


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = argparse.ArgumentParser(prog="skinseg", description="Skin-lesion segmentation with a U-Net.")
    parser.add_argument("--version", action="version", version=f"napari-skinseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a U-Net on image/mask pairs (the analysis module)")
    t.add_argument("images_dir", type=Path)
    t.add_argument("masks_dir", type=Path)
    t.add_argument("--out", type=Path, required=True, help="model file to write (e.g. model.pt)")
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--size", type=int, default=d.size, help="working size in pixels (multiple of 32)")
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--val-fraction", type=float, default=d.val_fraction)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--encoder", default=d.encoder, help="segmentation-models-pytorch encoder name")
    t.add_argument("--decoder-channels", type=_decoder_channels, default=d.decoder_channels)
    t.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--init", help="start from this model file ('bundled' for the shipped model)")
    t.add_argument("--resume", action="store_true",
                   help="continue from <out>.checkpoint.pt written by an interrupted run")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    t.add_argument("--limit", type=int, default=None,
                   help="use only N randomly chosen pairs (seeded), e.g. the paper's 100")

    s = sub.add_parser("segment", help="segment every image of a folder (the segmentation module)")
    s.add_argument("input_dir", type=Path)
    s.add_argument("results_dir", type=Path)
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--device", default="auto")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument("--overlay", action="store_true", help="also write <id>_overlay.png (outline on image)")
    s.add_argument("--probabilities", action="store_true", help="also write <id>_probability.png")
    s.add_argument("--measure", action="store_true",
                   help="also write RESULTS_DIR/measurements.csv (ABCD-style lesion descriptors)")
    s.add_argument("--pixel-size-mm", type=float, default=None, help="pixel size for mm / mm² values")
    _add_postprocess_args(s)

    e = sub.add_parser("evaluate", help="score predicted masks against true masks (ISIC 2018 metrics)")
    e.add_argument("pred_dir", type=Path)
    e.add_argument("truth_dir", type=Path)
    e.add_argument("--csv", type=Path, default=None, help="per-image CSV (default PRED_DIR/evaluation.csv)")
    e.add_argument("--overwrite", action="store_true")

    m = sub.add_parser("measure", help="ABCD-style shape and colour descriptors of lesion masks")
    m.add_argument("images_dir", type=Path)
    m.add_argument("masks_dir", type=Path)
    m.add_argument("--out", type=Path, required=True, help="CSV file to write")
    m.add_argument("--pixel-size-mm", type=float, default=None, help="pixel size for mm / mm² values")
    m.add_argument("--overwrite", action="store_true")

    g = sub.add_parser("sample", help="write synthetic dermoscopy-like image/mask pairs")
    g.add_argument("out_dir", type=Path)
    g.add_argument("--n", type=int, default=6)
    g.add_argument("--size", type=int, default=512)
    g.add_argument("--seed", type=int, default=0)
    return parser


def _resolve_model_arg(value: str | None) -> str | None:
    if value in (None, "bundled"):
        from .bundled import bundled_model_path

        return str(bundled_model_path())
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .dataset import samples_from_pairs
    from .history import plot_history, write_history_csv
    from .pairs import find_pairs
    from .training import checkpoint_path, train

    config = TrainConfig(encoder=args.encoder, decoder_channels=args.decoder_channels, size=args.size,
                         epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                         weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
                         val_fraction=args.val_fraction, seed=args.seed, augment=args.augment,
                         device=args.device)
    out: Path = args.out
    resuming = args.resume and checkpoint_path(out).exists()
    if args.resume and not resuming:
        print(f"no checkpoint {checkpoint_path(out).name} to resume; starting a new run")
    if out.exists() and not (args.overwrite or resuming):
        raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
    init = _resolve_model_arg(args.init) if args.init else None

    scan = find_pairs(args.images_dir, args.masks_dir)
    pairs = scan.pairs
    if args.limit:
        import numpy as np

        chosen = np.random.default_rng(args.seed).permutation(len(pairs))[: args.limit]
        pairs = [pairs[i] for i in sorted(chosen)]
    for skipped in scan.skipped:
        print(f"skipped {skipped}")
    print(f"reading {len(pairs)} pairs at {config.size}x{config.size} ...", flush=True)
    samples = samples_from_pairs(pairs, config.size)
    for skipped in samples.skipped:
        print(f"skipped {skipped}")

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: (stop.set(), print(
        "\ncancelling after this batch; the best model so far is kept", file=sys.stderr)))
    bar = tqdm(total=0, unit="batch", leave=False, dynamic_ncols=True)

    def on_batch(p):
        if p.batch == 1:  # a new epoch: restart the bar and its clock
            bar.reset(total=p.batches)
            bar.set_description(f"epoch {p.epoch}/{config.epochs}")
        bar.update()

    print(f"training {config.encoder} U-Net: {len(samples)} pairs, "
          f"{round(len(samples) * (1 - config.val_fraction))}:{max(1, round(len(samples) * config.val_fraction))}"
          f" split, {config.epochs} epochs, device {config.device}", flush=True)
    gen = train(samples, config, out, init=init, cancel=stop.is_set, on_batch=on_batch,
                resume=args.resume, sources=[str(args.images_dir)])
    def show(report):
        bar.clear()
        tqdm.write(report.line())

    try:
        result = drain(gen, show)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    stem = out.with_suffix("")
    history_csv = write_history_csv(result.history, f"{stem}_history.csv")
    curves = plot_history(result.history, f"{stem}_curves.png") if result.history else None
    state = "cancelled; best model so far" if result.cancelled else "done; best model"
    print(f"{state} (epoch {result.best_epoch}) saved to {out}")
    print(f"history: {history_csv}" + (f"  curves: {curves}" if curves else ""))
    return EXIT_OK


def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .folder_segmentation import check_folders, segment_folder
    from .measurements import DISCLAIMER, measure_lesion, write_measurements_csv
    from .prediction import Segmenter

    note = check_folders(args.input_dir, args.results_dir)
    if note:
        print(note)
    segmenter = Segmenter.from_file(_resolve_model_arg(args.model), device=args.device)
    post = PostprocessConfig(threshold=args.threshold, fill_holes=args.fill_holes, keep=args.keep,
                             min_size=args.min_size)
    measurements_csv = args.results_dir / "measurements.csv"
    if args.measure and measurements_csv.exists() and not args.overwrite:
        raise FileExistsError(f"{measurements_csv} exists; pass --overwrite to replace it")
    rows = []

    def measure(outcome):
        if outcome.status == "written" and args.measure:
            rows.append({"id": outcome.path.stem,
                         **measure_lesion(outcome.mask, outcome.image, args.pixel_size_mm)})

    print(f"model: {segmenter.name} ({segmenter.size}x{segmenter.size}, {segmenter.model.metadata.config.encoder})")
    gen = segment_folder(args.input_dir, args.results_dir, segmenter, post, tta=args.tta,
                         overwrite=args.overwrite, overlay=args.overlay, probabilities=args.probabilities,
                         after_each=measure)
    with tqdm(unit="image", leave=False, dynamic_ncols=True) as bar:
        def show(outcome):
            bar.update()
            if outcome.status in ("failed", "exists"):
                tqdm.write(f"{outcome.status}: {outcome.message}")
            elif outcome.status == "skipped":
                tqdm.write(f"skipped {outcome.path.name}: {outcome.message}")

        report = drain(gen, show)
    print(f"{report.summary()}; results in {args.results_dir}")
    if rows:
        write_measurements_csv(rows, measurements_csv, overwrite=args.overwrite)
        print(f"measurements of {len(rows)} lesions in {measurements_csv}\n{DISCLAIMER}")
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folders

    csv_path = args.csv or args.pred_dir / "evaluation.csv"
    if csv_path.exists() and not args.overwrite:
        raise FileExistsError(f"{csv_path} exists; choose another --csv or pass --overwrite")
    evaluation = evaluate_folders(args.pred_dir, args.truth_dir)
    for skipped in evaluation.skipped:
        print(f"skipped {skipped}")
    evaluation.write_csv(csv_path)
    print(f"{len(evaluation.rows)} images; per-image metrics in {csv_path}")
    for name, value in evaluation.means.items():
        print(f"  mean {name:18s} {value:.4f}")
    return EXIT_OK


def cmd_measure(args: argparse.Namespace) -> int:
    from .image_io import ImageReadError, read_image, read_mask
    from .measurements import DISCLAIMER, measure_lesion, write_measurements_csv
    from .pairs import find_pairs

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; choose another --out or pass --overwrite")
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
    from .synthetic import write_synthetic_dataset

    images_dir, masks_dir = write_synthetic_dataset(args.out_dir, args.n, (args.size, args.size), args.seed)
    print(f"wrote {args.n} synthetic pairs: images in {images_dir}, masks in {masks_dir}")
    return EXIT_OK


COMMANDS = {"train": cmd_train, "segment": cmd_segment, "evaluate": cmd_evaluate,
            "measure": cmd_measure, "sample": cmd_sample}


def main(argv: list[str] | None = None) -> int:
    from .image_io import NonBinaryMaskWarning

    args = build_parser().parse_args(argv)
    # Warnings as one plain line each, for this command only (catch_warnings restores the
    # caller's filters and showwarning, so `main()` called from Python changes nothing global).
    with warnings.catch_warnings():
        warnings.simplefilter("always", NonBinaryMaskWarning)
        warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .bundled import BundledModelMissing
    from .devices import DeviceError
    from .image_io import ImageReadError
    from .model import ModelFileError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ModelFileError,
            DeviceError, ImageReadError, BundledModelMissing) as err:
        print(f"skinseg {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RuntimeError, MemoryError) as err:
        if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
            print(f"skinseg {args.command}: error: out of memory; lower --batch-size or --size, "
                  f"or use --device cpu ({str(err).strip()[:200]})", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
