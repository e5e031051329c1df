"""Write ``views.npz``, a multi-view file the ``npz`` data set reads (the README's ``.npz``
section): 300 samples, a sequence modality and a vector modality, integer labels, a fixed split."""

import numpy as np

rng = np.random.default_rng(0)
n = 300
labels = rng.integers(0, 3, n)  # [N] integers (any values: mapped to 0..K-1)
audio = rng.normal(size=(n, 20, 8)).astype(np.float32)  # [N, T, d]: a sequence per sample
text = rng.normal(size=(n, 32)).astype(np.float32)  # [N, d]: a vector per sample
audio[:, :, 0] += labels[:, None]  # something to learn in each view
text[:, 0] -= labels
split = np.array(["train"] * 200 + ["valid"] * 50 + ["test"] * 50)  # optional: else by seed
np.savez("views.npz", labels=labels, split=split, audio=audio, text=text)
