"""The reference for the training benchmark: the VRNN written the straightforward way the write-up does it.

One nn.Module cell with every configuration hard-coded (64-unit embedding, hidden
state and latent, 128-symbol vocabulary), called once per time step.  Each call
runs phi_x, prior, encoder, sampling, phi_z, decoder and the GRU cell, and that
step's cross-entropy and KL are added to the loss; the 300-step sum is
back-propagated by autograd.  Nothing is hoisted out of the loop.  Kept as the
write-up has it (log-sigma parameterisation, noise drawn inside the cell), only
fixed to run on current PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIZE = 64
VOCAB = 128


class BaselineVRNNCell(nn.Module):
    """The write-up's VRNNCell."""

    def __init__(self) -> None:
        super().__init__()
        self.phi_x = nn.Sequential(nn.Embedding(VOCAB, SIZE), nn.Linear(SIZE, SIZE), nn.ELU())
        self.encoder = nn.Linear(2 * SIZE, 2 * SIZE)  # [phi_x, h] -> mu, log sigma
        self.phi_z = nn.Sequential(nn.Linear(SIZE, SIZE), nn.ELU())
        self.decoder = nn.Linear(2 * SIZE, VOCAB)  # [h, phi_z] -> logits
        self.prior = nn.Linear(SIZE, 2 * SIZE)  # h -> mu, log sigma
        self.rnn = nn.GRUCell(2 * SIZE, SIZE)

    def forward(self, x: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.phi_x(x)
        z_prior = self.prior(hidden)
        z_infer = self.encoder(torch.cat([x, hidden], dim=1))
        z = torch.randn(x.size(0), SIZE) * z_infer[:, SIZE:].exp() + z_infer[:, :SIZE]
        z = self.phi_z(z)
        x_out = self.decoder(torch.cat([hidden, z], dim=1))
        hidden_next = self.rnn(torch.cat([x, z], dim=1), hidden)
        return x_out, hidden_next, z_prior, z_infer

    def calculate_loss(self, x: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(cross-entropy, KL, next hidden) of one time step, each averaged over the batch."""
        x_out, hidden_next, z_prior, z_infer = self.forward(x, hidden)
        loss1 = F.cross_entropy(x_out, x)
        mu_infer, log_sigma_infer = z_infer[:, :SIZE], z_infer[:, SIZE:]
        mu_prior, log_sigma_prior = z_prior[:, :SIZE], z_prior[:, SIZE:]
        loss2 = (
            (2 * (log_sigma_infer - log_sigma_prior)).exp()
            + ((mu_infer - mu_prior) / log_sigma_prior.exp()) ** 2
            - 2 * (log_sigma_infer - log_sigma_prior)
            - 1
        )
        loss2 = 0.5 * loss2.sum(dim=1).mean()
        return loss1, loss2, hidden_next


def baseline_train_step(cell: BaselineVRNNCell, optimizer: torch.optim.Optimizer, batch: Tensor) -> float:
    """One Adam step on windows `batch` [B, T] of token ids, the write-up's way; returns the loss per step."""
    hidden = torch.zeros(batch.size(0), SIZE)
    loss = torch.zeros(())
    for t in range(batch.size(1)):
        loss1, loss2, hidden = cell.calculate_loss(batch[:, t], hidden)
        loss = loss + loss1 + loss2
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item() / batch.size(1)
