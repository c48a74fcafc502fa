import pytest
import torch

from twinnet.compare import (
    COMPARATORS,
    CosineSimilarity,
    EuclideanDistance,
    MahalanobisDistance,
    MLPMetric,
    SquaredEuclideanDistance,
    WeightedL1,
    comparator_names,
)

torch.manual_seed(0)
A, B = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)


def test_euclidean_and_squared_match_cdist():
    torch.testing.assert_close(EuclideanDistance().pairwise(A, B), torch.cdist(A, B))
    torch.testing.assert_close(SquaredEuclideanDistance().pairwise(A, B), torch.cdist(A, B) ** 2)
    torch.testing.assert_close(EuclideanDistance()(A[:4], B), (A[:4] - B).norm(dim=1))


def test_cosine_matches_definition():
    expected = (A @ B.T) / (A.norm(dim=1, keepdim=True) * B.norm(dim=1))
    torch.testing.assert_close(CosineSimilarity().pairwise(A, B), expected)


@pytest.mark.parametrize("name", comparator_names("vectors"))
def test_pairwise_agrees_with_rowwise_forward(name):
    comp = COMPARATORS.build(name, {"dim": 5} if name in ("weighted_l1", "mahalanobis", "mlp") else {}).double()
    matrix = comp.pairwise(A, B)
    for i in range(len(A)):
        torch.testing.assert_close(matrix[i], comp(A[i].expand_as(B), B))
    sim = comp.pairwise_similarity(A, B)
    torch.testing.assert_close(sim, comp.orientation.to_similarity(matrix))


def test_default_chunked_pairwise_handles_chunks():
    comp = WeightedL1(dim=5).double()
    comp.chunk_elements = 5 * 4 * 2  # two rows at a time
    expected = torch.sigmoid((A.unsqueeze(1) - B.unsqueeze(0)).abs() @ comp.weight + comp.bias)
    torch.testing.assert_close(comp.pairwise(A, B), expected)


def test_weighted_l1_is_koch_formula():
    comp = WeightedL1(dim=5).double()
    with torch.no_grad():
        comp.weight.copy_(torch.arange(5, dtype=torch.float64) - 2)
        comp.bias.fill_(0.3)
    expected = torch.sigmoid(((A[:4] - B).abs() * (torch.arange(5.0, dtype=torch.float64) - 2)).sum(1) + 0.3)
    torch.testing.assert_close(comp(A[:4], B), expected)


def test_mahalanobis_starts_as_euclidean_and_stays_psd_under_training():
    comp = MahalanobisDistance(dim=5).double()
    torch.testing.assert_close(comp(A[:4], B), (A[:4] - B).norm(dim=1))
    opt = torch.optim.SGD(comp.parameters(), lr=1.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(50):  # large random steps: any parametrisation that can leave the PSD cone would
        x, y = (
            torch.randn(16, 5, generator=g, dtype=torch.float64),
            torch.randn(16, 5, generator=g, dtype=torch.float64),
        )
        loss = (comp(x, y) * torch.randn(16, generator=g, dtype=torch.float64)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        eig = torch.linalg.eigvalsh(comp.M)
        assert eig.min() >= -1e-9
    d = A[0] - B[0]
    torch.testing.assert_close(comp(A[:1], B[:1])[0], torch.sqrt(d @ comp.M @ d))


def test_mahalanobis_squared_is_the_quadratic_form():
    comp = MahalanobisDistance(dim=5, rank=2, squared=True).double()
    with torch.no_grad():
        comp.L.copy_(torch.randn(2, 5, dtype=torch.float64))
    d = A[:4] - B
    torch.testing.assert_close(comp(A[:4], B), torch.einsum("ni,ij,nj->n", d, comp.M, d))


def test_mlp_metric_is_symmetric_probability():
    comp = MLPMetric(dim=5).double()
    p = comp(A[:4], B)
    torch.testing.assert_close(p, comp(B, A[:4]))
    assert ((p > 0) & (p < 1)).all()


def test_sqrt_of_zero_distance_has_finite_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    EuclideanDistance()(x, x.detach().clone()).sum().backward()
    assert torch.isfinite(x.grad).all()
    y = torch.randn(3, 4, requires_grad=True)
    EuclideanDistance().pairwise(y, y).sum().backward()
    assert torch.isfinite(y.grad).all()
