"""Write a small example of "your own model": a trained Keras checkpoint, its ONNX file and real images.

    python -m workflow_scripts.examples.make_user_example user_example

writes into the folder given (offline; scikit-learn's handwritten digits, real data):

- ``mynet.keras``: a small CNN trained for a few epochs on 32x32 digits; it takes images scaled to
  0..1 (preprocessing outside the model, declared in config as family ``unit``);
- ``mynet.onnx``: the same network through tf2onnx with an NCHW input, as PyTorch exports are;
- ``digits/train/<class>/*.png`` and ``digits/test/<class>/*.png``: an image folder in the
  class-subfolder layout; ``digits.npz``: the same images as arrays; ``unlabelled/*.png``: test images
  without labels (a calibration-only folder).

config/your_model.yaml and config/your_model_onnx.yaml point at ``user_example/``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SIZE = 32


def digits_images(seed: int = 0):
    """Digits as 32x32 RGB uint8 and labels, split 80/20 stratified."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    gray = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(g).resize((SIZE, SIZE), Image.BILINEAR)) for g in gray])
    images = np.repeat(images[..., None], 3, axis=3)
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=seed, stratify=labels)
    return images[np.sort(train)], labels[np.sort(train)], images[np.sort(test)], labels[np.sort(test)]


def train_model(x, y, epochs: int, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="input")
    h = inputs
    for filters in (16, 32):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="scores")(h)
    model = keras.Model(inputs, outputs, name="mynet")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype("float32") / 255.0, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    from PIL import Image

    for i, image in enumerate(images):
        folder = root if labels is None else root / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.folder
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits_images(args.seed)
    write_folder(out / "digits" / "train", x_train, y_train)
    write_folder(out / "digits" / "test", x_test, y_test)
    write_folder(out / "unlabelled", x_test[:300], None)
    np.savez(out / "digits.npz", train_images=x_train, train_labels=y_train, test_images=x_test, test_labels=y_test)
    model = train_model(x_train, y_train, args.epochs, args.seed)
    accuracy = float((model.predict(x_test.astype("float32") / 255.0, verbose=0).argmax(1) == y_test).mean())
    model.save(out / "mynet.keras")
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=17, inputs_as_nchw=["input"],
                               output_path=str(out / "mynet.onnx"))
    print(f"wrote {out}/mynet.keras (test top-1 {accuracy:.3f} on {len(y_test)} images), {out}/mynet.onnx (NCHW), "
          f"{out}/digits/ (train {len(y_train)}, test {len(y_test)} images in class folders), {out}/digits.npz, "
          f"{out}/unlabelled/ (300 images)")


if __name__ == "__main__":
    main()
