"""Minimise Himmelblau's function with fm.optim.Adam on a plain NumPy array.

f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2 has four minima (all f = 0);
which one Adam finds depends on the starting point.
"""
import numpy as np

import fastmlp as fm

MINIMA = np.array([[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]])
STARTS = [[0.0, 0.0], [-1.0, 0.0], [-4.0, 0.0], [4.0, 0.0]]


def himmelblau(p):
    x, y = p
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def grad(p):
    """Analytic gradient [df/dx, df/dy]."""
    x, y = p
    a, b = x**2 + y - 11, x + y**2 - 7
    return np.array([4 * x * a + 2 * b, 2 * a + 4 * y * b])


def minimise(start, lr=0.01, steps=3000):
    x = np.array(start, dtype=np.float64)  # the parameter: updated in place by opt.step
    opt = fm.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.step([grad(x)])
    return x


def main(verbose=True):
    found = []
    for start in STARTS:
        x = minimise(start)
        found.append(x)
        if verbose:
            print(f"start {start} -> ({x[0]: .6f}, {x[1]: .6f})   f = {himmelblau(x):.2e}")
    found = np.array(found)
    # distance from each known minimum to the nearest point found
    dist = np.linalg.norm(MINIMA[:, None, :] - found[None, :, :], axis=2).min(axis=1)
    if verbose:
        print("max distance of a known minimum to the nearest solution:", dist.max())
    return {"found": found, "dist_to_minima": dist, "f": np.array([himmelblau(p) for p in found])}


if __name__ == "__main__":
    main()
