"""The README's Python example runs as written (against a small saved tokenizer instead of runs/demo)."""

import re
from pathlib import Path

import torch

from detok import create_model
from detok.checkpoint import save_model_folder
from detok.latents import store_latent_stats

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    torch.manual_seed(0)
    model = create_model("detok-fmnist32-tiny")
    save_model_folder(tmp_path, model)
    c = model.config.latent_channels
    store_latent_stats(tmp_path, [0.1] * c, [2.0] * c)
    for code in blocks:
        exec(compile(code.replace('"runs/demo"', repr(str(tmp_path))), "README.md", "exec"), {})
