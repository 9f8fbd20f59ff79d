"""Peak memory and wall time of preparing CIFAR-100 at the study's 224x224, at the real size.

Builds a synthetic archive in the official ``cifar-100-python.tar.gz`` format with the real
50,000 train + 10,000 test 32x32 images (``tests/archive_factory.py``), then runs
``workflow_scripts.data.datasets.prepare_dataset("cifar100", 224, ...)`` in a child process and reports

* the child's peak RSS from ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, which counts the pages of
  the memory-mapped output files that were resident at once (file-backed page cache the kernel can
  drop and write back at any time), and
* the peak of the child's anonymous memory (``RssAnon`` in /proc/<pid>/status, sampled every
  0.05 s), which is what the process really holds: the decoded archive and one image at a time.

The point: the prepared 224x224 splits are written through a memory map one image at a time, so
no split is ever held as one array (10,000 test images as float32 would be 6.0 GB, the 42,500
train images 25.6 GB). Disk: the prepared splits take 50,000 x 224 x 224 x 3 bytes = 7.5 GB
(plus the ~0.2 GB archive and its extracted copy); --train-images prepares a smaller train split.

    python benchmarks/prepare_memory.py                 # the real size, ~9 GB of temporary disk
    python benchmarks/prepare_memory.py --train-images 5000 --test-images 10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = """
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
from workflow_scripts.data.datasets import prepare_dataset
started = time.perf_counter()
meta = prepare_dataset("cifar100", {size}, {out!r}, {resources!r}, False, {val_fraction}, 0.15, seed=0)
print("RESULT " + json.dumps({{"prepare_s": time.perf_counter() - started, "counts": meta["counts"]}}))
"""


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of ``pid`` in kB (Linux); {} once the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def sample_peaks(pid: int, peaks: dict[str, int], stop: threading.Event, interval: float) -> None:
    while not stop.is_set():
        for key, value in read_status(pid).items():
            peaks[key] = max(peaks.get(key, 0), value)
        stop.wait(interval)


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of one file."""
    st = path.stat()
    return st.st_size, st.st_blocks * 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="prepared side in pixels (default 224)")
    parser.add_argument("--train-images", type=int, default=50_000, help="images in the archive's train batch (default 50000, the real size)")
    parser.add_argument("--test-images", type=int, default=10_000, help="images in the archive's test batch (default 10000, the real size)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="split.val_fraction (schema default 0.15)")
    parser.add_argument("--workdir", type=Path, default=None, help="temporary folder (default: a new one under $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the archive and the prepared files")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from tests.archive_factory import make_cifar100_python_archive

    workdir = Path(tempfile.mkdtemp(prefix="prepare_memory_", dir=args.workdir)).resolve()
    resources, out = workdir / "resources", workdir / f"cifar100_{args.size}px"
    need = (args.train_images + args.test_images) * args.size * args.size * 3
    free = shutil.disk_usage(workdir).free
    print(f"workdir {workdir}: {free / 1e9:.1f} GB free, the prepared splits need {need / 1e9:.2f} GB", flush=True)
    if need * 1.1 + 1e9 > free:
        sys.exit(f"not enough disk space in {workdir}; use --train-images to prepare a subset, or --workdir elsewhere")

    try:
        started = time.perf_counter()
        make_cifar100_python_archive(resources / "cifar-100-python.tar.gz", args.train_images, args.test_images, seed=0)
        archive_s = time.perf_counter() - started
        archive_mb = (resources / "cifar-100-python.tar.gz").stat().st_size / 1e6
        print(f"archive: {archive_mb:.0f} MB written in {archive_s:.1f} s", flush=True)

        code = CHILD.format(size=args.size, out=str(out), resources=str(resources), val_fraction=args.val_fraction)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peaks: dict[str, int] = {}
        stop = threading.Event()
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        sampler = threading.Thread(target=sample_peaks, args=(child.pid, peaks, stop, 0.05), daemon=True)
        sampler.start()
        stdout, _ = child.communicate()
        wall_s = time.perf_counter() - started
        stop.set()
        sampler.join()
        maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if child.returncode != 0:
            sys.exit(f"prepare_dataset failed with exit status {child.returncode}")
        result = json.loads([line for line in stdout.splitlines() if line.startswith("RESULT ")][-1][7:])

        files = {split: disk_usage(out / f"{split}_images.npy") for split in ("train", "val", "test")}
        test_n = result["counts"]["test"]
        report = {
            "size": args.size,
            "archive_train_images": args.train_images,
            "archive_test_images": args.test_images,
            "counts": result["counts"],
            "archive_mb": round(archive_mb, 1),
            "archive_build_s": round(archive_s, 1),
            "wall_s": round(wall_s, 1),
            "prepare_s": round(result["prepare_s"], 1),
            "images_per_s": round(sum(result["counts"].values()) / result["prepare_s"], 0),
            "peak_rss_mb_getrusage": round(maxrss_kb / 1024, 1),
            "getrusage_before_mb": round(before / 1024, 1),
            "peak_rss_mb_sampled": round(peaks.get("VmRSS", 0) / 1024, 1),
            "peak_rss_anon_mb_sampled": round(peaks.get("RssAnon", 0) / 1024, 1),
            "peak_rss_file_mb_sampled": round(peaks.get("RssFile", 0) / 1024, 1),
            "split_bytes": {split: size for split, (size, _) in files.items()},
            "split_allocated_bytes": {split: alloc for split, (_, alloc) in files.items()},
            "test_split_gb": round(files["test"][0] / 1e9, 3),
            "test_split_as_float32_gb": round(test_n * args.size * args.size * 3 * 4 / 1e9, 2),
        }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
