"""Classify new imagery with a trained model file, from the native formats the readers know.

    python -m experiments.predict MODEL.pt INPUT... --out predictions.csv
    python -m experiments.predict results/run-1/institutions/sar-0/model-sar.pt scenes/ --on-error skip
    python -m experiments.predict MODEL.pt --export-program model.pt2    # serve with PyTorch alone

INPUT: files or folders (searched recursively): EuroSAT GeoTIFFs and JPEGs, BigEarthNet band
folders, SEN12MS patches, or plain GeoTIFFs with the model's bands in its order (see
`fed_uml.predict`). Writes `file, predicted_class, prob_<class>...` per input. A bad input
stops with an error naming the file (exit status 1); `--on-error skip` goes on, leaves it
out and reports it on stderr.
"""

from __future__ import annotations

import argparse
import sys

from fed_uml.data.errors import DataError
from fed_uml.model_file import ModelFileError, export_program, load_model
from fed_uml.predict import ON_ERROR, find_inputs, predict, write_csv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model file, model-<modality>.pt")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    p.add_argument("--out", default="predictions.csv", help="CSV to write ('-': stdout; default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="raise: stop at the first bad input; skip: leave it out and report it")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export-program", metavar="PATH",
                   help="also write a torch.export program (normalisation + model) for serving without fed-uml")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.inputs and not args.export_program:
        print("error: give at least one INPUT (or --export-program PATH)", file=sys.stderr)
        return 2
    try:
        saved = load_model(args.model, device=args.device)
        if args.export_program:
            print(f"wrote {export_program(saved, args.export_program)}", file=sys.stderr)
        if not args.inputs:
            return 0
        inputs = find_inputs(args.inputs)
        result = predict(saved, inputs, batch_size=args.batch_size, on_error=args.on_error,
                         progress=not args.no_progress and len(inputs) > 1)
    except (ModelFileError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for err in result.skipped:
        print(f"skipped {err}", file=sys.stderr)
    if not result.files:
        print(f"error: none of the {len(inputs)} input(s) could be classified", file=sys.stderr)
        return 1
    write_csv(args.out, saved, result)
    print(f"classified {len(result.files)} of {len(inputs)} input(s) with {args.model} (modality "
          f"{saved.modality}, bands {','.join(saved.bands)}); skipped {len(result.skipped)}; "
          f"predictions in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
