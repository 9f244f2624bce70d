import math

import pytest
import torch
import torch.nn.functional as F

from mangadistill.intent.losses import class_weights, soft_label_distillation_loss, temper


def test_beta_one_is_plain_cross_entropy():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([0, 2])
    soft = torch.tensor([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    loss = soft_label_distillation_loss(logits, y, soft, beta=1.0, temperature=3.0)
    assert torch.isclose(loss, F.cross_entropy(logits, y))


def test_beta_zero_is_t_squared_kl_by_hand():
    logits = torch.tensor([[1.0, 0.0]])
    soft = torch.tensor([[0.25, 0.75]])
    t = 2.0
    loss = soft_label_distillation_loss(logits, torch.tensor([0]), soft, beta=0.0, temperature=t)
    # q_T = softmax(log q / T) ; s_T = softmax(z / T)
    q = torch.softmax(torch.log(soft) / t, dim=-1)[0]
    s = torch.softmax(logits / t, dim=-1)[0]
    kl = sum(q[i] * math.log(q[i] / s[i]) for i in range(2))
    assert loss.item() == pytest.approx(t * t * float(kl), rel=1e-5)


def test_soft_term_is_zero_when_student_matches_tempered_teacher():
    soft = torch.tensor([[0.1, 0.6, 0.3]])
    t = 1.0
    logits = torch.log(soft)  # student distribution equals teacher at T=1
    loss = soft_label_distillation_loss(logits, torch.tensor([1]), soft, beta=0.0, temperature=t)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_blend_is_linear_in_beta():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    soft = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(2)), dim=-1)
    hard = soft_label_distillation_loss(logits, y, soft, 1.0, 2.0)
    kd = soft_label_distillation_loss(logits, y, soft, 0.0, 2.0)
    mid = soft_label_distillation_loss(logits, y, soft, 0.3, 2.0)
    assert mid.item() == pytest.approx(0.3 * hard.item() + 0.7 * kd.item(), rel=1e-5)


def test_invalid_beta_and_temperature_raise():
    logits, y = torch.zeros(1, 2), torch.tensor([0])
    with pytest.raises(ValueError, match="beta"):
        soft_label_distillation_loss(logits, y, None, 1.5, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        soft_label_distillation_loss(logits, y, None, 0.5, 0.0)


def test_temper_flattens_and_sharpens():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    assert temper(p, 2.0)[0, 0] < 0.7 < temper(p, 0.5)[0, 0]
    assert torch.allclose(temper(p, 1.0), p)


def test_class_weights_favour_rare_classes_and_ignore_absent():
    counts = torch.tensor([90, 10, 0])
    inverse = class_weights(counts, "inverse")
    assert inverse[1] > inverse[0] and inverse[2] == 0
    # n / (K_present * n_c): 100 / (2 * 90), 100 / (2 * 10)
    assert inverse[0].item() == pytest.approx(100 / 180) and inverse[1].item() == pytest.approx(5.0)
    assert torch.allclose(class_weights(counts, "sqrt_inverse"), inverse.sqrt())
    assert class_weights(counts, "none") is None
    with pytest.raises(ValueError):
        class_weights(counts, "bogus")


def test_class_weights_weigh_both_terms_by_the_hard_label():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1])
    soft = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    per_row = [
        soft_label_distillation_loss(logits[i : i + 1], y[i : i + 1], soft[i : i + 1], 0.0, 1.0) for i in range(2)
    ]
    weights = torch.tensor([1.0, 3.0])
    weighted = soft_label_distillation_loss(logits, y, soft, 0.0, 1.0, class_weights=weights)
    assert weighted.item() == pytest.approx((1 * per_row[0].item() + 3 * per_row[1].item()) / 4, rel=1e-5)
