#!/usr/bin/env python3
"""Why the sparsity controller's law works in ln(dense) (crates/padam/src/controller.rs,
"Where the law is slow"): the law, transcribed, on two kinds of simulated plant, in three
coordinates. Prints, per coordinate and kind of plant, how many runs (three targets each) miss the target by more than half
a point or overshoot the ramp by more than half a point, and the mean and largest gap to the
ramp in its middle half.

  threshold plants: no zeros below lambda = sqrt(c), dense fraction c / lambda^2 above (the
      plants of crates/padam/tests/controller.rs, lag and in-flight);
  smooth plants: zero fraction logistic in ln lambda (slope k, half at lam50), zeros in
      flight and landing with lags (ResNet18 under PAdam: 0.4% zeros after the hold at 1e-3).

Usage: python3 scripts/controller-coordinate-sim.py
"""
import math


def cubic(step, s0, s1, frm, tgt):
    if step <= s0:
        return frm
    if step >= s1:
        return tgt
    p = (step - s0) / (s1 - s0)
    return frm + (tgt - frm) * (1 - (1 - p) ** 3)


def dense_coord(z):
    return -math.log(max(1 - z, 1e-12))


def logodds_coord(z):
    return math.log(z + 0.01) - math.log(max(1 - z, 1e-12))


class Controller:
    """SparsityController::update with the defaults, the coordinate x(z) as a parameter;
    coord(z) -> function, so a coordinate may depend on the measurement (the switch)."""

    def __init__(self, target, total, coord, every=100):
        self.t, self.every, self.coord = target, every, coord
        self.u = math.log(1e-3)
        self.s0, self.s1 = round(0.1 * total), round(0.75 * total)
        self.updates, self.last_step, self.last_z, self.frm = 0, 0, 0.0, None

    def update(self, step, z):
        holding = step + self.every <= self.s0
        if self.frm is None and not holding:
            self.frm = min(z, self.t)
        x = self.coord(z)
        rate = 0.0
        if self.updates:
            interval = (step - self.last_step) / self.every
            rate = max((x(z) - x(self.last_z)) / interval, 0.0)
        aim = cubic(step + self.every, self.s0, self.s1, self.frm or 0.0, self.t)
        level = x(aim) - x(z)
        e = level - 3.0 * rate
        if holding:
            du = 0.0
        elif level < 0:
            du = 0.0 if rate <= 0 else 8.0 * e
        else:
            du = min(0.35 * e, math.log(2.0))
        self.u = min(max(self.u + du, math.log(1e-8)), math.log(10.0))
        self.updates, self.last_step, self.last_z = self.updates + 1, step, z
        return math.exp(self.u)


class Plant:
    """The zero fraction `headed` relaxes toward eq(lambda) (tau_in rising, tau_out falling);
    the measured zeros follow it up (tau_land) and never come back."""

    def __init__(self, eq, tau_in, tau_out, tau_land):
        self.eq, self.ti, self.to, self.tl = eq, tau_in, tau_out, tau_land
        self.z = self.h = 0.0

    def step(self, lam):
        eq = self.eq(lam)
        self.h += (eq - self.h) / (self.ti if eq > self.h else self.to)
        if self.h > self.z:
            self.z += (self.h - self.z) / self.tl


def threshold(c):
    return lambda lam: 1 - min(1.0, c / lam**2)


def smooth(k, lam50):
    return lambda lam: 1 / (1 + (lam50 / lam) ** k)


PLANTS = (
    # lag plants: zeros follow the equilibrium directly (tau_in = tau_land = 1, no regrowth)
    [(threshold(c), (tau, tau, 1), T, ev) for c, tau, T, ev in
     [(1e-4, 200, 3000, 100), (1e-2, 200, 6000, 100), (1e-6, 50, 3000, 100),
      (1e-3, 100, 10000, 100), (1e-5, 300, 20000, 200)]]
    + [(threshold(0.72e-6), (300, to, 300), 15000, 100) for to in (300, 3000, 10000)]
    + [(smooth(k, l50), taus, 12500, 100)
       for k, l50 in [(2, 4e-3), (3, 5e-3), (4, 8e-3), (2, 1.5e-2), (4, 3e-2), (6, 2e-2), (1, 5e-3)]
       for taus in [(300, 3000, 300), (100, 1000, 100), (600, 6000, 600)]]
)


def run(coord, plants):
    missed, gaps = 0, []
    for eq, taus, total, every in plants:
        for target in (0.90, 0.95, 0.98):
            ctl, plant = Controller(target, total, coord, every), Plant(eq, *taus)
            over, mid = 0.0, []
            quarter = (ctl.s1 - ctl.s0) // 4
            lam = 1e-3
            for step in range(total):
                if step % every == 0:
                    lam = ctl.update(step, plant.z)
                    aim = cubic(step, ctl.s0, ctl.s1, ctl.frm or 0.0, target)
                    if step >= ctl.s0:
                        over = max(over, plant.z - aim)
                    if ctl.s0 + quarter <= step <= ctl.s1 - quarter:
                        mid.append(abs(plant.z - aim))
                plant.step(lam)
            gaps.append(max(mid))
            missed += abs(plant.z - target) > 0.005 or over > 0.005
    return missed, len(gaps), 100 * sum(gaps) / len(gaps), 100 * max(gaps)


if __name__ == "__main__":
    for name, coord in [
        ("ln(dense) (the law)", lambda z: dense_coord),
        ("log-odds ln(z + 0.01) - ln(dense)", lambda z: logodds_coord),
        ("log-odds once z >= 0.001, else ln(dense)",
         lambda z: (lambda y: math.log(max(y, 1e-3)) - math.log(max(1 - y, 1e-12))) if z >= 1e-3 else dense_coord),
    ]:
        for kind, plants in [("threshold", PLANTS[:8]), ("smooth", PLANTS[8:])]:
            missed, n, mean, worst = run(coord, plants)
            print(f"{name:42s} {kind:9s} plants: missed {missed:2d}/{n}, "
                  f"mid-ramp gap mean {mean:4.1f} max {worst:4.1f} points")
