"""vaecli's Gaussian-mixture EM against scikit-learn's GaussianMixture, on the bundled model's codes.

Usage: python benchmarks/prior_fit_em.py [--images 10000] [--test-images 2000] [--components 50]
       [--seeds 0 1] [--threads 1]
The codes are drawn as `vae fit-prior` draws them (2 samples of q(z|x) per training image, freshly
binarized, on the CPU), from the first --images training images. Both fits get the same codes,
the same tolerance (1e-3 nats on the average log-likelihood), iteration cap and covariance floor,
and --threads threads (torch's pool, BLAS and OpenMP through threadpoolctl); on a busy machine
the CPU time of the process is the steadier figure. Prints per fit: wall and CPU time, EM
iterations, the average log-likelihood of the training codes, the mean log-prior of held-out
test codes and the mean KL(q(z|x) || p(z)) on the test images (what fit-prior reports), then
sklearn's time over vaecli's, all in one process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

import vaecli.model.prior as prior_module
from vaecli.data.datasets import eval_pixels, load_dataset, to_pixels
from vaecli.model.prior import COVARIANCE_FLOOR, MixturePrior, fit_mixture
from vaecli.store.bundled import resolve_model
from vaecli.store.checkpoint import load_checkpoint
from vaecli.training.prior_fit import mean_kl, posterior_samples

from _common import data_root

TOLERANCE, MAX_ITERATIONS = 1e-3, 300  # fit_mixture's defaults, given to both


@dataclass
class Fit:
    """One fit's cost and quality (nats per code or per image)."""

    seconds: float
    cpu_seconds: float
    iterations: int
    train_loglik: float
    test_logprior: float
    test_kl: float


def fit_vaecli(codes: torch.Tensor, components: int, seed: int) -> tuple[MixturePrior, int]:
    """fit_mixture as fit-prior calls it; the iterations counted through its M-step."""
    calls = 0
    maximize = prior_module._maximize

    def counted(*args):
        nonlocal calls
        calls += 1
        maximize(*args)

    prior_module._maximize = counted
    try:
        return fit_mixture(codes, components, seed, TOLERANCE, MAX_ITERATIONS), calls
    finally:
        prior_module._maximize = maximize


def fit_sklearn(codes: torch.Tensor, components: int, seed: int) -> tuple[MixturePrior, int]:
    """GaussianMixture with full covariances, k-means init, in vaecli's stored form (precision Cholesky factors)."""
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(components, covariance_type="full", tol=TOLERANCE, reg_covar=COVARIANCE_FLOOR,
                              max_iter=MAX_ITERATIONS, init_params="kmeans", random_state=seed)
    mixture.fit(codes.double().numpy())
    prior = MixturePrior(components, codes.shape[1]).double()
    prior.log_weights.copy_(torch.from_numpy(mixture.weights_).log())
    prior.means.copy_(torch.from_numpy(mixture.means_))
    # sklearn's factor P has precision = P P^T and is upper triangular: vaecli's U exactly.
    prior.precision_cholesky.copy_(torch.from_numpy(mixture.precisions_cholesky_))
    return prior.float(), int(mixture.n_iter_)


def measure(fitter, codes, components, seed, model, test_codes, test_pixels) -> Fit:
    """Time one fit, then score its prior on the training codes, the test codes and the test KL."""
    start, cpu_start = time.perf_counter(), time.process_time()
    prior, iterations = fitter(codes, components, seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    scored = prior.double()
    model.prior = prior
    kl = mean_kl(model, test_pixels, 2, torch.Generator().manual_seed(seed + 1))
    return Fit(seconds, cpu_seconds, iterations, float(scored.log_prob(codes.double()).mean()),
               float(scored.log_prob(test_codes.double()).mean()), kl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--images", type=int, default=10_000, help="training images (2 codes each)")
    parser.add_argument("--test-images", type=int, default=2_000)
    parser.add_argument("--components", type=int, default=50, help="fit-prior's default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1, help="threads for both fits")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    checkpoint = load_checkpoint(resolve_model(args.model)[0], "cpu")
    model, config = checkpoint.model.eval(), checkpoint.config
    shape = config.model.image_shape
    train = load_dataset(config.dataset, "train", data_root=data_root(), shape=shape, limit=args.images)
    test = load_dataset(config.dataset, "test", data_root=data_root(), shape=shape, limit=args.test_images)
    start = time.perf_counter()
    codes = posterior_samples(model, to_pixels(train.images), 2, config.binarize, torch.Generator().manual_seed(0))
    test_pixels = eval_pixels(config, test, torch.device("cpu"))
    test_codes = posterior_samples(model, test_pixels, 1, False, torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {codes.shape[0]:,} codes of size "
          f"{codes.shape[1]} from {len(train):,} {config.dataset} images, {len(test):,} test images "
          f"(encoded in {time.perf_counter() - start:.1f} s); {args.components} components")
    ratios, cpu_ratios = [], []
    for seed in args.seeds:
        fits = {}
        for name, fitter in (("vaecli", fit_vaecli), ("sklearn", fit_sklearn)):
            fits[name] = fit = measure(fitter, codes, args.components, seed, model, test_codes, test_pixels)
            print(f"seed {seed} {name:7s} {fit.seconds:6.1f} s (CPU {fit.cpu_seconds:6.1f} s)  "
                  f"{fit.iterations:3d} iterations  "
                  f"train log-lik {fit.train_loglik:8.3f}  test log-prior {fit.test_logprior:8.3f}  "
                  f"test KL {fit.test_kl:7.3f} nats/image")
        ratios.append(fits["sklearn"].seconds / fits["vaecli"].seconds)
        cpu_ratios.append(fits["sklearn"].cpu_seconds / fits["vaecli"].cpu_seconds)
        per_iteration = (fits["sklearn"].cpu_seconds / fits["sklearn"].iterations) / (
            fits["vaecli"].cpu_seconds / fits["vaecli"].iterations)
        print(f"seed {seed} sklearn / vaecli: time {ratios[-1]:.2f}x, CPU {cpu_ratios[-1]:.2f}x, "
              f"CPU per iteration {per_iteration:.2f}x, "
              f"train log-lik {fits['sklearn'].train_loglik - fits['vaecli'].train_loglik:+.3f}, "
              f"test KL {fits['sklearn'].test_kl - fits['vaecli'].test_kl:+.3f} nats")
    print(f"median ratio sklearn / vaecli: time {statistics.median(ratios):.2f}x, "
          f"CPU {statistics.median(cpu_ratios):.2f}x")


if __name__ == "__main__":
    main()
