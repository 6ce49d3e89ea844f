"""The CP decremental algorithm in plain NumPy: the yardstick for eco's compiled core.

Unlearning one example c of an rbf C-SVM along the Cauwenberghs-Poggio path
(see /work/shared/design/cp-algorithm.md): drive a_c to 0 while the margin
set S keeps g_S = 0 and sum y a = 0, with the inverse R of the bordered
margin matrix kept by rank-one expansions and contractions, one event per
step (the smallest step at which an example changes set). Each step costs one
product of the kernel rows of S against all active rows, as in eco.

The state is built from eco's public attributes only (``ids_``, ``alpha_``,
``intercept_``, ``margin_``, ``error_``) and the benchmark's own kernel: the
gradients g = y f(x) - 1 and R are computed from scratch in :meth:`NumpyCP.from_model`,
outside any timed region. Kernel rows of the margin set and of c are computed
there too (eco holds those of its support vectors after a fit); rows of
examples that join S during the path are computed when they join.

This is a yardstick, not a product: no degenerate-case pivots, ties taken in
index order. The benchmarks check that it ends in eco's sets and decision
values before timing it.
"""

import numpy as np

#: Rates smaller than this (relative to the largest term) are no events.
RATE_TOL = 1e-11


def rbf_rows(X, rows, gamma):
    """Kernel rows K(X[rows], X), shape (len(rows), n)."""
    Xr = X[rows]
    sq = np.einsum("ij,ij->i", X, X)
    d2 = sq[rows][:, None] + sq[None, :] - 2.0 * (Xr @ X.T)
    np.maximum(d2, 0.0, out=d2)
    return np.exp(-gamma * d2)


class NumpyCP:
    """State of a binary rbf SVM for the plain NumPy decremental path.

    Attributes
    ----------
    ids : ndarray of shape (n,)
    alpha, g, y, Cb : ndarray of shape (n,)
    b : float
    sets : ndarray of int8: 0 reserve, 1 margin, 2 error, -1 removed
    S : list of row indices of the margin set, in the order of R
    R : ndarray of shape (|S|+1, |S|+1), inverse of [[0, y_S'], [y_S, Q_SS]]
    rows : dict row index -> kernel row K(x_row, X)
    """

    RESERVE, MARGIN, ERROR, REMOVED = 0, 1, 2, -1

    def __init__(self, X, y, alpha, b, C, gamma, margin_rows, error_rows):
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        self.alpha = np.array(alpha, dtype=np.float64)
        self.b = float(b)
        self.Cb = np.full(len(y), float(C))
        self.gamma = float(gamma)
        self.sets = np.zeros(len(y), dtype=np.int8)
        self.sets[error_rows] = self.ERROR
        self.sets[margin_rows] = self.MARGIN
        self.S = [int(i) for i in margin_rows]
        self.rows = {}
        self.n_steps = 0
        self.n_migrations = 0
        support = np.flatnonzero(self.alpha > 0)
        K_sup = rbf_rows(self.X, support, self.gamma)
        f = K_sup.T @ (self.alpha[support] * self.y[support]) + self.b
        self.g = self.y * f - 1.0
        self.g[self.S] = 0.0
        for k, i in enumerate(support):
            if self.sets[i] == self.MARGIN:
                self.rows[int(i)] = K_sup[k]
        self.R = np.linalg.inv(self._bordered(self.S))
        # kernel rows of S packed in S's order, in a buffer that grows by doubling
        self.KS = np.empty((max(16, 2 * len(self.S)), len(y)))
        for k, i in enumerate(self.S):
            self.KS[k] = self.rows[i]

    @classmethod
    def from_model(cls, model, X, y):
        """The state of a fitted binary rbf ``eco.CPSVM`` on rows X (ids 0..n-1)."""
        ids = np.asarray(model.ids_)
        assert np.array_equal(ids, np.arange(len(X))), "ids must be the row indices"
        yy = np.where(np.asarray(y) == model.classes_[1], 1.0, -1.0)
        return cls(X, yy, model.alpha_, model.intercept_[0], model.C, model.gamma_,
                   np.asarray(model.margin_), np.asarray(model.error_))

    def _row(self, i):
        r = self.rows.get(i)
        if r is None:
            r = rbf_rows(self.X, np.array([i]), self.gamma)[0]
            self.rows[i] = r
        return r

    def _bordered(self, S):
        m = len(S)
        A = np.zeros((m + 1, m + 1))
        if m:
            yS = self.y[S]
            A[0, 1:] = A[1:, 0] = yS
            KS = np.array([self._row(i)[S] for i in S])
            A[1:, 1:] = yS[:, None] * KS * yS[None, :]
        return A

    # ------------------------------------------------------------- R updates

    def _expand(self, k):
        """k joins S: rank-one expansion of R (Schur complement kappa)."""
        S = self.S
        yk = self.y[k]
        rk = self._row(k)
        v = np.empty(len(S) + 1)
        v[0] = yk
        v[1:] = yk * self.y[S] * rk[S]
        beta = -self.R @ v
        kappa = 1.0 + v @ beta  # Q_kk = 1 for rbf
        m = len(S) + 1
        R = np.zeros((m + 1, m + 1))
        R[:m, :m] = self.R
        u = np.append(beta, 1.0)
        R += np.outer(u, u) / kappa
        self.R = R
        if len(S) == self.KS.shape[0]:
            grown = np.empty((2 * len(S), self.KS.shape[1]))
            grown[:len(S)] = self.KS
            self.KS = grown
        self.KS[len(S)] = rk
        S.append(k)

    def _contract(self, pos):
        """The margin vector at position `pos` of S leaves: contract R.

        It first swaps places with the last one (in S, the packed rows and R),
        so that no row of the buffer moves but one.
        """
        last = len(self.S) - 1
        if pos != last:
            S, R = self.S, self.R
            S[pos], S[last] = S[last], S[pos]
            self.KS[[pos, last]] = self.KS[[last, pos]]
            R[[pos + 1, last + 1]] = R[[last + 1, pos + 1]]
            R[:, [pos + 1, last + 1]] = R[:, [last + 1, pos + 1]]
        R = self.R
        self.R = R[:-1, :-1] - np.outer(R[:-1, -1], R[-1, :-1]) / R[-1, -1]
        self.S.pop()

    # ------------------------------------------------------------------ path

    def unlearn(self, c):
        """Remove example (row) c exactly along the CP path."""
        if self.sets[c] == self.RESERVE or self.alpha[c] == 0.0:
            self.sets[c] = self.REMOVED
            return
        if self.sets[c] == self.MARGIN:
            self._contract(self.S.index(c))
        yc = self.y[c]
        active = self.sets >= 0
        rc = self._row(c)
        while True:
            S = self.S
            if S:
                v = np.empty(len(S) + 1)
                v[0] = -yc
                v[1:] = -yc * self.y[S] * rc[S]
                beta = -self.R @ v
                # the floor of a step: one product over the margin rows
                gamma = self.y * (-yc * rc + (self.y[S] * beta[1:]) @ self.KS[:len(S)]
                                  + beta[0])
            else:
                beta = np.array([-yc])  # empty margin set: b moves alone
                gamma = self.y * beta[0] - self.y * yc * rc
            t, kind, who = self._next_event(c, beta, gamma, active)
            self.n_steps += 1
            self.alpha[c] -= t
            if S:
                self.alpha[S] += beta[1:] * t
            self.b += beta[0] * t
            self.g += gamma * t
            self.g[S] = 0.0
            if kind == "done":
                self.alpha[c] = 0.0
                self.sets[c] = self.REMOVED
                active[c] = False
                return
            self._migrate(kind, who, active)

    def _next_event(self, c, beta, gamma, active):
        """(step t, kind, row) of the first set change."""
        scale = max(1.0, np.abs(gamma[active]).max(initial=0.0))
        tol = RATE_TOL * scale
        best = (self.alpha[c], "done", c)
        S = np.asarray(self.S, dtype=np.int64)
        if len(S):
            bS = beta[1:]
            aS = self.alpha[S]
            with np.errstate(divide="ignore", invalid="ignore"):
                t_low = np.where(bS < -tol, -aS / bS, np.inf)
                t_up = np.where(bS > tol, (self.Cb[S] - aS) / bS, np.inf)
            for arr, kind in ((t_low, "S->R"), (t_up, "S->E")):
                j = int(np.argmin(arr))
                if arr[j] < best[0]:
                    best = (max(arr[j], 0.0), kind, int(S[j]))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_g = -self.g / gamma
        err = active & (self.sets == self.ERROR) & (gamma > tol)
        res = active & (self.sets == self.RESERVE) & (gamma < -tol)
        res[c] = err[c] = False
        for mask, kind in ((err, "E->S"), (res, "R->S")):
            if mask.any():
                cand = np.where(mask, t_g, np.inf)
                j = int(np.argmin(cand))
                if cand[j] < best[0]:
                    best = (max(cand[j], 0.0), kind, j)
        return best

    def _migrate(self, kind, who, active):
        self.n_migrations += 1
        if kind in ("S->R", "S->E"):
            self._contract(self.S.index(who))
            if kind == "S->R":
                self.alpha[who] = 0.0
                self.sets[who] = self.RESERVE
            else:
                self.alpha[who] = self.Cb[who]
                self.sets[who] = self.ERROR
        else:
            self.g[who] = 0.0
            self.sets[who] = self.MARGIN
            self._expand(who)

    def decision(self, X):
        """Decision values on rows X (from the current coefficients)."""
        sup = np.flatnonzero((self.alpha > 0) & (self.sets >= 0))
        Xs = self.X[sup]
        d2 = (np.einsum("ij,ij->i", X, X)[:, None] + np.einsum("ij,ij->i", Xs, Xs)[None, :]
              - 2.0 * X @ Xs.T)
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ (self.alpha[sup] * self.y[sup]) + self.b

    def set_ids(self):
        """(margin, error, reserve) row indices of the active examples."""
        return tuple(np.flatnonzero(self.sets == k) for k in (self.MARGIN, self.ERROR, self.RESERVE))
