"""Labelled data for the benchmarks: where it is, and reading both label formats.

Two formats, told apart per file:
- openalpr `NAME.txt`: one line per plate, `file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`
  (box in pixels, x/y its top-left corner): boxes and text.
- Pascal VOC `NAME.xml`: `<object>`s with a `<bndbox>`; the image is paired by stem (the
  `<filename>` inside may keep an older name): boxes only, so only detection is scored.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts")


class DatasetError(Exception):
    """A dataset that is absent or unreadable; the message names it and says what to do."""


@dataclass(frozen=True)
class Label:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    text: str | None  # None where the format holds boxes only


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    labels: tuple[Label, ...]

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Dataset:
    name: str
    path: Path
    format: str  # "openalpr", "voc" or "mixed"
    items: tuple[LabelledImage, ...]

    @property
    def has_text(self) -> bool:
        """Whether reads can be scored: every label carries its plate's text."""
        return all(label.text is not None for item in self.items for label in item.labels)

    @property
    def plates(self) -> int:
        return sum(len(item.labels) for item in self.items)


def resolve(path: str | Path | None, default: str) -> Path:
    """The dataset path given, or `../shared/data/<default>` beside the repo; it must exist."""
    chosen = Path(path) if path else DATA_ROOT / default
    if not chosen.exists():
        hint = ("" if path else " (the default; the labelled data lives beside the repo, in "
                f"{DATA_ROOT}; pass the path of your own copy)")
        raise DatasetError(f"dataset {chosen} does not exist{hint}")
    return chosen


def clean_text(text: str) -> str:
    """A label's plate text as the pipeline writes reads: upper case, letters and digits.

    Only case and separators change; a label's letters are never corrected (the openalpr
    labels write O for some zeros, which is why reads are also scored with O = 0).
    """
    return "".join(c for c in text.upper() if c.isalnum())


def load_folder(folder: Path) -> Dataset:
    """Every labelled image in `folder` (not its subfolders), in name order."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of labelled images")
    items: list[LabelledImage] = []
    formats: set[str] = set()
    for label_file in sorted(folder.iterdir()):
        if label_file.suffix == ".txt":
            items.extend(_openalpr(label_file))
            formats.add("openalpr")
        elif label_file.suffix == ".xml":
            items.append(_voc(label_file))
            formats.add("voc")
    if not items:
        raise DatasetError(f"{folder} holds no labelled images (openalpr NAME.txt or Pascal "
                           "VOC NAME.xml beside each image)")
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return Dataset(folder.name, folder, fmt, tuple(items))


def _openalpr(label_file: Path) -> list[LabelledImage]:
    by_image: dict[Path, list[Label]] = {}
    for number, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 6:
            raise DatasetError(f"{label_file}:{number}: expected file, x, y, w, h, plate "
                               f"separated by tabs, got {line!r}")
        try:
            x, y, w, h = (float(v) for v in fields[1:5])
        except ValueError:
            raise DatasetError(f"{label_file}:{number}: the box is not four numbers: "
                               f"{fields[1:5]}") from None
        image = label_file.parent / fields[0].strip()
        if not image.is_file():
            image = _image_beside(label_file)
        by_image.setdefault(image, []).append(Label((x, y, x + w, y + h),
                                                    clean_text(fields[5])))
    return [LabelledImage(path, tuple(labels)) for path, labels in by_image.items()]


def _voc(label_file: Path) -> LabelledImage:
    try:
        root = ET.parse(label_file).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"{label_file}: not readable Pascal VOC XML ({exc})") from None
    labels = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            x1, y1, x2, y2 = (float(box.findtext(k) or "") for k in
                              ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DatasetError(f"{label_file}: a bndbox lacks a number") from None
        labels.append(Label((x1, y1, x2, y2), None))
    return LabelledImage(_image_beside(label_file), tuple(labels))


def _image_beside(label_file: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (label_file.with_suffix(suffix), label_file.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    raise DatasetError(f"{label_file}: no image with the same name beside it")


def videos(path: Path) -> list[Path]:
    """The video files a path names: itself, or those in the folder, in name order."""
    if path.is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not found:
        raise DatasetError(f"{path} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    return found
