"""Finding the CUDA runtime (``libcudart``) for Polygraphy's CUDA wrapper, whatever its version.

The runner and the calibrator use ``polygraphy.cuda``, a ctypes wrapper that loads ``libcudart``
once, when ``polygraphy.cuda.wrapper()`` is first called. Where it looks depends on the version:

- Polygraphy 0.53.4 and later search ``LD_LIBRARY_PATH``, ``/usr/local/cuda/lib64``, ``/usr/lib``,
  ``/lib`` and then the pip wheel ``nvidia-cuda-runtime-cu12`` (``<site-packages>/nvidia/
  cuda_runtime/lib``), which is where an x86 machine without a CUDA toolkit has its runtime;
- Polygraphy 0.49.x and 0.50.x (the versions on PyPI before 0.53.4) search only the first four
  (reading ``os.environ["LD_LIBRARY_PATH"]`` when the wrapper is created) and otherwise fall back
  to ``CDLL("libcudart.so")``, a name the wheel does not ship (it has ``libcudart.so.12``).

The ``tensorrt`` extra pins ``polygraphy>=0.53.4``; for an older Polygraphy already installed,
:func:`import_cuda` puts the wheel's library folder at the end of ``LD_LIBRARY_PATH`` before the
wrapper is created, so that Polygraphy finds the wheel's ``libcudart.so.12`` (after the folders
``LD_LIBRARY_PATH`` already lists; before ``/usr/local/cuda/lib64``, which 0.53.4 searches
first: on a machine with both, the wheel's CUDA 12 runtime is used). A JetPack board has no wheel and its runtime in
``/usr/local/cuda/lib64``, which every version finds: nothing is changed there.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys
from typing import Any, List, MutableMapping, Optional, Sequence

LOG = logging.getLogger(__name__)

# The first Polygraphy on PyPI whose CUDA wrapper searches the nvidia-cuda-runtime wheel (0.53.4:
# polygraphy/cuda/cuda.py, _cuda_runtime_wheel_dirs; 0.50.3, the release before it there, does not).
WHEEL_AWARE_POLYGRAPHY = (0, 53, 4)


def wheel_runtime_dirs(search_path: Optional[Sequence[str]] = None) -> List[str]:
    """Folders ``<entry>/nvidia/cuda_runtime/lib`` holding a ``libcudart.so*``, in ``sys.path`` order."""
    dirs: List[str] = []
    candidates = [os.path.join(p, "nvidia", "cuda_runtime", "lib")
                  for p in (sys.path if search_path is None else search_path) if p and os.path.isdir(p)]
    if search_path is None:
        try:  # a namespace package reachable through a .pth rather than a sys.path entry
            spec = importlib.util.find_spec("nvidia.cuda_runtime")
            if spec is not None and spec.submodule_search_locations:
                candidates += [os.path.join(loc, "lib") for loc in spec.submodule_search_locations]
        except (ImportError, ValueError):
            pass
    for folder in candidates:
        folder = os.path.normpath(folder)
        if folder not in dirs and glob.glob(os.path.join(folder, "libcudart.so*")):
            dirs.append(folder)
    return dirs


def polygraphy_finds_wheel(version: str) -> bool:
    """Whether this Polygraphy version searches the nvidia-cuda-runtime wheel itself."""
    from workflow_scripts.backends.tensorrt.options import parse_version

    try:
        return parse_version(version)[:3] >= WHEEL_AWARE_POLYGRAPHY
    except ValueError:
        return True  # unknown: leave its own search alone


def prepare_cuda_runtime(
    polygraphy_version: str,
    environ: Optional[MutableMapping[str, str]] = None,
    search_path: Optional[Sequence[str]] = None,
) -> Optional[str]:
    """For a Polygraphy older than 0.53.4, append the wheel's libcudart folder to ``LD_LIBRARY_PATH``.

    Returns the folder added (None when nothing was needed: a new Polygraphy, no wheel, the folder
    already listed, or not Linux). Must run before ``polygraphy.cuda.wrapper()`` is first called:
    the wrapper reads ``LD_LIBRARY_PATH`` once, when it is created.
    """
    if not sys.platform.startswith("linux") or polygraphy_finds_wheel(polygraphy_version):
        return None
    env = os.environ if environ is None else environ
    listed = [os.path.normpath(p) for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    for folder in wheel_runtime_dirs(search_path):
        if folder in listed:
            return None
        env["LD_LIBRARY_PATH"] = os.pathsep.join(listed + [folder])
        LOG.info(
            "Polygraphy %s does not search the nvidia-cuda-runtime wheel for libcudart; added %s to "
            "LD_LIBRARY_PATH for its CUDA wrapper (pip install 'polygraphy>=0.53.4' makes this unnecessary)",
            polygraphy_version, folder,
        )
        return folder
    return None


def import_cuda() -> Any:
    """``polygraphy.cuda``, with the CUDA runtime findable by its wrapper (see the module docstring)."""
    import polygraphy
    from polygraphy import cuda

    prepare_cuda_runtime(str(getattr(polygraphy, "__version__", "")))
    return cuda
