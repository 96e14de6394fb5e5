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


def test_selected_rows_keep_each_samples_draw_sequence():
    # a sample's n-th call gives the same draw whether the other samples sit in that call or not
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    layer = RandomResizePad(28, 20)
    with layer.per_sample_seeds([6]):
        alone = [layer(x[1:2]) for _ in range(3)]
    with layer.per_sample_seeds([5, 6, 7]):
        first = layer(x)  # every sample's call 0
        with layer.select_rows([1]):
            second = layer(x[1:2])  # sample 1's call 1; samples 0 and 2 sit this one out
        with layer.select_rows([2, 1]):
            third = layer(x[[2, 1]])  # sample 1's call 2, sample 2's call 1
        with pytest.raises(GradconcealError, match="2 seeded sample"):
            with layer.select_rows([0, 2]):
                layer(x)
    assert torch.equal(first[1:2], alone[0]) and torch.equal(second, alone[1]) and torch.equal(third[1:2], alone[2])
    with layer.per_sample_seeds([7]):
        sample2 = [layer(x[2:3]) for _ in range(2)]
    assert torch.equal(first[2:3], sample2[0]) and torch.equal(third[0:1], sample2[1])


def test_rejects_bad_sizes(ones):
    with pytest.raises(GradconcealError, match="min_size < size"):
        RandomResizePad(size=28, min_size=28)
    with pytest.raises(GradconcealError, match=r"\(N, C, 224, 224\)"):
        RandomResizePad()(ones)


@pytest.mark.parametrize("attack, settings", [
    ("pgd", {"norm": "linf", "eps": "8/255", "steps": 6, "alpha": "2/255"}),
    ("square", {"norm": "linf", "eps": "12/255", "n_queries": 30}),
    ("cw", {"eps": 1.0, "steps": 8, "binary_search_steps": 2, "lr": 0.05}),
])
def test_attacks_on_a_random_defence_give_each_image_its_result_alone_or_batched(attack, settings):
    # the attacks drop fooled images from their batch; each image must still see its own draws
    from gradconceal.attacks import create_attack
    from gradconceal.data import load_dataset
    from gradconceal.defenses.concealment import DefendedModel
    from gradconceal.defenses.randomization import seeded_randomness
    from gradconceal.models.zoo import load_model

    model = DefendedModel(load_model("fmnist-cnn"), [RandomResizePad(28, 22)]).eval()
    data = load_dataset("fashion-mnist", split="test", limit=10)
    images = torch.stack([data[i][0] for i in range(10)])
    labels = torch.tensor([int(data.targets[i]) for i in range(10)])
    seeds = [1000 + i for i in range(10)]
    with seeded_randomness(model, seeds):
        batched = create_attack(attack, model, **settings).perturb(images, labels, sample_seeds=seeds)
    assert batched.stopped_early.any() and not batched.stopped_early.all()  # the batch did shrink
    for i in range(10):
        with seeded_randomness(model, seeds[i:i + 1]):
            alone = create_attack(attack, model, **settings).perturb(images[i:i + 1], labels[i:i + 1],
                                                                     sample_seeds=seeds[i:i + 1])
        assert bool(alone.fooled[0]) == bool(batched.fooled[i])
        assert int(alone.grad_evals[0]) == int(batched.grad_evals[i])
        assert torch.allclose(alone.adversarial[0], batched.adversarial[i], atol=1e-5)
