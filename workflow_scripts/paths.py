"""The one path scheme: every artifact of the workflow is addressable as a single target.

results/
  data/{dataset}_{size}px/{split}_images.npy, {split}_labels.npy, meta.json
  models/{dataset}_{size}px/{model}/model.keras, history.parquet, accuracy.parquet, predictions.parquet
  {device}/onnx/{dataset}_{size}px/{model}/model.onnx, export.parquet, export_resources.parquet
  {device}/{backend}/{dataset}_{size}px/{model}/{precision}.{onnx|engine}
      {precision}_build.parquet, {precision}_build_resources.parquet,
      {precision}_calibration.json, {precision}_calibration.cache   (int8 only)
      {precision}_latency.parquet, {precision}_latency_samples.parquet, {precision}_latency_resources.parquet
      {precision}_accuracy.parquet, {precision}_predictions.parquet
  summary/*.parquet, claims.md, figures/*.png|svg   (every device and backend found under results/)
"""

from __future__ import annotations

from pathlib import Path

ENGINE_SUFFIX = {"onnxruntime": "onnx", "tensorrt": "engine"}
SPLITS = ("train", "val", "test")


def data_dir(results: str, dataset: str, size: int | str) -> str:
    """Folder of one prepared dataset."""
    return f"{results}/data/{dataset}_{size}px"


def model_dir(results: str, dataset: str, size: int | str, model: str) -> str:
    """Folder of one trained Keras model and its base accuracy."""
    return f"{results}/models/{dataset}_{size}px/{model}"


def onnx_dir(results: str, device: str, dataset: str, size: int | str, model: str) -> str:
    """Folder of one ONNX export, timed on the device."""
    return f"{results}/{device}/onnx/{dataset}_{size}px/{model}"


def engine_dir(results: str, device: str, backend: str, dataset: str, size: int | str, model: str) -> str:
    """Folder of one model's engines and their measurements."""
    return f"{results}/{device}/{backend}/{dataset}_{size}px/{model}"


def engine_file(results: str, device: str, backend: str, dataset: str, size: int | str, model: str, precision: str) -> str:
    """The engine of one precision: an ONNX file for onnxruntime, a serialized plan for tensorrt."""
    return f"{engine_dir(results, device, backend, dataset, size, model)}/{precision}.{ENGINE_SUFFIX[backend]}"


def ensure_parent(path: str | Path) -> Path:
    """Create the parent folder of ``path``; return ``path`` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
