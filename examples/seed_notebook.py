"""The seed notebook (PyTorch's autograd tutorial) with only its import changed.

Cells run in the order the notebook executed them (its In [n] counters), so it prints what the
notebook printed. It runs on the service through the SDK: on ``$CROSSGRAD_ADDRESS``, else on a
server it starts in this process.
"""

import crossgrad.client as torch

# Example 1
x = torch.tensor(5.0, requires_grad = True)
y = x ** 2

print(x)
print(y)
y.backward()
print(x.grad)

# Example 2
x2 = torch.tensor(4.0, requires_grad= True)
y2 = x2 ** 2
z2 = torch.sin(y2)

print(x2)
print(y2)
print(z2)
z2.backward()
print(x2.grad)
y2.grad  # noqa: B018 - None, with PyTorch's warning: y2 is not a leaf

# Example 3: a neuron
x3 = torch.tensor(6.7)
y3 = torch.tensor(0.0)
w = torch.tensor(1.0, requires_grad=True)
b = torch.tensor(0.0, requires_grad=True)
print(w)
print(b)
z = w*x3 + b
y_pred = torch.sigmoid(z)
print(z)
print(y_pred)


def binary_cross_entropy(y_pred, y_true):
  # to prevent log(0)
  e = 1e-8

  # clamp func. restricts values of a tensor to a given range
  y_pred = torch.clamp(y_pred, e, 1-e)

  return -(y_true*torch.log(y_pred) + (1-y_true)*torch.log(1-y_pred))


loss = binary_cross_entropy(y_pred, y3)
print(loss)
loss.backward()
print(w.grad)
print(b.grad)

# Example 4: a vector
x = torch.tensor([1.0, 3.0, 4.0], requires_grad=True)
print(x.shape)
print(x)
y = (x**2).mean()
print(y)
y.backward()
print(x.grad)

# Clearing gradients: they accumulate until zeroed
x = torch.tensor(2.0, requires_grad=True)
print(x)
y = x**2
print(y)
y.backward()
print(x.grad)
y = x**2
print(y)
y.backward()
print(x.grad)
print(x.grad.zero_())
y = x**2
y.backward()
print(x.grad)

# Disable gradient tracking (cells In [82], [83], [84], [86], [87], [88], [89], [90])
y = x**2
print(y)
print(x.requires_grad_(False))
z = x.detach()
print(z)
x = torch.tensor(2.0, requires_grad=True)
print(x)
y = x**2
print(y)
y = z**2
print(y)
with torch.no_grad():
  y = x**2
print(y)
