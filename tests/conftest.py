"""Suite-wide settings: tiny tests run fastest on one thread (and CI has only two cores), and nothing
is downloaded: huggingface_hub is offline (read when it is imported, so set before any test imports
it), so a test that asks for pretrained encoder weights by mistake fails at once instead of retrying
for a minute."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
