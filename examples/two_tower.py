"""A two-branch model of one's own, for `parplan trace examples/two_tower.py:build -o g.json`.

A user tower and an item tower (two MLP blocks each) meet in a scoring head; the loss is a
mean-squared error against a fixed target. ``build()`` returns the module, one micro-batch of
inputs and the loss function ``(output, inputs) -> scalar``.
"""

import torch
from torch import nn


class Tower(nn.Module):
    def __init__(self, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = h + layer(h)
        return h


class TwoTower(nn.Module):
    def __init__(self, user_dim: int = 32, item_dim: int = 48, hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.user = Tower(user_dim, hidden, depth)
        self.item = Tower(item_dim, hidden, depth)
        self.head = nn.Linear(2 * hidden, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.user(users), self.item(items)], dim=-1))


def build():
    torch.manual_seed(0)
    model = TwoTower()
    inputs = (torch.randn(16, 32), torch.randn(16, 48))
    return model, inputs, lambda out, inp: (out - 1.0).pow(2).mean()
