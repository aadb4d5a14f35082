"""Prints the two polynomials of verf in cpp/vmath.h: Chebyshev interpolants (degree 11 and 24,
computed in 50-digit arithmetic with mpmath, then rounded to double) of
  erf(a) / a          as a function of t = 2 a^2 - 1      for 0 <= a <= 1, and
  a e^(a^2) erfc(a)   as a function of s = 2.4 / a - 1.4  for 1 <= a <= 6,
each in the monomial basis of its variable on [-1, 1], for Horner's rule."""
import mpmath as mp

mp.mp.dps = 50


def chebyshev_monomial(f, n):
    """Monomial coefficients (constant first) of the degree-n interpolant of f at the Chebyshev
    nodes of [-1, 1]."""
    nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / (n + 1)) for k in range(n + 1)]
    vals = [f(t) for t in nodes]
    c = [sum(vals[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / (n + 1)) for k in range(n + 1)) * 2 / (n + 1)
         for j in range(n + 1)]
    c[0] /= 2
    basis = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]  # T_j in the monomial basis
    for j in range(2, n + 1):
        p = [mp.mpf(0)] + [2 * v for v in basis[j - 1]]
        for i, v in enumerate(basis[j - 2]):
            p[i] -= v
        basis.append(p)
    mono = [mp.mpf(0)] * (n + 1)
    for j in range(n + 1):
        for i, v in enumerate(basis[j]):
            mono[i] += c[j] * v
    return [float(v) for v in mono]


def small(t):  # erf(a) / a at a^2 = (t + 1) / 2
    z = (t + 1) / 2
    return mp.erf(mp.sqrt(z)) / mp.sqrt(z) if z > 0 else 2 / mp.sqrt(mp.pi)


def tail(s):  # a e^(a^2) erfc(a) at 1 / a = (s + 1.4) / 2.4
    a = 1 / ((s + mp.mpf("1.4")) / mp.mpf("2.4"))
    return a * mp.erfc(a) * mp.exp(a * a)


def horner(name, var, coefs):
    lines = [f"  double {name} = {coefs[-1]!r};"]
    lines += [f"  {name} = {name} * {var} {'-' if c < 0 else '+'} {abs(c)!r};" for c in reversed(coefs[:-1])]
    return "\n".join(lines)


if __name__ == "__main__":
    print(horner("p", "t", chebyshev_monomial(small, 11)))
    print(horner("q", "s", chebyshev_monomial(tail, 24)))
