"""LoRA (appendix E): adapters beside every linear layer, saved, loaded and merged."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

from ch06_classification.classifier import add_classification_head
from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.finetuning.model import build_classifier
from ch06_classification.storage.checkpoint import ClassifierInfo, load_classifier, save_classifier
from gpt.config import get_config
from gpt.lora import LinearWithLoRA, LoRALayer, lora_config, merge_lora, replace_linear_with_lora
from gpt.model import GPTModel, count_parameters
from tests.tiny_classifier import MESSAGES, TINY

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths


def test_appendix_e_count_on_gpt2_small():
    """Every nn.Linear wrapped, the 2-class head too: 2,666,528 trainable at rank 16."""
    with torch.device("meta"):  # shapes only: no 124M random numbers drawn
        model = add_classification_head(GPTModel(get_config("gpt2-small")))
        total_before = count_parameters(model)
        model.requires_grad_(False)
        replace_linear_with_lora(model, rank=16, alpha=16)
    assert count_parameters(model, trainable_only=True) == 2_666_528
    assert count_parameters(model) == total_before + 2_666_528
    # 12 blocks x (4 attention + 2 feed-forward projections) + the head
    assert sum(isinstance(m, LinearWithLoRA) for m in model.modules()) == 12 * 6 + 1


def test_update_is_scaled_by_alpha_over_rank():
    layer = LoRALayer(in_dim=3, out_dim=2, rank=2, alpha=8)  # scaling 4
    with torch.no_grad():
        layer.A.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        layer.B.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    # x @ A = [4, 5]; [4, 5] @ B = [4 + 15, 8 + 20] = [19, 28]; times 4
    torch.testing.assert_close(layer(x), torch.tensor([[76.0, 112.0]]))


def tiny_lora_classifier(seed: int = 0) -> GPTModel:
    model = build_classifier(
        "gpt2-small", weights="random", trainable_layers="lora", seed=seed, lora_rank=4, **TINY
    )
    return model.eval()


def randomize_adapters(model: nn.Module) -> None:
    """Stand in for training: B is zero at initialisation, which would hide any mistake."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALayer):
                module.B.copy_(0.1 * torch.randn(module.B.shape, generator=generator))


def test_at_initialisation_the_model_is_unchanged_and_only_adapters_train():
    plain = build_classifier("gpt2-small", weights="random", seed=0, **TINY).eval()
    lora = tiny_lora_classifier()
    ids = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lora(ids), plain(ids), rtol=0, atol=0)
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all(".lora." in name for name in trainable)
    assert lora_config(lora) == {"rank": 4, "alpha": 16}


def test_merged_weights_compute_what_the_adapters_do():
    model = tiny_lora_classifier()
    randomize_adapters(model)
    ids = torch.randint(0, 50257, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with_adapters = model(ids)
        merged = merge_lora(model)(ids)
    plain = build_classifier("gpt2-small", weights="random", seed=0, **TINY).eval()
    with torch.no_grad():
        assert (with_adapters - plain(ids)).abs().max() > 1e-3  # the adapters do something
    assert not any(isinstance(m, LinearWithLoRA) for m in model.modules())
    torch.testing.assert_close(merged, with_adapters, rtol=0, atol=1e-5)


def test_a_lora_checkpoint_holds_the_adapters_and_predicts_the_same(tmp_path):
    model = tiny_lora_classifier()
    randomize_adapters(model)
    info = ClassifierInfo(
        config=model.cfg,
        max_length=16,
        weights="random",
        trainable_layers="lora",
        lora=lora_config(model),
    )
    path = save_classifier(model, info, tmp_path / "model.safetensors")

    loaded, loaded_info = load_classifier(path)
    assert loaded_info.lora == {"rank": 4, "alpha": 16}
    assert any(name.endswith(".lora.A") for name in loaded.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name

    # The application classifier merges the adapters on loading: same probabilities.
    unmerged = SpamClassifier(model, info).predict_proba(list(MESSAGES))
    classifier = SpamClassifier.from_checkpoint(path, device="cpu")
    assert not any(isinstance(m, LinearWithLoRA) for m in classifier.model.modules())
    merged = classifier.predict_proba(list(MESSAGES))
    assert abs(unmerged[:, 1] - 0.5).max() > 1e-3  # not a degenerate, constant answer
    assert merged == pytest.approx(unmerged, abs=1e-5)


def test_a_lora_run_saves_only_the_adapters_and_loads_to_the_same_predictions(tmp_path):
    from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
    from ch06_classification.storage.runs import save_training_run
    from tests.synthetic_splits import write_synthetic_splits

    data_dir = write_synthetic_splits(tmp_path / "data", sizes=(16, 8, 8))
    settings = TrainingSettings(
        weights="random",
        data_dir=str(data_dir),
        trainable_layers="lora",
        lora_rank=2,
        epochs=1,
        lr=1e-2,
        config_overrides=TINY,
    )
    result = fine_tune(settings, log=lambda line: None, progress=False)
    run_dir = save_training_run(result, tmp_path / "run")
    with safe_open(run_dir / "model.safetensors", framework="pt") as file:
        stored = set(file.keys())
    assert stored and all(".lora." in name for name in stored)  # the base is rebuilt
    expected = SpamClassifier(result.model, result.info).predict_proba(list(MESSAGES))
    loaded = SpamClassifier.from_pretrained(run_dir, device="cpu").predict_proba(list(MESSAGES))
    assert loaded == pytest.approx(expected, abs=1e-5)
