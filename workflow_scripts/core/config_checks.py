"""Planning-time checks of config files and values the schema cannot express (issue 25, item 7).

Light imports only: the Snakefile runs these before anything is planned.
"""

from __future__ import annotations

import os
from pathlib import Path

from workflow_scripts.core.errors import ConfigError


def check_duplicate_keys(paths) -> None:
    """Refuse a YAML config file that gives one key twice in the same mapping (YAML loaders keep the
    last silently), naming the key, its line and the file."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        pass

    def construct_mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"config file {loader.name}: key {key!r} is given twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep the last silently. Keep one of them")
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    for path in paths:
        path = Path(path)
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        loader = Loader(text)
        loader.name = str(path)
        try:
            loader.get_single_data()
        except yaml.YAMLError:
            return  # Snakemake has read it already and names its own syntax errors
        finally:
            loader.dispose()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(config: dict, cores: int | None = None) -> None:
    """Refuse ``benchmark.threads`` above the cores of this machine (the measuring jobs run here):
    the runtime would run oversubscribed and the latencies would measure the contention."""
    cores = cores or usable_cores()
    threads = config.get("benchmark", {}).get("threads", 0)
    if threads and threads > cores:
        raise ConfigError(f"config key 'benchmark.threads' is {threads}, but this machine has {cores} CPU cores; "
                          f"the runtime would run oversubscribed. Set benchmark.threads to at most {cores}, or 0 "
                          "(every core given to the job)")


def check_weights_and_subsets(config: dict, classes_of) -> None:
    """A per-model mapping names only models of config key ``models``; a ``weights`` path exists; a
    training subset (``train.max_images``) holds at least one image per class. Messages quote the value
    as written. ``classes_of(dataset)`` is the dataset's number of classes (None: unknown or no labels)."""
    from workflow_scripts.core.config import PER_MODEL, _dotted, per_model

    from workflow_scripts.core.registry import MODELS

    models = list(config["models"])
    for key in PER_MODEL:
        value = _dotted(config, key)
        if not isinstance(value, dict):
            continue
        # weights must name models of this run (a mistyped or forgotten model would silently train from
        # scratch); a training-subset mapping may keep entries for models narrowed away (--config models=...).
        allowed = set(models) if key == "weights" else set(MODELS) | set(config.get("user_models") or {})
        unknown = sorted(set(value) - allowed - {"default"})
        if unknown:
            raise ConfigError(f"config key '{key}' maps {unknown}, which are not in config key 'models' "
                              f"({', '.join(models)}); remove those entries, add them to models, or use 'default'")
    user = set(config.get("user_models") or {})
    for model in models:
        if model in user:
            continue  # a user model is not trained: weights and train.max_images do not reach it
        weights = per_model(config.get("weights", "none"), model, "none")
        if weights not in ("imagenet", "none"):
            path = Path(os.path.expanduser(weights))
            if not path.is_file():
                where = f"config key 'weights' (for model {model})" if isinstance(config.get("weights"), dict) \
                    else "config key 'weights'"
                raise ConfigError(f"{where} is {weights!r}, which is neither imagenet, none, nor an existing file "
                                  f"({path.resolve()} does not exist); give the path of a .weights.h5 file")
        subset = per_model(_dotted(config, "train.max_images") or 0, model, 0)
        if not subset:
            continue
        for dataset in config["datasets"]:
            classes = classes_of(dataset)
            if classes and subset < classes:
                raise ConfigError(f"config key 'train.max_images' is {subset} for model {model}, below the {classes} "
                                  f"classes of dataset {dataset!r}: a stratified subset needs at least one image per "
                                  f"class. Set it to at least {classes}, or 0 (every train image)")
