"""Saving and loading models, weights and checkpoints (``.npz`` or ``.safetensors``).

A file holds the architecture (layer class names and ``get_config()``), every weight, the
optimizer (class, hyper-parameters, iteration count and slot arrays), the loss and
metrics, and the random generator states of the model and its backend, so that training
resumes bit-identically. The description is JSON text stored inside the file; arrays are
plain numeric tensors. Nothing is ever pickled: loading an untrusted file cannot run code
(``np.load(..., allow_pickle=False)``; safetensors has no code path at all). Every array
carries a CRC-32 that is checked on load, so a corrupted file is an error, never a model
with silently different weights.

Saves are atomic: the bytes go to a temporary file in the destination directory, which is
flushed and fsynced, then renamed over the destination (``os.replace``) and the directory
is fsynced. A crash or kill at any moment leaves either the previous file or the new one.

Layer classes are found by name: every imported subclass of :class:`fastnn.layers.Layer`
is known automatically; :func:`register_layer` adds explicit names, and
``load_model(..., custom_objects={"MyLayer": MyLayer})`` resolves one-off classes.
"""

from __future__ import annotations

import contextlib
import importlib
import io as _stdio
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from fastnn.layers.base import Layer

#: Version of the file layout written by this module.
FORMAT_VERSION = 1
#: Marker of fastnn files, stored in their description.
FORMAT_NAME = "fastnn"
#: npz member / safetensors metadata key holding the JSON description.
CONFIG_KEY = "__fastnn_config__"
#: safetensors metadata key of the description's CRC-32 (npz members have zip CRCs).
CONFIG_CRC_KEY = "__fastnn_config_crc32__"
#: File suffixes and the format each selects.
SUFFIXES = {".npz": "npz", ".safetensors": "safetensors"}
#: Dtypes an array in a fastnn file may have.
ALLOWED_DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")
#: Random bit generators whose state may be restored from a file.
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_ZIP_MAGIC = b"PK\x03\x04"
_TMP_RE = re.compile(r"^\.(?P<base>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")

_LAYER_REGISTRY: dict[str, type[Layer]] = {}


class CheckpointError(ValueError):
    """A file is not a fastnn checkpoint, is corrupted, or does not fit the model."""


# -- layer registry ------------------------------------------------------------------------
def register_layer(cls: type[Layer] | None = None, *, name: str | None = None) -> Any:
    """Register a Layer subclass under ``name`` (default: its class name) for loading.

    Usable as ``@register_layer`` or ``@register_layer(name="MyDense")``. Subclasses of
    :class:`~fastnn.layers.Layer` are found by class name without registering; register to
    add an alias or to settle two classes sharing a name.
    """

    def deco(klass: type[Layer]) -> type[Layer]:
        if not (isinstance(klass, type) and issubclass(klass, Layer)):
            raise TypeError(f"register_layer: expected a Layer subclass, received {klass!r}")
        _LAYER_REGISTRY[name or klass.__name__] = klass
        return klass

    return deco if cls is None else deco(cls)


def _subclasses(base: type) -> list[type]:
    out, todo = [], [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.append(sub)
            todo.append(sub)
    return out


def get_layer_class(name: str, custom_objects: Mapping[str, Any] | None = None) -> type[Layer]:
    """The Layer class saved as ``name``; ValueError listing the known names otherwise."""
    importlib.import_module("fastnn.layers")
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in _LAYER_REGISTRY:
        return _LAYER_REGISTRY[name]
    found = {c for c in _subclasses(Layer) if c.__name__ == name}
    if len(found) > 1:  # prefer fastnn's own class over same-named user classes
        own = {c for c in found if c.__module__.startswith("fastnn.")}
        found = own if len(own) == 1 else found
    if len(found) == 1:
        return found.pop()
    known = sorted({*_LAYER_REGISTRY, *(c.__name__ for c in _subclasses(Layer))})
    if found:
        raise CheckpointError(
            f"layer class {name!r} is ambiguous ({len(found)} classes share the name); "
            "register one with fastnn.io.register_layer or pass custom_objects"
        )
    raise CheckpointError(
        f"unknown layer class {name!r}; known: {', '.join(known)}. Import the module that "
        "defines it, or pass custom_objects={name: cls}"
    )


def _find_class(base: type, name: str, what: str, custom: Mapping[str, Any] | None) -> type:
    if custom and name in custom:
        return custom[name]
    found = [c for c in [base, *_subclasses(base)] if c.__name__ == name]
    if not found:
        raise CheckpointError(f"unknown {what} class {name!r} in the file")
    own = [c for c in found if c.__module__.startswith("fastnn.")]
    return (own or found)[0]


# -- JSON description ----------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return value.name
    if hasattr(value, "get_config") and callable(value.get_config):
        return {"class_name": type(value).__name__, "config": value.get_config()}
    raise TypeError(f"cannot store a {type(value).__name__} in a fastnn file")


def _dumps(obj: Any, where: str) -> str:
    try:
        return json.dumps(obj, default=_json_default, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: the configuration is not JSON-serialisable: {exc}") from None


def _layer_entry(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _fix_initializers(config: dict) -> dict:
    """Initializer class names (``"GlorotUniform"``) back to Keras names when needed."""
    from fastnn import initializers

    valid = set(initializers._REGISTRY) | set(initializers._ALIASES)
    out = dict(config)
    for key, value in config.items():
        if not key.endswith("_initializer"):
            continue
        if isinstance(value, dict) and "class_name" in value:
            value = value["class_name"]
        if isinstance(value, str) and value.lower() not in valid:
            snake = _snake(value)
            if snake in valid:
                out[key] = snake
            else:  # weights are loaded over it anyway: fall back to the default
                out.pop(key)
        elif isinstance(value, str):
            out[key] = value
    return out


def build_layer(entry: Any, backend: Any = None, custom_objects: Mapping | None = None) -> Layer:
    """A new, unbuilt layer from ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or (
        not isinstance(entry.get("config"), dict)
    ):
        raise CheckpointError(f"malformed layer entry in the file: {str(entry)[:200]}")
    cls = get_layer_class(entry["class_name"], custom_objects)
    config = _fix_initializers(entry["config"])
    config.pop("backend", None)
    try:
        return cls(**config, backend=backend)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot rebuild layer {entry['class_name']} from its saved config {config}: {exc}"
        ) from exc


# -- arrays and checksums -------------------------------------------------------------------
def _crc(arr: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8).reshape(-1)) & 0xFFFFFFFF


def _describe_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, dict]:
    return {
        key: {"shape": list(a.shape), "dtype": a.dtype.name, "crc32": _crc(a)}
        for key, a in arrays.items()
    }


def _gather(model: Any, include_optimizer: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, arrays) of ``model``."""
    be = model.backend
    arrays: dict[str, np.ndarray] = {}
    weights = []
    for i, layer in enumerate(model._all_layers()):
        for key, value in layer.params.items():
            name = f"weights/{i:03d}/{key}"
            arrays[name] = np.ascontiguousarray(be.to_numpy(value))
            weights.append({"array": name, "layer": layer.name, "index": i, "key": key})
        for key, value in getattr(layer, "states", {}).items():
            name = f"state/{i:03d}/{key}"
            arrays[name] = np.ascontiguousarray(be.to_numpy(value))
            weights.append({"array": name, "layer": layer.name, "index": i, "key": key,
                            "state": True})
    desc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": {
            "class_name": type(model).__name__,
            "name": model.name,
            "dtype": model.dtype.name,
            "backend": be.name,
            "seed": model.seed,
            "input_shape": list(model.input_shape) if model.input_shape else None,
            "layers": [_layer_entry(layer) for layer in model.layers],
        },
        "layer_classes": [type(layer).__name__ for layer in model._all_layers()],
        "weights": weights,
    }
    if include_optimizer:
        desc["rng"] = {
            "model": model.rng.bit_generator.state if model.rng is not None else None,
            "backend": be.rng.bit_generator.state,
        }
        if model.compiled:
            desc["training"] = _training_description(model, arrays)
    desc["arrays"] = _describe_arrays(arrays)
    return desc, arrays


def _training_description(model: Any, arrays: dict[str, np.ndarray]) -> dict:
    opt, loss = model.optimizer, model.loss
    lr = opt.learning_rate
    opt_config = opt.get_config()
    if callable(lr):
        opt_config["learning_rate"] = None
        schedule = {"class_name": type(lr).__name__,
                    "config": lr.get_config() if hasattr(lr, "get_config") else None}
    else:
        schedule = None
    slots = []
    names = [name for name, _, _ in model.named_parameters()]
    be = model.backend
    for j, name in enumerate(names):
        for slot, value in (opt.slots.get(name) or {}).items():
            key = f"optimizer/{j:03d}/{slot}"
            arrays[key] = np.ascontiguousarray(be.to_numpy(value))
            slots.append({"array": key, "param": name, "param_index": j, "slot": slot})
    return {
        "optimizer": {
            "class_name": type(opt).__name__,
            "config": opt_config,
            "schedule": schedule,
            "iterations": int(opt.iterations),
            "slots": slots,
        },
        "loss": {"class_name": type(loss).__name__, "config": loss.get_config()},
        "metrics": list(model._metric_specs),
        "history": _history_description(model),
        "epoch": int(getattr(model, "epochs_completed", 0)),
    }


def _history_description(model: Any) -> dict | None:
    hist = getattr(model, "history", None)
    epochs = [int(e) for e in getattr(hist, "epoch", None) or []]
    values = {k: [float(v) for v in vals] for k, vals in getattr(hist, "history", {}).items()}
    earlier = getattr(model, "_restored_history", None)
    if earlier is not None and earlier is not hist and earlier.epoch and (
        not epochs or earlier.epoch[-1] < epochs[0]
    ):  # a resumed run: keep the epochs trained before the checkpoint it started from
        n_new = len(epochs)
        epochs = [*earlier.epoch, *epochs]
        for key in {*earlier.history, *values}:
            before = earlier.history.get(key, [float("nan")] * len(earlier.epoch))
            values[key] = [*before, *values.get(key, [float("nan")] * n_new)]
    pending = getattr(model, "_pending_epoch", None)
    if pending is not None and (not epochs or epochs[-1] != pending[0]):
        # Saved from on_epoch_end (ModelCheckpoint) before History recorded this epoch.
        epoch, logs = pending
        n_before = len(epochs)
        epochs.append(int(epoch))
        for key in {*values, *logs}:
            values[key] = [*values.get(key, [float("nan")] * n_before),
                           float(logs.get(key, float("nan")))]
    if not epochs:
        return None
    return {"epoch": epochs, "history": values}


def saved_epoch(path: str | os.PathLike) -> int:
    """Number of epochs completed when the checkpoint at ``path`` was saved (0 if unknown).

    Pass it as ``fit(..., initial_epoch=saved_epoch(path))`` to resume.
    """
    desc, _ = read_file(path)
    epoch = (desc.get("training") or {}).get("epoch", 0)
    return int(epoch) if isinstance(epoch, int) and epoch >= 0 else 0


# -- atomic writes ----------------------------------------------------------------------------
def _fsync_dir(directory: str) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(directory: str, base: str) -> None:
    """Delete temporary files of earlier saves of ``base`` whose process has died."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            m = _TMP_RE.match(entry)
            if m and m.group("base") == base and not _pid_alive(int(m.group("pid"))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically: ``write(f)`` fills a temp file that replaces ``path``.

    The temporary file lives in the same directory (so the rename is atomic), is flushed
    and fsynced before ``os.replace``, and the directory is fsynced after it. If anything
    fails, or the process dies, ``path`` keeps its previous content.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save {path!r}: directory {directory!r} does not exist")
    _remove_stale_temps(directory, base)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.{os.getpid()}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


# -- file formats ------------------------------------------------------------------------------
def _format_for(path: str, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("npz", "safetensors"):
            raise ValueError(f"format must be 'npz' or 'safetensors'. Received: format={fmt!r}")
        return fmt
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot tell the file format of {path!r}: use a .npz or .safetensors suffix, "
            "or pass format='npz' / format='safetensors'"
        )
    return SUFFIXES[suffix]


def _require_safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as exc:
        raise ImportError(
            "the .safetensors format needs the safetensors package: "
            "pip install 'fastnn-dl[safetensors]' (or pip install safetensors), "
            "or save to a .npz file"
        ) from exc
    return st


def write_file(path: str | os.PathLike, desc: dict, arrays: Mapping[str, np.ndarray],
               fmt: str | None = None) -> None:
    """Atomically write ``arrays`` and the JSON description ``desc`` to ``path``."""
    path = os.fspath(path)
    fmt = _format_for(path, fmt)
    text = _dumps(desc, f"save({path!r})")
    if fmt == "safetensors":
        st = _require_safetensors()
        crc = str(zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF)
        data = st.save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                       metadata={CONFIG_KEY: text, CONFIG_CRC_KEY: crc})
        atomic_write(path, lambda f: f.write(data))
        return
    members = dict(arrays)
    members[CONFIG_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **members))


def read_file(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, arrays) of a fastnn file, checksums verified.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError (a ValueError): not a fastnn file, truncated or corrupted.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == _ZIP_MAGIC:
        desc, arrays = _read_npz(path, data)
    else:
        desc, arrays = _read_safetensors(path, data)
    _verify(path, desc, arrays)
    return desc, arrays


def _read_npz(path: str, data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(_stdio.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError,
            NotImplementedError, zlib.error) as exc:
        raise CheckpointError(f"{path!r} is not a readable .npz file (corrupted or "
                              f"truncated?): {exc}") from exc
    raw = arrays.pop(CONFIG_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path!r} is an .npz file but not a fastnn checkpoint "
                              f"(no {CONFIG_KEY} entry)")
    return _parse_desc(path, raw.tobytes()), arrays


def _read_safetensors(path: str, data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    if len(data) < 8:
        raise CheckpointError(f"{path!r} is not a fastnn checkpoint: only {len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise CheckpointError(f"{path!r} is neither an .npz nor a .safetensors file "
                              "(or it is truncated)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path!r}: unreadable safetensors header: {exc}") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or CONFIG_KEY not in meta:
        raise CheckpointError(f"{path!r} is a safetensors file but not a fastnn checkpoint")
    raw = str(meta[CONFIG_KEY]).encode("utf-8")
    if str(meta.get(CONFIG_CRC_KEY)) != str(zlib.crc32(raw) & 0xFFFFFFFF):
        raise CheckpointError(f"{path!r}: the stored description fails its CRC-32 check: the "
                              "file is corrupted")
    st = _require_safetensors()
    try:
        arrays = dict(st.load(data))
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        raise CheckpointError(f"{path!r}: corrupted safetensors data: {exc}") from exc
    return _parse_desc(path, str(meta[CONFIG_KEY]).encode("utf-8")), arrays


def _parse_desc(path: str, raw: bytes) -> dict:
    try:
        desc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path!r}: the stored description is not valid JSON: {exc}") \
            from exc
    if not isinstance(desc, dict) or desc.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path!r} is not a fastnn checkpoint")
    version = desc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has format version {version!r}; this fastnn reads "
                              f"up to {FORMAT_VERSION}; upgrade fastnn")
    for key, kind in (("arrays", dict), ("weights", list), ("model", dict)):
        if not isinstance(desc.get(key), kind):
            raise CheckpointError(f"{path!r}: malformed description (missing {key!r})")
    return desc


def _verify(path: str, desc: dict, arrays: dict[str, np.ndarray]) -> None:
    listed = desc["arrays"]
    extra = sorted(set(arrays) - set(listed))
    if extra:
        raise CheckpointError(f"{path!r}: array {extra[0]!r} is not listed in the description")
    for key, info in listed.items():
        if key not in arrays:
            raise CheckpointError(f"{path!r}: array {key!r} is missing from the file")
        a = arrays[key]
        if not isinstance(info, dict):
            raise CheckpointError(f"{path!r}: malformed entry for array {key!r}")
        if a.dtype.name not in ALLOWED_DTYPES:
            raise CheckpointError(f"{path!r}: array {key!r} has unsupported dtype {a.dtype}")
        if list(a.shape) != info.get("shape") or a.dtype.name != info.get("dtype"):
            raise CheckpointError(
                f"{path!r}: array {key!r} is {a.dtype.name}{list(a.shape)} but the description "
                f"says {info.get('dtype')}{info.get('shape')}"
            )
        if _crc(a) != info.get("crc32"):
            raise CheckpointError(f"{path!r}: array {key!r} fails its CRC-32 check: the file "
                                  "is corrupted")


# -- weights into a model --------------------------------------------------------------------
def _assign_weights(model: Any, desc: dict, arrays: dict[str, np.ndarray], path: str) -> None:
    """Copy the file's weights into ``model`` after checking every shape and dtype."""
    layers = model._all_layers()
    classes = desc.get("layer_classes")
    entries = desc["weights"]
    plan = []
    expected = []
    for i, layer in enumerate(layers):
        for key, value in layer.params.items():
            expected.append((i, layer, key, value, False))
        for key, value in getattr(layer, "states", {}).items():
            expected.append((i, layer, key, value, True))
    if isinstance(classes, list) and len(classes) != len(layers):
        raise CheckpointError(f"{path!r}: the file holds {len(classes)} layers, the model has "
                              f"{len(layers)}")
    by_slot = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("array"), str):
            raise CheckpointError(f"{path!r}: malformed weight entry {str(e)[:100]}")
        by_slot[(e.get("index"), e.get("key"), bool(e.get("state")))] = e["array"]
    for i, layer, key, value, is_state in expected:
        where = f"layer {i} {layer.describe()} ({layer.name}) {'state' if is_state else 'weight'}"
        if isinstance(classes, list) and classes[i] != type(layer).__name__:
            raise CheckpointError(f"{path!r}: layer {i} is a {classes[i]} in the file, the "
                                  f"model has {layer.describe()} ({layer.name})")
        name = by_slot.pop((i, key, is_state), None)
        if name is None:
            raise CheckpointError(f"{path!r}: {where} {key!r} is missing from the file")
        src = arrays[name]
        if tuple(src.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path!r}: {where} {key!r} has shape {tuple(src.shape)} in the file, the model "
                f"expects {tuple(value.shape)}"
            )
        if src.dtype != np.dtype(value.dtype):
            raise CheckpointError(
                f"{path!r}: {where} {key!r} has dtype {src.dtype.name} in the file, the model "
                f"expects {np.dtype(value.dtype).name}"
            )
        plan.append((layer, key, value, src, is_state))
    if by_slot:
        (i, key, _), name = next(iter(by_slot.items()))
        raise CheckpointError(f"{path!r}: the file has weight {name!r} (layer {i}, {key!r}) "
                              "that the model does not")
    be = model.backend
    for _layer, _key, value, src, _is_state in plan:
        value[...] = be.asarray(src, dtype=value.dtype)


def _restore_generator(state: Any, where: str) -> np.random.Generator:
    if not isinstance(state, dict) or state.get("bit_generator") not in BIT_GENERATORS:
        raise CheckpointError(f"{where}: malformed random generator state")
    gen = np.random.Generator(getattr(np.random, state["bit_generator"])())
    try:
        gen.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: malformed random generator state: {exc}") from exc
    return gen


def _restore_training(model: Any, desc: dict, arrays: dict[str, np.ndarray], path: str,
                      custom_objects: Mapping | None) -> None:
    from fastnn.losses.base import Loss
    from fastnn.optimizers.base import Optimizer

    training = desc["training"]
    odesc = training["optimizer"]
    config = dict(odesc["config"])
    if odesc.get("schedule") is not None:
        config["learning_rate"] = _rebuild_schedule(odesc["schedule"], path, custom_objects)
    opt_cls = _find_class(Optimizer, odesc["class_name"], "optimizer", custom_objects)
    ldesc = training["loss"]
    loss_cls = _find_class(Loss, ldesc["class_name"], "loss", custom_objects)
    try:
        opt = opt_cls(**config, backend=model.backend)
        loss = loss_cls(**ldesc["config"], backend=model.backend)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path!r}: cannot rebuild the optimizer or loss: {exc}") from exc
    model.compile(optimizer=opt, loss=loss, metrics=training.get("metrics") or None)
    _restore_slots(model, opt, odesc, arrays, path)
    _restore_history(model, training)


def _restore_slots(model: Any, opt: Any, odesc: dict, arrays: dict[str, np.ndarray],
                   path: str) -> None:
    """Iteration count and slot arrays of the saved optimizer into ``opt``."""
    opt.iterations = int(odesc["iterations"])
    opt.slots.clear()
    params = model.named_parameters()
    for entry in odesc["slots"]:
        j = entry["param_index"]
        if not 0 <= j < len(params):
            raise CheckpointError(f"{path!r}: optimizer state for parameter {j}, the model has "
                                  f"{len(params)}")
        name, value, _ = params[j]
        src = arrays[entry["array"]]
        if src.shape != tuple(value.shape) or src.dtype != np.dtype(value.dtype):
            raise CheckpointError(
                f"{path!r}: optimizer slot {entry['slot']!r} of {name!r} is "
                f"{src.dtype.name}{src.shape} in the file, the parameter is "
                f"{np.dtype(value.dtype).name}{tuple(value.shape)}"
            )
        opt.slots.setdefault(name, {})[entry["slot"]] = model.backend.asarray(src.copy())


def _restore_history(model: Any, training: dict) -> None:
    model.epochs_completed = int(training.get("epoch", 0))
    hist = training.get("history")
    if isinstance(hist, dict):
        from fastnn.callbacks import History

        restored = History()
        restored.epoch = [int(e) for e in hist.get("epoch", [])]
        restored.history = {str(k): [float(v) for v in vals]
                            for k, vals in dict(hist.get("history", {})).items()}
        model.history = restored
        model._restored_history = restored


def _rebuild_schedule(entry: dict, path: str, custom_objects: Mapping | None) -> Any:
    name = entry.get("class_name")
    if custom_objects and name in custom_objects:
        cls = custom_objects[name]
    else:
        try:
            schedules = importlib.import_module("fastnn.schedules")
        except ImportError:
            schedules = None
        cls = getattr(schedules, str(name), None) if schedules is not None else None
    if cls is None or entry.get("config") is None:
        raise CheckpointError(
            f"{path!r}: the learning-rate schedule {name!r} cannot be rebuilt; pass "
            "custom_objects={name: cls}, or load_model(path, compile=False)"
        )
    return cls(**entry["config"])


# -- public API ------------------------------------------------------------------------------
def save_model(model: Any, path: str | os.PathLike, include_optimizer: bool = True,
               format: str | None = None) -> None:
    """Save architecture, weights, optimizer state and RNG states of ``model`` atomically.

    Args:
        model: a built :class:`~fastnn.Sequential`.
        path: destination, ``*.npz`` or ``*.safetensors``.
        include_optimizer: also store the optimizer, loss, metrics and RNG states.
        format: ``"npz"`` or ``"safetensors"`` (default: from the suffix).
    """
    if not model.built:
        raise ValueError("save: the model is not built; call build(input_shape) or fit first")
    desc, arrays = _gather(model, include_optimizer)
    write_file(path, desc, arrays, format)


def save_weights(model: Any, path: str | os.PathLike, format: str | None = None) -> None:
    """Save only the weights (and layer states) of ``model``, atomically."""
    if not model.built:
        raise ValueError("save_weights: the model is not built; nothing to save")
    desc, arrays = _gather(model, include_optimizer=False)
    desc["weights_only"] = True
    write_file(path, desc, arrays, format)


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Load weights saved by :func:`save_weights` or :func:`save_model` into ``model``.

    The model must have the same layers; every shape and dtype is checked before anything
    is copied, and the first mismatch is named.
    """
    path = os.fspath(path)
    desc, arrays = read_file(path)
    if not model.built:
        shape = desc["model"].get("input_shape")
        if not shape:
            raise CheckpointError(f"{path!r}: the model is not built and the file has no "
                                  "input shape")
        model.build(tuple(shape))
    _assign_weights(model, desc, arrays, path)


def load_model(path: str | os.PathLike, backend: Any = None, compile: bool = True,
               custom_objects: Mapping[str, Any] | None = None) -> Any:
    """Rebuild a model saved with :func:`save_model`, ready to predict or resume training.

    Args:
        path: a ``.npz`` or ``.safetensors`` file written by fastnn.
        backend: backend to load onto (default: the saved one if it can run here,
            otherwise the current backend).
        compile: restore optimizer (with its state), loss and metrics when saved.
        custom_objects: name -> class for layers, losses, optimizers or schedules that
            fastnn does not know.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): not a fastnn file, corrupted, or inconsistent.
    """
    from fastnn.backends import get_backend, is_available
    from fastnn.model import Sequential

    path = os.fspath(path)
    desc, arrays = read_file(path)
    mdesc = desc["model"]
    if backend is None:
        saved = mdesc.get("backend")
        backend = saved if isinstance(saved, str) and saved in ("numpy", "numba", "cupy") and (
            is_available(saved)) else None
    be = get_backend(backend)
    layers_desc = mdesc.get("layers")
    if not isinstance(layers_desc, list) or not layers_desc:
        raise CheckpointError(f"{path!r}: the file describes no layers")
    try:
        model = Sequential(name=mdesc.get("name"), backend=be, dtype=mdesc.get("dtype"),
                           seed=mdesc.get("seed"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path!r}: malformed model description: {exc}") from exc
    for entry in layers_desc:
        model.add(build_layer(entry, be, custom_objects))
    shape = mdesc.get("input_shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise CheckpointError(f"{path!r}: malformed input shape {shape!r}")
    if not model.built:
        try:
            model.build(tuple(shape))
        except (TypeError, ValueError, MemoryError) as exc:
            raise CheckpointError(f"{path!r}: the saved layers do not build for input shape "
                                  f"{tuple(shape)}: {exc}") from exc
    _assign_weights(model, desc, arrays, path)
    if compile and isinstance(desc.get("training"), dict):
        try:
            _restore_training(model, desc, arrays, path, custom_objects)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{path!r}: malformed training state: {exc!r}") from exc
    _restore_rng(model, desc, path)
    return model


def _restore_rng(model: Any, desc: dict, path: str) -> None:
    rng = desc.get("rng")
    if isinstance(rng, dict):
        if rng.get("model") is not None:
            model.rng = _restore_into(model.rng, rng["model"], path)
        if rng.get("backend") is not None:
            be = model.backend
            be.rng = _restore_into(be.rng, rng["backend"], path)


def restore(model: Any, path: str | os.PathLike) -> int:
    """Put a checkpoint's training state into an existing, compiled ``model``; returns
    the number of epochs completed (pass it as ``fit(..., initial_epoch=...)``).

    Restores the weights (shapes and dtypes checked), the optimizer's iteration count and
    slots (the model's optimizer must be of the saved class; its hyper-parameters are
    kept), the history and the random generator states. Use this when the model is
    built by code (a script, the CLI); :func:`load_model` rebuilds it from the file.
    """
    path = os.fspath(path)
    desc, arrays = read_file(path)
    if not model.built:
        shape = desc["model"].get("input_shape")
        if not isinstance(shape, list):
            raise CheckpointError(f"{path!r}: the model is not built and the file has no "
                                  "input shape")
        model.build(tuple(shape))
    _assign_weights(model, desc, arrays, path)
    training = desc.get("training")
    if isinstance(training, dict) and model.compiled:
        saved = training["optimizer"]["class_name"]
        if saved != type(model.optimizer).__name__:
            raise CheckpointError(f"{path!r}: the checkpoint's optimizer is {saved}, the model "
                                  f"uses {type(model.optimizer).__name__}")
        try:
            _restore_slots(model, model.optimizer, training["optimizer"], arrays, path)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{path!r}: malformed training state: {exc!r}") from exc
        _restore_history(model, training)
    _restore_rng(model, desc, path)
    return int(getattr(model, "epochs_completed", 0))


def _restore_into(current: Any, state: Any, where: str) -> np.random.Generator:
    """Set ``state`` into ``current`` in place when it fits (so references stay valid)."""
    fresh = _restore_generator(state, where)
    if isinstance(current, np.random.Generator) and (
        type(current.bit_generator) is type(fresh.bit_generator)
    ):
        current.bit_generator.state = fresh.bit_generator.state
        return current
    return fresh


__all__ = [
    "CheckpointError",
    "atomic_write",
    "build_layer",
    "get_layer_class",
    "load_model",
    "load_weights",
    "read_file",
    "register_layer",
    "restore",
    "save_model",
    "saved_epoch",
    "save_weights",
    "write_file",
]
