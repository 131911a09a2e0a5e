"""Materialise one configured base model into resources/models/{model}/."""

import argparse
import json

from sftlab.logs import setup_logging
from sftlab.models.materialise import materialise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-config", required=True, help="the model's config entry as JSON")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    setup_logging()
    materialise(json.loads(args.model_config), args.out)


if __name__ == "__main__":
    main()
