"""Derive ``r2gen_split.json`` (ids and splits only) from R2Gen's IU X-ray ``annotation.json``.

Run once by the maintainers; the output is committed so that ``mrg prepare iu-xray`` reproduces R2Gen's
train/val/test assignment exactly without shipping any report text (IU X-ray texts are CC BY-NC-ND 4.0)::

    python data_manifests/iu_xray/derive_split.py ../shared/data/r2gen_iu/annotation.json

The annotation is the one R2Gen's README links (Google Drive ``1c0BXEuDy8Cmm2jfN0YYGkQxFZd2ZIoLg``); the
copy used is byte-identical to manavkapadnis/SERPENT-VLM ``data/iu_xray/annotation.json`` (commit a3a8cd4b)
with its renamed third key restored to ``"test"``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

SPLITS = ("train", "val", "test")
OUT = Path(__file__).resolve().parent / "r2gen_split.json"


def derive(annotation_path: Path) -> dict:
    raw = annotation_path.read_bytes()
    annotation = json.loads(raw)
    if list(annotation) != list(SPLITS):
        raise SystemExit(f"{annotation_path}: expected keys {SPLITS}, got {list(annotation)}")
    ids: dict[str, list[str]] = {}
    for split in SPLITS:
        ids[split] = []
        for entry in annotation[split]:
            if entry["split"] != split:
                raise SystemExit(f"{entry['id']}: listed under {split} but says split={entry['split']}")
            # R2Gen lists the first two images of each study as <id>/0.png, <id>/1.png; check the rule holds
            if entry["image_path"] != [f"{entry['id']}/0.png", f"{entry['id']}/1.png"]:
                raise SystemExit(f"{entry['id']}: unexpected image_path {entry['image_path']}")
            ids[split].append(entry["id"])
    every = [i for split in SPLITS for i in ids[split]]
    if len(every) != len(set(every)):
        raise SystemExit("duplicate ids across splits")
    return {
        "description": (
            "R2Gen's IU X-ray split: study ids per split, in R2Gen's annotation.json order. The id is the first "
            "Open-i parentImage id without its last -NNNN part. Ids and splits only, no report text."
        ),
        "derived_from": {
            "file": "R2Gen data/iu_xray/annotation.json",
            "sha256": hashlib.sha256(raw).hexdigest(),
            "script": "data_manifests/iu_xray/derive_split.py",
        },
        "counts": {split: len(ids[split]) for split in SPLITS},
        **ids,
    }


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    manifest = derive(Path(sys.argv[1]))
    OUT.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {manifest['counts']}")


if __name__ == "__main__":
    main()
