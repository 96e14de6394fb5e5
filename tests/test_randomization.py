"""Random resize-and-pad: range, reproducibility, fixed draws and batch-independent per-sample seeding."""

import pytest
import torch

from gradconceal import GradconcealError, RandomResizePad
from gradconceal.defenses.randomization import ResizePadDraw


@pytest.fixture
def ones():
    return torch.ones(3, 1, 28, 28)


def test_output_keeps_size_and_pads_with_zeros(ones):
    layer = RandomResizePad(size=28, min_size=22, seed=0)
    sides = set()
    for _ in range(40):
        out = layer(ones)
        assert out.shape == ones.shape
        side = int(round(out[0, 0].sum().item() ** 0.5))  # a side x side block of ones in zeros
        assert 22 <= side < 28
        sides.add(side)
    assert len(sides) > 3  # new randomness on every call


def test_draw_is_shared_by_the_batch(ones):
    out = RandomResizePad(size=28, min_size=22, seed=3)(ones)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_same_seed_or_generator_gives_same_draws(ones):
    a, b = RandomResizePad(28, 22, seed=7), RandomResizePad(28, 22, seed=7)
    assert all(torch.equal(a(ones), b(ones)) for _ in range(5))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    c, d = RandomResizePad(28, 22, generator=g1), RandomResizePad(28, 22, generator=g2)
    assert all(torch.equal(c(ones), d(ones)) for _ in range(5))


def test_fixed_draw_makes_it_deterministic(ones):
    layer = RandomResizePad(28, 22, seed=0)
    draw = ResizePadDraw(side=24, top=1, left=3)
    with layer.fixed(draw):
        first, second = layer(ones), layer(ones)
    assert torch.equal(first, second)
    assert first[0, 0, 1:25, 3:27].eq(1).all() and first[0, 0].sum() == 24 * 24
    with pytest.raises(GradconcealError, match="outside"):
        with layer.fixed(ResizePadDraw(side=28, top=0, left=0)):
            pass


def test_per_sample_seeds_do_not_depend_on_batching():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    layer = RandomResizePad(28, 20)
    with layer.per_sample_seeds([10, 11, 12, 13]):
        whole = [layer(x) for _ in range(2)]
    with layer.per_sample_seeds([12, 13]):
        half = [layer(x[2:]) for _ in range(2)]
    assert torch.equal(whole[0][2:], half[0]) and torch.equal(whole[1][2:], half[1])
    assert not torch.equal(whole[0], whole[1])
    with layer.per_sample_seeds([]):
        assert layer(x[:0]).shape == (0, 1, 28, 28)  # attacks call with empty batches once all are done


def test_rejects_bad_sizes(ones):
    with pytest.raises(GradconcealError, match="min_size < size"):
        RandomResizePad(size=28, min_size=28)
    with pytest.raises(GradconcealError, match=r"\(N, C, 224, 224\)"):
        RandomResizePad()(ones)
