import numpy as np
import pandas as pd


def test_training_keeps_best_epoch_and_records_history(trained, digits_dir):
    from workflow_scripts.stages.evaluate import KerasRunner, accuracy_summary, predict

    path, history = trained
    saved = pd.read_parquet(path.parent / "history.parquet")
    assert list(saved["epoch"]) == [1, 2] and saved["kept"].sum() == 1
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_s"} <= set(saved.columns)
    kept = saved.loc[saved["kept"], "val_accuracy"].item()
    assert kept == saved["val_accuracy"].max()
    # Inference-mode accuracy of the saved model is real (not the BatchNorm collapse to chance).
    summary = accuracy_summary(predict(KerasRunner(path), digits_dir, 64))
    assert summary["images"] == 270
    assert summary["top1_accuracy"] > 0.5, summary
    assert np.isclose(summary["top1_accuracy"], kept, atol=0.15)


def test_safe_mode_refuses_lambda_layers(tmp_path):
    import keras
    import pytest

    from workflow_scripts.core.errors import ModelLoadError
    from workflow_scripts.models.zoo import load_keras_model

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelLoadError, match="Lambda"):
        load_keras_model(path)


def test_truncated_keras_file_is_named(tmp_path, trained):
    import pytest

    from workflow_scripts.core.errors import ModelLoadError
    from workflow_scripts.models.zoo import load_keras_model

    data = trained[0].read_bytes()
    broken = tmp_path / "broken.keras"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="broken.keras"):
        load_keras_model(broken)
