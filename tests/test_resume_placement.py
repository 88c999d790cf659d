"""A run may be resumed with the pool placed elsewhere (placement changes where the work
happens, never what it decides), but not with a setting that decides; a run written before
a field was added resumes with the value that does what it did."""

import json

import pytest

from configs import synthetic
from mcal_jax.run.workdir import Workdir

FINGERPRINT = {"name": "synthetic", "images_sha256": "0" * 64}


def _config(**data):
    config = synthetic.get_config("1000")
    with config.unlocked():
        for field, value in data.items():
            setattr(config.data, field, value)
    return config


def test_resuming_with_another_placement_is_accepted(tmp_path):
    workdir = Workdir(tmp_path / "run", writer=True)
    workdir.claim(_config(placement="device"), FINGERPRINT)
    workdir.claim(_config(placement="host", device_memory_gb=1.0), FINGERPRINT)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["placement"] == "host"  # the config of the latest start
    assert saved["data"]["device_memory_gb"] == 1.0


def test_resuming_with_another_decisive_setting_is_refused(tmp_path):
    workdir = Workdir(tmp_path / "run", writer=True)
    workdir.claim(_config(placement="device"), FINGERPRINT)
    changed = _config(placement="host")
    with changed.unlocked():
        changed.mcal.epsilon = 0.1
    with pytest.raises(ValueError, match=r"a different config \(mcal\.epsilon: 0\.05 → 0\.1\)"):
        workdir.claim(changed, FINGERPRINT)
    with pytest.raises(ValueError, match=r"a different config \(data\.max_items"):
        workdir.claim(_config(placement="device", max_items=500), FINGERPRINT)


def test_a_run_written_before_microbatch_size_resumes_with_whole_steps(tmp_path):
    workdir = Workdir(tmp_path / "run", writer=True)
    workdir.claim(_config(), FINGERPRINT)
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    del saved["train"]["microbatch_size"]  # as an earlier version wrote it
    path.write_text(json.dumps(saved))
    workdir.claim(_config(), FINGERPRINT)  # microbatch_size = 0: steps in one piece, as then
    path.write_text(json.dumps(saved))
    sliced = _config()
    with sliced.unlocked():
        sliced.train.microbatch_size = 32
    with pytest.raises(ValueError, match=r"train\.microbatch_size: 0 → 32"):
        workdir.claim(sliced, FINGERPRINT)
