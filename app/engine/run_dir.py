"""Run folders: everything one training/inference run writes, in one place that can be listed and reopened.

Layout of a run folder::

    run.json                      kind, job target, created, status (written by the jobs layer)
    config.json                   the job's config exactly as the job function receives it
    metrics.jsonl                 one JSON object per line (appended by the job)
    log.txt                       human-readable log (job log events, and the child's stdout/stderr)
    checkpoints/step-N.safetensors  weights + JSON metadata, written atomically
    checkpoints/last              JSON pointer to the newest checkpoint (+ metrics rows at that moment)
    result.json                   the final result
    NAME.npy                      large arrays (embeddings ...), memory-mappable by the GUI

Every file is replaced atomically (temp file + ``os.replace``) except the two append-only ones
(``metrics.jsonl``, ``log.txt``), whose readers skip a torn last line.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.data.atomic import atomic_path, write_text_atomic
from app.data.errors import DataError, os_error_words
from app.data.jsonsafe import dumps

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
RESULT_FILE = "result.json"
CKPT_DIR = "checkpoints"
LAST_POINTER = "last"

LOCK_FILE = ".lock"
PREVIOUS_PREFIX = "previous-"

STATUSES = ("created", "queued", "running", "done", "cancelled", "failed")
_CKPT_RE = re.compile(r"^step-(\d+)\.safetensors$")


def default_runs_root() -> Path:
    """Where runs live unless a folder is chosen: ``$OMICSLAB_RUNS_DIR``, else the platform's user data
    folder (e.g. ``~/.local/share/OmicsLab/runs``)."""
    env = os.environ.get("OMICSLAB_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("OmicsLab", appauthor=False)) / "runs"


def new_run_name(kind: str) -> str:
    """A sortable, unique-enough folder name: ``20261122-183012-finetune-1a2b``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", kind).strip("-") or "run"
    return f"{stamp}-{safe}-{os.urandom(2).hex()}"


def _dumps(obj: Any, indent: int | None = 2) -> str:
    return dumps(obj, indent=indent)


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``), so two runs never write into one folder.

    An OS file lock (``flock``; ``msvcrt`` on Windows): it goes away with the process that holds it, so a
    killed run leaves no stale lock. The file records who holds it, for the message a second run gets.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fh: Any = None

    def acquire(self) -> RunLock:
        """Take the lock; DataError naming the holder when another process (or handle) has it."""
        try:
            fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held while the run lives)
        except OSError as exc:
            raise DataError(f"cannot write in the run folder ({exc.strerror})", self.path.parent,
                            "Choose a folder you may write to, on a disk with free space.") from exc
        try:
            _lock_file(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise DataError(f"another run is using this folder ({holder or 'a running job'})", self.path.parent,
                            "Wait for it to finish (or cancel it), or choose another --out folder.") from None
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}, since {_dt.datetime.now():%Y-%m-%d %H:%M:%S}")
            fh.flush()
        self._fh = fh
        return self

    @property
    def held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError, ValueError):
                fh.close()  # closing the file releases the OS lock


def _lock_file(fh: Any) -> None:
    """Non-blocking exclusive OS lock on an open file; OSError when someone else holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def is_own_folder(path: str | Path) -> bool:
    """True when ``path`` was made by OmicsLab: its ``run.json`` is a JSON object naming a kind or job."""
    try:
        info = json.loads((Path(path) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and bool(info.get("kind") or info.get("target"))


def _nothing_to_lose(p: Path) -> bool:
    """Entries a run may sit beside: its lock, earlier runs moved aside, empty folders."""
    if p.name == LOCK_FILE:
        return True
    return p.is_dir() and (p.name.startswith(PREVIOUS_PREFIX) or not any(p.iterdir()))


def check_not_foreign(path: str | Path) -> None:
    """Refuse a non-empty folder that is not a run folder: a run never writes over the user's own files."""
    path = Path(path)
    if not path.is_dir() or is_own_folder(path):
        return
    try:
        entries = sorted(p.name for p in path.iterdir() if not _nothing_to_lose(p))
    except OSError as exc:
        raise DataError(f"cannot read the folder ({exc.strerror})", path, "Choose a folder you may read and write.") \
            from exc
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise DataError(f"this folder already holds {len(entries)} file(s) that are not an OmicsLab run "
                        f"({shown}); a run never writes over them", path,
                        "Choose a new or empty folder for the run (e.g. --out a new folder name).")


def move_previous_run(path: str | Path) -> Path | None:
    """Move everything a previous run left in ``path`` (model, metrics, config, split, predictions, log,
    checkpoints ...) into ``path/previous-STAMP/``, so a new run starts clean and nothing is deleted.
    Earlier ``previous-*`` folders stay where they are. Returns the new folder (None when nothing moved)."""
    path = Path(path)
    items = [p for p in path.iterdir() if p.name != LOCK_FILE and not p.name.startswith(PREVIOUS_PREFIX)]
    if not items:
        return None
    dest = path / f"{PREVIOUS_PREFIX}{_dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    try:
        dest.mkdir()
        for p in items:
            os.replace(p, dest / p.name)  # same folder, same disk: a rename, never a copy
    except OSError as exc:
        raise DataError(f"cannot move the previous run aside ({exc.strerror})", path,
                        "Free the folder (close programs using its files), or choose another --out folder.") from exc
    return dest


class RunDir:
    """One run folder. Create with ``RunDir.create``, reopen with ``RunDir.open``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock: RunLock | None = None  # held by the process that prepared the run, until its job ends

    # -- creating and opening ----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path | None, kind: str, config: dict[str, Any] | None = None, *,
               target: str | None = None, status: str = "created") -> RunDir:
        """Make (or adopt) a run folder at ``path`` (None: a new folder under ``default_runs_root()``).

        An existing folder that already holds a run keeps its metrics, checkpoints and log; only
        ``config.json`` and ``run.json`` are rewritten. A non-empty folder that is not a run folder is
        refused (``check_not_foreign``); an OS error (full disk, no permission) is a DataError.
        """
        if path is None:
            path = default_runs_root() / new_run_name(kind)
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DataError("a run folder was asked for but this is a file", path,
                            "Choose a folder (it is created if missing).")
        check_not_foreign(path)
        try:
            (path / CKPT_DIR).mkdir(parents=True, exist_ok=True)
            rd = cls(path)
            meta = rd.read_run_info() if (path / RUN_FILE).is_file() else {}
            meta.update({"kind": kind, "status": status, "updated": time.time()})
            meta.setdefault("created", time.time())
            if target is not None:
                meta["target"] = target
            rd._write_run_info(meta)
            rd.write_config(dict(config or {}))
            if not (path / LOG_FILE).exists():
                (path / LOG_FILE).touch()
        except OSError as exc:
            problem, hint = os_error_words(exc)
            raise DataError(f"cannot create the run folder: {problem}", path, hint) from exc
        return rd

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Reopen an existing run folder; DataError when ``path`` is not one."""
        path = Path(path)
        if not path.is_dir():
            raise DataError("run folder not found", path, "Give the path of a folder made by a run.")
        if not (path / RUN_FILE).is_file() and not (path / CONFIG_FILE).is_file():
            raise DataError("this folder is not a run folder (no run.json or config.json)", path,
                            "Give the path of a folder made by a run, e.g. from `python -m app runs list`.")
        return cls(path)

    @staticmethod
    def is_run_dir(path: str | Path) -> bool:
        """True when ``path`` looks like a run folder."""
        path = Path(path)
        return path.is_dir() and ((path / RUN_FILE).is_file() or (path / CONFIG_FILE).is_file())

    # -- run info and status -----------------------------------------------------------------------
    def read_run_info(self) -> dict[str, Any]:
        """``run.json`` as a dict ({} when absent or unreadable)."""
        try:
            return json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_run_info(self, info: dict[str, Any]) -> None:
        write_text_atomic(self.path / RUN_FILE, _dumps(info))

    def update_run_info(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json``."""
        info = self.read_run_info()
        info.update(fields)
        info["updated"] = time.time()
        self._write_run_info(info)
        return info

    @property
    def kind(self) -> str:
        return str(self.read_run_info().get("kind", ""))

    @property
    def target(self) -> str | None:
        """The job function ("module:function") this run was started with, when known."""
        t = self.read_run_info().get("target")
        return str(t) if t else None

    @property
    def status(self) -> str:
        """created | queued | running | done | cancelled | failed (``created`` when unknown)."""
        return str(self.read_run_info().get("status", "created"))

    @status.setter
    def status(self, value: str) -> None:
        if value not in STATUSES:
            raise ValueError(f"unknown run status {value!r}; one of {STATUSES}")
        self.update_run_info(status=value)

    def set_status(self, value: str, **fields: Any) -> None:
        """Set the status and extra fields (e.g. ``message``, ``exitcode``) in one write."""
        if value not in STATUSES:
            raise ValueError(f"unknown run status {value!r}; one of {STATUSES}")
        self.update_run_info(status=value, **fields)

    # -- config ------------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        write_text_atomic(self.path / CONFIG_FILE, _dumps(config))

    def read_config(self) -> dict[str, Any]:
        """``config.json`` ({} when absent)."""
        p = self.path / CONFIG_FILE
        if not p.is_file():
            return {}
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"config.json is not valid JSON ({exc})", p, "Fix or delete the file.") from exc

    # -- metrics -----------------------------------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl`` (one line, flushed at once)."""
        line = _dumps(row, indent=None) + "\n"
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete rows of ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
        p = self.path / METRICS_FILE
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def truncate_metrics(self, n_rows: int) -> None:
        """Keep only the first ``n_rows`` complete rows (atomic rewrite)."""
        rows = self.read_metrics()[: max(0, int(n_rows))]
        write_text_atomic(self.path / METRICS_FILE, "".join(_dumps(r, indent=None) + "\n" for r in rows))

    def rewind_to_checkpoint(self) -> int | None:
        """Before a resume: drop metrics rows written after the last checkpoint, so that the history of
        a resumed run equals that of an uninterrupted one. Returns the checkpoint's step (None when there
        is no checkpoint; then metrics are cleared as the run restarts from scratch)."""
        info = self.last_checkpoint_info()
        if info is None:
            self.truncate_metrics(0)
            return None
        if info.get("metrics_rows") is not None:
            self.truncate_metrics(int(info["metrics_rows"]))
        return int(info["step"])

    # -- log ---------------------------------------------------------------------------------------
    def log(self, line: str) -> None:
        """Append a time-stamped line to ``log.txt``."""
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        with open(self.path / LOG_FILE, "a", encoding="utf-8") as fh:
            for part in str(line).splitlines() or [""]:
                fh.write(f"[{stamp}] {part}\n")

    def tail_log(self, n: int = 20) -> list[str]:
        """The last ``n`` lines of ``log.txt`` (reads at most the last 64 KiB)."""
        p = self.path / LOG_FILE
        if not p.is_file():
            return []
        with open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            data = fh.read()
        return data.decode("utf-8", errors="replace").splitlines()[-n:]

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CKPT_DIR

    def save_checkpoint(self, tensors: dict[str, Any], meta: dict[str, Any] | None, step: int) -> Path:
        """Write ``checkpoints/step-N.safetensors`` atomically, then point ``checkpoints/last`` at it.

        The pointer also records how many metrics rows existed, so a resume can rewind the history.
        """
        from app.engine.checkpoint import save_tensors

        step = int(step)
        path = self.checkpoint_dir / f"step-{step}.safetensors"
        save_tensors(path, tensors, {**(meta or {}), "step": step})
        pointer = {"file": path.name, "step": step, "metrics_rows": len(self.read_metrics()), "t": time.time()}
        write_text_atomic(self.checkpoint_dir / LAST_POINTER, _dumps(pointer))
        return path

    def checkpoints(self) -> list[Path]:
        """All checkpoint files, oldest step first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def _inside(self, f: Path) -> bool:
        """A regular file that really lies in this run's checkpoint folder (no link leading elsewhere)."""
        try:
            return f.is_file() and f.resolve().parent == self.checkpoint_dir.resolve()
        except OSError:
            return False

    def last_checkpoint_info(self) -> dict[str, Any] | None:
        """The ``last`` pointer ({file, step, metrics_rows}) or, without one, the highest step file."""
        ptr = self.checkpoint_dir / LAST_POINTER
        if ptr.is_file():
            try:
                info = json.loads(ptr.read_text(encoding="utf-8"))
                # only a checkpoint file of THIS folder: a pointer naming another path is ignored
                if _CKPT_RE.match(str(info["file"])) and self._inside(self.checkpoint_dir / info["file"]):
                    return info
            except (OSError, ValueError, KeyError, TypeError):
                pass
        files = [f for f in self.checkpoints() if self._inside(f)]
        if not files:
            return None
        m = _CKPT_RE.match(files[-1].name)
        return {"file": files[-1].name, "step": int(m.group(1)) if m else 0, "metrics_rows": None}

    def last_checkpoint(self) -> Path | None:
        """Path of the newest checkpoint, or None."""
        info = self.last_checkpoint_info()
        return self.checkpoint_dir / info["file"] if info else None

    # -- arrays and results ------------------------------------------------------------------------
    def save_array(self, name: str, arr: np.ndarray) -> Path:
        """Save ``arr`` as ``NAME.npy`` atomically (big arrays travel as files, not events)."""
        name = name[:-4] if name.endswith(".npy") else name
        path = self.path / f"{name}.npy"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(arr))
        return path

    def load_array(self, name: str, mmap: bool = True) -> np.ndarray:
        """Load ``NAME.npy`` (memory-mapped by default)."""
        name = name[:-4] if name.endswith(".npy") else name
        return np.load(self.path / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)

    def write_result(self, result: dict[str, Any]) -> None:
        """Write ``result.json`` atomically."""
        write_text_atomic(self.path / RESULT_FILE, _dumps(result))

    def read_result(self) -> dict[str, Any] | None:
        """``result.json``, or None when the run has none (yet)."""
        p = self.path / RESULT_FILE
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            return None

    # -- summary -----------------------------------------------------------------------------------
    def process_alive(self) -> bool | None:
        """Whether the process recorded in ``run.json`` still exists (None when no pid is recorded)."""
        pid = self.read_run_info().get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OSError):
            return True
        return True

    def summary(self) -> dict[str, Any]:
        """A small dict describing the run (for `runs list` and the GUI's run browser). A run marked
        running whose process is gone (power cut, killed machine) shows as ``interrupted``."""
        info = self.read_run_info()
        ck = self.last_checkpoint_info()
        status = info.get("status", "created")
        if status in ("running", "starting") and self.process_alive() is False:
            status = "interrupted"
        return {
            "name": self.path.name, "path": str(self.path), "kind": info.get("kind", ""),
            "target": info.get("target"), "status": status,
            "created": info.get("created"), "updated": info.get("updated"),
            "metrics_rows": len(self.read_metrics()), "last_checkpoint_step": ck["step"] if ck else None,
            "message": info.get("message"),
        }

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def list_runs(root: str | Path | None = None) -> list[RunDir]:
    """Run folders directly under ``root`` (default ``default_runs_root()``), newest first."""
    root = Path(root) if root is not None else default_runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if RunDir.is_run_dir(p)]

    def created(rd: RunDir) -> float:
        c = rd.read_run_info().get("created")
        return float(c) if isinstance(c, int | float) else rd.path.stat().st_mtime

    return sorted(runs, key=created, reverse=True)


def iter_runs(root: str | Path | None = None) -> Iterator[RunDir]:
    """Iterate ``list_runs(root)``."""
    yield from list_runs(root)


def find_run(name_or_path: str | Path, root: str | Path | None = None) -> RunDir:
    """A run given as a path, or as a folder name under ``root``; DataError when neither exists."""
    p = Path(name_or_path).expanduser()
    if RunDir.is_run_dir(p):
        return RunDir(p)
    base = Path(root) if root is not None else default_runs_root()
    if RunDir.is_run_dir(base / str(name_or_path)):
        return RunDir(base / str(name_or_path))
    raise DataError("no such run", p, f"Give a run folder path or a run name listed by `python -m app runs list` "
                                      f"(runs folder: {base}).")


__all__ = ["RunDir", "RunLock", "check_not_foreign", "default_runs_root", "find_run", "is_own_folder", "list_runs",
           "move_previous_run", "new_run_name"]
