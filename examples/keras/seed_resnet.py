"""The seed ResNet of the founding documents, in Keras 3, on resnorm.

    KERAS_BACKEND=torch python examples/keras/seed_resnet.py --epochs 1
    KERAS_BACKEND=torch python examples/keras/seed_resnet.py --data path/to/cifar-10-batches-py

The seed program (tf.keras, functional API) for 32x32 images: conv3x3(64)-BN-ReLU; two residual
blocks, each conv3x3 stride 2 - BN - ReLU - conv3x3 - BN plus a 1x1 stride-2 conv shortcut, added,
then ReLU; an 8x8 max-pool; flatten; dense 128 ReLU; dense 10 softmax. Trained as the seed MLP is:
Adam, sparse categorical cross-entropy, batch 32. It runs on Keras 3 as written: every layer below is
the tf.keras layer of the same name, with its defaults.

No resnorm layer replaces any of it: its norms are Keras's BatchNormalization and its skip is a 1x1
projection, not the identity skip that ``resnorm.keras.Residual`` wraps, so swapping in a resnorm
design would change the seed's network. It runs on resnorm's data (mnist5k padded to 32x32, or
CIFAR-10 / MNIST files on disk) with the lab's seeded 10% validation split, so its accuracy compares
with ``resnorm seeds`` and its PyTorch twin ``resnorm.models.seed_resnet``. That twin differs in two
details a tf.keras reader may notice: its 3x3 convs have no bias (the BatchNorm after each removes
one), and its stride-2 convs pad one pixel on every side where Keras's ``padding="same"`` pads only
after (the same output size, 16x16 then 8x8).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Keras reads its backend once, when it is first imported: choose PyTorch unless the user chose
os.environ.setdefault("KERAS_BACKEND", "torch")

try:
    import keras  # noqa: E402
except (ImportError, ValueError) as error:  # keras missing, or KERAS_BACKEND names a backend not installed
    print(f"{os.path.basename(__file__)}: error: cannot import Keras with "
          f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r} ({error}); "
          "pip install 'resnorm[keras]' and run with KERAS_BACKEND=torch", file=sys.stderr)
    sys.exit(2)  # bad input, as argparse's errors
import torch  # noqa: E402
from keras import layers  # noqa: E402

from resnorm.data import load_image_data  # noqa: E402


def residual_block(x, filters: int = 64, stride: int = 2):
    """conv3x3 stride 2 - BN - ReLU - conv3x3 - BN, plus a 1x1 stride-2 conv shortcut, then ReLU
    (He et al. 2016's block with a projection shortcut)."""
    shortcut = layers.Conv2D(filters, 1, strides=stride)(x)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same")(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(filters, 3, padding="same")(y)
    y = layers.BatchNormalization()(y)
    y = layers.Add()([y, shortcut])
    return layers.Activation("relu")(y)


def build_model(input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10) -> keras.Model:
    """The seed ResNet for ``(32, 32, channels)`` images (Keras's channels-last layout)."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(64, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = residual_block(x)  # 32x32 -> 16x16
    x = residual_block(x)  # 16x16 -> 8x8
    x = layers.MaxPooling2D(pool_size=8)(x)  # the 8x8 map -> 1x1
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="seed_resnet")


def load_data(data: str, limit: int | None = None, seed: int = 0):
    """32x32 images in Keras's channels-last layout, normalized with the training split's statistics."""
    images = load_image_data(data, layout="conv", val_fraction=0.1, split_seed=0)  # (N, C, 32, 32)
    train_x, train_y = images.train_x, images.train_y
    if limit is not None:  # a random subset (the training split is in the dataset's order, by class)
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))[:limit]
        train_x, train_y = train_x[keep], train_y[keep]
    channels_last = lambda x: images.normalize(x).permute(0, 2, 3, 1).contiguous().numpy()
    return ((channels_last(train_x), train_y.numpy()),
            (channels_last(images.val_x), images.val_y.numpy()), images.num_classes)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description="Train the seed ResNet (Keras 3 on resnorm), 32x32 images.")
    parser.add_argument("--data", default="mnist5k",
                        help="mnist5k (bundled, padded to 32x32) or a CIFAR-10 python-batches folder "
                             "(or an MNIST IDX folder)")
    parser.add_argument("--epochs", type=positive_int, default=3,
                        help="training epochs (3, as `resnorm seeds` runs the seed ResNet)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="train on only the first N training examples (a quick check)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (weights and shuffling)")
    args = parser.parse_args(argv)

    try:
        (x_train, y_train), (x_val, y_val), num_classes = load_data(args.data, args.limit, args.seed)
    except (OSError, ValueError) as error:
        parser.error(f"--data: {error}")
    keras.utils.set_random_seed(args.seed)
    model = build_model(input_shape=x_train.shape[1:], num_classes=num_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    # validation: resnorm's seeded 10% split (the one `resnorm seeds` uses); verbose=2: one line per epoch
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, validation_data=(x_val, y_val), verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_val, y_val, batch_size=256, verbose=0)
    print(f"trained {args.epochs} epoch(s) on {len(x_train)} images in {seconds:.1f}s "
          f"(Keras {keras.__version__}, backend {keras.backend.backend()})")
    print(f"val accuracy: {100.0 * accuracy:.1f}%")
    return accuracy


if __name__ == "__main__":
    main()
