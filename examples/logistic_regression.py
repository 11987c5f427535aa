"""Logistic regression trained by SGD through the SDK, written as it would be with PyTorch.

Only the import differs from a PyTorch script. The data stays on the service once sent; each
training step (forward, backward, the update under ``no_grad`` and zeroing the grads) reaches it
in one call, which the last line counts; the service cross-checks every gradient it returns
(``torch.last_check()``). It runs on ``$CROSSGRAD_ADDRESS``, else on a server it
starts in this process.
"""

import crossgrad.client as torch
import numpy as np

# Synthetic data: 1,000 samples of 5 features, labels drawn from a known logistic model.
rng = np.random.default_rng(0)
features = rng.normal(size=(1000, 5)).astype(np.float32)
true_w = np.array([1.5, -2.0, 0.5, 0.0, 1.0], dtype=np.float32)
labels = (rng.random(1000) < 1 / (1 + np.exp(-(features @ true_w + 0.3)))).astype(np.float32)

X = torch.from_numpy(features)
y = torch.from_numpy(labels)
w = torch.zeros(5, requires_grad=True)
b = torch.zeros((), requires_grad=True)


def bce_loss(z, y):
    """Mean binary cross-entropy of the logits ``z``, clamped away from log(0)."""
    p = torch.clamp(torch.sigmoid(z), 1e-7, 1 - 1e-7)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


lr = 0.5
calls_before = torch.current().rpc_count
for step in range(1, 21):
    loss = bce_loss(X @ w + b, y)
    loss.backward()
    with torch.no_grad():
        w -= lr * w.grad
        b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
    if step % 5 == 0:
        print(f"step {step:2d}  loss {loss.item():.4f}")
calls = torch.current().rpc_count - calls_before

predicted = (X @ w + b).detach().numpy() > 0
print(f"accuracy {np.mean(predicted == (labels > 0.5)):.3f}")
print(f"RPCs per step: {calls / 20:g}")
