import pytest

from workflow_scripts.core.artifacts import atomic_path, write_text
from workflow_scripts.measure.compression import timed_stage
from workflow_scripts.measure.monitor import ResourceMonitor


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_only_when_complete(tmp_path):
    target = write_text("one", tmp_path / "a.txt")
    write_text("two", target)
    assert target.read_text() == "two" and len(list(tmp_path.iterdir())) == 1


def test_timed_stage_keeps_only_last_run_and_checks_it(tmp_path):
    target = tmp_path / "engine.bin"
    produced = []

    def produce(tmp):
        produced.append(len(produced))
        tmp.write_text(f"run {len(produced) - 1}")
        return {"extra": 1}

    runs, facts = timed_stage("stage", produce, target, warmup=1, repeats=2, monitor=ResourceMonitor(1.0),
                              check=lambda tmp: {"checked": tmp.read_text()})
    assert target.read_text() == "run 2" and facts["checked"] == "run 2"
    assert runs["warmup"].tolist() == [True, False, False] and len(list(tmp_path.iterdir())) == 1

    def refuse(tmp):
        raise ValueError("bad artifact")

    with pytest.raises(ValueError):
        timed_stage("stage", produce, tmp_path / "other.bin", 0, 1, ResourceMonitor(1.0), check=refuse)
    assert not (tmp_path / "other.bin").exists() and len(list(tmp_path.iterdir())) == 1
