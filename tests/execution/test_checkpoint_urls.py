"""Checkpoints under a plain folder, a file:// URL and a non-local fsspec filesystem (memory://): the same
save -> pointer -> load -> prune, so a job can resume from an object store or a shared mount."""

import uuid

import pytest
import torch

from saturn_airflow.execution.checkpoint import CheckpointManager, read_latest


class Trainer:
    """The two calls CheckpointManager needs (model weights only: the storage, not the state dicts, is
    under test here; the parallelisms' own tests cover optimizer state)."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-2)

    def step(self):
        loss = self.model(torch.randn(5, 8)).pow(2).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()

    def state_dict(self):
        return {"model": self.model.state_dict()}

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd["model"])


@pytest.fixture(params=["path", "file-url", "memory"])
def root(request, tmp_path):
    return {"path": str(tmp_path / "ck"), "file-url": f"file://{tmp_path}/ck",
            "memory": f"memory://saturn-ck-{uuid.uuid4().hex[:8]}"}[request.param]


@pytest.mark.filterwarnings("ignore::UserWarning")  # DCP warns that no process group is initialized
def test_save_load_prune_on_any_root(root):
    a = Trainer(0)
    ck = CheckpointManager(root, every_s=None, keep=2)
    for step in (1, 2, 3):
        a.step()
        ck.save(a, step)
    assert read_latest(root)["step"] == 3 and ck.size_bytes() > 0
    b = Trainer(1)  # different weights until loaded
    assert not torch.equal(a.model[0].weight, b.model[0].weight)
    assert CheckpointManager(root, every_s=None).load(b) == 3
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    dirs = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in ck.fs.ls(ck.base, detail=False))
    assert [d.split("-")[1] for d in dirs if d.startswith("step-")] == ["000000002", "000000003"]  # pruned to 2


def test_no_pointer_means_nothing_to_resume(root):
    assert read_latest(root) is None
    assert CheckpointManager(root, every_s=None).load(Trainer(0)) == 0
