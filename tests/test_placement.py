"""Pool placement (mcal_jax.placement): a host-placed pool, streamed to the devices, scores
and trains exactly as the replicated device pool does; a memory-mapped pool is read with
its resident memory bounded; the choice and its settings; and a whole run buys the same
labels with either placement."""

import json
import re

import jax
import numpy as np
import pytest

from configs import synthetic
from mcal_jax import data, host_images, parallel, placement, run, scoring, train_feed
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.data import Dataset
from mcal_jax.run import workdir as workdir_lib
from mcal_jax.run.settings import Settings


def _dataset(n=300):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 100, (n, 28, 28, 1)) + labels[:, None, None, None] * 10
    return Dataset(images=images.astype(np.uint8), labels=labels, num_classes=10, name="toy")


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """The same images on 8 devices, replicated and host-placed (memory-mapped from npy)."""
    folder = tmp_path_factory.mktemp("npy")
    data.save_npy(folder, _dataset())
    mapped = data.load_dataset(f"npy:{folder}")
    assert isinstance(mapped.images, np.memmap)
    mesh = parallel.make_mesh(8)
    return pool_lib.upload(mapped, mesh), pool_lib.host_pool(mapped, mesh)


def _variables(pool, seed):
    trainer = train_lib.Trainer("tiny", pool, train_lib.TrainConfig(epochs=1, batch_size=64))
    state = jax.device_get(trainer.init(jax.random.key(seed)))
    return {"params": state.params, "batch_stats": state.batch_stats}


def _leaves(variables):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(variables))]


@pytest.mark.parametrize(
    "metric, members, flip",
    [("margin", 1, False), ("random", 1, False), ("entropy", 2, True)],
)
def test_host_scoring_equals_device_scoring(pools, metric, members, flip):
    device_pool, host_pool = pools
    assert isinstance(host_pool, pool_lib.HostPool) and len(host_pool) == len(device_pool)
    variables = [_variables(device_pool, seed) for seed in range(members)]
    indices = np.arange(3, 290, 2)  # 144 items: 3 global batches of 64, the last padded
    scores = [
        scoring.Scorer("tiny", pool, metric=metric, batch_size=64, test_time_flip=flip).score(
            variables, indices, seed=7
        )
        for pool in pools
    ]
    on_device, streamed = scores
    np.testing.assert_allclose(streamed.confidence, on_device.confidence, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(streamed.predicted, on_device.predicted)
    assert np.all(streamed.predicted[indices] >= 0)
    others = np.setdiff1d(np.arange(len(host_pool)), indices)
    assert np.all(streamed.predicted[others] == -1) and np.all(streamed.confidence[others] == 0)


@pytest.mark.parametrize("semi_supervised", [False, True])
def test_host_training_equals_device_training(pools, semi_supervised):
    """Same items, same crops and flips, step for step: the same weights."""
    config = train_lib.TrainConfig(
        epochs=3, batch_size=32, crop_padding=2, horizontal_flip=True,
        semi_supervised=semi_supervised, unlabeled_ratio=2,
    )  # fmt: skip
    labels = np.asarray(_dataset().labels)
    rng = np.random.default_rng(3)
    labeled = rng.choice(300, 70, replace=False)  # 3 steps a pass, the last one wrapping
    pseudo = rng.permutation(np.setdiff1d(np.arange(300), labeled))[:90]
    kwargs = dict(pseudo_indices=pseudo, pseudo_labels=(labels[pseudo] + 1) % 10)
    results = [
        train_lib.Trainer("tiny", pool, config).train(labeled, labels[labeled], seed=5, **kwargs)
        for pool in pools
    ]
    on_device, streamed = results
    assert streamed.steps == on_device.steps == 9
    assert streamed.images_processed == on_device.images_processed
    assert streamed.final_loss == pytest.approx(on_device.final_loss, rel=1e-6)
    for a, b in zip(_leaves(streamed.variables), _leaves(on_device.variables), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Another seed (other orders, crops and flips) trains other weights: the check can fail.
    other = train_lib.Trainer("tiny", pools[1], config).train(
        labeled, labels[labeled], seed=6, **kwargs
    )
    assert (
        max(
            np.abs(a - b).max()
            for a, b in zip(_leaves(other.variables), _leaves(on_device.variables), strict=True)
        )
        > 1e-3
    )


def test_step_items_split_the_global_batch_over_the_devices():
    order = np.array([50, 40, 30, 20, 10])
    pseudo_order = np.array([7, 8, 9])
    # 2 devices, batch 4: step 3 is the 2nd of its pass, so B's positions 4..7 wrap to
    # 10, 50, 40, 30; the pseudo-labeled positions 3·1·4 + 0..3 wrap to 7, 8, 9, 7.
    items = train_feed.step_items(3, 1, order, 2, 4, (pseudo_order, 1))
    np.testing.assert_array_equal(items, [10, 50, 7, 8, 40, 30, 9, 7])
    np.testing.assert_array_equal(train_feed.step_items(0, 0, order, 2, 4), [50, 40, 30, 20])


def _rss_file_bytes():
    """The bytes of mapped files resident in this process (RssFile of /proc/self/status)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("RssFile:"))
    return int(line.split()[1]) * 1024


def test_reading_a_memory_mapped_pool_keeps_its_pages_released(tmp_path):
    """Hashing, statistics and streamed reads each go through all 48 MB of a mapped pool;
    none leaves more than a few MB of it resident."""
    images = np.random.default_rng(0).integers(0, 255, (16_384, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    limit = 8 << 20

    before = _rss_file_bytes()
    digest = workdir_lib.images_sha256(mapped)
    assert _rss_file_bytes() - before < limit
    assert digest == workdir_lib.images_sha256(images)

    mean, std = pool_lib.pixel_statistics(mapped)
    assert _rss_file_bytes() - before < limit
    np.testing.assert_allclose(mean, images.mean((0, 1, 2)) / 255, rtol=1e-5)

    order = np.random.default_rng(1).permutation(len(images))
    for batch in np.array_split(order, 16):
        np.testing.assert_array_equal(host_images.gather(mapped, batch), images[batch])
    assert _rss_file_bytes() - before < limit

    subset = Dataset(mapped, None, 0, "mapped").subset(order[:5000])
    np.testing.assert_array_equal(subset.images, images[order[:5000]])
    assert _rss_file_bytes() - before < limit


def test_release_leaves_arrays_in_memory_and_copy_on_write_maps_alone(tmp_path):
    images = np.arange(4096 * 8, dtype=np.uint8).reshape(8, 64, 64, 1)
    host_images.release(images, 0, 8)  # memory, not a map: a no-op
    assert images[5, 3, 2, 0] == (5 * 4096 + 3 * 64 + 2) % 256
    np.save(tmp_path / "a.npy", images)
    writable = np.load(tmp_path / "a.npy", mmap_mode="c")  # copy-on-write
    writable[2] = 0  # only in this process: releasing its pages would lose it
    host_images.release(writable, 0, 8)
    assert not writable[2].any()


def test_auto_placement_compares_the_pool_with_the_budget():
    assert placement.choose("auto", 10**9, 1.0) == "device"
    assert placement.choose("auto", 10**9 + 1, 1.0) == "host"
    assert placement.choose("device", 10**12, 1.0) == "device"
    assert placement.choose("host", 1, 100.0) == "host"
    with pytest.raises(ValueError, match=re.escape("data.placement='disk': use one of")):
        placement.choose("disk", 1, 1.0)
    cpu = jax.devices("cpu")[0]
    assert placement.default_device_memory_gb(cpu) == placement.DEFAULT_CPU_DEVICE_MEMORY_GB

    dataset, mesh = _dataset(), parallel.make_mesh(1)  # 235,200 bytes of images
    assert isinstance(pool_lib.place(dataset, mesh, "auto", 0.0002), pool_lib.HostPool)
    assert isinstance(pool_lib.place(dataset, mesh, "auto", 0.0003), pool_lib.DevicePool)
    assert isinstance(pool_lib.place(dataset, mesh), pool_lib.DevicePool)  # 2 GB on a CPU


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("placement", "disk", "data.placement='disk': use one of ('auto', 'device', 'host')"),
        ("device_memory_gb", 0.0, "data.device_memory_gb=0.0: must be a number of GB > 0"),
        ("device_memory_gb", -2.0, "data.device_memory_gb=-2.0: must be a number of GB > 0"),
        ("device_memory_gb", float("nan"), "data.device_memory_gb=nan: must be a finite number"),
    ],
)
def test_invalid_placement_settings_are_named(tmp_path, field, value, message):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.data[field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_config(config, 1000)
    with pytest.raises(ValueError, match=re.escape(message)):
        run.mcal(config, str(tmp_path))
    assert not (tmp_path / "ledger.jsonl").exists()


def test_placement_settings_are_read():
    config = synthetic.get_config("1000")
    placed = Settings.from_config(config, 1000).placement
    assert (placed.placement, placed.device_memory_gb) == ("auto", None)
    with config.unlocked():
        config.data.placement = "host"
        config.data.device_memory_gb = 1.5
    placed = Settings.from_config(config, 1000).placement
    assert (placed.placement, placed.device_memory_gb) == ("host", 1.5)


def _bought(workdir):
    with open(workdir / "ledger.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [(r["key"], r["indices"]) for r in records if r["kind"] in ("purchase", "move")]


def test_a_run_buys_the_same_labels_with_either_placement(tmp_path):
    """The smallest whole run the tests use, host-placed and device-placed: purchase for
    purchase the same items."""
    summaries, purchases = [], []
    for where in ("device", "host"):
        config = synthetic.get_config("1000")
        with config.unlocked():
            config.mcal.max_rounds = 2
            config.mcal.plan_test_fraction = 0.2
            config.data.placement = where
            config.cost.mode = "per_image_epoch"  # not the clock: see docs/algorithm.md, 5
        summaries.append(run.mcal(config, str(tmp_path / where)))
        purchases.append(_bought(tmp_path / where))
    assert len(purchases[0]) >= 3  # T_plan, B0, a round's batch, ...
    assert purchases[0] == purchases[1]
    assert summaries[0].counts == summaries[1].counts
    assert summaries[0].error == summaries[1].error
