"""Classify new imagery with a trained model file, from the native formats the readers know.

    python -m experiments.predict MODEL.pt INPUT... --out predictions.csv
    python -m experiments.predict results/run-1/institutions/sar-0/model-sar.pt scenes/ --on-error skip
    python -m experiments.predict MODEL.pt --export-program model.pt2    # serve with PyTorch alone
    python -m experiments.predict OLD.pt --upgrade NEW.pt                # a version-1 file as version 2

INPUT: files or folders (searched recursively): EuroSAT GeoTIFFs and JPEGs, BigEarthNet band
folders, SEN12MS patches, or plain GeoTIFFs with the model's bands in its order (see
`fed_uml.predict`), each of the patch size the model was trained on (`--resize` takes others).
Writes `file, predicted_class, prob_<class>...` per input for a single-label model, `file,
predicted_labels, prob_<class>...` (labels joined by ';', sigmoid scores) for a multi-label
one. A user error (a bad input, model file, setting or output path) stops with one line
`error: <message>` naming it and exit status 2 (`--debug`: the traceback too); `--on-error
skip` leaves bad inputs out and reports them on stderr. The output path is checked before
any input is read, and the CSV is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from experiments.cli import debug_requested, report_user_errors
from fed_uml.errors import SettingsError, UserError
from fed_uml.model_file import export_program, load_model, upgrade_model_file
from fed_uml.predict import ON_ERROR, check_output, check_recorded, find_inputs, predict, write_csv


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m experiments.predict`."""
    p = argparse.ArgumentParser(prog="python -m experiments.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model file, model-<modality>.pt")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    p.add_argument("--out", default="predictions.csv",
                   help="CSV to write ('-': stdout; a file named '-' is ./-; default %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="raise: stop at the first bad input; skip: leave it out and report it")
    p.add_argument("--resize", action="store_true",
                   help="resample inputs of another patch size than the model was trained on (refused otherwise)")
    p.add_argument("--require-recorded", action="store_true",
                   help="refuse a model file whose SHA-256 is not the one its run's results.json recorded "
                        "(default: warn)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export-program", metavar="PATH",
                   help="also write a torch.export program (normalisation + model) for serving without fed-uml")
    p.add_argument("--upgrade", metavar="NEW",
                   help="rewrite a version-1 model file as version 2 at NEW and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """The work of `main`; user errors propagate as `UserError`."""
    if args.upgrade:
        print(f"wrote {upgrade_model_file(args.model, args.upgrade)}", file=sys.stderr)
        return 0
    if not args.inputs and not args.export_program:
        raise SettingsError("give at least one INPUT (or --export-program PATH)")
    if args.inputs:
        check_output(args.out, args.model, args.inputs)
    warning = check_recorded(args.model, require=args.require_recorded)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    saved = load_model(args.model, device=args.device)
    if args.export_program:
        print(f"wrote {export_program(saved, args.export_program)}", file=sys.stderr)
    if not args.inputs:
        return 0
    try:
        inputs = find_inputs(args.inputs)
        result = predict(saved, inputs, batch_size=args.batch_size, on_error=args.on_error,
                         progress=not args.no_progress and len(inputs) > 1, resize=args.resize)
        for err in result.skipped:
            print(f"skipped {err}", file=sys.stderr)
        if not result.files:
            raise UserError(f"none of the {len(inputs)} input(s) could be classified")
        write_csv(args.out, saved, result)
    except OSError as e:  # a folder that cannot be listed, a full disk: the user's to fix, named
        raise UserError(f"{e.filename}: {e.strerror}" if e.filename else str(e)) from e
    print(f"classified {len(result.files)} of {len(inputs)} input(s) with {args.model} (modality "
          f"{saved.modality}, bands {','.join(saved.bands)}, {saved.task}); skipped {len(result.skipped)}; "
          f"predictions in {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Predict with a model file from the command line; a user's mistake prints `error: ...`, exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    return report_user_errors(lambda: run(parse_args(argv)), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
