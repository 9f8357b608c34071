"""Benchmarks, always side by side with the published system's way in the same run (the machine is shared
and noisy, so only ratios measured together mean anything).

``io``: load + preprocess a 240 x 240 x 155 float32 NIfTI (BraTS size) to the model grid (64, 128, 128).
  - reference: nibabel ``as_closest_canonical``, ``get_fdata(dtype=float32)``, 1st/99th percentiles over
    the whole volume (background included), ``torch.nn.functional.interpolate`` trilinear (stretching each
    axis independently);
  - ours: :func:`load_volume` (with SHA-256 of the file) + :meth:`Volume.to_model_grid` (exact
    reorientation, foreground mask, aspect-preserving fit, percentiles inside the foreground).
Time is the median of ``repeat`` warm runs in this process, alternating the two; peak memory is the peak
resident set size of a fresh process running each pipeline once, minus its size before the run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..explain import ExplainOptions, explain
from ..io.volume import Volume, load_study, load_volume

BRATS_SHAPE = (240, 240, 155)
GRID = (64, 128, 128)


def make_brats_sized_nifti(path: Path, seed: int = 0) -> Path:
    """A phantom FLAIR resampled to BraTS' 1 mm 240 x 240 x 155 grid, stored as float32 NIfTI."""
    from ..phantoms import make_case

    case = make_case("lesion", 0, seed)
    flair = case.images["flair"]
    lo, hi = flair.world_bounds()
    affine = np.eye(4)
    affine[:3, 3] = (lo + hi) / 2 - (np.asarray(BRATS_SHAPE) - 1) / 2
    on_grid = flair.resample_to(affine, BRATS_SHAPE)
    Volume(on_grid.data.astype(np.float32), affine).save(path)
    return path


def reference_io(path: str) -> np.ndarray:
    """The published system's loading and preprocessing, reproduced for comparison."""
    import nibabel as nib

    return reference_preprocess(nib.load(path))


def reference_preprocess(img) -> np.ndarray:
    """The published system's preprocessing of a loaded nibabel image."""
    import nibabel as nib
    import torch

    data = nib.as_closest_canonical(img).get_fdata(dtype=np.float32)
    lo, hi = np.percentile(data, (1, 99))
    data = np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    tensor = torch.from_numpy(data)[None, None]
    out = torch.nn.functional.interpolate(tensor, size=GRID, mode="trilinear", align_corners=False)
    return out[0].numpy()


def ours_io(path: str) -> np.ndarray:
    """Our loading and preprocessing."""

    array, _ = load_volume(path).to_model_grid(GRID)
    return array


PIPELINES: dict[str, Callable[[str], np.ndarray]] = {"reference": reference_io, "ours": ours_io}


def _peak_rss_mb(name: str, path: str) -> float:
    """Peak extra resident memory (MB) of one run of pipeline ``name`` in a fresh interpreter."""
    # Resident size is sampled every millisecond by a thread while the pipeline runs once, after imports.
    code = (
        "import json, resource, threading, time\n"
        "import nibabel, torch, scipy.ndimage, skimage.filters\n"
        "from BrainGemma3DLib.training import bench\n"
        "page = resource.getpagesize() / 2**20\n"
        "def rss():\n"
        "    with open('/proc/self/statm') as fh:\n"
        "        return int(fh.read().split()[1]) * page\n"
        "before = rss(); peak = [before]; done = threading.Event()\n"
        "def watch():\n"
        "    while not done.is_set():\n"
        "        peak[0] = max(peak[0], rss()); time.sleep(0.001)\n"
        "t = threading.Thread(target=watch); t.start()\n"
        f"result = bench.PIPELINES[{name!r}]({path!r})\n"
        "peak[0] = max(peak[0], rss()); done.set(); t.join()\n"
        "print(json.dumps(peak[0] - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _comparison(name: str, times: dict[str, list[float]]) -> dict:
    ours = statistics.median(times["ours"])
    ref = statistics.median(times["reference"])
    return {
        "name": name,
        "ours_s": round(ours, 4),
        "reference_s": round(ref, 4),
        "ratio": round(ref / ours, 2),
    }


def _preprocess_only(path: str, repeat: int) -> dict[str, list[float]]:
    """Preprocessing alone, from data already in memory (file decompression is the same for both)."""
    import nibabel as nib

    loaded = nib.load(path)
    img = nib.Nifti1Image(loaded.get_fdata(dtype=np.float32), loaded.affine)
    vol = load_volume(path)
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    for _ in range(repeat):
        start = time.perf_counter()
        reference_preprocess(img)
        times["reference"].append(time.perf_counter() - start)
        start = time.perf_counter()
        vol.to_model_grid(GRID)
        times["ours"].append(time.perf_counter() - start)
    return times


def run_io(repeat: int = 5) -> list[dict]:
    """Run the io benchmark; returns the JSON rows (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bg3d-bench-") as tmp:
        path = str(make_brats_sized_nifti(Path(tmp) / "flair_240x240x155.nii.gz"))
        times: dict[str, list[float]] = {name: [] for name in PIPELINES}
        for fn in PIPELINES.values():  # warm-up: imports, caches, page cache
            fn(path)
        for _ in range(repeat):
            for name, fn in PIPELINES.items():
                start = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - start)
        memory = {name: _peak_rss_mb(name, path) for name in PIPELINES}
        pre = _preprocess_only(path, repeat)
    return [
        _comparison("io: load + preprocess 240x240x155 float32 NIfTI -> (64,128,128)", times),
        _comparison("io: preprocess only (volume already in memory)", pre),
        {"name": "io: peak extra memory, ours", "value": round(memory["ours"], 1), "unit": "MB"},
        {"name": "io: peak extra memory, reference", "value": round(memory["reference"], 1), "unit": "MB"},
        {
            "name": "io: memory ratio (reference / ours)",
            "value": round(memory["reference"] / max(memory["ours"], 1e-6), 2),
            "unit": "x",
        },
    ]


def print_table(rows: list[dict]) -> None:
    """Human-readable table of benchmark rows."""
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if "ratio" in r:
            print(
                f"{r['name']:<{width}}  ours {r['ours_s']:.3f} s  reference {r['reference_s']:.3f} s  "
                f"ratio {r['ratio']:.2f}x"
            )
        else:
            print(f"{r['name']:<{width}}  {r['value']} {r['unit']}")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover - convenience
    print(json.dumps(run_io(), indent=2))


# ------------------------------------------------------------------------------------------------------
# model: warm latency of one report
# ------------------------------------------------------------------------------------------------------
def _sample_flair() -> Path:
    root = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "BrainGemma3DPhantom"
    return (
        root
        / "MICCAI_BraTS2020_TrainingData"
        / "BrainGemma3DPhantom_001"
        / "BrainGemma3DPhantom_001_flair.nii.gz"
    )


def _timed_reports(model, volume, tokens: int, repeat: int) -> dict[str, float]:
    """Median per-stage seconds; ``volume`` is a Volume (its placement on the grid is timed as preprocessing)
    or model-grid arrays."""
    import torch

    def one() -> dict[str, float]:
        start = time.perf_counter()
        grid = volume
        if isinstance(volume, Volume):
            grid = volume.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)[0]
        prepared = time.perf_counter() - start
        draft = model.generate(grid, max_new_tokens=tokens, min_new_tokens=tokens)[0]
        timings = dict(draft.timings)
        timings["preprocess_s"] = timings.get("preprocess_s", 0.0) + prepared
        return {**timings, "tokens": draft.num_tokens}

    one()  # warm-up
    runs = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        timings = one()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        runs.append({**timings, "total_s": time.perf_counter() - start})
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run_model(
    *,
    preset_name: str = "demo",
    device: str = "cpu",
    quantize: str | None = None,
    tokens: int = 128,
    repeat: int = 3,
) -> list[dict]:
    """Warm per-stage latency of one report; for CUDA also peak GPU memory.

    The demo preset uses the bundled demo weights when present, else random weights of the same shape;
    ``medgemma`` uses random weights at the real sizes (bf16, or NF4 4-bit through the real loader).
    """
    import torch

    from ..model import preset
    from ..model.loading import DEMO_WEIGHTS, load_checkpoint
    from .tokenizer import fresh_model

    dev = torch.device(device)
    label = f"model[{preset_name}{'/' + quantize if quantize else ''}, {dev.type}]"
    if preset_name == "demo" and (DEMO_WEIGHTS / "braingemma3d_config.json").is_file():
        model = load_checkpoint(DEMO_WEIGHTS, device=str(dev))
    elif preset_name == "medgemma" and dev.type == "cuda":
        model = _medgemma_random(quantize)
    else:
        torch.manual_seed(0)
        model = fresh_model(preset(preset_name)).to(dev)
    if preset_name == "demo":
        volume = load_volume(_sample_flair())  # preprocessing is timed as part of the report
    else:
        volume = torch.rand(1, model.cfg.in_channels, *model.cfg.grid, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = _timed_reports(model, volume, tokens, repeat)
    rows = [
        {"name": f"{label}: preprocess", "value": round(t["preprocess_s"], 4), "unit": "s"},
        {"name": f"{label}: encode", "value": round(t["encode_s"], 4), "unit": "s"},
        {
            "name": f"{label}: generate {int(t['tokens'])} tokens",
            "value": round(t["generate_s"], 4),
            "unit": "s",
        },
        {"name": f"{label}: whole report", "value": round(t["total_s"], 4), "unit": "s"},
        {
            "name": f"{label}: tokens per second",
            "value": round(t["tokens"] / t["generate_s"], 1),
            "unit": "tok/s",
        },
    ]
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append({"name": f"{label}: peak GPU memory", "value": round(peak, 2), "unit": "GiB"})
    return rows


def _medgemma_random(quantize: str | None):
    """The real-size model with random weights on CUDA; the LM goes through the real (4-bit) loader."""
    import torch

    from ..model import preset
    from ..model.brain_model import BrainGemma3D
    from ..model.encoder import build_encoder
    from ..model.language import build_language_model, load_language_model
    from .tokenizer import build_demo_tokenizer, report_corpus

    cfg = preset("medgemma")
    tokenizer = build_demo_tokenizer(report_corpus(100), vocab_size=1000)
    with torch.device("cuda"):
        from transformers import SiglipVisionModel

        from ..model.encoder import vision_config

        encoder = build_encoder(cfg, SiglipVisionModel(vision_config(cfg))).to(torch.bfloat16)
    if quantize == "4bit":
        with tempfile.TemporaryDirectory(prefix="bg3d-lm-") as tmp:
            full = build_language_model(cfg.lm, device="cuda", dtype=torch.bfloat16)
            full.save_pretrained(tmp)
            del full
            torch.cuda.empty_cache()
            lm = load_language_model(tmp, device="cuda", dtype=torch.bfloat16, quantize="4bit")
    else:
        lm = build_language_model(cfg.lm, device="cuda", dtype=torch.bfloat16)
    with torch.device("cuda"):
        model = BrainGemma3D(cfg, encoder, lm, tokenizer)
    model.compressor.to("cuda", torch.bfloat16)
    model.projector.to("cuda", torch.bfloat16)
    return model.eval()


# ------------------------------------------------------------------------------------------------------
# train: samples per second of each phase, through the real training code
# ------------------------------------------------------------------------------------------------------
def run_train(
    *, preset_name: str = "demo", cases: int = 24, epochs: int = 2, device: str = "cpu"
) -> list[dict]:
    """Samples per second of each training phase (median over epochs), on phantoms, through :func:`train`.

    Runs the same code as ``braingemma3d train`` (contrastive, warmup with the demo LM and encoder trained and
    grounding on, lora) on ``cases`` fresh phantoms (plus a few healthy controls); preprocessing is timed
    apart, as training preprocesses every case once before the first epoch.
    """
    from ..phantoms import generate
    from .train import TrainOptions, train

    rows = []
    with tempfile.TemporaryDirectory(prefix="bg3d-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(root / "data", cases, max(2, cases // 8), 7, progress=False)
        rows.append(
            {
                "name": f"train[{preset_name}]: phantoms",
                "value": round(time.perf_counter() - start, 2),
                "unit": "s",
            }
        )
        previous = None
        for phase in ("contrastive", "warmup", "lora"):
            opts = TrainOptions(
                phase=phase,
                data=root / "data",
                out=root / phase,
                init=str(root / previous / "best") if previous else None,
                preset=preset_name,
                epochs=epochs,
                batch_size=8,
                device=device,
                train_lm=phase == "warmup",  # the CPU-sized presets' LM and tower start untrained
                train_encoder=phase == "warmup",
                progress=False,
            )
            train(opts)
            log = [
                json.loads(x)
                for x in (root / phase / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            ]
            rate = round(statistics.median(r["samples_per_s"] for r in log), 1)
            rows.append(
                {"name": f"train[{preset_name}, {device}]: {phase}", "value": rate, "unit": "samples/s"}
            )
            previous = phase
    return rows


# ------------------------------------------------------------------------------------------------------
# explain: batched LIME scoring vs one perturbed volume per forward pass
# ------------------------------------------------------------------------------------------------------
def run_explain(
    *, model_ref: str = "demo", device: str = "cpu", samples: int = 256, repeat: int = 1
) -> list[dict]:
    """A full 3D LIME explanation of the sample case's draft, batched (ours) and one volume per forward pass
    (the published implementation's way), side by side in one run with the same perturbations."""
    from ..model import load

    model = load(model_ref, device=device)
    study = load_study([_sample_flair()])
    grid, mapping = study.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)
    text = model.generate(grid)[0].text
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    batch = 0
    for _ in range(repeat):
        for name, size in (("ours", 0), ("reference", 1)):
            found = explain(
                model,
                grid,
                mapping.foreground,
                mapping.grid_spacing,
                text,
                options=ExplainOptions(n_samples=samples, batch_size=size),
            )
            times[name].append(found.seconds)
            batch = found.batch_size if name == "ours" else batch
    return [
        _comparison(f"explain: {samples} perturbations, batched ({batch}/pass) vs 1/pass", times),
        {"name": "explain: full explanation (ours)", "value": round(min(times["ours"]), 2), "unit": "s"},
    ]


# ------------------------------------------------------------------------------------------------------
# anatomy: registration to the MNI152 template (affine path), the atlas back on the input's voxels
# ------------------------------------------------------------------------------------------------------
def run_anatomy(repeat: int = 3) -> list[dict]:
    """Seconds to register a study to the template and carry the atlas into its voxels (affine path, no
    cache): the sample case, and a BraTS-sized (240 x 240 x 155, 1 mm) FLAIR; median of ``repeat`` runs."""
    from ..anatomy.registration import register

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "sample case": load_volume(_sample_flair()),
            "BraTS-sized 240x240x155": load_volume(make_brats_sized_nifti(Path(tmp) / "brats.nii.gz")),
        }
        for name, volume in cases.items():
            seconds = [register(volume, cache=False).seconds for _ in range(repeat)]
            rows.append(
                {
                    "name": f"anatomy: register + atlas, affine ({name})",
                    "value": round(statistics.median(seconds), 2),
                    "unit": "s",
                }  # fmt: skip
            )
    return rows


def run_batch_throughput(cases: int = 16, repeat: int = 1, drafts: int | None = None) -> list[dict]:
    """Cohort throughput of ``braingemma3d batch`` (cases per minute, model loading included, as a user
    waits): one process drafting one case per pass, one process drafting 8 per pass, and two processes
    (``accelerate launch``) drafting 8 per pass, on the same phantom cohort, alternated ``repeat`` times
    in this run (median). ``drafts``: the decoding (None = the default consensus, 0 = greedy)."""
    from ..phantoms.dataset import generate

    runs = {
        "1 process, batch 1": (1, 1),
        "1 process, batch 8": (1, 8),
        "2 processes, batch 8": (2, 8),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cohort"
        generate(data, cases - cases // 4, cases // 4, seed=77, progress=False, sequences=("flair",))
        for r in range(repeat):
            for name, (processes, batch) in runs.items():
                out = Path(tmp) / f"out-{r}-{processes}-{batch}"
                command = [sys.executable, "-m", "BrainGemma3DLib", "batch", str(data), "--out", str(out)]
                command += ["--batch-size", str(batch), "--quiet", "--device", "cpu"]
                if drafts is not None:
                    command += ["--drafts", str(drafts)]
                if processes > 1:
                    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
                    launch += ["--num_processes", str(processes), "--num_machines", "1"]
                    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
                    command = launch + command[2:]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"bench batch ({name}) failed: {done.stderr.strip()[-400:]}")
                seconds[name].append(time.perf_counter() - start)
    decoding = "greedy" if drafts == 0 else "consensus of 16 drafts" if drafts is None else f"{drafts} drafts"
    rows = []
    for name, values in seconds.items():
        median = statistics.median(values)
        rows.append(
            {
                "name": f"batch: {cases} phantom cases, {decoding}, {name}",
                "value": round(60.0 * cases / median, 1),
                "unit": "cases/min",
                "seconds": round(median, 1),
            }  # fmt: skip
        )
    return rows


# ------------------------------------------------------------------------------------------------------
# node: the AI node on loopback against the local command, and its throughput with one and two workers
# ------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_requirements() -> str:
    """redis-server's path; one line naming what ``bench node`` lacks otherwise."""
    import importlib.util
    import shutil

    from ..io.errors import InputError

    missing = [
        name for name in ("celery", "redis", "fastapi", "uvicorn") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise InputError(f"bench node needs the node's packages: pip install {' '.join(missing)}")
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/local/sbin")
    if not binary:
        raise InputError("bench node needs redis-server (Debian: apt-get install redis-server)")
    return binary


@contextlib.contextmanager
def _redis_server(binary: str, folder: Path) -> Iterator[int]:
    """A private redis-server on a free loopback port (nothing saved); its port. Stopped after."""
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(folder), "--logfile", str(folder / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if redis.Redis(port=port, socket_timeout=1).ping():
                    break
            except redis.RedisError:
                time.sleep(0.05)
        if process.poll() is None and time.monotonic() < deadline:
            break
        process.kill()
        process.wait()
    else:
        raise RuntimeError(f"redis-server did not start (see {folder / 'redis.log'})")
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _BenchNode:
    """One ``braingemma3d serve`` on loopback (its own data folder and broker database) and a client of it."""

    def __init__(self, folder: Path, broker: str, *, workers: int, device: str, jobs: int):
        self.folder, self.workers = folder, workers
        data = folder / "data"
        data.mkdir(parents=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = folder / "node.toml"
        self.config.write_text(
            f'[node]\ndata_dir = "data"\nbroker = "{broker}"\ndevice = "{device}"\nexplain = false\n'
            f"workers = {workers}\n\n"
            f'[http]\nhost = "127.0.0.1"\nport = {self.port}\njobs_per_user = {jobs}\n',
            encoding="utf-8",
        )
        self.token = self._admin("tokens", "create", "bench").strip()  # as an administrator makes one
        self.process: subprocess.Popen | None = None

    def _admin(self, *args: str) -> str:
        command = [sys.executable, "-m", "BrainGemma3DLib", "serve", "--config", str(self.config), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"braingemma3d serve {' '.join(args)}: {done.stderr.strip()[-400:]}")
        return done.stdout

    def __enter__(self) -> _BenchNode:
        log = open(self.folder / "node.log", "wb")  # noqa: SIM115 (the child keeps its own copy)
        with log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "BrainGemma3DLib", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers in its process group: stopped with it
            )
        try:
            self._wait_ready(timeout=600)
        except BaseException:
            self.__exit__()  # its workers too
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the API answers and every worker says it holds its model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the node stopped: {self._log_tail()}")
            try:
                if json.loads(self._request("GET", "/ready", timeout=2))["workers"] >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the node was not ready in {timeout:.0f} s: {self._log_tail()}")

    def __exit__(self, *exc) -> None:
        import os
        import signal

        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of its group is left
        self.process.wait()
        self.process = None

    def _log_tail(self) -> str:
        return (self.folder / "node.log").read_text(encoding="utf-8", errors="replace")[-1500:]

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> bytes:
        import urllib.request

        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def submit(self, volume: Path) -> str:
        answer = self._request("POST", "/v1/jobs?format=nii.gz&explain=false", volume.read_bytes())
        return json.loads(answer)["id"]

    def fetch(self, job: str, timeout: float = 1800) -> dict:
        """Wait for ``job`` (polling its state), then download its report set as a client does; its
        report.json."""
        deadline = time.monotonic() + timeout
        while (view := json.loads(self._request("GET", f"/v1/jobs/{job}")))["state"] not in (
            "done",
            "failed",
            "cancelled",
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node job {job} not finished in {timeout:.0f} s")
            time.sleep(0.2)
        if view["state"] != "done":
            raise RuntimeError(f"node job {job} {view['state']}: {view.get('error')}")
        files = {name: self._request("GET", f"/v1/jobs/{job}/files/{name}") for name in view["files"]}
        return json.loads(files["report.json"])


def _drafting_s(report: dict) -> float:
    """The seconds a report's own stages took (report.json timings), model loading aside."""
    return sum(v for k, v in report["timings"].items() if k != "model_s")


def _one_case(node: _BenchNode, volume: Path, out: Path, device: str) -> dict[str, tuple[float, float]]:
    """``volume`` through the local command (a new process) and through ``node``: (wall seconds, seconds
    beyond the draft itself) of each."""
    command = [sys.executable, "-m", "BrainGemma3DLib", "report", str(volume), "--out", str(out)]
    command += ["--quiet", "--device", device]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    local_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"bench node: report failed: {done.stderr.strip()[-400:]}")
    local = json.loads((out / "report.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    drafted = node.fetch(node.submit(volume))
    node_s = time.perf_counter() - start
    return {
        "reference": (local_s, local_s - _drafting_s(local)),
        "ours": (node_s, node_s - _drafting_s(drafted)),
    }


def _cases_per_minute(node: _BenchNode, cohort: list[Path]) -> float:
    """Every case submitted at once, then each one's report set fetched: cases per minute."""
    start = time.perf_counter()
    jobs = [node.submit(volume) for volume in cohort]
    for job in jobs:
        node.fetch(job)
    return 60.0 * len(cohort) / (time.perf_counter() - start)


def _fresh_copy(source: Path, out: Path, tag: str) -> Path:
    """``source`` re-saved with ``tag`` in its header: the same voxels, other bytes (so a node drafts it
    rather than giving back the result of an earlier copy: results are stamped by the input's SHA-256)."""
    import nibabel as nib

    image = nib.load(source)
    header = image.header.copy()
    header["descrip"] = tag.encode()
    nib.save(nib.Nifti1Image(image.dataobj, image.affine, header), out)
    return out


def run_node(*, cases: int = 6, repeat: int = 1, device: str = "cpu") -> list[dict]:
    """The node against the local command, side by side in one run, on the demo model (consensus decoding as
    ``report``, no explanation). Two nodes on loopback share one private Redis (a database each, so no result
    is shared): one with one worker, one with two, both started (models loaded) before anything is timed.
    Each of ``repeat`` rounds, alternating:

    - one case, the sample FLAIR: ``braingemma3d report`` in a new process (reference) vs the same file
      submitted to the one-worker node, drafted and its report set fetched over HTTP (ours); and what each
      spends beyond the draft itself (report.json's stage timings, model loading aside);
    - throughput: ``cases`` phantom FLAIRs submitted at once to the one-worker node, then to the two-worker
      node: cases per minute from the first upload to the last report set fetched.

    Every round drafts fresh copies of the inputs (:func:`_fresh_copy`). Medians over the rounds.
    """
    from ..phantoms.dataset import generate

    redis_server = _node_requirements()
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    beyond: dict[str, list[float]] = {"reference": [], "ours": []}
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bg3d-bench-node-") as tmp:
        root = Path(tmp)
        generate(
            root / "cohort", cases - cases // 3, cases // 3, seed=31, progress=False, sequences=("flair",)
        )
        cohort = sorted((root / "cohort").rglob("*_flair.nii.gz"))[:cases]
        with contextlib.ExitStack() as stack:
            port = stack.enter_context(_redis_server(redis_server, root / "redis"))
            nodes = {
                workers: stack.enter_context(
                    _BenchNode(
                        root / f"node-{workers}",
                        f"redis://127.0.0.1:{port}/{workers}",
                        workers=workers,
                        device=device,
                        jobs=cases,
                    )
                )
                for workers in rates
            }
            for r in range(repeat):
                inputs = root / f"round-{r}"
                inputs.mkdir()
                sample = _fresh_copy(_sample_flair(), inputs / "sample.nii.gz", f"bench node {r}")
                for side, (wall, extra) in _one_case(nodes[1], sample, inputs / "local", device).items():
                    times[side].append(wall)
                    beyond[side].append(extra)
                for workers, node in sorted(nodes.items(), reverse=r % 2 == 1):  # alternated order
                    copies = [
                        _fresh_copy(path, inputs / f"w{workers}-{n}.nii.gz", f"bench node {r} {workers}")
                        for n, path in enumerate(cohort)
                    ]
                    rates[workers].append(_cases_per_minute(node, copies))
    label = f"demo model, {device}, consensus decoding, no explanation"
    rate = {workers: statistics.median(values) for workers, values in rates.items()}
    rows = [
        _comparison(f"node: one case on loopback (upload, draft, fetch) vs local `report` ({label})", times),
        {
            "name": "node: time beyond the draft (upload, queue, progress, fetch)",
            "value": round(statistics.median(beyond["ours"]), 2),
            "unit": "s",
        },
        {
            "name": "local `report`: time beyond the draft (process start, imports, model load)",
            "value": round(statistics.median(beyond["reference"]), 2),
            "unit": "s",
        },
    ]
    for workers, value in rate.items():
        name = f"node: {len(cohort)} phantom cases at once, {workers} worker(s) ({label})"
        rows.append({"name": name, "value": round(value, 1), "unit": "cases/min"})
    rows.append(
        {"name": "node: throughput, 2 workers / 1", "value": round(rate[2] / rate[1], 2), "unit": "x"}
    )
    return rows
