"""A faithful re-implementation of the seed SOM notebook's `kmap` update (numpy, loop-and-roll), for comparison only.

Reproduces the original's structure and quirks (see shared reference notes): np.pad of *every* axis of the features
by edge replication, 8 np.roll shifts, unnormalised edge projection, corners pinned, float64. Not used by smf itself;
`bench/som.py` and tests/som check that smf.som.som gives the same numbers faster.
"""

import numpy as np

DIRS = [(-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1)]


class KMap:
    def __init__(self, weights, step=0.025, clampedges=True):
        self.weights = np.array(weights, dtype=np.float64)
        self.rows, self.cols = self.weights.shape[:2]
        self.step = step
        self.clampedges = clampedges
        xspacing = np.linalg.norm(self.weights[0, 1] - self.weights[0, 0])
        yspacing = np.linalg.norm(self.weights[1, :] - self.weights[0, :])
        idx = np.indices((self.rows, self.cols)).transpose(1, 2, 0)[..., ::-1].astype(np.float64)
        self.weights2D = idx * np.array([xspacing, yspacing])

    def getDifferences(self, vals):
        p = np.pad(vals, 1, mode="edge")
        diff = np.zeros((self.rows, self.cols, 8))
        for k, d in enumerate(DIRS):
            r = np.roll(p, d, axis=(0, 1))
            dd = p - r
            dist = np.sqrt(np.sum(dd * dd, axis=tuple(range(2, dd.ndim))))
            diff[:, :, k] = dist[1:-1, 1:-1]
        return diff

    def diffVect(self, pos, diff):
        pp = np.pad(pos, ((1, 1), (1, 1), (0, 0)), mode="edge")
        dv = np.zeros_like(pos)
        for k, d in enumerate(DIRS):
            r = np.roll(pp, d, axis=(0, 1))[1:-1, 1:-1]
            dv += diff[:, :, k][:, :, None] * (r - pos)
        if self.clampedges:
            for sl, e in (
                ((0, slice(1, -1)), pos[0, -1] - pos[0, 0]),
                ((-1, slice(1, -1)), pos[-1, -1] - pos[-1, 0]),
                ((slice(1, -1), 0), pos[-1, 0] - pos[0, 0]),
                ((slice(1, -1), -1), pos[-1, -1] - pos[0, -1]),
            ):
                u = e / np.linalg.norm(e)
                dv[sl] = np.dot(dv[sl], e)[:, None] * u
        for i in (0, -1):
            for j in (0, -1):
                dv[i, j] = 0
        return dv

    def update(self, vals):
        diff = self.getDifferences(vals)
        dv = self.diffVect(self.weights, diff)
        dv2 = self.diffVect(self.weights2D, diff)
        self.weights = self.weights + self.step * dv
        self.weights2D = self.weights2D + self.step * dv2
        return np.sum(np.linalg.norm(self.step * dv2, axis=-1))
